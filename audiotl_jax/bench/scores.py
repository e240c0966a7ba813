"""The score benchmarks behind `audiotl bench --only scores`: time and peak memory of each score.

Three parts:
  * every registered score in memory at N = 10,000, D = 768, C = 50 (source head Z = 527),
  * LogME against the official numpy algorithm (`reference.official_logme`) on the same data,
    alternating runs so that both see the same machine load,
  * `streaming_scores` at N = 1,000,000, D = 768, C = 527 from memory-mapped `.npy` files in the
    bench workdir (written once, then reused).

Time is the median wall-clock of repeated runs after a warm-up (compilation excluded). Memory
is the peak anonymous resident memory above its level before the run (`timing.PeakMemory`): host
arrays, XLA's CPU buffers and temporaries, not the page cache of a memory-mapped file.
"""
import json
import statistics
from pathlib import Path

import jax
import numpy as np

from audiotl_jax import scores
from audiotl_jax.bench import reference, timing
from audiotl_jax.scores import streaming


def synthetic(n, d, c, z, seed=0):
  """Features with class structure, labels, and source-head probabilities, float32."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  features = (rng.standard_normal((n, d)) + 0.5 * np.eye(c, d)[labels]).astype(np.float32)
  logits = rng.standard_normal((n, z)).astype(np.float32)
  logits[np.arange(n), labels % z] += 2.0
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  return features, labels, probs / probs.sum(axis=1, keepdims=True)


def in_memory(quick: bool) -> list[dict]:
  n, d, c, z = (1000, 64, 10, 100) if quick else (10_000, 768, 50, 527)
  features, labels, probs = synthetic(n, d, c, z)
  inputs = {"features": features, "probs": probs, "source_labels": probs.argmax(axis=1)}
  rows = []
  for name, (fn, _) in scores.SCORES.items():
    x = inputs[scores.INPUTS[name]]
    call = lambda: jax.block_until_ready(fn(x, labels))
    value = float(call())  # the warm-up (compilation) also gives the score
    m = timing.measure(call, 2 if quick else 5, memory=True)
    rows.append({"bench": "score", "score": name, "n": n, "d": x.shape[1] if x.ndim > 1 else 1,
                 "classes": c, "seconds": m.median, "peak_mb": m.peak_bytes / 2**20,
                 "value": value})
  return rows


def logme_vs_official(quick: bool) -> list[dict]:
  n, d, c = (2000, 128, 10) if quick else (10_000, 768, 50)
  features, labels, _ = synthetic(n, d, c, 2)
  ours_fn = lambda: jax.block_until_ready(scores.logme(features, labels))
  ours_value = float(ours_fn())
  official_value = reference.official_logme(features, labels)
  ours, official = [], []
  for _ in range(2 if quick else 5):  # alternate, so both see the same load
    official += timing.measure(lambda: reference.official_logme(features, labels), 1).times
    ours += timing.measure(ours_fn, 1).times
  ours_s, official_s = statistics.median(ours), statistics.median(official)
  return [{"bench": "logme_vs_official", "n": n, "d": d, "classes": c, "jax_s": ours_s,
           "official_numpy_s": official_s, "speedup": official_s / ours_s,
           "jax_value": ours_value, "official_value": official_value,
           "rel_diff": abs(ours_value - official_value) / abs(official_value)}]


def _memmapped(workdir: Path, n, d, c, z):
  """(features, probs) memory-mapped from `workdir`, plus labels; written once, in chunks."""
  root = Path(workdir) / f"scores_{n}x{d}x{c}"
  paths = {k: root / f"{k}.npy" for k in ("features", "probs", "labels")}
  if not paths["labels"].exists():
    root.mkdir(parents=True, exist_ok=True)
    feats = np.lib.format.open_memmap(paths["features"], "w+", np.float32, (n, d))
    probs = np.lib.format.open_memmap(paths["probs"], "w+", np.float32, (n, z))
    labels = np.empty(n, np.int64)
    step = 50_000
    for i, start in enumerate(range(0, n, step)):
      f, y, p = synthetic(min(step, n - start), d, c, z, seed=i)
      feats[start:start + len(y)], probs[start:start + len(y)], labels[start:start + len(y)] = (
          f, p, y)
    feats.flush(), probs.flush()
    del feats, probs
    np.save(paths["labels"], labels)
  return (np.load(paths["features"], mmap_mode="r"), np.load(paths["probs"], mmap_mode="r"),
          np.load(paths["labels"]))


def streamed(workdir: Path, quick: bool) -> list[dict]:
  n, d, c, z = (4_000, 32, 5, 10) if quick else (1_000_000, 768, 527, 527)
  features, probs, labels = _memmapped(workdir, n, d, c, z)
  rows = []
  # One pass (the Gram route), then everything (two passes plus TransRate's per-class Grams).
  groups = ([] if quick else [["logme", "hscore", "nce"]]) + [list(streaming.STREAMABLE)]
  for names in groups:
    with timing.PeakMemory() as mem, timing.Stopwatch() as clock:
      values = streaming.streaming_scores(
          features, labels, scores=names, probs=probs, chunk_size=1_024 if quick else 65_536,
          gbc_pca_dim=scores.pca_dim_for((n, d)))
    rows.append({"bench": "score_streaming", "scores": "+".join(names), "n": n, "d": d,
                 "classes": c, "devices": jax.device_count(), "seconds": clock.seconds,
                 "peak_mb": mem.peak / 2**20, **values})
  return rows


def bench_scores(workdir: Path, quick: bool) -> list[dict]:
  """All three parts; each part's rows are also written to `workdir/scores_partial.json` as it
  finishes, so a long streaming run shows the in-memory figures early."""
  rows = []
  for part in (in_memory, logme_vs_official, lambda q: streamed(workdir, q)):
    rows += part(quick)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "scores_partial.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"bench: scores: {len(rows)} rows so far in {Path(workdir) / 'scores_partial.json'}",
          flush=True)
  return rows
