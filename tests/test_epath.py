"""Workdirs and data on object storage: the run's files go through `etils.epath`, never `open()` or
`os.*` on the path string, so a `gs://` workdir works where epath has a GCS backend.

`fake_gcs` swaps every epath backend for etils' mock (`epath.testing.mock_epath`) and maps
`gs://bucket/...` onto a local folder inside it. Only code that goes through epath gets there:
a builtin `open("gs://bucket/...")` or `os.replace` on such a string fails (there is no `gs:`
folder), so each flow below passing is the proof.
"""
import json
import os
import re
import shutil
from pathlib import Path

from etils import epath
from etils.epath import testing as epath_testing
import ml_collections
import numpy as np
import pytest

from audiotl_jax import config as config_lib
from audiotl_jax import fileio
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError
from audiotl_jax.train import checkpoints, lock, loop, metrics
from conftest import REPO

BUCKET = "gs://bucket"


@pytest.fixture
def fake_gcs(tmp_path):
  """(local folder that holds gs://bucket, the gs:// paths each operation touched)."""
  root = tmp_path / "gcs"
  root.mkdir()
  seen = []

  def local(p):
    p = os.fspath(p)
    if p.startswith(BUCKET):
      seen.append(p)
      return str(root) + p[len(BUCKET):]
    assert not p.startswith("gs://"), p
    return p

  def remote(p):
    p = os.fspath(p)
    return BUCKET + p[len(str(root)):] if p.startswith(str(root)) else p

  def one(orig, path, *args, **kwargs):
    return orig(local(path), *args, **kwargs)

  def two(orig, path, dst, **kwargs):
    return orig(local(path), local(dst), **kwargs)

  def glob(orig, pattern):
    return [remote(p) for p in orig(local(pattern))]

  def walk(orig, top, **kwargs):
    for r, dirs, files in orig(local(top), **kwargs):
      yield remote(r), dirs, files

  with epath_testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, rmtree=one,
      remove=one, stat=one, rename=two, replace=two, copy=two, glob=glob, walk=walk):
    yield root, seen


def _config():
  return ml_collections.ConfigDict({"lr": 0.1, "data": {"dir": f"{BUCKET}/data"}})


def test_fileio_writes_through_epath(fake_gcs):
  root, seen = fake_gcs
  assert not fileio.is_local(f"{BUCKET}/x") and fileio.is_local("runs/x")
  fileio.path(f"{BUCKET}/run").mkdir(parents=True)
  fileio.write_json(f"{BUCKET}/run/a.json", {"x": 1}, indent=2)
  fileio.write_text(epath.Path(f"{BUCKET}/run/b.txt"), "hello")
  fileio.write_bytes(f"{BUCKET}/run/c.bin", b"\x00\x01")
  with pytest.raises(RuntimeError), fileio.atomic(f"{BUCKET}/run/d.txt") as f:
    f.write("half")
    raise RuntimeError("a failed block uploads nothing")
  assert json.loads((root / "run/a.json").read_text()) == {"x": 1}
  assert (root / "run/b.txt").read_text() == "hello"
  assert (root / "run/c.bin").read_bytes() == b"\x00\x01"
  assert sorted(os.listdir(root / "run")) == ["a.json", "b.txt", "c.bin"]  # no temporary files
  assert fileio.read_json(f"{BUCKET}/run/a.json") == {"x": 1}
  assert fileio.glob(f"{BUCKET}/run/*.json") == [f"{BUCKET}/run/a.json"]
  assert fileio.size(f"{BUCKET}/run/c.bin") == 2
  assert f"{BUCKET}/run/a.json" in seen


def test_local_paths_keep_their_atomic_writes(tmp_path):
  """Local: the same file as before, written through a temporary file and a rename."""
  out = fileio.write_json(tmp_path / "a.json", {"x": 1}, indent=2)
  assert out == tmp_path / "a.json" and (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
  assert fileio.resolved("x").name == "x" and str(fileio.resolved("x")) == str(Path("x").resolve())
  assert fileio.glob(tmp_path / "*.json") == [str(tmp_path / "a.json")]


def test_config_write_begin_and_finished_run(fake_gcs, capsys):
  root, _ = fake_gcs
  workdir = f"{BUCKET}/run"
  config_lib.write(_config(), epath.Path(workdir))
  assert json.loads((root / "run/config.json").read_text())["lr"] == 0.1
  assert loop.begin(_config(), workdir, "pretrain") is None  # takes the lock, writes the config
  holder = json.loads((root / "run" / lock.NAME).read_text())
  assert holder["pid"] == os.getpid()
  lock.release(workdir)
  assert not (root / "run" / lock.NAME).exists()
  (root / "run/results.json").write_text(json.dumps({"stage": "pretrain", "best_step": 2}))
  assert loop.begin(_config(), workdir, "pretrain") == {"stage": "pretrain", "best_step": 2}
  assert "already holds a finished run" in capsys.readouterr().out
  assert not (root / "run" / lock.NAME).exists()  # a finished run gives the lock back


def test_lock_on_object_storage_refuses_a_live_holder(fake_gcs):
  root, _ = fake_gcs
  (root / "run").mkdir()
  other = {"host": "another-host", "pid": 1, "since": "earlier"}
  (root / "run" / lock.NAME).write_text(json.dumps(other))
  with pytest.raises(UserError, match="in use by another run.*another-host"):
    lock.hold(f"{BUCKET}/run")
  # A holder of this host that is gone is stale: taken over.
  (root / "run" / lock.NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22}))
  lock.hold(f"{BUCKET}/run")
  lock.release(f"{BUCKET}/run")


def _fake_step(folder: Path, step: int, meta: dict) -> None:
  (folder / str(step) / "model").mkdir(parents=True)
  (folder / str(step) / "model" / "_METADATA").write_text("{}")
  (folder / str(step) / "metadata").mkdir()
  (folder / str(step) / "metadata" / "metadata").write_text(json.dumps(meta))


def test_checkpoint_metadata_and_best(fake_gcs):
  root, _ = fake_gcs
  for step in (2, 4):
    _fake_step(root / "run/checkpoints", step, {"model": "cnn:tiny", "step": step})
  checkpoints.mark_best(f"{BUCKET}/run", 2, {"val_mAP": 0.5})
  best = json.loads((root / "run/checkpoints/best.json").read_text())
  assert best == {"step": 2, "metrics": {"val_mAP": 0.5}}
  assert checkpoints.read_metadata(f"{BUCKET}/run")["step"] == 2  # the best comes first
  assert checkpoints.read_metadata(f"{BUCKET}/run/checkpoints/4")["step"] == 4
  assert checkpoints.finished_steps(f"{BUCKET}/run/checkpoints") == [2, 4]
  (root / "run/checkpoints/4/model/_METADATA").write_text("")
  with pytest.raises(UserError, match="model/_METADATA is empty"):
    checkpoints.read_metadata(f"{BUCKET}/run/checkpoints/4")


def test_prepared_dataset_opens_from_object_storage(fake_gcs, prepared):
  root, seen = fake_gcs
  shutil.copytree(prepared["speech_commands"], root / "data")
  local, remote = PreparedDataset(prepared["speech_commands"]), PreparedDataset(f"{BUCKET}/data")
  assert remote.manifest == local.manifest
  for split in local.splits:
    for a, b in zip(remote.labels_csr(split), local.labels_csr(split)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(remote.num_samples(split), local.num_samples(split))
  assert list(remote.log("notes")) == list(local.log("notes"))
  assert f"{BUCKET}/data/manifest.json" in seen


def test_metrics_on_object_storage(fake_gcs):
  root, _ = fake_gcs
  fileio.path(f"{BUCKET}/run").mkdir()
  writer = metrics.MetricWriter(f"{BUCKET}/run")
  writer.write(1, {"loss": 2.0})
  writer.write(2, {"loss": 1.0})
  writer.close()
  assert [r["loss"] for r in metrics.read_jsonl(f"{BUCKET}/run/metrics.jsonl")] == [2.0, 1.0]
  assert any(name.startswith("events.") for name in os.listdir(root / "run/tensorboard"))
  again = metrics.MetricWriter(f"{BUCKET}/run", enabled=True)  # a resume appends
  again.write(3, {"loss": 0.5})
  again.close()
  assert len(metrics.read_jsonl(f"{BUCKET}/run/metrics.jsonl")) == 3


@pytest.mark.parametrize("stage", ["prepare", "demo", "embed"])
def test_local_only_stages_say_so(stage):
  """Their writers need local files (see the README): one line, before anything is written."""
  import importlib
  module = importlib.import_module(f"audiotl_jax.stages.{stage}")
  config = config_lib.load(str(REPO / f"configs/{stage}.py"))
  with pytest.raises(UserError, match="object storage"):
    module.run(config, f"{BUCKET}/x")


def test_stages_leave_workdir_paths_to_epath():
  """No stage builds a pathlib Path from its workdir or writes it with builtin open/os.replace
  (the local-only stages go through `fileio.local_only`, which names object storage)."""
  allowed_open = {"embed.py", "import_weights.py"}  # memory-mapped arrays; the weights file read
  for path in sorted((REPO / "audiotl_jax/stages").glob("*.py")):
    text = path.read_text()
    assert not re.search(r"\bPath\(workdir\)", text), path.name
    assert "os.replace" not in text, path.name
    if path.name not in allowed_open:
      assert not re.search(r"(?<![\w.])open\(", text), path.name
