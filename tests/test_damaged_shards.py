"""Damaged shards are named when a dataset is opened for reading and rebuilt by re-running
prepare; a killed prepare leaves no worker behind."""
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

import audiotl_jax
from audiotl_jax.data import readers, records
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare
from audiotl_jax.errors import UserError


def _listing(tmp_path: Path, n: int, seconds=0.1):
  for i in range(n):
    x = np.random.default_rng(i).uniform(-0.5, 0.5, int(seconds * 8000)).astype(np.float32)
    sf.write(tmp_path / f"w{i}.wav", x, 8000)
  (tmp_path / "l.csv").write_text(
      "path,label,split\n" + "".join(f"w{i}.wav,c{i % 3},train\n" for i in range(n)))
  return tmp_path / "l.csv"


def _records(ds: PreparedDataset, split: str) -> list[dict]:
  src = ds.source(split)
  return [records.decode(src[i]) for i in range(len(src))]


def _same(a: list[dict], b: list[dict]) -> bool:
  return len(a) == len(b) and all(
      x["id"] == y["id"] and np.array_equal(x["audio"], y["audio"])
      and np.array_equal(x["labels"], y["labels"]) for x, y in zip(a, b))


@pytest.mark.parametrize("damage", ["truncate", "empty", "delete"])
def test_damaged_shard_named_then_repaired(tmp_path, damage, capsys):
  csv = _listing(tmp_path, 8)
  out = tmp_path / "out"
  prepare(readers.csv_manifest(csv), out, shard_size=2, num_workers=1, progress=False)
  original = _records(PreparedDataset(out), "train")
  shard = out / "train-00002.array_record"
  if damage == "truncate":
    shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
  elif damage == "empty":
    shard.write_bytes(b"")
  else:
    shard.unlink()

  ds = PreparedDataset(out)  # opening the manifest alone reads no shard
  with pytest.raises(UserError) as e:
    ds.source("train")
  msg = str(e.value)
  assert "\n" not in msg and str(shard) in msg and "audiotl prepare" in msg

  capsys.readouterr()
  untouched = (out / "train-00000.array_record").stat().st_mtime_ns
  m = prepare(readers.csv_manifest(csv), out, shard_size=2, num_workers=1, progress=False)
  said = [line for line in capsys.readouterr().err.splitlines() if "rebuilding" in line]
  assert len(said) == 1 and str(shard) in said[0]
  assert (out / "train-00000.array_record").stat().st_mtime_ns == untouched  # only the damaged
  assert m["splits"]["train"]["num_records"] == 8
  assert _same(_records(PreparedDataset(out), "train"), original)


def test_several_damaged_shards_each_rebuilt(tmp_path, capsys):
  csv = _listing(tmp_path, 8)
  out = tmp_path / "out"
  prepare(readers.csv_manifest(csv), out, shard_size=2, num_workers=1, progress=False)
  original = _records(PreparedDataset(out), "train")
  a, b, c = (out / f"train-0000{k}.array_record" for k in (1, 2, 3))
  a.write_bytes(a.read_bytes()[:a.stat().st_size // 2])
  b.write_bytes(b"")
  c.unlink()
  with pytest.raises(UserError, match="train-00001.array_record"):
    PreparedDataset(out).source("train")
  capsys.readouterr()
  prepare(readers.csv_manifest(csv), out, shard_size=2, num_workers=1, progress=False)
  said = [line for line in capsys.readouterr().err.splitlines() if "rebuilding" in line]
  assert sorted(said) == sorted(
      [s for s in said if any(str(p) in s for p in (a, b, c))]) and len(said) == 3
  assert _same(_records(PreparedDataset(out), "train"), original)


_SLOW_PREPARE = """
import sys, time
from audiotl_jax.data import readers, shard_writer
real = shard_writer.load_clip
def slow(*args, **kw):  # a pace the test can kill in the middle of (also in the workers)
  time.sleep(0.2)
  return real(*args, **kw)
shard_writer.load_clip = slow
if __name__ == "__main__":
  shard_writer.prepare(readers.csv_manifest(sys.argv[1]), sys.argv[2], shard_size=2,
                       num_workers=2, progress=False)
"""


def _children(pid: int) -> set[int]:
  found = set()
  for task in Path(f"/proc/{pid}/task").glob("*/children"):
    try:
      found |= {int(x) for x in task.read_text().split()}
    except OSError:
      pass
  return found


def _alive(pid: int) -> bool:
  try:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except OSError:
    return False
  return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_kill_9_leaves_no_workers(tmp_path):
  csv = _listing(tmp_path, 40)
  # Workers are spawned: they re-import the main module, so the script is a file, not `-c`.
  script = tmp_path / "slow_prepare.py"
  script.write_text(_SLOW_PREPARE)
  env = dict(os.environ, PYTHONPATH=str(Path(audiotl_jax.__file__).parents[1]))
  proc = subprocess.Popen([sys.executable, str(script), str(csv), str(tmp_path / "out")], env=env)
  workers = set()
  try:
    deadline = time.time() + 60
    # Wait for both workers to have committed a shard: they are past start-up and busy.
    while time.time() < deadline and len(list((tmp_path / "out").glob("train-*.json"))) < 2:
      assert proc.poll() is None, "prepare ended before it could be killed"
      workers |= _children(proc.pid)
      time.sleep(0.02)
    time.sleep(random.uniform(0, 0.4))
    workers |= _children(proc.pid)
    assert len(workers) >= 2, workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(p) for p in workers):
      time.sleep(0.05)
    assert not [p for p in workers if _alive(p)], "workers outlived the killed prepare"
  finally:
    for p in workers:
      if _alive(p):
        os.kill(p, signal.SIGKILL)  # only the test's own leftovers, by pid
