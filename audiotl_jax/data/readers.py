"""Dataset readers: a dataset's on-disk layout -> a `DatasetListing` of labelled audio files.

A reader only lists; it never decodes audio (`prepare.py` does). Rows that cannot be used (an
unknown label, a missing file) go to `DatasetListing.problems` with a reason, so that a prepared
dataset can account for every row of its source. Each problem is a dict with `split`, `id`, `path`
(the file or the list it came from), `row` (the line number in that list, header = line 1) where
there is one, a `reason`, and `dropped` (True when the row was left out; False when it was kept
with what was usable, e.g. a segment that lost one of its labels).

Files are found through one directory listing per folder (`_FolderIndex`): AudioSet has ~2M
segments and a stat per segment on a network disk takes minutes.
"""
import collections
import csv
import dataclasses
import os
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.ontology import Ontology, read_segments

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  path: Path
  labels: tuple[str, ...]  # class ids (`DatasetListing.classes[i]["id"]`): MIDs, words, scenes
  split: str


@dataclasses.dataclass
class DatasetListing:
  name: str
  task: str  # "multilabel" | "multiclass" | "binary"
  classes: list[dict]  # [{"id": ..., "name": ...}] in index order
  items: Iterable[Item]
  problems: list[dict] = dataclasses.field(default_factory=list)
  source: dict = dataclasses.field(default_factory=dict)  # reader and arguments, for the manifest


def _problem(split, id, path, reason, *, dropped=True, row=None) -> dict:
  p = {"split": split, "id": id, "path": str(path), "reason": reason, "dropped": dropped}
  if row is not None:
    p["row"] = row
  return p


def _require_dir(path: Path, what: str) -> Path:
  if not path.is_dir():
    raise UserError(f"{what}: {path} is not a directory")
  return path


def _require_file(path: Path, what: str) -> Path:
  if not path.is_file():
    raise UserError(f"{what}: {path} does not exist")
  return path


class _FolderIndex:
  """Names in a folder, listed once on first use (a missing folder lists as empty)."""

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


def _read_tsv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
  """Rows of a tab-separated file with a header, as (line number, row dict)."""
  with open(_require_file(path, "dataset list"), newline="") as f:
    reader = csv.DictReader(f, delimiter="\t")
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
      raise UserError(f"{path}: expected a tab-separated header with columns {list(required)}, "
                      f"got {reader.fieldnames}")
    return [(reader.line_num, row) for row in reader]


# --- AudioSet ---------------------------------------------------------------------------------

# `Y{ytid}_{start}_{end}.ext` (the common download-script naming, with or without the `Y`) or
# `{ytid}.ext`. YouTube ids are 11 characters and may themselves contain `_` and `-`.
_SEGMENT_NAME = re.compile(
    r"^Y?(?P<ytid>[\w-]{11})_(?P<start>\d+(?:\.\d*)?)_(?P<end>\d+(?:\.\d*)?)$")


def _audioset_file_index(folder: Path) -> dict:
  """(ytid, start in ms) -> path, and (ytid, None) -> path for files named by the id alone."""
  index = {}
  names = sorted(_FolderIndex().names(folder))  # sorted: the same file wins on every run
  for name in names:
    stem, _, ext = name.rpartition(".")
    if ext.lower() not in AUDIO_EXTENSIONS:
      continue
    m = _SEGMENT_NAME.match(stem)
    if m:
      start = m["start"]
      index.setdefault((m["ytid"], round(float(start) * 1000)), folder / name)
      if "." not in start:
        # Integer times may be milliseconds (`{ytid}_{start_ms}_{end_ms}`); segment starts are whole
        # seconds in practice, so the two readings never collide.
        index.setdefault((m["ytid"], int(start)), folder / name)
    elif len(stem) == 11 or (len(stem) == 12 and stem[0] == "Y"):
      index.setdefault((stem[-11:], None), folder / name)
  return index


def audioset(root, splits: dict | None = None) -> DatasetListing:
  """AudioSet segments CSVs + audio under `root/audio/<split>/` (naming: see `_SEGMENT_NAME`).

  `splits` maps a split name to its segments CSV (relative to `root`, or absolute). The default
  looks for the official `balanced_train_segments.csv` and `eval_segments.csv` in `root`.
  """
  root = _require_dir(Path(root), "AudioSet root")
  splits = splits or {"balanced_train": "balanced_train_segments.csv", "eval": "eval_segments.csv"}
  onto = Ontology.load()
  known = set(onto.classes)
  classes = [{"id": mid, "name": name} for mid, name in zip(onto.classes, onto.class_names)]
  items, problems = [], []
  for split, csv_name in splits.items():
    csv_path = _require_file(root / csv_name, f"AudioSet segments list for split {split!r}")
    audio_dir = root / "audio" / split
    files = _audioset_file_index(audio_dir)
    segments, bad_rows = read_segments(csv_path, on_error="collect")
    for line_no, reason in bad_rows:
      problems.append(_problem(split, None, csv_path, reason, row=line_no))
    for seg in segments:
      seg_id = f"{seg.ytid}_{seg.start:.3f}_{seg.end:.3f}"
      labels = tuple(mid for mid in seg.labels if mid in known)
      for mid in seg.labels:
        if mid not in known:
          problems.append(_problem(split, seg_id, csv_path, f"unknown label {mid}",
                                   dropped=not labels))
      if not labels:
        continue
      path = files.get((seg.ytid, round(seg.start * 1000))) or files.get((seg.ytid, None))
      if path is None:
        problems.append(_problem(split, seg_id, audio_dir / f"Y{seg_id}.wav", "missing file"))
      else:
        items.append(Item(seg_id, path, labels, split))
  return DatasetListing("audioset", "multilabel", classes, items, problems,
                        {"reader": "audioset", "root": str(root), "splits": dict(splits)})


# --- Speech Commands v2 -----------------------------------------------------------------------

def speech_commands(root, words: Iterable[str] | None = None) -> DatasetListing:
  """Speech Commands v2: `root/<word>/*.wav`, `validation_list.txt`, `testing_list.txt`.

  Files named in neither list are train. Classes are the word folders, sorted (or `words`, in the
  given order); `_background_noise_` is not a word. Files of words not selected are left out.
  """
  root = _require_dir(Path(root), "Speech Commands root")
  present = sorted(e.name for e in os.scandir(root)
                   if e.is_dir() and not e.name.startswith(("_", ".")))
  if words is None:
    words = present
  else:
    words = list(words)
    for w in words:
      if w not in present:
        raise unknown_name(f"Speech Commands word (folder under {root})", w, present)
  listed = {}
  for split, list_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
    list_path = _require_file(root / list_name, "Speech Commands split list")
    for line_no, line in enumerate(list_path.read_text().splitlines(), 1):
      if line.strip():
        listed[line.strip()] = (split, list_path, line_no)
  items, problems, seen = [], [], set()
  for word in words:
    for name in sorted(os.listdir(root / word)):
      if not name.lower().endswith(".wav"):
        continue
      rel = f"{word}/{name}"
      seen.add(rel)
      split = listed.get(rel, ("train",))[0]
      items.append(Item(rel, root / word / name, (word,), split))
  for rel, (split, list_path, line_no) in listed.items():
    if rel.split("/")[0] in words and rel not in seen:
      problems.append(_problem(split, rel, list_path, "missing file", row=line_no))
  classes = [{"id": w, "name": w} for w in words]
  return DatasetListing("speech_commands", "multiclass", classes, items, problems,
                        {"reader": "speech_commands", "root": str(root), "words": list(words)})


# --- DCASE 2018 task 1 (TUT Urban Acoustic Scenes 2018, development) --------------------------

def _carve(labels: list[str], groups: list, fractions: dict[str, float], seed: int) -> list[str]:
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


def dcase2018_task1(root, fold: int = 1, *, validation_fraction: float = 0.1,
                    seed: int = 0) -> DatasetListing:
  """TUT Urban Acoustic Scenes 2018 development set, official fold `fold`.

  train = `fold{fold}_train.csv`, test = `fold{fold}_evaluate.csv`. The scheme has no validation
  split, so one is carved from train (`_carve`): seeded, stratified by scene and grouped by
  recording location (`identifier` in meta.csv) so that no location is in both train and
  validation. With the default fraction 0.1 it holds 10-15% of train (a location has ~30 segments).
  """
  root = _require_dir(Path(root), "DCASE 2018 task 1 root")
  meta_path = root / "meta.csv"
  meta = {row["filename"]: row for _, row in
          _read_tsv(meta_path, ("filename", "scene_label", "identifier"))}
  files = _FolderIndex()
  rows, problems, used = {"train": [], "test": []}, [], set()
  for split, list_name in (("train", "train"), ("test", "evaluate")):
    list_path = root / "evaluation_setup" / f"fold{fold}_{list_name}.csv"
    for line_no, row in _read_tsv(list_path, ("filename", "scene_label")):
      name = row["filename"]
      used.add(name)
      if name not in meta:
        problems.append(_problem(split, name, list_path, "not in meta.csv", row=line_no))
      elif not files.exists(root / name):
        problems.append(_problem(split, name, root / name, "missing file", row=line_no))
      else:
        rows[split].append((name, row["scene_label"], meta[name]["identifier"]))
  for name in meta:
    if name not in used:
      problems.append(_problem(None, name, meta_path, f"not in fold {fold} train/evaluate lists"))
  train = rows["train"]
  carved = _carve([r[1] for r in train], [r[2] for r in train],
                  {"validation": validation_fraction}, seed)
  items = [Item(n, root / n, (s,), split) for (n, s, _), split in zip(train, carved)]
  items += [Item(n, root / n, (s,), "test") for n, s, _ in rows["test"]]
  scenes = sorted({r[1] for r in train + rows["test"]})
  return DatasetListing(
      "dcase2018_task1", "multiclass", [{"id": s, "name": s} for s in scenes], items, problems,
      {"reader": "dcase2018_task1", "root": str(root), "fold": fold,
       "validation_fraction": validation_fraction, "seed": seed})


# --- generic CSV manifest ---------------------------------------------------------------------

def csv_manifest(path, *, validation_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 0) -> DatasetListing:
  """A generic CSV with header `path,label[,split]`; paths are relative to the CSV's folder.

  Several labels per row are separated by `;` (the task is then "multilabel"; with one label per
  row it is "binary" for two classes, else "multiclass"). Without a `split` column, validation and
  test are carved from the rows: seeded, stratified by each row's first label, `ceil(fraction * n)`
  rows of each label, but always leaving one row of each label in train.
  """
  path = _require_file(Path(path), "CSV manifest")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    header = [c.strip() for c in (reader.fieldnames or [])]
    if "path" not in header or "label" not in header:
      raise UserError(f"{path}: expected a header with columns path,label[,split], got {header}")
    reader.fieldnames = header
    table = [(reader.line_num, row) for row in reader]  # line_num: quoted fields may span lines
  files = _FolderIndex()
  rows, problems = [], []
  for line_no, row in table:
    rel = (row.get("path") or "").strip()
    labels = tuple(x.strip() for x in (row.get("label") or "").split(";") if x.strip())
    split = (row.get("split") or "").strip()
    if not rel:
      problems.append(_problem(split or None, None, path, "empty path", row=line_no))
    elif not labels:
      problems.append(_problem(split or None, rel, path, "no label", row=line_no))
    elif "split" in header and not split:
      problems.append(_problem(None, rel, path, "empty split", row=line_no))
    elif not files.exists(path.parent / rel):
      problems.append(_problem(split or None, rel, path.parent / rel,
                               "missing file", row=line_no))
    else:
      rows.append((rel, labels, split))
  if "split" not in header:
    carved = _carve([r[1][0] for r in rows], list(range(len(rows))),
                    {"validation": validation_fraction, "test": test_fraction}, seed)
    rows = [(rel, labels, s) for (rel, labels, _), s in zip(rows, carved)]
  classes = sorted({label for _, labels, _ in rows for label in labels})
  if any(len(labels) > 1 for _, labels, _ in rows):
    task = "multilabel"
  else:
    task = "binary" if len(classes) == 2 else "multiclass"
  items = [Item(rel, path.parent / rel, labels, split) for rel, labels, split in rows]
  source = {"reader": "csv", "root": str(path.parent), "path": str(path)}
  if "split" not in header:
    source.update(validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed)
  return DatasetListing(path.stem, task, [{"id": c, "name": c} for c in classes], items,
                        problems, source)


READERS: dict[str, Callable[..., DatasetListing]] = {
    "audioset": audioset,
    "speech_commands": speech_commands,
    "dcase2018_task1": dcase2018_task1,
    "csv": csv_manifest,
}


def get_reader(name: str) -> Callable[..., DatasetListing]:
  if name not in READERS:
    raise unknown_name("dataset reader", name, READERS)
  return READERS[name]
