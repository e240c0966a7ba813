"""Grain input pipelines over a `PreparedDataset`: static shapes, process-sharded, resumable.

Training: the selected record indices are shuffled globally (a new order every epoch, from the
seed), and process p takes positions p, p + P, p + 2P, ... of each epoch, so across processes an
epoch covers every selected record exactly once. Batches run across epoch boundaries (the stream is
infinite), so every batch is full. The iterator's `get_state()`/`set_state()` restore the exact
position, and the random crops are a function of (seed, position in the global shuffled stream), so
a restored run sees the same batches.

Resuming on another number of processes: the Grain state files are per process, so `seek` puts a
fresh iterator where a run on the new count would be after that many steps (the state is a
function of the step alone). When the number of selected records is a multiple of both counts,
that is exactly where the old run was in the global stream; otherwise each process's epoch
boundary moves by less than one record per process.

Evaluation: one finite pass, every selected record exactly once across processes, each process
padded to the same number of batches (a multi-host eval step must run on all hosts), with a `mask`
marking the padding rows. `cap_indices` picks a fixed, seeded subset to evaluate.

Labels: dataset label indices go through `class_map` (-1 drops a label). With target "multihot" a
record whose labels all map to -1 gives an all-zero row (callers select `indices` to avoid that);
with target "class" the first mapped label is the class, and a selected record without one is an
error, raised up front.
"""
import os
import re
from pathlib import Path
from typing import Sequence

import grain
import numpy as np

from audiotl_jax.data import sampling
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError

TARGETS = ("multihot", "class")


class _Labeler:
  """Dataset label indices -> a multi-hot float32 row or an int32 class, in a batch array."""

  def __init__(self, class_map: np.ndarray, num_classes: int, target: str):
    self.class_map, self.num_classes, self.target = class_map, num_classes, target

  def batch(self, size: int) -> np.ndarray:
    """Zero targets for `size` rows, for `put`."""
    if self.target == "class":
      return np.zeros(size, np.int32)
    return np.zeros((size, self.num_classes), np.float32)

  def put(self, out: np.ndarray, i: int, labels: np.ndarray) -> None:
    """Row i of a `batch(...)` array = the targets of `labels`, written in place."""
    mapped = self.class_map[labels]
    mapped = mapped[mapped >= 0]
    if self.target == "class":
      out[i] = mapped[0]
    else:
      out[i, mapped] = 1.0


class _TrainBatch(grain.transforms.Map):
  """A batch of (index, u) -> {"audio", "label"}: each record cropped at u * (slack + 1) (zero
  padding at the end if short) and written straight into the batch arrays.

  Grain sees one element per batch: its per-element bookkeeping (a thread hand-off per clip) cost
  as much as the read itself. Records are read one at a time, each straight into its row
  (`source.clip`: from a memory map of the shard where `data/direct.py` can): the source's
  many-record read (`__getitems__`) was slower on 2 cores (5,400 against 8,000 clips/s): it holds
  a batch of fresh 320 KB buffers, where one at a time reuses the same memory (BENCHMARKS.md,
  issue 13)."""

  def __init__(self, source, labeler: _Labeler, clip_samples: int):
    self.source, self.labeler, self.clip_samples = source, labeler, clip_samples

  def map(self, draws: Sequence[tuple[int, float]]) -> dict:
    # Not np.zeros: a reused 20 MB block would be cleared once more; short tails are zeroed below.
    audio = np.empty((len(draws), self.clip_samples), np.int16)
    label = self.labeler.batch(len(draws))
    for i, (index, u) in enumerate(draws):
      clip = self.source.clip(index)
      slack = clip.num_samples - self.clip_samples
      clip.copy_into(audio[i], min(int(u * (slack + 1)), slack) if slack > 0 else 0)
      self.labeler.put(label, i, clip.labels)
    return {"audio": audio, "label": label}


class _EvalBatch(grain.transforms.Map):
  """A batch of record indices (-1: padding) -> {"audio", "label", "mask", "index"}, each clip
  cropped from its start; one Grain element per batch, as `_TrainBatch`."""

  def __init__(self, source, labeler: _Labeler, clip_samples: int):
    self.source, self.labeler, self.clip_samples = source, labeler, clip_samples

  def map(self, indices: Sequence[int]) -> dict:
    indices = np.asarray(indices, np.int64)
    out = {"audio": np.empty((len(indices), self.clip_samples), np.int16),
           "label": self.labeler.batch(len(indices))}
    for i, index in enumerate(indices.tolist()):
      if index < 0:
        out["audio"][i] = 0  # padding: zero audio and label
        continue
      clip = self.source.clip(index)
      clip.copy_into(out["audio"][i], 0)
      self.labeler.put(out["label"], i, clip.labels)
    out["mask"] = (indices >= 0).astype(np.float32)
    out["index"] = np.where(indices >= 0, indices, -1).astype(np.int32)
    return out


def _allow_unparsed_absl_flags() -> None:
  """Lets grain's mp_prefetch run in programs that do not parse absl flags (absl.app does).

  With jax imported, grain 0.2.18 reads its worker-profiling absl flag when workers start, and absl
  refuses reads before parsing (google/grain#1355, fixed upstream by reading the default). Marking
  the flags parsed leaves every absl flag at its default; a later FLAGS(argv) still parses.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _processes(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (grain workers unpickle this module)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise UserError(f"process_index {process_index} is not in [0, process_count={process_count})")
  return process_index, process_count


def _local_batch(batch_size: int, process_count: int) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise UserError(f"batch_size {batch_size} (global) must be a positive multiple of the "
                    f"process count {process_count}")
  return batch_size // process_count


def _select(dataset: PreparedDataset, split: str, indices, class_map, num_classes,
            target: str) -> tuple[np.ndarray, _Labeler]:
  """Validated record indices and the labeler for them."""
  n = dataset.num_records(split)
  indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices)
  if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
    raise UserError(f"indices must be a non-empty 1-D integer array, got {indices.dtype} "
                    f"{indices.shape}")
  if indices.min() < 0 or indices.max() >= n:
    raise UserError(f"indices must lie in [0, {n}) (split {split!r} of {dataset.path}), got "
                    f"[{indices.min()}, {indices.max()}]")
  if target not in TARGETS:
    raise UserError(f"target must be one of {TARGETS}, got {target!r}")
  if class_map is None:
    class_map = np.arange(dataset.num_classes, dtype=np.int32)
    num_classes = dataset.num_classes if num_classes is None else num_classes
  elif num_classes is None:
    raise UserError("num_classes (the number of targets) is required with a class_map")
  class_map = np.asarray(class_map, np.int32)
  if class_map.shape != (dataset.num_classes,):
    raise UserError(f"class_map must have one entry per dataset class ({dataset.num_classes}), "
                    f"got shape {class_map.shape}")
  if class_map.min() < -1 or class_map.max() >= num_classes:
    raise UserError(f"class_map entries must be -1 or in [0, num_classes={num_classes})")
  if target == "class":
    offsets, values = dataset.labels_csr(split)
    valid = np.concatenate([[0], np.cumsum(class_map[values] >= 0)])
    unlabelled = indices[(valid[offsets[1:]] - valid[offsets[:-1]])[indices] == 0]
    if unlabelled.size:
      raise UserError(
          f"target 'class': {unlabelled.size} selected records of split {split!r} have no label "
          f"left after class_map, e.g. record {unlabelled[0]} "
          f"({dataset.ids(split)[unlabelled[0]]}); leave them out of `indices`")
  return indices.astype(np.int64), _Labeler(class_map, int(num_classes), target)


def train_batch_spec(*, batch_size: int, clip_samples: int, num_classes: int,
                     target: str = "multihot") -> dict:
  """{key: (shape, dtype)} of a global training batch (what `train_iterator` yields on all
  processes together), for compiling the train step before the first batch is read."""
  label = ((batch_size,), np.int32) if target == "class" else (
      (batch_size, num_classes), np.float32)
  return {"audio": ((batch_size, clip_samples), np.int16), "label": label}


def train_iterator(dataset: PreparedDataset, split: str, *, indices=None, class_map=None,
                   num_classes: int | None = None, target: str = "multihot", batch_size: int,
                   clip_samples: int, seed: int, process_index: int | None = None,
                   process_count: int | None = None, worker_count: int = 0,
                   prefetch: int = 2, weights=None) -> grain.DatasetIterator:
  """An infinite, checkpointable iterator of this process's training batches.

  Batches are {"audio": int16 (B, clip_samples), "label": float32 (B, num_classes) multi-hot or
  int32 (B,)}, B = batch_size // process_count. `num_classes` defaults to the dataset's (required
  with a `class_map`). `worker_count` > 0 decodes in that many worker processes, each keeping
  `prefetch` batches ready; with 0, a thread per core (at most 4) makes whole batches, keeping
  max(`prefetch`, threads) ready. `weights` (one per selected record, e.g.
  `sampling.balanced_weights`) draws records with replacement in proportion to them instead of
  shuffling; the draws are seeded by stream position like the shuffle. The iterator's state
  counts batches.
  """
  process_index, process_count = _processes(process_index, process_count)
  local_batch = _local_batch(batch_size, process_count)
  indices, labeler = _select(dataset, split, indices, class_map, num_classes, target)
  if len(indices) < process_count:
    raise UserError(f"{len(indices)} records cannot feed {process_count} processes")
  if not 0 <= seed < 2**32:
    raise UserError(f"seed must be in [0, 2**32), got {seed}")
  ds = grain.MapDataset.source(indices)
  if weights is None:
    ds = sampling.Shuffled(ds, seed)
  else:
    ds = sampling.WeightedDraws(ds, weights, seed)
  # Crops drawn before the process slice: a crop depends on the global position, not the layout.
  ds = (sampling.CropDraws(ds, (seed + 1) % 2**32)
        [process_index::process_count]
        .repeat()
        # Batched as indices, before any record is read: a batch is one element from here on.
        .batch(local_batch, drop_remainder=True, batch_fn=list)
        .map(_TrainBatch(dataset.source(split), labeler, clip_samples)))
  # A thread per core makes whole batches; more only contend for the GIL (2 cores: 2 threads
  # beat 1 and 4; BENCHMARKS.md, issue 13).
  threads = min(4, max(1, os.cpu_count() or 1))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=max(prefetch, threads)))
  if worker_count > 0:
    _allow_unparsed_absl_flags()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                     per_worker_buffer_size=max(prefetch, 1)))
  return iter(ds)


def saved_process_count(data_dir) -> int | None:
  """How many processes wrote the Grain iterator state in `data_dir` (a checkpoint's `data`
  item: one `process_<i>-of-<n>.json` per process); None if it holds none."""
  counts = {int(m.group(1)) for p in Path(data_dir).glob("process_*-of-*.json")
            if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", p.name))}
  if len(counts) > 1:
    raise UserError(f"{data_dir} holds iterator states of {sorted(counts)} processes at once; "
                    f"the checkpoint is damaged: resume from another step or a new workdir")
  return counts.pop() if counts else None


def seek(iterator: grain.DatasetIterator, steps: int, *, batch_size: int,
         process_count: int | None = None) -> None:
  """Moves a fresh `train_iterator` (global `batch_size`) to the batch it yields after `steps`
  batches, without reading any data: where a run on this process count is at that step."""
  steps = int(steps)
  try:
    grain.experimental.set_next_index(iterator, steps)
    return
  except NotImplementedError:
    pass  # Grain 0.2 cannot move an interleave of several workers (mp_prefetch) by index.
  # Worker w of W makes batches w, w + W, ... of this process's stream (a batch is one element
  # of the dataset the workers slice): after `steps` batches it has made ceil((steps - w) / W).
  _local_batch(batch_size, _processes(0, process_count)[1])
  state = iterator.get_state()
  try:
    workers = state["iterators_in_use_states"]
    state = {**state, "next_index_in_cycle": steps % len(workers), "iterators_in_use_states": [
        {**w_state, "next_index": -(-(steps - w) // len(workers))}
        for w, w_state in enumerate(workers)]}
  except (KeyError, TypeError) as e:
    raise UserError(f"this Grain version keeps the position of several data workers in a form "
                    f"seek() does not know ({e!r})") from e
  iterator.set_state(state)


def upgrade_position(iterator: grain.DatasetIterator, steps: int, *, batch_size: int,
                     process_count: int | None = None) -> bool:
  """Moves a `train_iterator` just restored from a checkpoint written before issue 13 to where
  that run was; True if it did. Those iterators counted records (batching came after Grain's
  index), these count batches, and both states look alike: {"next_index": n}, or that per
  worker. A state that counts `steps` batches' worth of records is such a state."""
  local_batch = _local_batch(batch_size, _processes(0, process_count)[1])
  state, steps = iterator.get_state(), int(steps)
  if local_batch == 1 or steps <= 0 or not isinstance(state, dict):
    return False
  if state.keys() == {"next_index"}:
    old = state["next_index"] == steps * local_batch
  else:
    workers = state.get("iterators_in_use_states")
    if not isinstance(workers, list) or not workers:
      return False
    made = [-(-(steps - w) // len(workers)) for w in range(len(workers))]
    old = (any(made) and [w.get("next_index") for w in workers if isinstance(w, dict)]
           == [m * local_batch for m in made])
  if old:
    seek(iterator, steps, batch_size=batch_size, process_count=process_count)
  return bool(old)


def cap_indices(indices, max_clips: int, seed: int) -> np.ndarray:
  """At most `max_clips` of `indices` (0: all), drawn by `seed` and sorted: a fixed subset, so
  every evaluation of a run, and every run with the same seed, scores the same clips."""
  indices = np.asarray(indices)
  if max_clips < 0:
    raise UserError(f"config key 'data.max_val_clips' must be >= 0 (0: no cap), got {max_clips}")
  if not max_clips or len(indices) <= max_clips:
    return indices
  pick = np.random.default_rng(int(seed)).choice(len(indices), max_clips, replace=False)
  return np.sort(indices[pick])


def _eval_indices(dataset, split, indices, class_map, num_classes, target, batch_size,
                  process_index, process_count):
  """This process's record indices padded with -1 to the common batch count, and the labeler."""
  process_index, process_count = _processes(process_index, process_count)
  local_batch = _local_batch(batch_size, process_count)
  indices, labeler = _select(dataset, split, indices, class_map, num_classes, target)
  per_process = -(-len(indices) // process_count)
  num_batches = -(-per_process // local_batch)
  mine = indices[process_index::process_count]
  padded = np.full(num_batches * local_batch, -1, np.int64)
  padded[:len(mine)] = mine
  return padded, labeler, local_batch


def num_eval_batches(dataset: PreparedDataset, split: str, *, indices=None, batch_size: int,
                     process_count: int | None = None) -> int:
  """How many batches `eval_batches` yields (the same on every process)."""
  padded, _, local_batch = _eval_indices(dataset, split, indices, None, None, "multihot",
                                         batch_size, 0, process_count)
  return len(padded) // local_batch


def eval_batches(dataset: PreparedDataset, split: str, *, indices=None, class_map=None,
                 num_classes: int | None = None, target: str = "multihot", batch_size: int,
                 clip_samples: int, process_index: int | None = None,
                 process_count: int | None = None) -> grain.DatasetIterator:
  """One pass over the selected records, as this process's share of full batches.

  Batches hold "audio", "label" (as in `train_iterator`), "mask" float32 (B,) (0 for padding rows)
  and "index" int32 (B,) (the record index in the split; -1 for padding rows, whose audio and label
  are zeros). Audio is the clip's start, zero-padded if shorter than `clip_samples`.
  """
  padded, labeler, local_batch = _eval_indices(dataset, split, indices, class_map, num_classes,
                                               target, batch_size, process_index, process_count)
  ds = (grain.MapDataset.source(padded)
        .batch(local_batch, drop_remainder=True, batch_fn=list)
        .map(_EvalBatch(dataset.source(split), labeler, clip_samples))
        .to_iter_dataset(grain.ReadOptions(num_threads=min(4, max(1, os.cpu_count() or 1)),
                                           prefetch_buffer_size=2)))
  return iter(ds)
