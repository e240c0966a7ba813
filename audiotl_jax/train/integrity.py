"""What is wrong with a checkpoint's files, found without Orbax, and said in one line.

Restoring a damaged step folder fails with a KeyError or pages of TensorStore error, and once
blocked for many minutes instead of failing; these checks run first, so a damaged step is passed
over (`checkpoints`) before anything reads it.
"""
import json
import sys
import jax

from audiotl_jax import fileio

# Files without which an item cannot be read; any item's files must also be non-empty.
_REQUIRED = {"model": ("_METADATA",), "train": ("_METADATA",), "metadata": ("metadata",)}


def drop_broken_metrics(directory) -> None:
  """Deletes the unreadable metrics files of `directory`'s steps, naming each step once.

  Orbax reads every step's metrics when a manager starts, and one unreadable file stops it; the
  step's items may well be intact, and without its metric it is only never ranked as best.
  Every process does this itself (a file gone already is fine), so no process waits for another.
  """
  directory = fileio.path(directory)
  for path in directory.glob("*/metrics/metrics") if directory.is_dir() else []:
    if not path.parent.parent.name.isdigit():
      continue
    try:
      json.loads(path.read_text())
      continue
    except ValueError as e:
      problem = first_line(e)
    except OSError:
      continue  # gone meanwhile
    path.unlink(missing_ok=True)
    if jax.process_index() == 0:
      print(f"audiotl: warning: checkpoint step {path.parent.parent.name} in {directory} is "
            f"damaged: its metrics file is unreadable ({problem}); deleted it, so that step "
            f"never ranks as best", file=sys.stderr)


def damage(step_dir, items) -> str | None:
  """What is wrong with the files of `items` in a step folder (one line), or None."""
  step_dir = fileio.path(step_dir)
  if not step_dir.is_dir():
    return "the folder is gone"
  for item in items:
    folder = step_dir / item
    if not folder.is_dir():
      return f"{item}/ is missing"
    # walk, not rglob: epath refuses `**` (one listing per folder is what object storage costs).
    files = [root / name for root, _, names in folder.walk() for name in names]
    for name in _REQUIRED.get(item, ()):
      if not (folder / name).is_file():
        return f"{item}/{name} is missing"
    if not files:
      return f"{item}/ holds no files"
    for p in files:
      if fileio.size(p) == 0:
        return f"{p.relative_to(step_dir)} is empty"
  return None


def first_line(e: BaseException) -> str:
  """The first line of the innermost error, which names the file or array (the outer ones wrap
  it in pages of TensorStore spec)."""
  for _ in range(20):  # a chain, not a cycle, but never loop for ever
    if (e.__cause__ or e.__context__) is None:
      break
    e = e.__cause__ or e.__context__
  text = (str(e).strip().splitlines() or [""])[0]
  return f"{type(e).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"
