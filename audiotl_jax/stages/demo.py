"""`audiotl demo`: the whole study end to end on the embedded synthetic default.

Each step writes into its own folder of the workdir and is skipped when that folder already holds
its result, so an interrupted demo picks up where it stopped:

  data/raw/            synthetic AudioSet + downstream tasks, in the published layouts
  data/audioset/       `prepare` output (ArrayRecord + manifest); likewise data/<downstream>/
  pretrain/<state>/    one pre-training run per state (+ `scratch`, the untrained baseline)
  finetune/<state>-<strategy>-s<seed>/   every state x strategy x seed
  score/               transferability scores of every state on the downstream training split
  report.md, *.png     the study's tables and plots
"""
import copy
import time
from pathlib import Path

import jax

from audiotl_jax import config as config_lib, fileio
from audiotl_jax.analysis import report
from audiotl_jax.data import shard_writer, synthetic
from audiotl_jax.stages import finetune, pretrain, score as scoring


def run(config, workdir: Path) -> Path:
  workdir = fileio.local_only(workdir, "`audiotl demo` writes audio files and prepares them "
                              "locally: give it a local --workdir")
  if jax.process_index() == 0:
    config_lib.write(config, workdir)
  t0 = time.time()
  sr = config.pretrain.frontend.sample_rate

  # ---------------------------------------------------------------- data
  raw = workdir / "data" / "raw"
  print(f"demo: [1/6] synthetic data in {raw}")
  synthetic.make_demo_data(raw, scale=config.scale, seed=config.seed)
  print("demo: [2/6] prepare (decode, resample, int16 -> ArrayRecord)")
  data = workdir / "data"
  shard_writer.prepare_once(raw / "audioset", data / "audioset", "audioset", sample_rate=sr,
                            clip_seconds=config.pretrain.data.clip_seconds,
                            progress=config.progress)
  shard_writer.prepare_once(raw / config.downstream, data / config.downstream, config.downstream,
                            sample_rate=sr, clip_seconds=config.finetune.data.clip_seconds,
                            progress=config.progress)

  # ---------------------------------------------------------------- pre-training
  states = {}
  plan = [dict(s) for s in config.states] + ([dict(name="scratch", subset=config.states[0]["subset"],
                                                   fraction=1.0, init_only=True)]
                                             if config.scratch else [])
  for i, state in enumerate(plan):
    print(f"demo: [3/6] pre-train {state['name']} ({i + 1}/{len(plan)})")
    cfg = copy.deepcopy(config.pretrain)
    with cfg.unlocked():
      cfg.data.dir = str(workdir / "data" / "audioset")
      cfg.data.subset = state["subset"]
      cfg.data.fraction = state["fraction"]
      cfg.init_only = state.get("init_only", False)
      cfg.progress = config.progress
    states[state["name"]] = workdir / "pretrain" / state["name"]
    pretrain.run(cfg, states[state["name"]])

  # ---------------------------------------------------------------- fine-tuning
  # Every seed draws its own few labelled clips and its own head initialisation: the spread
  # over seeds is the spread a user with that little labelled data would see.
  runs = [(name, strategy, seed) for name in states for strategy in config.strategies
          for seed in config.seeds]
  for i, (name, strategy, seed) in enumerate(runs):
    print(f"demo: [4/6] fine-tune {name} with {strategy}, seed {seed} ({i + 1}/{len(runs)})")
    cfg = copy.deepcopy(config.finetune)
    with cfg.unlocked():
      cfg.init = str(states[name])
      cfg.strategy = strategy
      cfg.seed = seed
      cfg.data.seed = seed
      cfg.data.dir = str(workdir / "data" / config.downstream)
      cfg.optim.lr = config.finetune_lr[strategy]
      cfg.total_steps = config.finetune_steps[strategy]
      cfg.augment.specaugment = strategy != "linear"
      cfg.progress = config.progress
    finetune.run(cfg, workdir / "finetune" / f"{name}-{strategy}-s{seed}")

  # ---------------------------------------------------------------- scores
  print("demo: [5/6] transferability scores")
  # Every block and the embedding, with a linear probe per layer: where in the network the
  # transfer happens, and whether the scores see it (the report's layer-wise section).
  scoring.score(checkpoints=states, dataset_dir=workdir / "data" / config.downstream,
                split=config.finetune.data.train_split, layers=list(config.score_layers),
                scores=config.scores, out_dir=workdir / "score",
                batch_size=config.finetune.batch_size, probe="linear",
                progress=config.progress)

  # ---------------------------------------------------------------- report
  print("demo: [6/6] report")
  report.write_study(workdir, comparisons=[list(c) for c in config.comparisons],
                     notes=list(config.notes), state_order=[s["name"] for s in plan])
  path = report.write(workdir)
  print(f"demo: finished in {time.time() - t0:.0f} s. Report: {path}")
  return path
