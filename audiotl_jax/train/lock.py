"""One training run per workdir: `workdir/.lock`, held by process 0 while a run trains.

Two runs on one workdir would each clean up and overwrite the other's checkpoints and both crash.
The lock is an `fcntl.flock` on an open file: the kernel releases it when its holder dies, even
on `kill -9`, so a lock left by a dead run is taken over without asking anyone. The file says who
holds it (host, pid, since when) for the refusal message. Where flock is not available (some
network filesystems), the file alone decides: a holder on this host whose pid is gone is stale.
Only process 0 of a multi-host job takes it; the job's other processes share the workdir with it.

On object storage (a `gs://` workdir) there is no flock and no exclusive create: the lock is the
object alone, taken by checking that none names a live holder, writing ours with a random token
and reading it back. Two runs starting in the same second may both pass, so there it is
advisory: it catches a second run started by mistake, not a race. A holder on another host is
taken to be alive (delete the object if that run is gone, as the refusal says).
"""
import datetime
import errno
import fcntl
import json
import os
import secrets
import socket
from pathlib import Path

import jax

from audiotl_jax import fileio
from audiotl_jax.errors import UserError

NAME = ".lock"
# workdir -> the open file descriptor of its lock, in this process (-1: a lock on object storage)
_held: dict[Path | str, int] = {}


def hold(workdir: Path) -> None:
  """Takes `workdir`'s lock for this process (again is a no-op), or raises a one-line UserError
  naming the run that holds it."""
  if not fileio.is_local(workdir):
    return _hold_object(fileio.path(workdir))
  workdir = Path(workdir).resolve()
  if jax.process_index() != 0 or workdir in _held:
    return
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / NAME
  for _ in range(10):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      locked, holder = _flock(fd), _holder(fd)
      if locked is None and not _dead(holder):
        raise _refusal(path, holder)
      if locked is False:
        if not (holder and _dead(holder)):
          raise _refusal(path, holder)
        # Its holder died, yet the lock is held: a child it forked (a data worker) inherited it.
        # Move the name away from that orphan and lock a new file.
        if _same_file(path, fd):
          os.unlink(path)
      elif _same_file(path, fd):
        break
      # Else the holder before us removed the file between our open and our flock: we hold a
      # lock on a name nobody else can find, and start again on the new file.
    except BaseException:
      os.close(fd)
      raise
    os.close(fd)
  else:
    raise UserError(f"could not take the lock {path}: it keeps changing; is another run starting?")
  me = {"host": socket.gethostname(), "pid": os.getpid(),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
  _held[workdir] = fd


def release(workdir: Path) -> None:
  """Gives the lock back (the file goes first, so nobody reads a holder that is gone)."""
  if not fileio.is_local(workdir):
    if _held.pop(str(workdir), None) is not None:
      (fileio.path(workdir) / NAME).unlink(missing_ok=True)
    return
  fd = _held.pop(Path(workdir).resolve(), None)
  if fd is None:
    return
  try:
    os.unlink(Path(workdir).resolve() / NAME)
  except FileNotFoundError:
    pass
  os.close(fd)


def _hold_object(workdir) -> None:
  """The advisory lock of a workdir on object storage (see the module's docstring)."""
  if jax.process_index() != 0 or str(workdir) in _held:
    return
  path = workdir / NAME
  holder = _read_object(path)
  if path.exists() and not _dead(holder):
    raise _refusal(path, holder)
  me = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
  path.write_text(json.dumps(me) + "\n")
  holder = _read_object(path)
  if holder.get("token") != me["token"]:  # another run wrote after us: it holds the lock
    raise _refusal(path, holder)
  _held[str(workdir)] = -1


def _read_object(path) -> dict:
  try:
    holder = json.loads(path.read_text() or "{}")
  except (FileNotFoundError, ValueError):
    return {}
  return holder if isinstance(holder, dict) else {}


def _flock(fd: int) -> bool | None:
  """True: locked; False: someone else holds it; None: this filesystem has no flock."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False
  except OSError as e:
    if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
      return None
    raise


def _holder(fd: int) -> dict:
  try:
    holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except ValueError:  # written half-way by a run that died then
    return {}
  return holder if isinstance(holder, dict) else {}


def _same_file(path: Path, fd: int) -> bool:
  try:
    return os.stat(path).st_ino == os.fstat(fd).st_ino
  except FileNotFoundError:
    return False


def _dead(holder: dict) -> bool:
  """Does the lock file name no live holder? (An empty file names none.) Another host's process
  cannot be looked at: it is taken to be alive."""
  if holder.get("pid") and holder.get("host") == socket.gethostname() and int(
      holder["pid"]) == os.getpid():
    return True  # our own, from a run of this process that ended without releasing it
  return not fileio.holder_alive(holder)


def _refusal(path: Path, holder: dict) -> UserError:
  who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
         f"{holder.get('since', '?')}")
  return UserError(f"{path.parent} is in use by another run ({who}); wait for it to finish or "
                   f"stop it, or use another --workdir (if that run is gone, delete {path})")
