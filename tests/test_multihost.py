"""Two CPU processes with a coordinator on localhost: disjoint input shards, one sharded step.

Each process is a fresh interpreter with 4 fake CPU devices (8 over the cluster, as in the
single-process tests); this file is also the worker's program (`python test_multihost.py ...`).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

N, BATCH, CLIP, STEPS = 16, 8, 1600, 2


def _worker_env(tmp_path: Path) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS="--xla_force_host_platform_device_count=4",
             AUDIOTL_COMPILATION_CACHE="", PYTHONPATH=str(Path(__file__).parents[1]))
  env.pop("AUDIOTL_DISTRIBUTED", None)
  return env


def _steps(dataset, process_index: int, process_count: int) -> dict:
  """Every record id of one epoch of this process's stream, and STEPS sharded train steps."""
  import jax
  from jax.experimental import multihost_utils
  import ml_collections
  from audiotl_jax import models
  from audiotl_jax.data import pipeline, records
  from audiotl_jax.features import featurizer
  from audiotl_jax.train import mesh as mesh_lib, state as state_lib
  from audiotl_jax.train import step as steps
  from configs import common
  src = dataset.source("train")
  id_of = {int(records.decode(src[i])["audio"][0]): str(dataset.ids("train")[i])
           for i in range(N)}

  def batches():
    return pipeline.train_iterator(
        dataset, "train", batch_size=BATCH, clip_samples=CLIP, seed=5, target="multihot",
        process_index=process_index, process_count=process_count, prefetch=0)

  it = batches()
  local_batches = N // BATCH  # one epoch, over every process together
  ids = [id_of[int(a[0])] for _ in range(local_batches) for a in next(it)["audio"]]
  fc = ml_collections.ConfigDict(dict(sample_rate=16000, n_fft=256, hop_length=160, n_mels=32,
                                      fmin=0.0, fmax=8000.0))
  model = models.get_model("cnn:tiny", num_classes=dataset.num_classes)
  tx = state_lib.make_optimizer(common.optim(1e-2), total_steps=10)
  mesh = mesh_lib.make_mesh()
  state, shardings = state_lib.create(model, tx, mesh, frames=11, n_mels=32, seed=0)
  augment = common.augment(specaugment=False)  # masks depend on a row's place in the batch
  step = steps.jit_train_step(steps.make_train_step(
      model, featurizer.make_featurizer(fc, {"mean": -30.0, "std": 15.0}), tx,
      loss_fn=steps.bce_loss, augment=augment, num_classes=dataset.num_classes,
      target="multihot"), shardings, mesh)
  it, losses = batches(), []
  for _ in range(STEPS):
    state, m = step(state, mesh_lib.to_global(next(it), mesh))
    losses.append(float(m["loss"]))
  params = jax.tree.map(lambda x: float(np.asarray(jax.device_get(x)).sum()),
                        multihost_utils.process_allgather(state.params, tiled=True))
  return {"ids": ids, "losses": losses, "params": jax.tree.leaves(params),
          "devices": jax.device_count(), "processes": jax.process_count()}


def _make_dataset(root: Path):
  import soundfile as sf
  from audiotl_jax.data import readers
  from audiotl_jax.data import shard_writer as prepare
  from audiotl_jax.data.dataset import PreparedDataset
  rows = []
  for i in range(N):
    sf.write(root / f"c{i}.wav", np.full(800 + 100 * i, 50 * (i + 1), np.int16), 16000)
    rows.append(f"c{i}.wav,{'abc'[i % 3]},train")
  (root / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
  prepare.prepare(readers.csv_manifest(root / "l.csv"), root / "out", shard_size=5,
                  num_workers=1, progress=False)
  return PreparedDataset(root / "out")


@pytest.mark.slow  # 25-60 s on 2 shared cores: three interpreters each compile the step
def test_two_processes_read_disjoint_shards_and_match_one_process(tmp_path, devices):
  portpicker = pytest.importorskip("portpicker")
  dataset = _make_dataset(tmp_path)
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      [sys.executable, __file__, str(dataset.path), str(tmp_path / f"p{p}.json")],
      env={**_worker_env(tmp_path), "AUDIOTL_COORDINATOR_ADDRESS": f"localhost:{port}",
           "AUDIOTL_NUM_PROCESSES": "2", "AUDIOTL_PROCESS_ID": str(p)},
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in (0, 1)]
  single = _steps(dataset, 0, 1)  # meanwhile here: 8 devices, the whole global batch
  for p in procs:
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out[-3000:]
  results = [json.loads((tmp_path / f"p{p}.json").read_text()) for p in (0, 1)]
  assert [r["processes"] for r in results] == [2, 2] and results[0]["devices"] == 8
  a, b = results[0]["ids"], results[1]["ids"]
  assert len(a) == len(b) == N // 2 and not set(a) & set(b)
  assert sorted(a + b) == sorted(dataset.ids("train").tolist())  # every record once per epoch
  assert sorted(single["ids"]) == sorted(a + b)
  for r in results:
    np.testing.assert_allclose(r["losses"], single["losses"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["params"], single["params"], rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
  sys.path.insert(0, str(Path(__file__).parents[1]))
  from audiotl_jax.train import mesh as _mesh
  assert _mesh.initialize_distributed()
  import jax as _jax
  from audiotl_jax.data.dataset import PreparedDataset
  out = _steps(PreparedDataset(sys.argv[1]), _jax.process_index(), _jax.process_count())
  Path(sys.argv[2]).write_text(json.dumps(out))
