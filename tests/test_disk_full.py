"""A full disk: atomic writes keep the old file, and the command says so on one line.

The end-to-end tests mount a 1 MiB tmpfs (root only; skipped otherwise) and fill it with a file
that leaves a few KiB, then run the real `audiotl` command in a subprocess.
"""
import contextlib
import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from audiotl_jax import cli
from audiotl_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "free space and run the same command again to resume"


# ------------------------------------------------------------------------------ atomic writes

def _fsync_fails(fd):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
  from audiotl_jax import fileio
  path = tmp_path / "metadata.json"
  fileio.write_json(path, {"old": True})
  # Filesystems with delayed allocation (ext4, XFS, NFS) report a full disk at fsync.
  monkeypatch.setattr(fileio.os, "fsync", _fsync_fails)
  with pytest.raises(OSError) as raised:
    fileio.write_json(path, {"new": "x" * 100_000})
  assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
  monkeypatch.undo()
  with pytest.raises(OSError):  # a writer that fails half-way through its own writes
    with fileio.atomic(path, "w") as f:
      f.write('{"half": ')
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  assert json.loads(path.read_text()) == {"old": True}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json"]
  fileio.write_bytes(tmp_path / "b.bin", b"\x00\x01")
  fileio.write_text(tmp_path / "t.txt", "text")
  assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
  assert (tmp_path / "t.txt").read_text() == "text"


def test_concurrent_writers_of_one_file_never_share_a_temporary_file(tmp_path):
  """Shared storage, two processes (here threads) writing the same progress file: each rename
  must find its own temporary file, and the result is always one whole write."""
  from audiotl_jax import fileio
  path, errors = tmp_path / "progress.json", []

  def writer(k):
    try:
      for i in range(200):
        fileio.write_json(path, {"writer": k, "i": i, "pad": "x" * 2000})
    except Exception as e:  # noqa: BLE001  (reported below)
      errors.append(e)

  threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors[:3]
  assert json.loads(path.read_text())["i"] == 199
  assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


# ------------------------------------------------------------------------- the one-line error

def _run_raising(monkeypatch, capsys, make_error):
  def main():
    raise make_error()
  monkeypatch.setattr(cli, "main", main)
  with pytest.raises(SystemExit) as ended:
    cli.run()
  return ended.value.code, capsys.readouterr().err


def _wrapped():
  """Raises (the chain is made by raising inside handlers) a ValueError two links above."""
  try:
    raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/data/run/ids.json")
  except OSError as e:
    try:
      raise RuntimeError("the stage failed") from e
    except RuntimeError:
      raise ValueError("while cleaning up")  # noqa: B904  (implicit chaining, on purpose)


def _tensorstore():
  # What Orbax re-raises in the main thread when a TensorStore write thread failed.
  inner = ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/2" in OCDBT database at local '
                     'file "/data/run/checkpoints/2.orbax-checkpoint-tmp/model/": Failed writing: '
                     '"/data/run/checkpoints/2.orbax-checkpoint-tmp/model/d/64f5": Failed to '
                     "write 54103 bytes to file 18: No space left on device [os_error_code='28']")
  outer = RuntimeError("Save Finalize thread (save_finalize) failed.")
  outer.__context__ = inner
  return outer


@pytest.mark.parametrize("make_error, where", [
    (lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/metadata.json"),
     " while writing /data/run/metadata.json;"),
    (_wrapped, " while writing /data/run/ids.json;"),
    (_tensorstore, " while writing /data/run/checkpoints/2.orbax-checkpoint-tmp/model/d/64f5;"),
    (lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), ";"),
])
def test_a_full_disk_is_one_line_and_exit_code_2(monkeypatch, capsys, make_error, where):
  code, err = _run_raising(monkeypatch, capsys, make_error)
  assert code == 2
  assert err == f"audiotl: error: no space left on device{where} {MESSAGE}\n"


def test_other_errors_keep_their_handling(monkeypatch, capsys):
  assert _run_raising(monkeypatch, capsys, lambda: UserError("bad key")) == (
      2, "audiotl: error: bad key\n")
  assert _run_raising(monkeypatch, capsys, KeyboardInterrupt)[0] == 130
  def denied():
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/x")
  monkeypatch.setattr(cli, "main", denied)
  with pytest.raises(PermissionError):  # not ours to explain: the traceback stays
    cli.run()


# ---------------------------------------------------------------- a real full disk, real CLI

class _Disk:
  """A mounted 1 MiB tmpfs; `fill(kib)` leaves only `kib` KiB free, `free()` undoes it."""

  def __init__(self, path: Path):
    self.path, self.filler = path, path / ".filler"

  def fill(self, kib: int) -> None:
    self.free()
    st = os.statvfs(self.path)
    self.filler.write_bytes(b"\1" * (st.f_bavail * st.f_frsize - kib * 1024))

  def free(self) -> None:
    self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def _tmpfs(root: Path):
  root.mkdir(parents=True)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)],
                           capture_output=True, text=True)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
  try:
    yield _Disk(root)
  finally:
    subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def small_disk(tmp_path):
  with _tmpfs(tmp_path / "disk") as disk:
    yield disk


def _audiotl(*args):
  return subprocess.run([sys.executable, "-m", "audiotl_jax", *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def _used(folder: Path) -> int:
  return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def _assert_one_line(proc, where=" while writing /"):
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.count("\n") == 1, proc.stderr[-3000:]
  assert proc.stderr.startswith("audiotl: error: no space left on device" + where)
  assert proc.stderr.endswith(MESSAGE + "\n")


def test_embed_on_a_full_disk_stops_with_one_line_and_resumes(prepared, pretrained, small_disk):
  def embed(workdir):
    return _audiotl("embed", "--config", "configs/embed.py", f"--config.checkpoint={pretrained}",
                    f"--config.data.dir={prepared['speech_commands']}",
                    "--config.data.splits=('train',)", "--config.batch_size=8",
                    # Several memory-mapped arrays of a few pages each.
                    "--config.layers=('embedding','block1:time_mean','block2:time_mean')",
                    "--config.progress=false", "--workdir", workdir)

  # 1. The arrays do not fit. (Memory maps on a full disk die of SIGBUS unless allocated.)
  first = small_disk.path / "emb"
  small_disk.fill(36)
  _assert_one_line(embed(first))
  assert not (first / "train/metadata.json").exists()
  small_disk.free()
  done = embed(first)
  assert done.returncode == 0, done.stderr[-3000:]
  meta = json.loads((first / "train/metadata.json").read_text())
  assert meta["num_clips"] == 40 and not (first / "train/progress.json").exists()

  # 2. The arrays fit and metadata.json does not: no empty or partial metadata.json is left.
  second = small_disk.path / "emb2"
  need = _used(first / "train") - (first / "train/metadata.json").stat().st_blocks * 512
  small_disk.fill(need // 1024 + 4)  # + progress.json, which is there until metadata is
  _assert_one_line(embed(second))
  assert not (second / "train/metadata.json").exists()
  small_disk.free()
  assert embed(second).returncode == 0
  assert json.loads((second / "train/metadata.json").read_text())["num_clips"] == 40
  for name in ("embedding", "block1_time_mean", "labels"):
    np.testing.assert_array_equal(np.load(second / f"train/{name}.npy"),
                                  np.load(first / f"train/{name}.npy"))
  assert not [p for p in small_disk.path.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def pretrain_on_a_full_disk(prepared, tmp_path_factory):
  """One pre-training run on a full disk, read by the two tests below."""
  with _tmpfs(tmp_path_factory.mktemp("pretrain_full") / "disk") as disk:
    disk.fill(64)  # config.json fits, the first checkpoint does not
    yield _audiotl("pretrain", "--config", "configs/pretrain.py:model=cnn:tiny,runlocal",
                   f"--config.data.dir={prepared['audioset']}",
                   "--config.data.subset=Human sounds", "--config.batch_size=8",
                   "--config.total_steps=4", "--config.checkpoint_every=2",
                   "--config.frontend.n_mels=32", "--config.progress=false",
                   "--workdir", disk.path / "pre")


def test_pretrain_on_a_full_disk_ends_with_the_one_line_error(pretrain_on_a_full_disk):
  proc = pretrain_on_a_full_disk
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = [line for line in proc.stderr.splitlines() if line.startswith("audiotl: error:")]
  assert len(last) == 1 and last[0].endswith(MESSAGE), proc.stderr[-3000:]
  # The file is named when the error names it (some of Orbax's writes fail at close, unnamed).
  assert last[0].startswith("audiotl: error: no space left on device")


def test_pretrain_on_a_full_disk_prints_only_that_line(pretrain_on_a_full_disk):
  _assert_one_line(pretrain_on_a_full_disk, where="")


def test_a_full_disk_leaves_the_program_cache_empty_and_the_run_going(small_disk):
  """The program cache is a cache: with no room for an entry the program still compiles and
  runs, and nothing half-written is left to be read by the next run."""
  import jax
  from audiotl_jax.train import aot
  f = jax.jit(lambda x: jax.numpy.tanh(x @ x.T) * 0.37)  # a program no other test compiles
  x = np.linspace(-1, 1, 256 * 256, dtype=np.float32).reshape(256, 256)
  cache = small_disk.path / "programs"
  small_disk.fill(8)
  compiled = aot.compile(f, x, cache_dir=cache)
  np.testing.assert_allclose(np.asarray(compiled(x)), np.tanh(x @ x.T) * 0.37, rtol=1e-5,
                             atol=1e-5)
  assert not [p for p in cache.rglob("*") if p.is_file()]
  small_disk.free()
  # With room again a program is stored (another one: once a CLI test has run in this session,
  # XLA's own cache holds `f`, and a program it serves is never stored).
  aot.compile(jax.jit(lambda x: jax.numpy.tanh(x @ x.T) * 0.38), x, cache_dir=cache)
  assert len(list(cache.glob("*.bin"))) == 1
