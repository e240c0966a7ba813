"""`audiotl bench --only pipeline`: 10 s 16 kHz clips from ArrayRecord to device-ready batches, as
the train loop consumes them.

Measured: Grain (read, msgpack decode, random crop, multi-hot labels, batch) plus the transfer to
a global array on the mesh, in the calling process (worker_count 0: threads) and in worker
processes, on shards written as `audiotl prepare` writes them (uncompressed) and as it wrote
them before issue 13 (ArrayRecord's default zstd compression), which still read. A row's reader
is "grain+direct" where the clips come from memory maps of the shards (`data/direct.py`; the
uncompressed shards), "grain" where they go through ArrayRecord (the zstd shards, and once the
uncompressed ones with AUDIOTL_DIRECT_READ=0, to compare). In the same run, the baseline the
pipeline must beat: a plain loop that reads the same clips from wav files with soundfile, crops,
stacks and transfers them (what a PyTorch DataLoader with 0 workers does). The shards and wavs
are written once into `workdir` (640 MB each for the full run).
"""
import json
import os
import statistics
from pathlib import Path

import jax
import numpy as np

from audiotl_jax.bench import timing
from audiotl_jax.bench.frontend import FRONTEND


def _clip(rng, samples):
  return rng.integers(-8000, 8000, samples).astype(np.int16)


def write_wavs(root: Path, n: int, samples: int, sr: int) -> list[Path]:
  """The clips of `write_records` (same seed, same order) as 16-bit wav files."""
  import soundfile as sf
  paths = [root / f"clip{i}.wav" for i in range(n)]
  if all(p.exists() for p in paths):
    return paths
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for p in paths:
    rng.integers(0, 527, 3)  # the labels' draws, to keep the audio draws in step
    sf.write(p, _clip(rng, samples), sr, subtype="PCM_16")
  return paths


def write_records(root: Path, n: int, samples: int, sr: int, options: str | None = None) -> None:
  """`n` random int16 clips of `samples` in one ArrayRecord shard, with a prepared manifest.
  `options` are ArrayRecord's writer options (None: what `audiotl prepare` writes)."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from audiotl_jax.data import dataset, records, shard_writer
  options = shard_writer.WRITER_OPTIONS if options is None else options
  manifest = root / "manifest.json"
  if manifest.exists() and json.loads(manifest.read_text()).get("format") == dataset.FORMAT:
    return  # written by an earlier run
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  writer = ArrayRecordWriter(str(root / "train-00000.array_record"), options)
  labels = []
  for i in range(n):
    ls = sorted(set(rng.integers(0, 527, 3).tolist()))
    labels.append(ls)
    writer.write(records.encode(id=f"clip{i}", labels=ls, audio=_clip(rng, samples)))
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


def _soundfile_rate(paths, batch, samples, num_batches, mesh, seed=0) -> float:
  """clips/s of the plain loop: shuffled wav paths -> sf.read -> random crop -> np.stack -> mesh."""
  import soundfile as sf
  from audiotl_jax.train import mesh as mesh_lib
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(paths))

  def batches():
    pos = 0
    while True:
      rows = []
      for _ in range(batch):
        audio, _ = sf.read(paths[order[pos % len(order)]], dtype="int16")
        pos += 1
        start = int(rng.integers(0, max(len(audio) - samples, 0) + 1))
        rows.append(audio[start:start + samples])
      yield {"audio": np.stack(rows)}

  it = batches()
  jax.block_until_ready(mesh_lib.to_global(next(it), mesh))
  with timing.Stopwatch() as clock:
    for _ in range(num_batches):
      jax.block_until_ready(mesh_lib.to_global(next(it), mesh))
  return num_batches * batch / clock.seconds


ROUNDS = 9  # this machine's throughput drifts by +-30 % between seconds: many short rounds


def bench_pipeline(workdir: Path, quick: bool) -> list[dict]:
  from audiotl_jax.data import pipeline
  from audiotl_jax.data.dataset import PreparedDataset
  from audiotl_jax.train import mesh as mesh_lib
  sr, clip_seconds = FRONTEND["sample_rate"], 10.0
  n, batch = (48, 16) if quick else (2048, 64)
  samples = int(clip_seconds * sr)
  mesh = mesh_lib.make_mesh()
  batch = timing.fit_batch(batch, mesh)
  cores = os.cpu_count()
  num_batches = 4 if quick else max(4, 2 * n // batch)

  def row(reader, workers, rate, **extra):
    return {"bench": "pipeline", "reader": reader, "worker_count": workers, "batch": batch,
            "clip_seconds": clip_seconds, "clips_per_s": rate,
            "clips_per_s_per_core": rate / cores, "cores": cores,
            "mb_per_s": rate * samples * 2 / 1e6, **extra}

  def grain_rate(prepared, workers):
    it = pipeline.train_iterator(
        prepared, "train", target="multihot", batch_size=batch, clip_samples=samples, seed=0,
        process_index=0, process_count=1, worker_count=workers)
    jax.block_until_ready(mesh_lib.to_global(next(it), mesh))  # start-up is not throughput
    with timing.Stopwatch() as clock:
      for _ in range(num_batches):
        jax.block_until_ready(mesh_lib.to_global(next(it), mesh))
    if hasattr(it, "close"):
      it.close()
    return num_batches * batch / clock.seconds

  # The three 0-worker readers in rounds, interleaved (a slow spell of the machine hits all three
  # alike); each row gives the median of its rounds and its own ratio to the soundfile loop of
  # the same round, then the median of those ratios.
  wavs = write_wavs(workdir / f"wav_{n}x{clip_seconds:g}s", n, samples, sr)
  shards = {}
  for records, options in (("uncompressed", None), ("zstd", "group_size:1")):
    root = workdir / f"pipeline_{n}x{clip_seconds:g}s" / records
    write_records(root, n, samples, sr, options)
    shards[records] = PreparedDataset(root)
  direct = "grain+direct" if shards["uncompressed"].source("train").mapped() else "grain"
  readers = {"soundfile": lambda: _soundfile_rate(wavs, batch, samples, num_batches, mesh),
             direct: lambda: grain_rate(shards["uncompressed"], 0)}
  if direct != "grain":  # the same shards through ArrayRecord (decided when the source is made)
    readers["grain"] = lambda: _arrayrecord(grain_rate, shards["uncompressed"])
  rounds = {name: [] for name in readers}
  for _ in range(1 if quick else ROUNDS):
    for name, rate in readers.items():
      rounds[name].append(rate())
  rows = []
  for name, rates in rounds.items():
    ratios = [r / s for r, s in zip(rates, rounds["soundfile"])]
    shard = {} if name == "soundfile" else {"records": "uncompressed"}
    rows.append(row(name, 0, statistics.median(rates), **shard, rounds=len(rates),
                    vs_soundfile=statistics.median(ratios)))
  for workers in ([] if quick else sorted({1, max(1, cores // 2), cores})):
    rows.append(row(direct, workers, grain_rate(shards["uncompressed"], workers),
                    records="uncompressed"))
  for workers in ([0] if quick else sorted({0, 1, max(1, cores // 2), cores})):
    rows.append(row("grain", workers, grain_rate(shards["zstd"], workers), records="zstd"))
  return rows


def _arrayrecord(grain_rate, prepared) -> float:
  """`grain_rate` with the direct reader off (AUDIOTL_DIRECT_READ=0), to compare against."""
  old = os.environ.get("AUDIOTL_DIRECT_READ")
  os.environ["AUDIOTL_DIRECT_READ"] = "0"
  try:
    return grain_rate(prepared, 0)
  finally:
    if old is None:
      del os.environ["AUDIOTL_DIRECT_READ"]
    else:
      os.environ["AUDIOTL_DIRECT_READ"] = old
