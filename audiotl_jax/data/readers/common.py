"""What every reader shares: the listing types, problem records, folder indexes, split carving.

A reader only lists; it never decodes audio (`prepare.py` does). Rows that cannot be used (an
unknown label, a missing file, a duplicate id) go to `DatasetListing.problems` with a reason, so a
prepared dataset accounts for every row of its source. Each problem is a dict with `split`, `id`,
`path` (the file or the list it came from), `row` (the line number in that list, header = line 1)
where there is one, a `reason`, and `dropped` (True when the row was left out; False when it was
kept with what was usable, e.g. a segment that lost one of its labels). A reader reports the
problems of one row together, one after the other (prepare counts dropped rows that way).

Most readers return lists: their datasets are at most ~100k rows. A reader for a source that can
be millions of rows (AudioSet) returns `Streamed` items and a `ProblemLog`, so nothing it lists is
held in memory; `prepare` streams both.
"""
import collections
import csv
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

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
  items: Iterable[Item]  # a list, or `Streamed` (listed afresh on each pass)
  problems: "list[dict] | ProblemLog" = dataclasses.field(default_factory=list)
  source: dict = dataclasses.field(default_factory=dict)  # reader and arguments, for the manifest
  # Per split, what the source lists against what was found, per class: {split: {"listed": [..],
  # "found": [..]}} with one count per class (AudioSet's "what you have"); prepare adds "prepared".
  coverage: dict = dataclasses.field(default_factory=dict)


class Streamed:
  """Items listed afresh on every pass over them, so a 2M-row source is never held in memory.

  `passes` is a generator function; each call starts a new pass. A streaming reader rebuilds its
  listing's `problems` and `coverage` during each pass: they are complete once a pass has ended.
  """

  def __init__(self, passes: Callable[[], Iterator[Item]]):
    self._passes = passes

  def __iter__(self) -> Iterator[Item]:
    return self._passes()


class ProblemLog:
  """A listing's problems, written to a temporary JSONL file as they come (a partial AudioSet
  download has a "missing file" per absent segment: up to ~2M of them). Appending and iterating
  work like a list's; iterate only between appends."""

  def __init__(self):
    self._file = tempfile.TemporaryFile("w+", encoding="utf-8")
    self._n = 0

  def append(self, p: dict) -> None:
    self._file.write(json.dumps(p) + "\n")
    self._n += 1

  def __len__(self) -> int:
    return self._n

  def __iter__(self) -> Iterator[dict]:
    self._file.flush()
    end = self._file.tell()
    self._file.seek(0)
    try:
      for _ in range(self._n):
        yield json.loads(self._file.readline())
    finally:
      self._file.seek(end)


def problem(split, id, path, reason, *, dropped=True, row=None) -> dict:
  p = {"split": split, "id": id, "path": str(path), "reason": reason, "dropped": dropped}
  if row is not None:
    p["row"] = row
  return p


def require_dir(path: Path, what: str) -> Path:
  if path.is_file():
    raise UserError(f"{what}: {path} is a file; this needs a folder")
  if not path.is_dir():
    raise UserError(f"{what}: {path} is not a directory: it does not exist")
  return path


def require_file(path: Path, what: str) -> Path:
  if path.is_dir():
    raise UserError(f"{what}: {path} is a directory; this needs a file")
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


def audio_files(folder: Path, *, ordered: bool = True) -> Iterator[Path]:
  """Audio files under `folder`, recursively.

  `ordered`: in sorted order, so the same file wins on every run where two names collide; that
  lists each folder whole first. `ordered=False` streams in directory order, holding nothing per
  file (a split folder of AudioSet may hold 2M clips); the caller then breaks ties by path.
  A folder named like an audio file is listed (not entered): it stands where a file should, and
  prepare skips it with that reason rather than the row going missing without one.
  """
  if ordered:
    for dirpath, dirnames, filenames in os.walk(folder):
      yield from (Path(dirpath) / n
                  for n in sorted(filenames + [d for d in dirnames if _audio_name(d)])
                  if _audio_name(n))
      dirnames[:] = sorted(d for d in dirnames if not _audio_name(d))
    return
  stack = [folder]
  while stack:
    try:
      entries = os.scandir(stack.pop())
    except (FileNotFoundError, NotADirectoryError):
      continue
    with entries:
      for e in entries:
        if _audio_name(e.name):
          yield Path(e.path)
        elif e.is_dir():
          stack.append(e.path)


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
