"""A user's own data: a CSV manifest (`path,label[,split]`) or one folder per class.

Without an explicit split, validation and test are carved from the rows: seeded, stratified by
each row's first label, `fraction` of each label's rows, but always leaving one row of each label
in train. With two classes the task is "binary" and the second class (sorted) is the positive one.
"""
import csv
import os
from pathlib import Path

from audiotl_jax.data.readers.common import (AUDIO_EXTENSIONS, DatasetListing, FolderIndex, Item, audio_files, carve, problem, require_dir, require_file)
from audiotl_jax.errors import UserError

SPLIT_FOLDERS = ("train", "validation", "test")


def _task(rows) -> tuple[str, list[str]]:
  classes = sorted({label for _, labels, _ in rows for label in labels})
  if any(len(labels) > 1 for _, labels, _ in rows):
    return "multilabel", classes
  return ("binary" if len(classes) == 2 else "multiclass"), classes


def _carve_rows(rows, validation_fraction, test_fraction, seed):
  carved = carve([r[1][0] for r in rows], list(range(len(rows))),
                 {"validation": validation_fraction, "test": test_fraction}, seed)
  return [(rel, labels, s) for (rel, labels, _), s in zip(rows, carved)]


def _carve_validation(rows, validation_fraction, seed):
  """Validation carved from the train rows, in place: the other rows keep their split and every
  row its position (shards follow the listing's order)."""
  train = [i for i, r in enumerate(rows) if r[2] == "train"]
  carved = _carve_rows([rows[i] for i in train], validation_fraction, 0.0, seed)
  out = list(rows)
  for i, row in zip(train, carved):
    out[i] = row
  return out


def csv_manifest(path, *, validation_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 0) -> DatasetListing:
  """A CSV with header `path,label[,split]`; paths are relative to the CSV's folder.

  Splits are train, validation, test (any other name is an error). Without a split column,
  validation and test are carved; with train and test but no validation, validation is carved
  from train, as `class_folders` does (a CSV of train rows only keeps them all in train).
  Several labels per row are separated by `;` (the task is then "multilabel"). The file is read
  one row per line (a path cannot contain a newline), so a row with broken quoting costs that row
  only; each bad row is a problem with its line number.
  """
  path = require_file(Path(path), "CSV manifest")
  with open(path, newline="", encoding="utf-8-sig") as f:
    lines = f.read().splitlines()
  header = [c.strip() for c in next(csv.reader(lines[:1]), [])]
  if "path" not in header or "label" not in header:
    raise UserError(f"{path}: expected a header with columns path,label[,split], got {header}")
  files = FolderIndex()
  rows, problems, seen = [], [], set()
  for line_no, line in enumerate(lines[1:], 2):
    if not line.strip():
      continue
    try:
      fields = next(csv.reader([line], strict=True))
    except csv.Error as e:
      problems.append(problem(None, None, path, f"broken quoting ({e})", row=line_no))
      continue
    if len(fields) != len(header):
      problems.append(problem(None, None, path, f"expected {len(header)} columns "
                              f"({','.join(header)}), got {len(fields)}", row=line_no))
      continue
    row = dict(zip(header, (x.strip() for x in fields)))
    rel, split = row["path"], row.get("split", "")
    labels = tuple(dict.fromkeys(x.strip() for x in row["label"].split(";") if x.strip()))
    if split and split not in SPLIT_FOLDERS:
      # A typo (`tset`) would otherwise become a split of its own that no run ever tests on.
      raise UserError(f"{path}, row {line_no}: split {split!r} is not one of "
                      f"{', '.join(SPLIT_FOLDERS)}")
    if not rel:
      problems.append(problem(split or None, None, path, "empty path", row=line_no))
    elif not labels:
      problems.append(problem(split or None, rel, path, "no label", row=line_no))
    elif "split" in header and not split:
      problems.append(problem(None, rel, path, "empty split", row=line_no))
    elif (split, rel) in seen:
      problems.append(problem(split or None, rel, path, "duplicate id", row=line_no))
    elif not files.exists(path.parent / rel):
      problems.append(problem(split or None, rel, path.parent / rel, "missing file", row=line_no))
    else:
      seen.add((split, rel))
      rows.append((rel, labels, split))
  source = {"reader": "csv", "root": str(path.parent), "path": str(path)}
  given = {r[2] for r in rows}
  if "split" not in header:
    rows = _carve_rows(rows, validation_fraction, test_fraction, seed)
    source.update(validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed)
  elif {"train", "test"} <= given and "validation" not in given:
    rows = _carve_validation(rows, validation_fraction, seed)
    source.update(validation_fraction=validation_fraction, seed=seed)
  task, classes = _task(rows)
  items = [Item(rel, path.parent / rel, labels, split) for rel, labels, split in rows]
  return DatasetListing(path.stem, task, [{"id": c, "name": c} for c in classes], items,
                        problems, source)


def class_folders(root, *, validation_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 0) -> DatasetListing:
  """`root/<class>/**/<file>` (audio extensions: wav, flac, ogg, mp3), or with the splits given:
  `root/<split>/<class>/**/<file>` for split in train, validation, test (train and test needed).

  Without split folders, validation and test are carved. With them but without `validation`,
  validation is carved from train. Ids are paths relative to `root`.
  """
  root = require_dir(Path(root), "class-folder root")
  subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  by_split = [s for s in SPLIT_FOLDERS if s in subdirs]
  if by_split and not {"train", "test"} <= set(by_split):
    raise UserError(f"{root}: split folders need at least train/ and test/, found {by_split}")
  rows, problems = [], []
  for split in by_split or [""]:
    base = root / split if split else root
    for cls in sorted(e.name for e in os.scandir(base)
                      if e.is_dir() and not e.name.startswith((".", "_"))):
      for p in audio_files(base / cls):
        rows.append((p.relative_to(root).as_posix(), (cls,), split))
    ignored = [e.name for e in os.scandir(base) if e.is_file()
               and e.name.rpartition(".")[2].lower() in AUDIO_EXTENSIONS]
    for name in sorted(ignored):
      problems.append(problem(split or None, name, base / name, "audio outside a class folder"))
  if not rows:
    raise UserError(f"{root}: no audio files in class folders (expected root/<class>/<file>)")
  if not by_split:
    rows = _carve_rows(rows, validation_fraction, test_fraction, seed)
  elif "validation" not in by_split:
    rows = _carve_validation(rows, validation_fraction, seed)
  task, classes = _task(rows)
  items = [Item(rel, root / rel, labels, split) for rel, labels, split in rows]
  return DatasetListing(root.name, task, [{"id": c, "name": c} for c in classes], items, problems,
                        {"reader": "folders", "root": str(root), "split_folders": by_split,
                         "validation_fraction": validation_fraction,
                         "test_fraction": test_fraction, "seed": seed})
