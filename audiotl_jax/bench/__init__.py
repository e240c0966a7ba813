"""`audiotl bench`: throughput of train steps, the frontend, the input pipeline and the scores;
prepare's memory at growing dataset sizes; AST's step and MFU; the share of a short fine-tuning
that compiling holds up. One module per bench, each a
`bench_<name>(workdir, quick) -> rows` listed in `BENCHES`.

Each benchmark warms up (compilation excluded), then times whole steps with the result fetched
(`block_until_ready`), and reports the median of the repeats (`timing.py`). Results are printed
as a table and written to `workdir/bench.json` with the machine description, for BENCHMARKS.md.
"""
import importlib
import json
import os
import platform
import time
from pathlib import Path

import jax

from audiotl_jax.errors import unknown_name

# Run in this order by `audiotl bench`; `--only` picks a subset. Bench NAME is `bench_NAME` in
# module `bench/NAME.py`, imported only when it runs: `compile` times fresh processes that
# import this package, and the others' imports (torch-free as they are) would be in its figures.
BENCHES = ("train_step", "frontend", "pipeline", "prepare", "scores", "ast", "embedding",
           "compile")


def _bench(name: str):
  return getattr(importlib.import_module(f"audiotl_jax.bench.{name}"), f"bench_{name}")


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
  for name in BENCHES:
    if only and name not in only:
      continue
    print(f"bench: {name} ...", flush=True)
    for row in _bench(name)(workdir, quick):
      rows.append(row)
      print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in row.items() if k != "bench"), flush=True)
  out = {"machine": machine(), "quick": quick, "results": rows}
  (workdir / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
  print(f"bench: results in {workdir / 'bench.json'}")
  return rows
