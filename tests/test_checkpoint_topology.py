"""A checkpoint written on 8 devices restores on 1 or 2: loading the model and resuming.

The checkpoint comes from a pre-training run sharded over 8 fake CPU devices (replicated global
arrays, whose saved sharding names 8 devices). Fresh interpreters with 1 and 2 devices load it
for inference and resume it; their outputs must match the same work done on 8 devices. This
file is also the worker's program (`python test_checkpoint_topology.py WORKDIR OUT`).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

STOP, TOTAL = 2, 4


def _forward(workdir: Path) -> np.ndarray:
  """The loaded model's logits for fixed features (what embed and score compute from)."""
  from audiotl_jax.train import checkpoints, inference
  variables, meta, _ = checkpoints.load_model(workdir)
  model = inference.model_from_metadata(meta)
  x = np.random.default_rng(0).normal(
      size=(2, inference.input_frames(meta), meta["frontend"]["n_mels"])).astype(np.float32)
  logits, _ = model.apply(variables, x, train=False)
  return np.asarray(logits)


def _resume(workdir: Path) -> list:
  """Resumes the stopped run to TOTAL steps; the final params as a flat list of host arrays."""
  import jax
  import ml_collections
  from audiotl_jax.stages import pretrain
  from audiotl_jax.train import checkpoints
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  config.stop_at = 0
  pretrain.run(config, workdir)
  params, _, _ = checkpoints.load_model(workdir / "checkpoints" / str(TOTAL))
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def _work(workdir: Path, out: Path) -> None:
  logits = _forward(workdir)
  params = _resume(workdir)
  np.savez(out, logits=logits, **{f"p{i}": p for i, p in enumerate(params)})


def test_checkpoint_from_8_devices_restores_on_1_and_2(prepared, tmp_path, devices):
  from conftest import tiny_pretrain_config
  from audiotl_jax.stages import pretrain
  stopped = tmp_path / "stopped"
  config = tiny_pretrain_config(prepared["audioset"], total_steps=TOTAL, checkpoint_every=STOP,
                                stop_at=STOP, batch_size=8)
  assert pretrain.run(config, stopped) == {"stopped_at": STOP}

  procs = {}
  for n in (1, 2):
    workdir = tmp_path / f"on{n}"
    shutil.copytree(stopped, workdir)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               AUDIOTL_COMPILATION_CACHE="", PYTHONPATH=str(Path(__file__).parents[1]))
    procs[n] = subprocess.Popen(
        [sys.executable, __file__, str(workdir), str(tmp_path / f"on{n}.npz")], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

  # The same work on 8 devices, while the workers run.
  here = tmp_path / "on8"
  shutil.copytree(stopped, here)
  logits = _forward(here)
  params = _resume(here)

  for n, proc in procs.items():
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"worker on {n} device(s) failed:\n{log[-4000:]}"
    got = np.load(tmp_path / f"on{n}.npz")
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-6, atol=1e-6)
    assert len(got.files) == len(params) + 1
    for i, p in enumerate(params):
      # A resumed step on fewer devices reduces in another order: equal up to float rounding.
      np.testing.assert_allclose(got[f"p{i}"], p, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  import jax
  assert jax.device_count() == int(os.environ["XLA_FLAGS"].rsplit("=", 1)[1]), jax.devices()
  _work(Path(sys.argv[1]), Path(sys.argv[2]))
