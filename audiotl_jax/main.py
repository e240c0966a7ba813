"""The `audiotl` command: flags, process set-up, dispatch. Intentionally short.

Every stage takes `--config file.py[:arg]` and `--workdir`, plus `--config.a.b=value` overrides;
stages live in their own modules. A `UserError` is printed as one line, without a traceback.
"""
import argparse
import os
import sys
from pathlib import Path

from audiotl_jax.errors import UserError

STAGES = {  # name -> (default config, help)
    "demo": ("demo.py", "the whole study on the embedded synthetic default, ending in a report"),
    "prepare": ("prepare.py", "raw audio + labels -> ArrayRecord shards + manifest.json"),
    "pretrain": ("pretrain.py", "multi-label pre-training on an ontology subset of AudioSet"),
    "finetune": ("finetune.py", "transfer to a downstream task with a strategy"),
    "embed": ("embed.py", "export embeddings of any layer for a dataset"),
    "score": ("score.py", "transferability scores of pre-trained states on a dataset"),
}


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="audiotl", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, (cfg, help_) in STAGES.items():
    s = sub.add_parser(name, help=help_, description=f"{help_}. Overrides: --config.KEY=VALUE.")
    s.add_argument("--config", default=f"configs/{cfg}", help="config file, optionally :ARG")
    s.add_argument("--workdir", default="runs/demo" if name == "demo" else None,
                   required=name != "demo", help="where everything of this run is written")
  o = sub.add_parser("ontology", help="inspect the AudioSet ontology and plan subsets")
  osub = o.add_subparsers(dest="action", required=True)
  plan = osub.add_parser("plan", help="classes and clips per top-level branch and subset")
  plan.add_argument("--segments", required=True, help="a segments CSV (official format)")
  plan.add_argument("--subset", action="append", default=[],
                    help="a node name or MID; several joined by '+' form one union (repeatable)")
  find = osub.add_parser("find", help="a node by name or MID, with its trainable descendants")
  find.add_argument("name")
  m = sub.add_parser("models", help="every model and variant with its parameter count")
  m.add_argument("--num-classes", type=int, default=527)
  st = sub.add_parser("stats", help="mean and std of a prepared dataset's AST fbank features")
  st.add_argument("--data", required=True, help="a folder written by `audiotl prepare`")
  st.add_argument("--split", default="train")
  st.add_argument("--target-frames", type=int, default=0,
                  help="pad/crop to this many frames first, as training will (0: as is)")
  st.add_argument("--mel-bins", type=int, default=128)
  st.add_argument("--max-batches", type=int, default=0, help="0: the whole split")
  w = sub.add_parser("sweep", help="expand a sweep config into runs; run them locally or write "
                     "SLURM / TPU-VM launches; skip what is done")
  w.add_argument("--config", required=True, help="a sweep config (configs/sweeps/*.py), "
                 "optionally :ARG; --config.KEY=VALUE overrides its fields")
  w.add_argument("--workdir", required=True,
                 help="the sweep's folder: sweep.json, runs.txt, logs/ and one folder per run")
  w.add_argument("--launcher", choices=("local", "slurm", "tpu_vm", "print"), default="local")
  w.add_argument("--dry-run", action="store_true",
                 help="write sweep.json and runs.txt, print the commands, run nothing")
  w.add_argument("--only", default="",
                 help="only runs whose name contains this (glob characters allowed)")
  im = sub.add_parser("import", help="AST weights (official .pth, Hugging Face .safetensors/.bin)"
                      " -> a checkpoint to fine-tune, embed or score from")
  im.add_argument("--weights", required=True, help="the weights file")
  im.add_argument("--model", default="ast:base", help="the AST variant they are for")
  im.add_argument("--workdir", required=True, help="where the checkpoint is written")
  im.add_argument("--frames", type=int, default=1024,
                  help="input frames to fine-tune at (position embeddings are resized to it)")
  im.add_argument("--mel-bins", type=int, default=128)
  r = sub.add_parser("report", help="aggregate a study's runs into report.md and plots")
  r.add_argument("--workdir", required=True)
  k = sub.add_parser("rank", help="how well each score ranks states against fine-tuning results")
  k.add_argument("--scores", required=True, help="scores.json of `audiotl score` (or its folder)")
  k.add_argument("--finetune", action="append", required=True,
                 help="fine-tuning workdirs, glob patterns allowed (repeatable)")
  k.add_argument("--workdir", required=True)
  k.add_argument("--size-weight", type=float, default=0.5)
  k.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
  b = sub.add_parser("bench", help="throughput of train steps, frontend, input pipeline, scores")
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
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  from audiotl_jax.train import mesh  # pylint: disable=g-import-not-at-top
  mesh.initialize_distributed()


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  args = _parser().parse_args([a for a in argv if not a.startswith("--config.")])
  if args.command in STAGES:
    from audiotl_jax import config as config_lib
    _setup_processes()
    config = config_lib.load(args.config, overrides)
    return _run_stage(args.command, config, Path(args.workdir))
  if args.command == "sweep":  # no process set-up: each run is its own process
    from audiotl_jax import sweep
    return sweep.run(args.config, Path(args.workdir), overrides=overrides,
                     launcher=args.launcher, dry_run=args.dry_run, only=args.only)
  if overrides:
    raise UserError(f"`audiotl {args.command}` takes no --config overrides")
  if args.command == "import":
    _setup_processes()
    from audiotl_jax.train import import_weights
    import_weights.import_weights(args.weights, args.model, Path(args.workdir),
                                  frames=args.frames, mel_bins=args.mel_bins)
    return 0
  if args.command == "ontology":
    from audiotl_jax import ontology
    onto = ontology.Ontology.load()
    if args.action == "plan":
      if not Path(args.segments).exists():
        raise UserError(f"segments file {args.segments} does not exist")
      print(ontology.format_plan(ontology.plan(onto, ontology.iter_segments(args.segments),
                                               args.subset)))
    else:
      sub = onto.subset(args.name)
      print(f"{sub.name}: {len(sub.mids)} trainable classes")
      for mid in sub.mids:
        print(f"  {mid}\t{onto.nodes[mid].name}")
  elif args.command == "models":
    from audiotl_jax import models
    for name, count in models.describe_models(args.num_classes):
      print(f"{name:<20} {count:>12,}")
  elif args.command == "stats":
    from audiotl_jax import fbank
    stats = fbank.dataset_stats(Path(args.data), split=args.split,
                                target_frames=args.target_frames, num_mel_bins=args.mel_bins,
                                max_batches=args.max_batches)
    print(f"fbank mean {stats['mean']:.7f} std {stats['std']:.7f} ({args.split}); use "
          f"--config.frontend.fbank_mean={stats['mean']:.7f} "
          f"--config.frontend.fbank_std={stats['std']:.7f}")
  elif args.command == "report":
    from audiotl_jax import report
    print(f"report: {report.write(Path(args.workdir))}")
  elif args.command == "rank":
    from audiotl_jax import ranking
    path = ranking.run(scores_path=Path(args.scores), finetune=args.finetune,
                       out_dir=Path(args.workdir), size_weight=args.size_weight,
                       num_resamples=args.bootstrap)
    print(f"rank: {path}")
  elif args.command == "bench":
    from audiotl_jax import bench
    bench.run(Path(args.workdir), only=[x for x in args.only.split(",") if x], quick=args.quick)
  return 0


def _run_stage(command: str, config, workdir: Path) -> int:
  if command == "demo":
    from audiotl_jax import demo
    demo.run(config, workdir)
  elif command == "prepare":
    from audiotl_jax import config as config_lib
    from audiotl_jax.data import prepare, readers
    if not config.root:
      raise UserError("set config key 'root': the dataset's folder (or CSV file for reader csv)")
    if not Path(config.root).exists():
      raise UserError(f"config key 'root': {config.root} does not exist")
    config_lib.write(config, workdir, "prepare_config.json")
    listing = readers.get_reader(config.reader)(Path(config.root),
                                                **config_lib.to_dict(config.options))
    prepare.prepare(listing, workdir, sample_rate=config.sample_rate,
                    clip_seconds=config.clip_seconds, shard_size=config.shard_size,
                    num_workers=config.num_workers or os.cpu_count(), progress=config.progress)
  elif command == "pretrain":
    from audiotl_jax.train import pretrain
    pretrain.train(config, workdir)
  elif command == "finetune":
    from audiotl_jax.train import finetune
    finetune.train(config, workdir)
  elif command == "embed":
    from audiotl_jax import embedding
    embedding.embed(checkpoint=Path(config.checkpoint), dataset_dir=Path(config.data.dir),
                    splits=list(config.data.splits), layers=list(config.layers),
                    pooling=config.pooling, out_dir=workdir, batch_size=config.batch_size,
                    clip_seconds=config.data.clip_seconds or None,
                    num_devices=config.num_devices, layout=config.layout,
                    flush_every=config.flush_every, progress=config.progress)
  elif command == "score":
    from audiotl_jax import scoring
    paths = [Path(p) for p in str(config.checkpoints).split(",") if p]
    scoring.score(checkpoints={p.resolve().name: p for p in paths},
                  dataset_dir=Path(config.data.dir), split=config.data.split,
                  layers=[x for x in str(config.layers).split(",") if x],
                  scores=list(config.scores), out_dir=workdir, batch_size=config.batch_size,
                  pooling=config.pooling, val_split=config.data.val_split,
                  clip_seconds=config.data.clip_seconds or None, stream=config.stream,
                  chunk_size=config.chunk_size, progress=config.progress)
  return 0


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


if __name__ == "__main__":
  run()
