"""DCASE development sets: acoustic scenes (2018 Task 1, 2020 Task 1A) and bird detection (2018
Task 3), each in its published layout with its official split.

Scenes (TUT Urban Acoustic Scenes 2018 / TAU Urban Acoustic Scenes 2020 Mobile, development):
`meta.csv` (TAB: filename, scene_label, identifier[, source_label]) and
`evaluation_setup/fold{k}_train.csv`, `fold{k}_evaluate.csv` (TAB: filename, scene_label); the
evaluate list is the test split. Neither set has a validation split: one is carved from train,
grouped by recording location (`identifier`) so no location is in both.

Bird detection: per set a CSV with header `itemid,datasetid,hasbird` and a `wav/` folder of
`{itemid}.wav` (freefield1010, warblrb10k, BirdVox-DCASE-20k). The challenge's development
protocol is cross-set: the set named by `test_set` is the test split, the others train (and a
carved validation split). Binary task: class 1 is "bird".
"""
import collections
import os
from pathlib import Path

from audiotl_jax.data.readers.common import (LEGACY_NOTE, DatasetListing, FolderIndex, Item, carve, check_validation, legacy_validation, problem, read_table, require_dir)
from audiotl_jax.errors import UserError, unknown_name


def _scenes(name: str, root, fold: int, validation_fraction: float, seed: int,
            validation: str) -> DatasetListing:
  root = require_dir(Path(root), f"{name} root")
  check_validation(validation)
  meta_path = root / "meta.csv"
  meta = {}
  for _, row in read_table(meta_path, ("filename", "scene_label", "identifier")):
    meta.setdefault(row["filename"], row)
  files = FolderIndex()
  rows, problems, used = {"train": [], "test": []}, [], set()
  for split, list_name in (("train", "train"), ("test", "evaluate")):
    list_path = root / "evaluation_setup" / f"fold{fold}_{list_name}.csv"
    for line_no, row in read_table(list_path, ("filename", "scene_label")):
      fname = row["filename"]
      if fname in used:
        problems.append(problem(split, fname, list_path, "duplicate id", row=line_no))
        continue
      used.add(fname)
      if fname not in meta:
        problems.append(problem(split, fname, list_path, "not in meta.csv", row=line_no))
      elif not row["scene_label"]:
        problems.append(problem(split, fname, list_path, "no scene_label", row=line_no))
      elif not files.exists(root / fname):
        problems.append(problem(split, fname, root / fname, "missing file", row=line_no))
      else:
        rows[split].append((fname, row["scene_label"], meta[fname]["identifier"]))
  for fname in meta:
    if fname not in used:
      problems.append(problem(None, fname, meta_path, f"not in fold {fold} train/evaluate lists"))
  train = rows["train"]
  if validation == "carve":
    splits = carve([r[1] for r in train], [r[2] for r in train],
                   {"validation": validation_fraction}, seed)
  else:
    splits = ["train"] * len(train)
  items = [Item(n, root / n, (s,), split) for (n, s, _), split in zip(train, splits)]
  items += [Item(n, root / n, (s,), "test") for n, s, _ in rows["test"]]
  source = {"reader": name, "root": str(root), "fold": fold, "validation": validation}
  if validation == "test":
    items += legacy_validation(items)
    source["note"] = LEGACY_NOTE
  else:
    source.update(validation_fraction=validation_fraction, seed=seed)
  scenes = sorted({r[1] for r in train + rows["test"]})
  return DatasetListing(name, "multiclass", [{"id": s, "name": s} for s in scenes], items,
                        problems, source)


def dcase2018_task1(root, fold: int = 1, *, validation_fraction: float = 0.1, seed: int = 0,
                    validation: str = "carve") -> DatasetListing:
  """TUT Urban Acoustic Scenes 2018 development set, official fold `fold`.

  Validation is carved from train: seeded, stratified by scene, whole locations (with the default
  fraction 0.1 it holds 10-15 % of train; a location has ~30 segments). `validation="test"` is the
  legacy protocol (validation = the evaluate list): explicit, and noted in the manifest.
  """
  return _scenes("dcase2018_task1", root, fold, validation_fraction, seed, validation)


def dcase2020_task1a(root, fold: int = 1, *, validation_fraction: float = 0.1, seed: int = 0,
                     validation: str = "carve") -> DatasetListing:
  """TAU Urban Acoustic Scenes 2020 Mobile development set (10 devices); as `dcase2018_task1`."""
  return _scenes("dcase2020_task1a", root, fold, validation_fraction, seed, validation)


# --- DCASE 2018 Task 3: bird audio detection --------------------------------------------------

BIRD_COLUMNS = ("itemid", "datasetid", "hasbird")


def _bird_lists(root: Path) -> list[Path]:
  """CSVs in root or one folder down whose header is `itemid,datasetid,hasbird`."""
  out = []
  for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
    for path in sorted(folder.glob("*.csv")):
      with open(path, encoding="utf-8-sig") as f:
        header = [c.strip() for c in f.readline().split(",")]
      if all(c in header for c in BIRD_COLUMNS):
        out.append(path)
  return out


def _wav_folders(root: Path) -> dict[Path, frozenset[str]]:
  """Every folder named `wav` up to three levels down, with its file names."""
  out = {}
  for dirpath, dirnames, _ in os.walk(root):
    depth = len(Path(dirpath).relative_to(root).parts)
    if depth >= 3:
      dirnames.clear()
    for d in sorted(dirnames):
      if d == "wav":
        out[Path(dirpath) / d] = frozenset(os.listdir(Path(dirpath) / d))
  return out


def dcase2018_task3(root, *, test_set: str = "BirdVox-DCASE-20k", validation_fraction: float = 0.1,
                    test_fraction: float = 0.1, seed: int = 0) -> DatasetListing:
  """Bird audio detection development data: the sets found under `root`.

  `test_set` (a `datasetid`) is the test split and the other sets are train, minus a validation
  split carved from them (seeded, stratified by set and label). `test_set=""` pools the sets and
  carves both validation and test (`test_fraction`) the same way. Each set's wav folder is the
  `wav/` folder holding most of its items.
  """
  root = require_dir(Path(root), "DCASE 2018 task 3 root")
  lists = _bird_lists(root)
  if not lists:
    raise UserError(f"{root}: no CSV with header {','.join(BIRD_COLUMNS)} here or one folder down")
  folders = _wav_folders(root)
  rows, problems, seen = [], [], set()
  for list_path in lists:
    table = read_table(list_path, BIRD_COLUMNS, delimiter=",", what="bird detection list")
    names = {f"{row['itemid']}.wav" for _, row in table}
    wav_dir = max(folders, key=lambda d: len(names & folders[d]), default=None)
    for line_no, row in table:
      set_id, item_id = row["datasetid"], row["itemid"]
      id_ = f"{set_id}/{item_id}"
      if not item_id or not set_id:
        problems.append(problem(None, id_, list_path, "empty itemid or datasetid", row=line_no))
      elif row["hasbird"] not in ("0", "1"):
        problems.append(problem(None, id_, list_path,
                                f"hasbird must be 0 or 1, got {row['hasbird']!r}", row=line_no))
      elif id_ in seen:
        problems.append(problem(None, id_, list_path, "duplicate id", row=line_no))
      elif wav_dir is None or f"{item_id}.wav" not in folders[wav_dir]:
        where = (wav_dir or root / "wav") / f"{item_id}.wav"
        problems.append(problem(None, id_, where, "missing file", row=line_no))
      else:
        seen.add(id_)
        rows.append((id_, wav_dir / f"{item_id}.wav", row["hasbird"], set_id))
  sets = sorted({r[3] for r in rows})
  strata = [f"{r[3]}:{r[2]}" for r in rows]
  if test_set:
    if test_set not in sets:
      raise unknown_name("bird detection test_set (a datasetid)", test_set, sets)
    train = [i for i, r in enumerate(rows) if r[3] != test_set]
    carved = carve([strata[i] for i in train], train, {"validation": validation_fraction}, seed)
    splits = ["test"] * len(rows)
    for i, s in zip(train, carved):
      splits[i] = s
  else:
    splits = carve(strata, list(range(len(rows))),
                   {"validation": validation_fraction, "test": test_fraction}, seed)
  items = [Item(id_, path, (label,), split) for (id_, path, label, _), split in zip(rows, splits)]
  counts = collections.Counter((r[3], r[2]) for r in rows)
  return DatasetListing(
      "dcase2018_task3", "binary", [{"id": "0", "name": "no bird"}, {"id": "1", "name": "bird"}],
      items, problems,
      {"reader": "dcase2018_task3", "root": str(root), "test_set": test_set,
       "validation_fraction": validation_fraction, "seed": seed,
       "sets": {s: {"no bird": counts[(s, "0")], "bird": counts[(s, "1")]} for s in sets}})
