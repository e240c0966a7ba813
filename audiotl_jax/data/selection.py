"""Which records and classes a run uses: index lists over prepared splits, never a rewrite.

Pre-training: the classes of an ontology subset (optionally k of them, drawn by seed), the training
records with at least one label among them, a held-out validation part carved from those records
(seeded; the same for every data fraction, so runs at different scales are compared on one
validation set), then a nested fraction of the rest. The test split is the dataset's own (AudioSet
eval), restricted to the same classes.
"""
import dataclasses

import numpy as np

from audiotl_jax.data import ontology as ontology_lib
from audiotl_jax.errors import UserError


@dataclasses.dataclass
class Selection:
  classes: list[dict]            # [{index, id, name}] of the targets, in target order
  class_map: np.ndarray          # dataset label index -> target index, -1 = not a target
  train: np.ndarray              # record indices into the train split
  val: np.ndarray                # record indices into the train split (held out)
  test: np.ndarray               # record indices into the test split
  description: str

  @property
  def num_classes(self) -> int:
    return len(self.classes)


def _records_with_targets(labels: list[np.ndarray], class_map: np.ndarray) -> np.ndarray:
  hit = [i for i, ls in enumerate(labels) if len(ls) and (class_map[ls] >= 0).any()]
  return np.asarray(hit, dtype=np.int64)


def pretrain(dataset, dcfg, ontology=None) -> Selection:
  """The pre-training selection for config `data` (keys: train_split, test_split, subset,
  num_classes, fraction, val_fraction, seed)."""
  if dcfg.train_split not in dataset.splits:  # before its class counts are read
    raise UserError(f"config key 'data.train_split' = {dcfg.train_split!r} is not a split of "
                    f"{dataset.path}; splits: {', '.join(dataset.splits)}")
  ontology = ontology or ontology_lib.Ontology.load()
  ds_ids = [c["id"] for c in dataset.classes]
  if dcfg.subset:
    subset = ontology.subset(dcfg.subset)
    if dcfg.get("num_classes", 0):
      subset = ontology_lib.sample_classes(subset, int(dcfg.num_classes), int(dcfg.seed))
    wanted = list(subset.mids)
  else:  # All classes of the dataset.
    wanted = list(ds_ids)
    if dcfg.get("num_classes", 0):
      order = np.random.default_rng(int(dcfg.seed)).permutation(len(wanted))
      wanted = [wanted[i] for i in sorted(order[:int(dcfg.num_classes)])]
  position = {mid: i for i, mid in enumerate(ds_ids)}
  # A class without a single training clip cannot be learnt; leaving it out keeps the head and the
  # metrics honest (a download that lacks a class says so in the description).
  counts = dataset.manifest["splits"][dcfg.train_split]["class_counts"]
  absent = [m for m in wanted if m not in position or counts[position[m]] == 0]
  targets = [m for m in wanted if m in position and counts[position[m]] > 0]
  if not targets:
    raise UserError(f"config key 'data.subset' = {dcfg.subset!r}: none of its classes occur in "
                    f"the prepared dataset {dataset.path}")
  class_map = np.full(len(ds_ids), -1, dtype=np.int32)
  for t, mid in enumerate(targets):
    class_map[position[mid]] = t
  names = {c["id"]: c.get("name", c["id"]) for c in dataset.classes}
  classes = [{"index": t, "id": m, "name": names[m]} for t, m in enumerate(targets)]

  pool = _records_with_targets(dataset.labels(dcfg.train_split), class_map)
  if len(pool) < 2:
    raise UserError(f"subset {dcfg.subset or 'all'!r} has {len(pool)} training clips in "
                    f"{dataset.path} (split {dcfg.train_split!r}); need at least 2")
  rng = np.random.default_rng(int(dcfg.seed))
  order = rng.permutation(pool)
  n_val = max(1, int(round(dcfg.val_fraction * len(pool))))
  val, rest = np.sort(order[:n_val]), order[n_val:]
  if not 0 < dcfg.fraction <= 1:
    raise UserError(f"config key 'data.fraction' must be in (0, 1], got {dcfg.fraction}")
  train = ontology_lib.fraction_indices(np.sort(rest), float(dcfg.fraction), int(dcfg.seed))
  test = _records_with_targets(dataset.labels(dcfg.test_split), class_map) \
      if dcfg.test_split else np.zeros((0,), np.int64)
  missing = f" ({len(absent)} of the subset's classes have no clips here)" if absent else ""
  desc = (f"subset {dcfg.subset or 'all'!r}: {len(targets)} classes{missing}, {len(train)} train clips "
          f"({dcfg.fraction:.0%} of {len(rest)}), {len(val)} held-out val, {len(test)} test")
  return Selection(classes, class_map, np.asarray(train), val, test, desc)


def few_shot(labels: list[np.ndarray], pool: np.ndarray, num_classes: int, k: int,
             seed: int) -> tuple[np.ndarray, str]:
  """k records per class from `pool`, drawn by `seed` (each class on its own stream, so one
  class's draw does not depend on another's size); a class with fewer keeps all it has.

  Returns the sorted record indices and a note for the run's description.
  """
  by_class = [[] for _ in range(num_classes)]
  for i in pool:
    for c in labels[i]:
      by_class[int(c)].append(int(i))
  picked, short = set(), []
  for c, members in enumerate(by_class):
    rng = np.random.default_rng([seed, c])
    take = rng.permutation(np.asarray(members, np.int64))[:k]
    picked.update(take.tolist())
    if len(members) < k:
      short.append(c)
  note = f" ({k}-shot, seed {seed}" + (f"; {len(short)} classes have fewer" if short else "") + ")"
  return np.asarray(sorted(picked), np.int64), note


def downstream(dataset, dcfg) -> Selection:
  """A downstream task uses its own splits and every class; validation must not be the test split."""
  for key in ("train_split", "val_split", "test_split"):
    if dcfg[key] not in dataset.splits:
      raise UserError(f"config key 'data.{key}' = {dcfg[key]!r} is not a split of {dataset.path}; "
                      f"splits: {', '.join(dataset.splits)}")
  if dcfg.val_split == dcfg.test_split:
    raise UserError("config keys 'data.val_split' and 'data.test_split' name the same split: "
                    "choosing the best epoch on the test split inflates test results")
  class_map = np.arange(dataset.num_classes, dtype=np.int32)
  train = np.arange(dataset.num_records(dcfg.train_split))
  if dcfg.get("fraction", 1.0) < 1.0:
    train = ontology_lib.fraction_indices(train, float(dcfg.fraction), int(dcfg.seed))
  few = ""
  if int(dcfg.get("few_shot", 0)) > 0:
    train, few = few_shot(dataset.labels(dcfg.train_split), train, dataset.num_classes,
                          int(dcfg.few_shot), int(dcfg.seed))
  val = np.arange(dataset.num_records(dcfg.val_split))
  test = np.arange(dataset.num_records(dcfg.test_split))
  desc = (f"{dataset.manifest['dataset']}: {dataset.num_classes} classes, {len(train)} train"
          f"{few}, {len(val)} val, {len(test)} test clips")
  return Selection(list(dataset.classes), class_map, train, val, test, desc)
