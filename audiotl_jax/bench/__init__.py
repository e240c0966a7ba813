"""`audiotl bench`: throughput of train steps, the frontend, the input pipeline and the scores;
prepare's memory at growing dataset sizes; AST's step and MFU. One module per bench, each a
`bench_<name>(workdir, quick) -> rows` listed in `BENCHES`.

Each benchmark warms up (compilation excluded), then times whole steps with the result fetched
(`block_until_ready`), and reports the median of the repeats (`timing.py`). Results are printed
as a table and written to `workdir/bench.json` with the machine description, for BENCHMARKS.md.
"""
import json
import os
import platform
import time
from pathlib import Path

import jax

from audiotl_jax.bench.ast import bench_ast
from audiotl_jax.bench.embedding import bench_embedding
from audiotl_jax.bench.frontend import bench_frontend
from audiotl_jax.bench.pipeline import bench_pipeline
from audiotl_jax.bench.prepare import bench_prepare
from audiotl_jax.bench.scores import bench_scores
from audiotl_jax.bench.train_step import bench_train_step
from audiotl_jax.errors import unknown_name

# Run in this order by `audiotl bench`; `--only` picks a subset.
BENCHES = {
    "train_step": bench_train_step,
    "frontend": bench_frontend,
    "pipeline": bench_pipeline,
    "prepare": bench_prepare,
    "scores": bench_scores,
    "ast": bench_ast,
    "embedding": bench_embedding,
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
