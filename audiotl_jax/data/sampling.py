"""How training records are drawn: shuffled, or balanced by the rarity of their labels, and where
each clip is cropped.

Every draw is a pure function of (seed, position in the global stream), so the stream is the same
on every process layout and after a restore from a Grain iterator state. The draws are made with
numpy a block of positions at a time and kept: Grain's own shuffle and per-element random map
cost 20-25 us a position in Python, as much as reading and copying a 10 s clip (BENCHMARKS.md,
issue 13).

Balanced sampling: draw training records with probability by the rarity of their labels.

AudioSet's classes span four orders of magnitude (speech and music in most clips, many classes in
a few dozen), and a uniform pass trains the head on the frequent ones. The balanced sampler of
PANNs (Kong et al., 2020) picks a class uniformly, then a clip of that class; the probability of a
clip is then proportional to the sum over its labels of 1 / (clips with that label), which is what
`balanced_weights` returns. Counts come from the labels of the records actually selected from the
local prepared dataset, never from a file shipped with someone else's copy.

`WeightedDraws` replaces `Shuffled` in the stream when weights are given.
"""
import functools
import math
import threading

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


def _uniforms(seed: int, size: int, block: int) -> np.ndarray:
  return np.random.default_rng([seed, block]).random(size)


def _weighted(seed: int, size: int, cumulative: np.ndarray, block: int) -> np.ndarray:
  return np.searchsorted(cumulative, _uniforms(seed, size, block), side="right")


class _Blocks:
  """`make(block)` for blocks of positions, computed once and kept (the few most recent: Grain's
  threads read neighbouring positions, an epoch boundary at most two blocks at once)."""

  def __init__(self, make, keep: int = 4):
    self._make, self._keep, self._cache, self._lock = make, keep, {}, threading.Lock()

  def __getstate__(self) -> dict:  # Grain's worker processes: each makes its own blocks
    return {"make": self._make, "keep": self._keep}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["make"], state["keep"])

  def __call__(self, block: int):
    got = self._cache.get(block)
    if got is None:
      got = self._make(block)  # outside the lock: a block may be made twice, never wrongly
      with self._lock:
        self._cache[block] = got
        while len(self._cache) > self._keep:
          self._cache.pop(next(iter(self._cache)))
    return got


class _Seeded(grain.MapDataset):
  """A one-to-one view of `parent` whose position i is `_at(i)`, drawn from the seed."""

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent)
    self._seed = int(seed)

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"{type(self).__name__}(seed={self._seed})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._at(int(index))


class Shuffled(_Seeded):
  """Position i -> parent[perm_e[i % n]], a new order every epoch e = i // n: Grain's
  `MapDataset.shuffle` order, position for position (`grain_order`), drawn a block at a time."""

  BLOCK = 4096

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent, seed)
    self._orders = _Blocks(functools.partial(_epoch_block, self._seed, len(parent), self.BLOCK))

  def _at(self, index: int):
    epoch, k = divmod(index, len(self._parent))
    block, j = divmod(k, self.BLOCK)
    return self._parent[int(self._orders((epoch, block))[j])]


def _epoch_block(seed: int, n: int, size: int, key: tuple[int, int]) -> np.ndarray:
  epoch, block = key
  start = block * size
  return grain_order(np.arange(start, min(start + size, n)), n, (seed + epoch) % 2**32)


def grain_order(positions: np.ndarray, n: int, seed: int) -> np.ndarray:
  """Where Grain's shuffle of [0, n) with `seed` puts each of `positions`, computed for all of
  them at once: its `index_shuffle` (4 rounds of a Simon-style Feistel cipher on the smallest
  even bit width >= 16 that holds n - 1, round keys from C++'s std::seed_seq, cycle-walking
  until the value is below n), one C++ call of ~22 us per position in Grain. Kept identical, so
  a run started before this module resumes in the same order; tests compare it with Grain's."""
  if n <= 1:
    return np.zeros(len(positions), np.int64)
  bits = math.ceil(math.log2(n - 1))
  half = max(bits + bits % 2, 16) // 2
  w, mask = np.uint64(half), np.uint64((1 << half) - 1)
  keys = [np.uint64(k) & mask for k in _seed_seq(seed, 4)]

  def rotl(x, r):
    return ((x << np.uint64(r)) | (x >> (w - np.uint64(r)))) & mask

  def encrypt(v):
    left, right = v >> w, v & mask
    for k1, k2 in zip(keys[::2], keys[1::2]):
      left ^= ((rotl(right, 1) & rotl(right, 8)) ^ rotl(right, 2)) ^ k1
      right ^= ((rotl(left, 1) & rotl(left, 8)) ^ rotl(left, 2)) ^ k2
    return (left << w) | right

  end = np.uint64(n)
  if 4**half <= 4 * n:  # a walk back into [0, n) takes a few steps: walk each position
    out = np.asarray(positions, np.uint64).copy()
    todo = np.arange(len(out))
    while todo.size:
      out[todo] = encrypt(out[todo])
      todo = todo[out[todo] >= end]
    return out.astype(np.int64)
  # The domain is at least 2**16: for a small n a walk takes thousands of steps. Encrypt the
  # whole domain once, then jump pointers: after round r, nxt[y] is the first value below n on
  # y's path, or the 2**r-th step of it; log2(domain) rounds settle every path that has one.
  nxt = encrypt(np.arange(4**half, dtype=np.uint64))
  for _ in range(2 * half + 1):
    far = nxt >= end
    if not far[:n].any():
      break
    nxt[far] = nxt[nxt[far]]
  return nxt[np.asarray(positions, np.int64)].astype(np.int64)


def _seed_seq(seed: int, count: int) -> list[int]:
  """`std::seed_seq{seed}.generate()` of `count` 32-bit words, as the C++ standard defines it."""
  m32, out, n = 0xFFFFFFFF, [0x8B8B8B8B] * count, count
  t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else 3 if n >= 7 else (n - 1) // 2
  p, q, m = (n - t) // 2, (n - t) // 2 + t, max(2, n)
  mix = lambda x: x ^ (x >> 27)  # noqa: E731
  for k in range(m):
    r1 = 1664525 * mix(out[k % n] ^ out[(k + p) % n] ^ out[(k - 1) % n]) & m32
    r2 = (r1 + (1 if k == 0 else seed + k % n if k == 1 else k % n)) & m32
    out[(k + p) % n] = (out[(k + p) % n] + r1) & m32
    out[(k + q) % n] = (out[(k + q) % n] + r2) & m32
    out[k % n] = r2
  for k in range(m, m + n):
    r3 = 1566083941 * mix((out[k % n] + out[(k + p) % n] + out[(k - 1) % n]) & m32) & m32
    r4 = (r3 - k % n) & m32
    out[(k + p) % n] ^= r3
    out[(k + q) % n] ^= r4
    out[k % n] = r4
  return out


class CropDraws(_Seeded):
  """Position i -> (parent[i], u) with u uniform in [0, 1) from (seed, i): where the clip at that
  position is cropped (`pipeline._TrainBatch` places the crop at u * (slack + 1))."""

  BLOCK = 4096

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent, seed)
    self._draws = _Blocks(functools.partial(_uniforms, self._seed, self.BLOCK))

  def _at(self, index: int):
    block, k = divmod(index, self.BLOCK)
    return self._parent[index], float(self._draws(block)[k])


class WeightedDraws(_Seeded):
  """Position i -> parent[j] with j drawn with probability weights[j] / sum, from (seed, i), a
  block of positions at a time.

  Its length is one "epoch" of len(parent) draws; positions past it (under `repeat()`) keep
  drawing, independently, as the shuffle it replaces keeps reshuffling.
  """

  BLOCK = 4096

  def __init__(self, parent: grain.MapDataset, weights, seed: int):
    super().__init__(parent, seed)
    weights = check_weights(weights, len(parent))
    cumulative = np.cumsum(weights / weights.sum())
    cumulative[-1] = 1.0  # rounding must not leave a gap at the top
    self._draws = _Blocks(functools.partial(_weighted, self._seed, self.BLOCK, cumulative))

  def draw(self, index: int) -> int:
    block, k = divmod(int(index), self.BLOCK)
    return int(self._draws(block)[k])

  def _at(self, index: int):
    return self._parent[self.draw(index)]
