"""Runs on several processes: shared files have one writer, and a resume may change the count.

Two CPU processes (4 fake devices each, one coordinator) pre-train and import an AST file,
recording every file each of them writes, renames or deletes under the work folder. Process 1
may write only the files named for it (Grain's iterator state, Orbax's array metadata);
config.json, best.json, results.json, metrics and the imported checkpoint are process 0's. A
copy of the run as a preemption after its first checkpoint leaves it is then resumed here, on
one process. This file is also the workers' program (`python test_process_count.py CONFIG ROOT
WEIGHTS OUT`).
"""
import itertools
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from test_pipeline import ds  # noqa: F401  (the tiny prepared set, a fixture)

STOP, TOTAL = 2, 4  # checkpoints (and evaluations) at 2 and 4


# ------------------------------------------------------------------ the position from the step
@pytest.mark.parametrize("prefetch,workers,process", [(0, 0, (0, 1)), (2, 0, (1, 2)),
                                                      (1, 2, (0, 2))])
def test_seek_is_where_a_run_is_after_that_many_steps(ds, prefetch, workers, process):  # noqa: F811
  from audiotl_jax.data import pipeline

  def make():
    return pipeline.train_iterator(ds, "train", batch_size=4, clip_samples=1600, seed=3,
                                   process_index=process[0], process_count=process[1],
                                   prefetch=prefetch, worker_count=workers)

  ran, seeked = make(), make()
  want = [b["audio"] for b in itertools.islice(ran, 7)][5:]  # across an epoch boundary
  pipeline.seek(seeked, 5, batch_size=4, process_count=process[1])
  got = [next(seeked)["audio"] for _ in range(2)]
  for it in (ran, seeked):
    if workers:
      it.close()
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ two processes
def _record_writes(root: Path, log: list) -> None:
  """Appends (operation, path under `root`) for every write, rename and delete that goes
  through Python, in this process."""
  import builtins
  import io
  root = str(root.resolve())

  def note(op, path):
    try:
      path = os.path.realpath(os.fspath(path))
    except TypeError:
      return  # a file descriptor
    if path.startswith(root + os.sep):
      log.append((op, os.path.relpath(path, root)))

  real_open = builtins.open

  def open_(file, mode="r", *a, **kw):
    if any(c in mode for c in "wax+"):
      note("open", file)
    return real_open(file, mode, *a, **kw)

  builtins.open = io.open = open_
  for name in ("replace", "rename", "remove", "unlink"):
    real = getattr(os, name)

    def wrapped(*a, _real=real, _name=name, **kw):
      for p in a[:2] if _name in ("replace", "rename") else a[:1]:
        note(_name, p)
      return _real(*a, **kw)

    setattr(os, name, wrapped)
  real_rmtree = shutil.rmtree

  def rmtree(path, *a, **kw):
    note("rmtree", path)
    return real_rmtree(path, *a, **kw)

  shutil.rmtree = rmtree


def _work(config_path: Path, root: Path, weights: Path, out: Path) -> None:
  import jax
  import ml_collections
  from audiotl_jax.stages import import_weights, pretrain
  writes = []
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  _record_writes(root, writes)
  finished = pretrain.run(config, root / "run")
  imported = import_weights.import_weights(weights, "ast:tiny", root / "imported", frames=64)
  out.write_text(json.dumps({"finished": finished, "imported": imported, "writes": writes,
                             "processes": jax.process_count()}))


@pytest.fixture(scope="module")
def cluster(prepared, tmp_path_factory):
  """Both processes' results and writes; the run's config; the imported weights."""
  from conftest import tiny_pretrain_config
  from audiotl_jax import config as config_lib
  from test_import_weights import _weights
  from conftest import run_processes
  root = tmp_path_factory.mktemp("processes")
  config = tiny_pretrain_config(prepared["audioset"], total_steps=TOTAL)
  (root / "config.json").write_text(json.dumps(config_lib.to_dict(config)))
  weights, params = _weights(root)
  run_processes(lambda p: [sys.executable, __file__, str(root / "config.json"), str(root),
                           str(weights), str(root / f"p{p}.json")])
  out = [json.loads((root / f"p{p}.json").read_text()) for p in (0, 1)]
  return root, config, params, out


def test_only_process_0_writes_shared_files(cluster):
  root, _, _, (p0, p1) = cluster
  assert p0["processes"] == 2
  same = [{k: v for k, v in p["finished"].items() if k != "seconds"} for p in (p0, p1)]
  assert same[0] == same[1] and same[0]["total_steps"] == TOTAL
  mine = {path for _, path in p0["writes"]}
  for shared in ("run/config.json", "run/results.json", "run/checkpoints/best.json",
                 "run/metrics.jsonl", "imported/results.json", "imported/checkpoints/best.json"):
    assert any(p == shared or p.startswith(shared + ".") for p in mine), shared
  # Process 1 writes only files named for it (Grain's iterator state, Orbax's array metadata).
  assert p1["writes"] and all("process_1" in p for _, p in p1["writes"]), p1["writes"]


def test_import_on_two_processes_writes_the_checkpoint_once(cluster):
  from audiotl_jax.train import checkpoints
  from test_import_weights import _equal
  root, _, params, (p0, p1) = cluster
  assert p0["imported"] == p1["imported"]  # both return the one result
  assert json.loads((root / "imported/results.json").read_text()) == p0["imported"]
  assert checkpoints.finished_steps(root / "imported/checkpoints") == [0]
  # Process 0 alone clears the folder and writes in it (Orbax writes host arrays from it too).
  assert [op for op, p in p0["writes"] if p == "imported/checkpoints"] == ["rmtree"]
  assert not [w for w in p1["writes"] if w[1].startswith("imported")]
  loaded, _, _ = checkpoints.load_model(root / "imported")
  _equal(loaded["params"], params)


def test_resume_on_another_process_count_continues_from_the_step(cluster, pretrained,
                                                                 tmp_path, capsys):
  """Preempted on 2 processes after its first checkpoint, resumed on 1: the run goes on, from
  the data position a one-process run has at that step (the pretrained fixture is that run,
  uninterrupted)."""
  from audiotl_jax.stages import pretrain
  root, config, _, _ = cluster
  workdir = tmp_path / "resumed"
  shutil.copytree(root / "run", workdir)
  shutil.rmtree(workdir / f"checkpoints/{TOTAL}")  # what a preemption before it leaves
  for name in ("checkpoints/best.json", "results.json"):
    (workdir / name).unlink()
  assert sorted(p.name for p in (workdir / f"checkpoints/{STOP}/data").glob("process_*")) == \
      ["process_0-of-2.json", "process_1-of-2.json"]
  results = pretrain.run(config, workdir)
  assert "saved by 2 processes and resumes on 1" in capsys.readouterr().out
  assert results["total_steps"] == TOTAL and (workdir / "results.json").exists()

  def position(run):
    return json.loads((run / f"checkpoints/{TOTAL}/data/process_0-of-1.json").read_text())

  assert position(workdir) == position(pretrained)


if __name__ == "__main__":
  sys.path.insert(0, str(Path(__file__).parents[1]))
  from audiotl_jax.train import mesh as _mesh
  assert _mesh.initialize_distributed()
  _work(*(Path(a) for a in sys.argv[1:5]))
