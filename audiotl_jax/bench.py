"""`audiotl bench`: throughput of train steps, the frontend, the input pipeline and the scores;
prepare's memory at growing dataset sizes (`bench_prepare.py`); AST (`bench_ast.py`).

Each benchmark warms up (compilation excluded), then times whole steps with the result fetched
(`block_until_ready`), and reports the median of the repeats. Results are printed as a table and
written to `workdir/bench.json` with the machine description, for BENCHMARKS.md.
"""
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiotl_jax import frontend, models, transferability
from audiotl_jax import bench_ast, bench_prepare
from audiotl_jax.errors import unknown_name

FRONTEND = dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=64, fmin=50.0, fmax=8000.0)


def _time(fn, repeats: int) -> float:
  """Median seconds of `fn()`; `fn` must block until its result is ready."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def time_train_step(model, fc, norm, data, mesh, defaults, *, frames: int,
                    repeats: int) -> tuple[float, float, int]:
  """The real pre-training step for `model` (featurizer, augmentation, BCE, the configured
  optimizer), compiled once, then timed: (compile seconds, median step seconds, parameters).
  Shared by every train-step benchmark so they all time the same thing."""
  from audiotl_jax.train import mesh as mesh_lib, state as state_lib, steps
  tx = state_lib.make_optimizer(defaults.optim, total_steps=1000)
  state, shardings = state_lib.create(model, tx, mesh, frames=frames, n_mels=fc.n_mels, seed=0)
  num_params = models.count_params(state.params)
  step = steps.jit_train_step(steps.make_train_step(
      model, steps.make_featurizer(fc, norm), tx, loss_fn=steps.bce_loss,
      augment=defaults.augment, num_classes=527, target="multihot"), shardings, mesh)
  g = mesh_lib.to_global(data, mesh)
  holder = {"state": state}
  del state  # The holder owns it: each step donates and replaces it.

  def run():
    holder["state"], m = step(holder["state"], g)
    m["loss"].block_until_ready()

  t0 = time.perf_counter()
  run()  # Compile.
  compile_s = time.perf_counter() - t0
  sec = _time(run, repeats)
  holder.clear()  # Free the state before the caller builds the next model.
  return compile_s, sec, num_params


def bench_train_step(quick: bool) -> list[dict]:
  from audiotl_jax import config as config_lib
  from audiotl_jax.train import mesh as mesh_lib
  defaults = config_lib.load("pretrain.py")  # The optimizer and augmentation a real run uses.
  rows = []
  clip_seconds, batch = (1.0, 8) if quick else (10.0, 16)
  samples = int(clip_seconds * FRONTEND["sample_rate"])
  fc = ml_collections.ConfigDict(FRONTEND)
  frames = frontend.num_frames(samples, fc.hop_length)
  mesh = mesh_lib.make_mesh()
  batch = max(batch, mesh.devices.size) // mesh.devices.size * mesh.devices.size
  rng = np.random.default_rng(0)
  data = {"audio": rng.integers(-8000, 8000, (batch, samples)).astype(np.int16),
          "label": (rng.random((batch, 527)) < 0.02).astype(np.float32)}
  names = ["cnn:tiny"] if quick else ["cnn:S", "crnn:S", "dcase_cnn"]
  for name in names:
    model = models.get_model(name, num_classes=527)
    compile_s, sec, num_params = time_train_step(
        model, fc, {"mean": -30.0, "std": 15.0}, data, mesh, defaults, frames=frames,
        repeats=2 if quick else 5)
    rows.append({"bench": "train_step", "model": name, "clip_seconds": clip_seconds,
                 "batch": batch, "clips_per_s": batch / sec, "step_s": sec,
                 "compile_s": compile_s, "params": num_params})
  return rows


def bench_frontend(quick: bool) -> list[dict]:
  import librosa
  n, clip_seconds = (8, 1.0) if quick else (64, 10.0)
  sr = FRONTEND["sample_rate"]
  audio = np.random.default_rng(0).standard_normal((n, int(clip_seconds * sr))).astype(np.float32)
  audio *= 0.1
  kw = {k: FRONTEND[k] for k in ("n_fft", "hop_length", "n_mels", "fmin", "fmax")}
  fn = jax.jit(lambda x: frontend.log_mel(x, sr, **kw))
  x = jnp.asarray(audio)
  fn(x).block_until_ready()
  sec_jax = _time(lambda: fn(x).block_until_ready(), 3 if quick else 10)

  def lib():
    for clip in audio:
      librosa.power_to_db(librosa.feature.melspectrogram(y=clip, sr=sr, **kw), ref=1.0,
                          top_db=None)

  lib()
  sec_lib = _time(lib, 1 if quick else 3)
  return [{"bench": "frontend", "impl": "jax log_mel (jit)", "clips": n,
           "clip_seconds": clip_seconds, "clips_per_s": n / sec_jax},
          {"bench": "frontend", "impl": "librosa melspectrogram + power_to_db", "clips": n,
           "clip_seconds": clip_seconds, "clips_per_s": n / sec_lib}]


def _bench_records(root: Path, n: int, samples: int, sr: int) -> None:
  """`n` random int16 clips of `samples` in one ArrayRecord shard, with a prepared manifest."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from audiotl_jax.data import prepare, records
  manifest = root / "manifest.json"
  if manifest.exists() and json.loads(manifest.read_text()).get("format") == prepare.FORMAT:
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
  for name in prepare.LOGS:
    (root / f"{name}.jsonl").write_text("")
  (root / "manifest.json").write_text(json.dumps({
      "format": prepare.FORMAT, "dataset": "bench", "task": "multilabel",
      "sample_rate": sr, "clip_seconds": samples / sr,
      "classes": [{"index": i, "id": str(i), "name": str(i)} for i in range(527)],
      "splits": {"train": {"shards": ["train-00000.array_record"], "num_records": n,
                           "class_counts": counts, "total_seconds": n * samples / sr}},
      "logs": {name: f"{name}.jsonl" for name in prepare.LOGS}, "source": {"reader": "bench"}}))


def bench_pipeline(workdir: Path, quick: bool) -> list[dict]:
  """10 s 16 kHz clips from ArrayRecord to device-ready batches, as the train loop consumes them.

  Measured: Grain (read, msgpack decode, random crop, multi-hot labels, batch) plus the transfer
  to a global array on the mesh, in the calling process (worker_count 0: threads) and in worker
  processes. The shard is written once into `workdir` (640 MB for the full run).
  """
  from audiotl_jax.data import pipeline
  from audiotl_jax.data.prepare import PreparedDataset
  from audiotl_jax.train import mesh as mesh_lib
  sr, clip_seconds = FRONTEND["sample_rate"], 10.0
  n, batch = (48, 16) if quick else (2048, 64)
  samples = int(clip_seconds * sr)
  root = workdir / f"pipeline_{n}x{clip_seconds:g}s"
  _bench_records(root, n, samples, sr)
  dataset = PreparedDataset(root)
  mesh = mesh_lib.make_mesh()
  batch = max(batch, mesh.devices.size) // mesh.devices.size * mesh.devices.size
  cores = os.cpu_count()
  rows = []
  for workers in ([0] if quick else sorted({0, 1, max(1, cores // 2), cores})):
    it = pipeline.train_iterator(
        dataset, "train", target="multihot", batch_size=batch, clip_samples=samples, seed=0,
        process_index=0, process_count=1, worker_count=workers)
    jax.block_until_ready(mesh_lib.to_global(next(it), mesh))  # start-up is not throughput
    num_batches = 4 if quick else max(4, 2 * n // batch)
    t = time.perf_counter()
    for _ in range(num_batches):
      jax.block_until_ready(mesh_lib.to_global(next(it), mesh))
    sec = time.perf_counter() - t
    if hasattr(it, "close"):
      it.close()
    rate = num_batches * batch / sec
    rows.append({"bench": "pipeline", "worker_count": workers, "batch": batch,
                 "clip_seconds": clip_seconds, "clips_per_s": rate,
                 "clips_per_s_per_core": rate / cores, "cores": cores,
                 "mb_per_s": rate * samples * 2 / 1e6})
  return rows


def bench_scores(workdir: Path, quick: bool) -> list[dict]:
  """Every score in memory, LogME against the official numpy algorithm, and streaming at
  N = 1,000,000 (see `transferability/benchmark.py`)."""
  from audiotl_jax.transferability import benchmark
  return benchmark.run(workdir, quick)


BENCHES = {
    "train_step": lambda workdir, quick: bench_train_step(quick),
    "frontend": lambda workdir, quick: bench_frontend(quick),
    "pipeline": bench_pipeline,
    "prepare": bench_prepare.bench_prepare,
    "scores": bench_scores,
    "ast": bench_ast.bench_ast,
}


def machine() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()][:4], "device_count": jax.device_count(),
          "date": time.strftime("%Y-%m-%d")}


def run(workdir: Path, *, only=(), quick: bool = False) -> list[dict]:
  for name in only:
    if name not in BENCHES:
      raise unknown_name("benchmark", name, BENCHES)
  workdir.mkdir(parents=True, exist_ok=True)
  rows = []
  for name, fn in BENCHES.items():
    if only and name not in only:
      continue
    print(f"bench: {name} ...", flush=True)
    for row in fn(workdir, quick):
      rows.append(row)
      print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in row.items() if k != "bench"), flush=True)
  out = {"machine": machine(), "quick": quick, "results": rows}
  (workdir / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
  print(f"bench: results in {workdir / 'bench.json'}")
  return rows
