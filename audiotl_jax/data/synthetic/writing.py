"""Writing the synthetic trees: wav files through memory, and build-once folders with a stamp."""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from audiotl_jax.errors import UserError

_STAMP = ".synthetic.json"
_VERSION = 1


def write_wav(path, x, sr):
  pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
  # Through memory: writing to a path makes libsndfile fsync every file on close, which costs
  # more than synthesising it. The bytes are the same.
  buf = io.BytesIO()
  sf.write(buf, pcm, sr, format="WAV", subtype="PCM_16")
  Path(path).write_bytes(buf.getvalue())



def build_once(root, kind, args, build):
  """Runs build(root) unless root holds a complete stamp with these arguments.

  A stamped root is ours, so a changed call wipes it (no stale files survive); an unstamped
  non-empty root is the user's and is never touched. The stamp keeps summary["paths"] relative
  to root, so a moved tree still answers with its current paths.
  """
  root = Path(root)
  stamp = root / _STAMP
  want = json.loads(json.dumps({"kind": kind, "version": _VERSION, "args": args}))
  if stamp.is_file():
    try:
      old = json.loads(stamp.read_text())
    except ValueError:
      old = {}
    if old.get("complete") and all(old.get(k) == v for k, v in want.items()):
      return _absolute(old["summary"], root)
    shutil.rmtree(root)
  elif root.exists() and any(root.iterdir()):
    raise UserError(f"{root} is not empty and was not written by the synthetic generator (no "
                    f"{_STAMP}); choose an empty or new directory")
  root.mkdir(parents=True, exist_ok=True)
  stamp.write_text(json.dumps({**want, "complete": False}))
  summary = build(root)
  stamp.write_text(json.dumps({**want, "complete": True, "summary": summary}, indent=1))
  return _absolute(summary, root)


def _absolute(summary, root):
  paths = {k: str(root / v) for k, v in summary.get("paths", {}).items()}
  return {**summary, "root": str(root), "paths": paths}


def check_min(**values):
  for name, (value, low) in values.items():
    if value < low:
      raise UserError(f"synthetic data: {name} must be >= {low}, got {value}")

