"""`audiotl bench --only pipeline`: 10 s 16 kHz clips from ArrayRecord to device-ready batches, as
the train loop consumes them.

Measured: Grain (read, msgpack decode, random crop, multi-hot labels, batch) plus the transfer to
a global array on the mesh, in the calling process (worker_count 0: threads) and in worker
processes. The shard is written once into `workdir` (640 MB for the full run).
"""
import json
import os
from pathlib import Path

import jax
import numpy as np

from audiotl_jax.bench import timing
from audiotl_jax.bench.frontend import FRONTEND


def write_records(root: Path, n: int, samples: int, sr: int) -> None:
  """`n` random int16 clips of `samples` in one ArrayRecord shard, with a prepared manifest."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from audiotl_jax.data import dataset, records
  manifest = root / "manifest.json"
  if manifest.exists() and json.loads(manifest.read_text()).get("format") == dataset.FORMAT:
    return  # written by an earlier run
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  writer = ArrayRecordWriter(str(root / "train-00000.array_record"), "group_size:1")
  labels = []
  for i in range(n):
    ls = sorted(set(rng.integers(0, 527, 3).tolist()))
    labels.append(ls)
    writer.write(records.encode(id=f"clip{i}", labels=ls, audio=rng.integers(
        -8000, 8000, samples).astype(np.int16)))
  writer.close()
  offsets = np.cumsum([0] + [len(x) for x in labels]).astype(np.int64)
  np.savez(root / "train.labels.npz", ids=np.asarray([f"clip{i}" for i in range(n)]),
           offsets=offsets, values=np.concatenate(labels).astype(np.int32))
  counts = np.bincount(np.concatenate(labels), minlength=527).tolist()
  for name in dataset.LOGS:
    (root / f"{name}.jsonl").write_text("")
  (root / "manifest.json").write_text(json.dumps({
      "format": dataset.FORMAT, "dataset": "bench", "task": "multilabel",
      "sample_rate": sr, "clip_seconds": samples / sr,
      "classes": [{"index": i, "id": str(i), "name": str(i)} for i in range(527)],
      "splits": {"train": {"shards": ["train-00000.array_record"], "num_records": n,
                           "class_counts": counts, "total_seconds": n * samples / sr}},
      "logs": {name: f"{name}.jsonl" for name in dataset.LOGS},
      "source": {"reader": "bench"}}))


def bench_pipeline(workdir: Path, quick: bool) -> list[dict]:
  from audiotl_jax.data import pipeline
  from audiotl_jax.data.dataset import PreparedDataset
  from audiotl_jax.train import mesh as mesh_lib
  sr, clip_seconds = FRONTEND["sample_rate"], 10.0
  n, batch = (48, 16) if quick else (2048, 64)
  samples = int(clip_seconds * sr)
  root = workdir / f"pipeline_{n}x{clip_seconds:g}s"
  write_records(root, n, samples, sr)
  prepared = PreparedDataset(root)
  mesh = mesh_lib.make_mesh()
  batch = timing.fit_batch(batch, mesh)
  cores = os.cpu_count()
  rows = []
  for workers in ([0] if quick else sorted({0, 1, max(1, cores // 2), cores})):
    it = pipeline.train_iterator(
        prepared, "train", target="multihot", batch_size=batch, clip_samples=samples, seed=0,
        process_index=0, process_count=1, worker_count=workers)
    jax.block_until_ready(mesh_lib.to_global(next(it), mesh))  # start-up is not throughput
    num_batches = 4 if quick else max(4, 2 * n // batch)
    with timing.Stopwatch() as clock:
      for _ in range(num_batches):
        jax.block_until_ready(mesh_lib.to_global(next(it), mesh))
    if hasattr(it, "close"):
      it.close()
    rate = num_batches * batch / clock.seconds
    rows.append({"bench": "pipeline", "worker_count": workers, "batch": batch,
                 "clip_seconds": clip_seconds, "clips_per_s": rate,
                 "clips_per_s_per_core": rate / cores, "cores": cores,
                 "mb_per_s": rate * samples * 2 / 1e6})
  return rows
