"""Speech Commands v2 (Warden 2018) in its published layout.

`root/<word>/<speaker>_nohash_<k>.wav`, `validation_list.txt`, `testing_list.txt` (paths relative
to root; files in neither list are train) and `_background_noise_/*.wav`.

Two tasks: "35" (every word folder is a class) and "12" (the ten command words, `_unknown_` for
every other word, `_silence_` for 1 s crops of the background noise). Silence crops are fixed and
seeded; each noise file's first 80 % feeds train crops, the next 10 % validation and the last
10 % test, so no stretch of noise is in two splits.
"""
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from audiotl_jax.data.readers.common import DatasetListing, Item, problem, require_dir, require_file
from audiotl_jax.errors import UserError, unknown_name

# The order of TFDS `speech_commands`, so that class indices agree with it.
COMMANDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
TASKS = ("35", "12")
_NOISE_SPANS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}


def _silence_items(root: Path, counts: dict[str, int], seed: int, problems: list) -> list[Item]:
  """`counts[split]` 1 s crops of the background noise, at seeded positions in the split's span."""
  noise_dir = root / "_background_noise_"
  infos = []
  for name in sorted(os.listdir(require_dir(noise_dir, "Speech Commands background noise"))):
    if not name.lower().endswith(".wav"):
      continue
    try:
      infos.append((name, sf.info(str(noise_dir / name)).duration))
    except (sf.LibsndfileError, RuntimeError) as e:
      problems.append(problem(None, f"{SILENCE}/{name}", noise_dir / name,
                              f"unreadable background noise ({e})"))
  items = []
  for split, n in counts.items():
    lo, hi = _NOISE_SPANS[split]
    usable = [(name, lo * d, hi * d) for name, d in infos if (hi - lo) * d >= 1.0]
    if n and not usable:
      raise UserError(f"{noise_dir}: no background-noise file is long enough for 1 s silence "
                      f"crops in split {split!r} (needs a file of at least {1 / (hi - lo):.0f} s)")
    rng = np.random.default_rng([seed, list(_NOISE_SPANS).index(split)])
    for k in range(n):
      name, a, b = usable[k % len(usable)]
      start = round(float(rng.uniform(a, b - 1.0)), 3)
      items.append(Item(f"{SILENCE}/{name}@{start:.3f}", noise_dir / name, (SILENCE,), split,
                        start=start, duration=1.0))
  return items


def speech_commands(root, words: Iterable[str] | None = None, *, task: str = "35",
                    silence_per_split: dict | None = None, seed: int = 0) -> DatasetListing:
  """Speech Commands v2; `task` "35" (all word folders, or `words` in the given order) or "12".

  Task "12": classes are `COMMANDS`, `_silence_`, `_unknown_`; every other word's files are
  `_unknown_` (all of them, as in TFDS); `_silence_` has, per split, as many crops as the command
  words have files on average in that split, unless `silence_per_split` says otherwise.
  """
  root = require_dir(Path(root), "Speech Commands root")
  if task not in TASKS:
    raise unknown_name("Speech Commands task", task, TASKS)
  present = sorted(e.name for e in os.scandir(root)
                   if e.is_dir() and not e.name.startswith(("_", ".")))
  if task == "12":
    if words is not None:
      raise UserError("Speech Commands: reader option 'words' applies to task '35' only")
    missing = [w for w in COMMANDS if w not in present]
    if missing:
      raise UserError(f"Speech Commands task '12' needs the folders {missing} under {root}")
    words = present
  elif words is None:
    words = present
  else:
    words = list(words)
    for w in words:
      if w not in present:
        raise unknown_name(f"Speech Commands word (folder under {root})", w, present)
  listed = {}
  for split, list_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
    list_path = require_file(root / list_name, "Speech Commands split list")
    for line_no, line in enumerate(list_path.read_text().splitlines(), 1):
      if line.strip():
        listed[line.strip()] = (split, list_path, line_no)
  items, problems, seen = [], [], set()
  for word in words:
    label = word if task == "35" or word in COMMANDS else UNKNOWN
    for name in sorted(os.listdir(root / word)):
      if not name.lower().endswith(".wav"):
        continue
      rel = f"{word}/{name}"
      seen.add(rel)
      items.append(Item(rel, root / word / name, (label,), listed.get(rel, ("train",))[0]))
  for rel, (split, list_path, line_no) in listed.items():
    if rel.split("/")[0] in words and rel not in seen:
      problems.append(problem(split, rel, list_path, "missing file", row=line_no))
  source = {"reader": "speech_commands", "root": str(root), "task": task}
  if task == "35":
    classes = [{"id": w, "name": w} for w in words]
    source["words"] = list(words)
  else:
    classes = [{"id": c, "name": c} for c in (*COMMANDS, SILENCE, UNKNOWN)]
    if silence_per_split is None:
      silence_per_split = {s: round(sum(it.split == s and it.labels[0] in COMMANDS
                                        for it in items) / len(COMMANDS))
                           for s in _NOISE_SPANS}
    unknown_splits = set(silence_per_split) - set(_NOISE_SPANS)
    if unknown_splits:
      raise UserError(f"Speech Commands: silence_per_split names unknown splits "
                      f"{sorted(unknown_splits)}; splits: {list(_NOISE_SPANS)}")
    items += _silence_items(root, dict(silence_per_split), seed, problems)
    source.update(silence_per_split=dict(silence_per_split), seed=seed)
  return DatasetListing("speech_commands", "multiclass", classes, items, problems, source)
