"""ESC-50 (Piczak 2015): `meta/esc50.csv` (filename,fold,target,category,esc10,src_file,take) and
`audio/{filename}`; 2000 five-second clips, 50 classes, 5 folds.

The official protocol is 5-fold cross-validation: fold k is the test split and the other four are
training data. A run of the protocol is five prepares, `fold=1` ... `fold=5` (the set is small).
Validation is carved from the training folds, grouped by `src_file` (clips cut from one recording
share a fold, and must share a split), stratified by class. `validation="test"` is the legacy
protocol that reports the best epoch on the test fold: explicit, and noted in the manifest.
"""
from pathlib import Path

from audiotl_jax.data.readers.common import (LEGACY_NOTE, DatasetListing, FolderIndex, Item, carve, check_validation, legacy_validation, problem, read_table, require_dir)
from audiotl_jax.errors import UserError

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def esc50(root, fold: int = 1, *, esc10: bool = False, validation_fraction: float = 0.1,
          seed: int = 0, validation: str = "carve") -> DatasetListing:
  """ESC-50 with fold `fold` (1-5) as the test split; `esc10=True` keeps the ESC-10 subset."""
  root = require_dir(Path(root), "ESC-50 root")
  check_validation(validation)
  meta_path = root / "meta" / "esc50.csv"
  table = read_table(meta_path, COLUMNS, delimiter=",", what="ESC-50 metadata")
  folds = set()
  files = FolderIndex()
  rows, problems, seen, names = [], [], set(), {}
  for line_no, row in table:
    fname = row["filename"]
    try:
      k, target = int(row["fold"]), int(row["target"])
    except (TypeError, ValueError):
      problems.append(problem(None, fname, meta_path, f"fold and target must be integers, got "
                              f"{row['fold']!r}, {row['target']!r}", row=line_no))
      continue
    if esc10 and row["esc10"] != "True":
      continue
    if fname in seen:
      problems.append(problem(None, fname, meta_path, "duplicate id", row=line_no))
    elif not files.exists(root / "audio" / fname):
      problems.append(problem(None, fname, root / "audio" / fname, "missing file", row=line_no))
    else:
      seen.add(fname)
      folds.add(k)
      names.setdefault(target, row["category"])
      rows.append((fname, k, row["category"], row["src_file"]))
  if fold not in folds:
    raise UserError(f"ESC-50 reader option 'fold' = {fold} is not a fold of {meta_path}; "
                    f"folds: {sorted(folds)}")
  train = [r for r in rows if r[1] != fold]
  if validation == "carve":
    splits = carve([r[2] for r in train], [r[3] for r in train],
                   {"validation": validation_fraction}, seed)
  else:
    splits = ["train"] * len(train)
  items = [Item(f, root / "audio" / f, (c,), s) for (f, _, c, _), s in zip(train, splits)]
  items += [Item(f, root / "audio" / f, (c,), "test") for f, k, c, _ in rows if k == fold]
  source = {"reader": "esc50", "root": str(root), "fold": fold, "esc10": esc10,
            "validation": validation}
  if validation == "test":
    items += legacy_validation(items)
    source["note"] = LEGACY_NOTE
  else:
    source.update(validation_fraction=validation_fraction, seed=seed)
  classes = [{"id": names[t], "name": names[t]} for t in sorted(names)]
  return DatasetListing("esc10" if esc10 else "esc50", "multiclass", classes, items, problems,
                        source)
