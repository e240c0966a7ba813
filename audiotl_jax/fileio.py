"""Atomic file writes: a reader, or a resumed run, finds the old file or the new one, never half.

A write goes to a temporary file next to the target, is flushed and fsynced (filesystems with
delayed allocation report a full disk only then), and is renamed over the target. The temporary
name carries the process id and a random suffix, so two processes (or threads) writing the same
file on shared storage never write into, or rename away, each other's temporary file. On any
error the temporary file is removed and the error raised again, with the target's name on an
OSError that has none (a failed `write` names no file, and "no space left while writing what?"
is the user's next question).
"""
import contextlib
import json
import os
import secrets
from pathlib import Path


@contextlib.contextmanager
def atomic(path, mode: str = "w", **open_kwargs):
  """`open(path, mode)` that replaces `path` only when the block finishes without error."""
  path = Path(path)
  tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
  try:
    with open(tmp, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    if isinstance(e, OSError) and e.filename in (None, str(tmp)):
      e.filename = str(path)
    raise


def write_bytes(path, data: bytes) -> Path:
  with atomic(path, "wb") as f:
    f.write(data)
  return Path(path)


def write_text(path, text: str) -> Path:
  with atomic(path, "w", encoding="utf-8") as f:
    f.write(text)
  return Path(path)


def write_json(path, obj, **dumps_kwargs) -> Path:
  """`obj` as JSON with a final newline (`dumps_kwargs`: indent, sort_keys, default...)."""
  return write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")
