"""Paths and atomic file writes: a reader, or a resumed run, finds the old file or the new one.

Every path a run reads or writes (workdir, data folder, checkpoints) goes through `path()`, an
`etils.epath.Path`, as in Orbax and Grain: a local path behaves as pathlib does, and a `gs://...`
one goes to object storage (through gcsfs, or tensorflow's gfile where TensorFlow is installed:
the `gcs` extra). Code that must have a local file (memory maps, flock, ArrayRecord writers)
asks `is_local()` first.

A local write goes to a temporary file next to the target, is flushed and fsynced (filesystems
with delayed allocation report a full disk only then), and is renamed over the target. The
temporary name carries the process id and a random suffix, so two processes (or threads) writing
the same file on shared storage never write into, or rename away, each other's temporary file.
On any error the temporary file is removed and the error raised again, with the target's name on
an OSError that has none (a failed `write` names no file, and "no space left while writing
what?" is the user's next question). On object storage an object appears whole or not at all, so
the block writes into memory and the content is uploaded in one write when it finishes (there is
no rename to make atomic, and a failed block uploads nothing).
"""
import contextlib
import glob as globlib
import io
import json
import os
import pathlib
import secrets
import socket

from etils import epath

# The schemes `epath` sends to a remote backend; any other path is a local file.
_REMOTE = ("gs://", "s3://", "az://", "hf://")


def path(p) -> epath.Path:
  """`p` (str, pathlib.Path or epath.Path) as an `epath.Path`."""
  return p if isinstance(p, epath.Path) else epath.Path(p)


def is_local(p) -> bool:
  """Whether `p` names a file on this machine's filesystem (not object storage)."""
  return not os.fspath(p).startswith(_REMOTE)


def resolved(p) -> epath.Path:
  """`path(p)` made absolute, symlinks resolved as pathlib does, where it is local (an object
  storage path is absolute already, and epath resolves local paths only)."""
  return path(pathlib.Path(p).resolve()) if is_local(p) else path(p)


def local_only(p, what: str) -> pathlib.Path:
  """`p` as a pathlib.Path, or a one-line UserError when it is on object storage: for what
  needs local files (`what` says why, and what to do instead)."""
  if not is_local(p):
    from audiotl_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f"{p} is on object storage; {what}")
  return pathlib.Path(p)


def glob(pattern) -> list[str]:
  """The paths matching a glob `pattern`, sorted, local or on object storage (where the pattern
  is split at its first wildcard: the folder before it is listed, the rest matched below it)."""
  pattern = os.fspath(pattern)
  if is_local(pattern):
    return sorted(globlib.glob(pattern))
  parts = pattern.split("/")
  i = next((k for k, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
  base = path("/".join(parts[:i]))
  if i == len(parts):
    return [pattern] if base.exists() else []
  return sorted(str(p) for p in base.glob("/".join(parts[i:])))


def size(p) -> int:
  """Bytes in the file `p`; FileNotFoundError when there is none. (os.stat where local: epath's
  local stat also looks the owner up, which fails for a uid without a passwd entry.)"""
  return os.stat(p).st_size if is_local(p) else path(p).stat().length


@contextlib.contextmanager
def atomic(target, mode: str = "w", **open_kwargs):
  """`open(target, mode)` that replaces `target` only when the block finishes without error."""
  target = path(target)
  if not is_local(target):
    buf = io.BytesIO() if "b" in mode else io.StringIO()
    yield buf
    if "b" in mode:
      target.write_bytes(buf.getvalue())
    else:
      target.write_text(buf.getvalue())
    return
  tmp = target.with_name(f"{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
  try:
    with open(tmp, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    if isinstance(e, OSError) and e.filename in (None, str(tmp)):
      e.filename = str(target)
    raise


def write_bytes(target, data: bytes) -> epath.Path:
  with atomic(target, "wb") as f:
    f.write(data)
  return path(target)


def write_text(target, text: str) -> epath.Path:
  with atomic(target, "w", encoding="utf-8") as f:
    f.write(text)
  return path(target)


def write_json(target, obj, **dumps_kwargs) -> epath.Path:
  """`obj` as JSON with a final newline (`dumps_kwargs`: indent, sort_keys, default...)."""
  return write_text(target, json.dumps(obj, **dumps_kwargs) + "\n")


def read_json(source):
  return json.loads(path(source).read_text())


def holder_alive(holder: dict) -> bool:
  """Is the process a workdir's lock or a study's record names (`host`, `pid`) alive?

  Another host's process cannot be looked at: it is taken as alive. A zombie (exited, not yet
  reaped: an orphan under a container's PID 1 that never reaps, or one killed a moment ago) is
  not: it does no work and will never release anything."""
  pid = holder.get("pid")
  if not pid:
    return False
  if holder.get("host") != socket.gethostname():
    return True
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # alive, another user's
  try:  # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses
    state = pathlib.Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except (OSError, IndexError):
    return True  # no /proc (macOS): as before, the signal test decides
  return state not in ("Z", "X")
