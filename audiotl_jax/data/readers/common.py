"""What every reader shares: the listing types, problem records, folder indexes, split carving.

A reader only lists; it never decodes audio (`prepare.py` does). Rows that cannot be used (an
unknown label, a missing file, a duplicate id) go to `DatasetListing.problems` with a reason, so a
prepared dataset accounts for every row of its source. Each problem is a dict with `split`, `id`,
`path` (the file or the list it came from), `row` (the line number in that list, header = line 1)
where there is one, a `reason`, and `dropped` (True when the row was left out; False when it was
kept with what was usable, e.g. a segment that lost one of its labels).
"""
import collections
import csv
import dataclasses
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from audiotl_jax.errors import UserError

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")
# Written into the manifest of a listing made with `validation="test"`, so no reader of the
# results can miss it.
LEGACY_NOTE = ("legacy protocol: the validation split is a copy of the test split, so model "
               "selection sees the test set and test results are optimistic")


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  path: Path
  labels: tuple[str, ...]  # class ids (`DatasetListing.classes[i]["id"]`): MIDs, words, scenes
  split: str
  # A span of the file (seconds): most items are whole files; speech commands' `_silence_`
  # class is fixed 1 s crops of long background-noise recordings.
  start: float = 0.0
  duration: float | None = None


@dataclasses.dataclass
class DatasetListing:
  name: str
  task: str  # "multilabel" | "multiclass" | "binary"
  classes: list[dict]  # [{"id": ..., "name": ...}] in index order
  items: Iterable[Item]
  problems: list[dict] = dataclasses.field(default_factory=list)
  source: dict = dataclasses.field(default_factory=dict)  # reader and arguments, for the manifest
  # Per split, what the source lists against what was found, per class: {split: {"listed": [..],
  # "found": [..]}} with one count per class (AudioSet's "what you have"); prepare adds "prepared".
  coverage: dict = dataclasses.field(default_factory=dict)


def problem(split, id, path, reason, *, dropped=True, row=None) -> dict:
  p = {"split": split, "id": id, "path": str(path), "reason": reason, "dropped": dropped}
  if row is not None:
    p["row"] = row
  return p


def require_dir(path: Path, what: str) -> Path:
  if not path.is_dir():
    raise UserError(f"{what}: {path} is not a directory")
  return path


def require_file(path: Path, what: str) -> Path:
  if not path.is_file():
    raise UserError(f"{what}: {path} does not exist")
  return path


class FolderIndex:
  """Names in a folder, listed once on first use (a missing folder lists as empty).

  One directory listing per folder instead of a stat per file: AudioSet has ~2M segments and a
  stat per segment on a network disk takes minutes.
  """

  def __init__(self):
    self._names: dict[Path, frozenset[str]] = {}

  def names(self, folder: Path) -> frozenset[str]:
    if folder not in self._names:
      try:
        with os.scandir(folder) as it:
          self._names[folder] = frozenset(e.name for e in it)
      except (FileNotFoundError, NotADirectoryError):
        self._names[folder] = frozenset()
    return self._names[folder]

  def exists(self, path: Path) -> bool:
    return path.name in self.names(path.parent)


def _audio_name(name: str) -> bool:
  return name.rpartition(".")[2].lower() in AUDIO_EXTENSIONS


def audio_files(folder: Path) -> list[Path]:
  """Audio files under `folder`, recursively, sorted (the same file wins on every run).

  A folder named like an audio file is listed (not entered): it stands where a file should, and
  prepare skips it with that reason rather than the row going missing without one.
  """
  out = []
  for dirpath, dirnames, filenames in os.walk(folder):
    out += [Path(dirpath) / n for n in sorted(filenames + [d for d in dirnames if _audio_name(d)])
            if _audio_name(n)]
    dirnames[:] = sorted(d for d in dirnames if not _audio_name(d))
  return out


def read_table(path: Path, required: tuple[str, ...], *, delimiter: str = "\t",
               what: str = "dataset list") -> list[tuple[int, dict]]:
  """Rows of a delimited file with a header, as (line number, row dict)."""
  with open(require_file(path, what), newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f, delimiter=delimiter)
    fields = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in fields]
    if missing:
      sep = "tab" if delimiter == "\t" else repr(delimiter)
      raise UserError(f"{path}: expected a {sep}-separated header with columns {list(required)}, "
                      f"got {fields}")
    reader.fieldnames = fields
    return [(reader.line_num, {k: (v or "").strip() if isinstance(v, str) else v
                               for k, v in row.items()}) for row in reader]


def carve(labels: list[str], groups: list, fractions: dict[str, float], seed: int) -> list[str]:
  """A split name per row: held-out splits of whole groups, stratified by label; the rest "train".

  Each group goes with the label most of its rows carry. Per label, groups are taken in a seeded
  random order into each held-out split until it has `fraction` of the label's rows (so it gets
  that plus at most one group), always leaving one group of the label in train.
  """
  rows_of = collections.defaultdict(list)
  for i, g in enumerate(groups):
    rows_of[g].append(i)
  groups_of = collections.defaultdict(list)
  for g in sorted(rows_of):
    label = collections.Counter(labels[i] for i in rows_of[g]).most_common(1)[0][0]
    groups_of[label].append(g)
  rng = np.random.default_rng(seed)
  out = ["train"] * len(labels)
  for label in sorted(groups_of):
    gs = [groups_of[label][j] for j in rng.permutation(len(groups_of[label]))]
    total = sum(len(rows_of[g]) for g in gs)
    for split, fraction in fractions.items():
      taken = 0
      while taken < fraction * total and len(gs) > 1:
        for i in rows_of[gs.pop()]:
          out[i] = split
          taken += 1
  return out


def check_validation(validation: str, choices=("carve", "test")) -> None:
  if validation not in choices:
    raise UserError(f"reader option 'validation' must be one of {list(choices)} ('test' is the "
                    f"legacy protocol that selects on the test set), got {validation!r}")


def legacy_validation(items: list[Item]) -> list[Item]:
  """The test items again, as split "validation" (the legacy protocol; see `LEGACY_NOTE`)."""
  return [dataclasses.replace(it, split="validation") for it in items if it.split == "test"]
