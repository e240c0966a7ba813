"""Balanced sampling: draw training records with probability by the rarity of their labels.

AudioSet's classes span four orders of magnitude (speech and music in most clips, many classes in
a few dozen), and a uniform pass trains the head on the frequent ones. The balanced sampler of
PANNs (Kong et al., 2020) picks a class uniformly, then a clip of that class; the probability of a
clip is then proportional to the sum over its labels of 1 / (clips with that label), which is what
`balanced_weights` returns. Counts come from the labels of the records actually selected from the
local prepared dataset, never from a file shipped with someone else's copy.

`WeightedDraws` makes the draw at every position of the stream a pure function of (seed,
position), so the stream is the same on every process layout and after a restore from a Grain
iterator state, like the shuffled stream it replaces.
"""
import grain
import numpy as np

from audiotl_jax.errors import UserError


def balanced_weights(dataset, split: str, indices, class_map=None) -> np.ndarray:
  """Per selected record, the sum over its (mapped) labels of 1 / count of that label among the
  selected records. Records without a mapped label get 0 (they are never drawn)."""
  offsets, values = dataset.labels_csr(split)
  indices = np.asarray(indices, np.int64)
  if class_map is None:
    class_map = np.arange(dataset.num_classes, dtype=np.int32)
  class_map = np.asarray(class_map)
  starts, lengths = offsets[indices], offsets[indices + 1] - offsets[indices]
  row = np.repeat(np.arange(len(indices)), lengths)
  # Position of each selected label in `values`: its record's start plus its rank in the record.
  flat = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
  cols = class_map[values[flat]]
  keep = cols >= 0
  row, cols = row[keep], cols[keep]
  # A record listing a class twice counts it once.
  pairs = np.unique(np.stack([row, cols]).astype(np.int64), axis=1)
  counts = np.bincount(pairs[1], minlength=max(int(class_map.max()) + 1, 1))
  weights = np.zeros(len(indices), np.float64)
  np.add.at(weights, pairs[0], 1.0 / counts[pairs[1]])
  return weights


def check_weights(weights, n: int) -> np.ndarray:
  weights = np.asarray(weights, np.float64)
  if weights.shape != (n,):
    raise UserError(f"sampling weights must have one entry per selected record ({n}), got shape "
                    f"{weights.shape}")
  if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
    raise UserError("sampling weights must be finite, non-negative and not all zero")
  return weights


class WeightedDraws(grain.MapDataset):
  """Position i -> parent[j] with j drawn with probability weights[j] / sum, from (seed, i).

  Its length is one "epoch" of len(parent) draws; positions past it (under `repeat()`) keep
  drawing, independently, as the shuffle it replaces keeps reshuffling.
  """

  def __init__(self, parent: grain.MapDataset, weights, seed: int):
    super().__init__(parent)
    weights = check_weights(weights, len(parent))
    self._cumulative = np.cumsum(weights / weights.sum())
    self._cumulative[-1] = 1.0  # rounding must not leave a gap at the top
    self._seed = int(seed)

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"WeightedDraws(seed={self._seed})"

  def draw(self, index: int) -> int:
    u = np.random.default_rng([self._seed, int(index)]).random()
    return int(np.searchsorted(self._cumulative, u, side="right"))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.draw(index)]
