"""Test set-up: 8 fake CPU devices, so sharding is exercised on a laptop and in CI.

XLA reads the flag when the backend starts, so it is set here, before anything imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import importlib.util  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402  (after the flag, on purpose)
import pytest  # noqa: E402

# Tests compile the same small programs many times over (each run builds its own jit); a
# per-session persistent cache makes every repeat a file read.
os.environ["AUDIOTL_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="audiotl-xla-")  # CLI tests too.
os.environ["AUDIOTL_MEL_CACHE"] = tempfile.mkdtemp(prefix="audiotl-mel-")
jax.config.update("jax_compilation_cache_dir", os.environ["AUDIOTL_COMPILATION_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# The parity tests against the official PyTorch code run in their own venv (`make test-torch`,
# which fails if torch is missing there); in the default venv there is no torch to import.
if importlib.util.find_spec("torch") is None:
  collect_ignore = ["torch_parity"]


@pytest.fixture(scope="session")
def devices():
  assert jax.device_count() == 8, jax.devices()
  return jax.devices()


# ------------------------------------------------------------------------- shared fixtures
# Tiny synthetic data, prepared once per session, and one tiny pre-trained checkpoint: the stage
# tests build on them instead of each making their own.
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
  from audiotl_jax.data import shard_writer, synthetic
  root = tmp_path_factory.mktemp("data")
  synthetic.make_demo_data(root / "raw", scale="test", seed=0)
  return {name: shard_writer.prepare_once(root / "raw" / name, root / name, name,
                                          sample_rate=16000, clip_seconds=1.0, num_workers=1,
                                          progress=False)
          for name in ("audioset", "speech_commands")}


def tiny_pretrain_config(data_dir, **overrides):
  from audiotl_jax import config as config_lib
  config = config_lib.load(str(REPO / "configs/pretrain.py") + ":model=cnn:tiny,runlocal")
  with config.unlocked():
    config.data.dir = str(data_dir)
    config.data.subset = "Human sounds"
    config.batch_size = 8
    config.total_steps = 4
    config.log_every = 1
    config.eval_every = 2
    config.checkpoint_every = 2
    config.frontend.n_mels = 32
    config.progress = False
    set_keys(config, overrides)
  return config


def set_keys(config, overrides: dict) -> None:
  """Sets dotted keys (`optim.lr`) of an unlocked config."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value


@pytest.fixture(scope="session")
def pretrained(prepared, tmp_path_factory):
  from audiotl_jax.stages import pretrain
  workdir = tmp_path_factory.mktemp("pretrain")
  pretrain.run(tiny_pretrain_config(prepared["audioset"]), workdir)
  return workdir


def run_processes(argv_of, *, count: int = 2, timeout: float = 300, env=None) -> None:
  """Runs `count` real JAX processes (4 CPU devices each) against one coordinator on localhost.

  `argv_of(p)` is process p's command line. Each must exit 0 (its output tail is the failure
  message); a failed or hung one is killed, so no worker outlives the test.
  """
  import subprocess
  portpicker = pytest.importorskip("portpicker")
  base = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
              XLA_FLAGS="--xla_force_host_platform_device_count=4",
              AUDIOTL_COMPILATION_CACHE="", PYTHONPATH=str(REPO),
              AUDIOTL_COORDINATOR_ADDRESS=f"localhost:{portpicker.pick_unused_port()}",
              AUDIOTL_NUM_PROCESSES=str(count), **(env or {}))
  base.pop("AUDIOTL_DISTRIBUTED", None)
  procs = [subprocess.Popen(argv_of(p), env={**base, "AUDIOTL_PROCESS_ID": str(p)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for p in range(count)]
  try:
    for proc in procs:
      log, _ = proc.communicate(timeout=timeout)
      assert proc.returncode == 0, log[-4000:]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()

