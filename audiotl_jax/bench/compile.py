"""`audiotl bench --only compile`: the share of a short fine-tuning's wall time that compiling
holds up, with an empty compilation cache and with a warm one.

A study runs hundreds of short fine-tunings, each a fresh process: what one of them spends
compiling (tracing, lowering, XLA, or reading all of that from the caches) is paid every time.
Set-up, once in `workdir/compile/`: the synthetic AudioSet and speech commands (test scale),
prepared; each model pre-trained for 20 steps. Then the measured command, each in a new process
under `compile_probe` (which says what it counts), a 40-step fine-tuning from that state:

  cnn:tiny, linear   the smallest there is (`configs/finetune.py:model=cnn:tiny,runlocal`:
                     batch 16, evaluation every 6 steps): compiling's largest share
  cnn:S, full        the demo's full fine-tuning (batch 32, evaluation every 10 steps)

and for each, with the caches:

  cold               empty (XLA's persistent cache, and the program cache in it)
  warm               the same command again: the caches hold every program
  warm, other data   another data seed (other feature statistics), the same shapes

Each warm row is the median of 3 runs; the cold row is one run. --quick: cnn:tiny, 1 run each.
"""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

STEPS = 40
# (model, strategy, config arguments, batch size, steps between evaluations)
SETUPS = (("cnn:tiny", "linear", "model=cnn:tiny,runlocal", 16, 6),
          ("cnn:S", "full", "strategy=full,model=cnn:S", 32, 10))


def _audiotl(args, env, what: str, probe: bool = False) -> str:
  module = "audiotl_jax.bench.compile_probe" if probe else "audiotl_jax"
  proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env,
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    raise RuntimeError(f"bench compile: {what} failed (exit {proc.returncode}):\n{tail}")
  return proc.stdout


def _data(root: Path) -> Path:
  """The prepared synthetic data (AudioSet and speech commands), made once."""
  from audiotl_jax.data import shard_writer, synthetic
  raw, data = root / "raw", root / "data"
  synthetic.make_demo_data(raw, scale="test", seed=0, datasets=["audioset", "speech_commands"])
  for name in ("audioset", "speech_commands"):
    shard_writer.prepare_once(raw / name, data / name, name, sample_rate=16000, clip_seconds=1.0,
                              progress=False)
  return data


def _pretrained(data: Path, root: Path, model: str, env) -> Path:
  state = root / "pretrain" / model.replace(":", "-")
  if not (state / "results.json").exists():
    _audiotl(["pretrain", "--config", f"configs/pretrain.py:model={model},runlocal",
              f"--config.data.dir={data / 'audioset'}", "--config.data.clip_seconds=1.0",
              "--config.batch_size=16", "--config.total_steps=20", "--config.progress=False",
              "--workdir", state], env, f"pre-training {model}")
  return state


def _finetune(setup, data: Path, state: Path, workdir: Path, env, seed: int) -> dict:
  _, _, arg, batch, every = setup
  out = _audiotl(["finetune", "--config", f"configs/finetune.py:{arg}",
                  f"--config.init={state}", f"--config.data.dir={data / 'speech_commands'}",
                  "--config.data.clip_seconds=1.0", f"--config.batch_size={batch}",
                  f"--config.total_steps={STEPS}", f"--config.eval_every={every}",
                  f"--config.data.seed={seed}", "--config.progress=False", "--workdir", workdir],
                 env, "fine-tuning", probe=True)
  line = next(l for l in out.splitlines() if l.startswith("COMPILE-PROBE "))
  return json.loads(line[len("COMPILE-PROBE "):])


def bench_compile(workdir: Path, quick: bool) -> list[dict]:
  import shutil
  root = workdir / "compile"
  env = dict(os.environ)
  env["AUDIOTL_MEL_CACHE"] = str(root / "mel")  # the bench's own, so "cold" means cold
  data = _data(root)
  repeats = 1 if quick else 3
  rows = []
  for setup in SETUPS[:1] if quick else SETUPS:
    model, strategy = setup[:2]
    state = _pretrained(data, root, model, env)
    caches = root / "xla" / model.replace(":", "-")
    shutil.rmtree(caches, ignore_errors=True)
    env["AUDIOTL_COMPILATION_CACHE"] = str(caches)
    for cache, seed, n in (("cold", 0, 1), ("warm", 0, repeats),
                           ("warm, other data", 7, repeats)):
      probes = []
      for i in range(n):
        run_dir = root / "runs" / f"{model.replace(':', '-')}-{seed}-{cache[:4]}-{i}"
        shutil.rmtree(run_dir, ignore_errors=True)
        probes.append(_finetune(setup, data, state, run_dir, env, seed))
      med = {k: statistics.median(p[k] for p in probes)
             for k in ("wall_s", "critical_compile_s", "share", "other_threads_s")}
      rows.append({"bench": "compile", "model": model, "strategy": strategy, "cache": cache,
                   "steps": STEPS, "runs": n, "wall_s": med["wall_s"],
                   "critical_compile_s": med["critical_compile_s"],
                   "compile_share": med["share"], "off_path_compile_s": med["other_threads_s"]})
  return rows
