"""`audiotl bench --only prepare`: prepare's peak memory and speed as the dataset grows.

An AudioSet download is written in its published layout (an official-format segments CSV, clips
named `Y{ytid}_{start}_{end}.wav`) at growing sizes, and each is prepared by
`audiotl_jax.data.shard_writer.prepare` in a fresh process with every core. Two axes, because a
real download grows in both:
  rows:  CSV rows listed, with a fixed number of clips on disk (a partial download: every other
         row is a "missing file" problem, as for most users of the 2M-row unbalanced list)
  clips: clips on disk and decoded, one per row
Reported: the peak RSS of the prepare process and of its largest worker, wall seconds, clips/s.
Memory that does not grow with either axis is what "prepare streams" means.

Clips are 0.1 s (3.2 KB) so that 100k of them fit the disk and the clock; the per-clip cost of
decoding is what `bench --only pipeline` and the clip length do not change here.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from audiotl_jax.bench import timing
from audiotl_jax.data.ontology import Ontology

# The peak is read from /proc (VmHWM): Linux carries `ru_maxrss` across exec, so a child started
# by a large parent (this bench, with jax loaded) would report the parent's size as its own.
# Workers report `ru_maxrss`, an upper bound for the same reason (their pre-exec image counts).
# The child imports only the data layer, not `bench.timing`: jax would count in its peak.
_CHILD = """
import json, re, resource, sys, time
from audiotl_jax.data import readers, shard_writer
t = time.perf_counter()
m = shard_writer.prepare(readers.audioset(sys.argv[1]), sys.argv[2], sample_rate=16000,
                         clip_seconds=None, num_workers=int(sys.argv[3]), progress=False)
seconds = time.perf_counter() - t
try:
  with open("/proc/self/status") as f:
    peak_mb = int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read())[1]) / 1024
except OSError:  # not Linux: ru_maxrss is bytes on macOS
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"seconds": seconds, "counts": m["counts"], "peak_rss_mb": peak_mb,
                  "worker_peak_rss_mb":
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def write_layout(root: Path, rows: int, clips: int, seed: int = 0) -> None:
  """`rows` segments in `balanced_train_segments.csv` (1-3 real MIDs each), the first `clips` of
  them with a 0.1 s clip under `audio/balanced_train/`, and an empty eval list."""
  rng = np.random.default_rng(seed)
  mids = np.asarray(Ontology.load().classes)
  audio = root / "audio" / "balanced_train"
  audio.mkdir(parents=True)
  sf.write(root / "clip.wav", rng.uniform(-0.5, 0.5, 1600).astype(np.float32), 16000,
           subtype="PCM_16")
  blob = (root / "clip.wav").read_bytes()  # one clip's bytes, written under every name
  with open(root / "balanced_train_segments.csv", "w") as f:
    f.write(f"# Segments csv created by audiotl bench\n# num_ytids={rows}, num_segs={rows}\n"
            "# YTID, start_seconds, end_seconds, positive_labels\n")
    for i in range(rows):
      ytid = f"b{i:010d}"
      labels = ",".join(rng.choice(mids, int(rng.integers(1, 4)), replace=False))
      f.write(f'{ytid}, 30.000, 40.000, "{labels}"\n')
      if i < clips:
        (audio / f"Y{ytid}_30.000_40.000.wav").write_bytes(blob)
  (root / "eval_segments.csv").write_text("# YTID, start_seconds, end_seconds, positive_labels\n")


def measure(workdir: Path, rows: int, clips: int, workers: int) -> dict:
  root = workdir / f"prepare_{rows}rows_{clips}clips"
  if root.exists():
    shutil.rmtree(root)
  write_layout(root / "src", rows, clips)
  with timing.Stopwatch() as wall:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(root / "src"), str(root / "out"),
                           str(workers)], capture_output=True, text=True, check=False)
    if proc.returncode:
      raise RuntimeError(f"prepare bench at {rows} rows failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(root)
  c = out["counts"]
  assert c["records"] == clips and c["dropped"] == rows - clips, c  # every row accounted for
  return {"bench": "prepare", "rows": rows, "clips": clips, "workers": workers,
          "peak_rss_mb": out["peak_rss_mb"], "worker_peak_rss_mb": out["worker_peak_rss_mb"],
          "seconds": out["seconds"], "clips_per_s": clips / out["seconds"],
          "wall_with_startup_s": wall.seconds}


def bench_prepare(workdir: Path, quick: bool) -> list[dict]:
  workers = os.cpu_count()
  if quick:
    sizes = [(2_000, 500), (20_000, 500), (2_000, 2_000)]
  else:
    sizes = [(20_000, 10_000), (200_000, 10_000), (2_000_000, 10_000),  # rows axis
             (10_000, 10_000), (100_000, 100_000)]  # clips axis
  return [measure(workdir, rows, clips, workers) for rows, clips in sizes]
