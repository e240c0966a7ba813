"""The `audiotl` command: flags, process set-up, dispatch. Intentionally short.

Config stages take `--config file.py[:arg]` and `--workdir`, plus `--config.a.b=value` overrides;
flag stages take their flags, which become their config. Every stage lives in `stages/` and is
called as `run(config, workdir)`. A `UserError` is printed as one line, without a traceback.
"""
import argparse
import errno
import os
import re
import sys
from pathlib import Path

import ml_collections

from audiotl_jax import config as config_lib
from audiotl_jax import stages
from audiotl_jax.errors import UserError


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="audiotl", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
  parsers = {}
  for name, stage in stages.STAGES.items():
    parsers[name] = s = sub.add_parser(
        name, help=stage.help,
        description=f"{stage.help}. Overrides: --config.KEY=VALUE." if stage.config else None)
    if stage.config:
      s.add_argument("--config", default=f"configs/{stage.config}",
                     help="config file, optionally :ARG")
      s.add_argument("--workdir", default="runs/demo" if name == "demo" else None,
                     required=name != "demo", help="where everything of this run is written")
  # The flag stages: their flags become their config.
  o = parsers["ontology"]
  osub = o.add_subparsers(dest="action", required=True)
  plan = osub.add_parser("plan", help="classes and clips per top-level branch and subset")
  plan.add_argument("--segments", required=True, help="a segments CSV (official format)")
  plan.add_argument("--subset", action="append", default=[],
                    help="a node name or MID; several joined by '+' form one union (repeatable)")
  find = osub.add_parser("find", help="a node by name or MID, with its trainable descendants")
  find.add_argument("name")
  m = parsers["models"]
  m.add_argument("--num-classes", type=int, default=527)
  st = parsers["stats"]
  st.add_argument("--data", required=True, help="a folder written by `audiotl prepare`")
  st.add_argument("--split", default="train")
  st.add_argument("--target-frames", type=int, default=0,
                  help="pad/crop to this many frames first, as training will (0: as is)")
  st.add_argument("--mel-bins", type=int, default=128)
  st.add_argument("--max-batches", type=int, default=0, help="0: the whole split")
  w = parsers["sweep"]
  w.add_argument("--config", dest="spec", required=True, help="a sweep config (configs/sweeps/*.py), "
                 "optionally :ARG; --config.KEY=VALUE overrides its fields")
  w.add_argument("--workdir", required=True,
                 help="the sweep's folder: sweep.json, runs.txt, logs/ and one folder per run")
  w.add_argument("--launcher", choices=("local", "slurm", "tpu_vm", "print"), default="local")
  w.add_argument("--dry-run", action="store_true",
                 help="write sweep.json and runs.txt, print the commands, run nothing")
  w.add_argument("--only", default="",
                 help="only runs whose name contains this (glob characters allowed)")
  y = parsers["study"]
  y.add_argument("--config", dest="spec", required=True, help="a study config "
                 "(configs/studies/*.py), optionally :ARG; --config.KEY=VALUE overrides its fields")
  y.add_argument("--workdir", required=True, help="the study's folder: plan.json, "
                 "study_state.json, logs/ and W/<step>/<run>/ for every run")
  y.add_argument("--launcher", choices=("local", "slurm", "tpu_vm"), default="local")
  y.add_argument("--dry-run", action="store_true",
                 help="write plan.json, print the plan, run nothing")
  y.add_argument("--status", action="store_true",
                 help="per step: done / running / failed / blocked / pending; runs nothing")
  y.add_argument("--only", action="append", default=[],
                 help="only runs whose <step>/<run> name matches this glob (repeatable)")
  y.add_argument("--exclude", action="append", default=[],
                 help="leave out runs whose name matches this glob (repeatable)")
  y.add_argument("--select-by", default="", help="score-guided selection: score the states on "
                 "each task first and fine-tune only the --top-k best (the config's `selection`)")
  y.add_argument("--top-k", type=int, default=0, help="how many states per task to fine-tune")
  y.add_argument("--select-layer", default="embedding", help="the layer the states are scored on")
  y.add_argument("--compare-with", default="", help="a finished full study: selection.md then "
                 "gives the regret and the compute saved as measured there")
  sy = parsers["synthetic"]
  sy.add_argument("--workdir", required=True, help="where audioset/, speech_commands/ ... go")
  sy.add_argument("--scale", default="demo", help="test (~150 clips) or demo (~2,400 clips)")
  sy.add_argument("--seed", type=int, default=0)
  sy.add_argument("--datasets", default="", help="`+`-separated generators (audioset, "
                  "speech_commands, acoustic_scenes, dcase2020_task1a, dcase2018_task3, gtzan, "
                  "esc50, cough); default: the demo's three")
  im = parsers["import"]
  im.add_argument("--weights", required=True, help="the weights file")
  im.add_argument("--model", default="ast:base",
                  help="the model they are for (ast:*, panns:*, vggish:*)")
  im.add_argument("--workdir", required=True, help="where the checkpoint is written")
  im.add_argument("--frames", type=int, default=1024,
                  help="input frames to fine-tune at (position embeddings are resized to it)")
  im.add_argument("--mel-bins", type=int, default=128)
  im.add_argument("--pca", default="", help="VGGish only: the release's PCA parameters "
                  "(e.g. vggish_pca_params-970ea276.pth), for the post-processed embeddings")
  r = parsers["report"]
  r.add_argument("--workdir", required=True)
  k = parsers["rank"]
  k.add_argument("--scores", required=True, help="scores.json of `audiotl score` (or its folder)")
  k.add_argument("--finetune", action="append", required=True,
                 help="fine-tuning workdirs, glob patterns allowed (repeatable)")
  k.add_argument("--workdir", required=True)
  k.add_argument("--size-weight", type=float, default=0.5)
  k.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
  b = parsers["bench"]
  b.add_argument("--only", default="", help="comma-separated subset of the benchmarks")
  b.add_argument("--workdir", default="runs/bench")
  b.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
  return p


def _setup_processes():
  """Multi-host runs: initialise jax.distributed when the environment says so (see
  `mesh.initialize_distributed`: AUDIOTL_DISTRIBUTED=1, or AUDIOTL_COORDINATOR_ADDRESS,
  AUDIOTL_NUM_PROCESSES and AUDIOTL_PROCESS_ID).

  Also turns on XLA's persistent compilation cache: runs of a study compile the same programs
  again and again (one fine-tuning step per state and strategy), and a cache hit turns seconds of
  compilation into a file read. AUDIOTL_COMPILATION_CACHE= (empty) switches it off.
  """
  import jax
  cache = os.environ.get("AUDIOTL_COMPILATION_CACHE",
                         str(Path.home() / ".cache" / "audiotl" / "jax"))
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    # Every program, however quick to compile: a study's many short runs spend much of their
    # time compiling small ones (eval, init, metrics), each a file read on a hit.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  from audiotl_jax.train import mesh  # pylint: disable=g-import-not-at-top  (JAX: only now)
  mesh.initialize_distributed()


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  args = _parser().parse_args([a for a in argv if not a.startswith("--config.")])
  stage = stages.STAGES[args.command]
  if stage.config:
    config = config_lib.load(args.config, overrides)
  elif args.command in ("sweep", "study"):  # their configs are loaded (and checked) by themselves
    config = ml_collections.ConfigDict(dict(_flags(args), overrides=overrides))
  elif overrides:
    raise UserError(f"`audiotl {args.command}` takes no --config overrides")
  else:
    config = ml_collections.ConfigDict(_flags(args))
  if stage.setup:
    _setup_processes()
  workdir = getattr(args, "workdir", None)
  result = stages.get(args.command).run(config, Path(workdir) if workdir else None)
  return result if args.command == "study" else 0  # a study says whether every run succeeded


def _flags(args) -> dict:
  return {k: v for k, v in vars(args).items() if k not in ("command", "workdir")}


def run():
  """Console-script entry point."""
  try:
    sys.exit(main())
  except UserError as e:
    print(f"audiotl: error: {e}", file=sys.stderr)
    sys.exit(2)
  except BrokenPipeError:  # `audiotl sweep --launcher print | head`: the reader has had enough
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    sys.exit(0)
  except KeyboardInterrupt:
    print("audiotl: interrupted; run the same command again to resume", file=sys.stderr)
    sys.exit(130)
  except Exception as e:  # pylint: disable=broad-except  (re-raised unless the disk is full)
    full = _disk_full(e)
    if full is None:
      raise
    where = f" while writing {full}" if full else ""
    print(f"audiotl: error: no space left on device{where}; free space and run the same command "
          "again to resume", file=sys.stderr)
    sys.exit(2)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = tuple({os.strerror(n) for n in _FULL_ERRNOS} |
                    {"No space left on device", "Disk quota exceeded"})


def _disk_full(error: BaseException) -> str | None:
  """The file a full disk (or quota) stopped, "" if unknown, None if that is not the cause.

  Searches the whole chain (`raise ... from`, errors raised while handling others, exception
  groups): stages wrap errors, and Orbax re-raises TensorStore's failures from its write threads
  as ValueErrors whose message is all that says "No space left on device".
  """
  seen, todo = set(), [error]
  while todo:
    e = todo.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
      return str(e.filename or "")
    message = str(e)
    hit = next((message.find(t) for t in _FULL_TEXTS if t in message), -1)
    if hit >= 0:  # the last quoted path before the OS's words is the file it failed to write
      paths = re.findall(r"[\"'](/[^\"']+)[\"']", message[:hit])
      return paths[-1] if paths else ""
    todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
  return None


if __name__ == "__main__":
  run()
