r"""A whole transfer study in miniature: synthetic data -> prepare -> 2 pre-trained states ->
linear probes with 2 seeds each -> transferability scores -> report. About 2 minutes on 2 cores.

  audiotl study --config configs/studies/tiny.py --workdir runs/tiny_study --dry-run
  audiotl study --config configs/studies/tiny.py --workdir runs/tiny_study
  audiotl study --config configs/studies/tiny.py --workdir runs/tiny_study --status
  audiotl study --config configs/studies/tiny.py --workdir runs/tiny_guided \
      --select-by logme --top-k 1 --compare-with runs/tiny_study   # fine-tune only the best state

Arguments after the colon: scale (test: the tests' synthetic data, ~150 clips; demo: the demo's,
~2,400), steps (training steps of every pre-training and fine-tuning).
"""
import ml_collections

from audiotl_jax.config import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, scale="test", steps=4)
  c = ml_collections.ConfigDict()
  c.description = ("Does pre-training on an acoustically similar AudioSet branch (Human sounds) "
                   "transfer better to spoken words than a dissimilar one (Music)?")
  # The settings of tests/conftest.py's tiny runs: seconds each on a CPU.
  tiny = (("data.clip_seconds", 1.0), ("batch_size", 8), ("total_steps", arg.steps),
          ("log_every", 1), ("eval_every", arg.steps), ("progress", False))
  c.steps = [
      dict(step="data", stage="synthetic", name="raw", args=("--scale", arg.scale)),
      dict(step="prepare", stage="prepare", base="prepare.py",
           axes=((":reader", ("audioset", "speech_commands")),
                 ("root", ("{study}/data/raw/audioset", "{study}/data/raw/speech_commands"))),
           zip=((":reader", "root"),),
           fixed=(("clip_seconds", 1.0), ("num_workers", 1), ("progress", False)),
           name="{reader}", after=("data",)),
      dict(step="pretrain", stage="pretrain", base="pretrain.py:model=cnn:tiny,runlocal",
           axes=(("data.subset", ("Human sounds", "Music")),),
           fixed=(("data.dir", "@prepare/audioset"), *tiny, ("checkpoint_every", arg.steps),
                  ("frontend.n_mels", 32)),
           name="{subset}"),
      # Each state with two seeds: a seed draws the head's initialisation and the batches.
      dict(step="finetune", stage="finetune",
           base="finetune.py:model=cnn:tiny,runlocal,strategy=linear",
           axes=(("init", "@pretrain"), ("seed", (0, 1)), ("data.seed", (0, 1))),
           zip=(("seed", "data.seed"),),
           fixed=(("data.dir", "@prepare/speech_commands"), *tiny),
           name="{init}-s{seed}-linear"),
      dict(step="score", stage="score", base="score.py", name="speech_commands",
           fixed=(("checkpoints", "@pretrain"), ("data.dir", "@prepare/speech_commands"),
                  ("scores", ("nc_score", "logme", "leep")), ("batch_size", 16),
                  ("progress", False))),
      dict(step="report", stage="report", args=("--workdir", "{study}"),
           after=("finetune", "score")),
  ]
  c.report = dict(
      comparisons=[["similar vs dissimilar branch", "Human_sounds", "Music"]],
      published={}, state_order=["Human_sounds", "Music"],
      notes=["Synthetic data and a few training steps: the numbers test the pipeline, not the "
             "question."])
  # `--select-by SCORE --top-k K`: score both states on each task first, fine-tune the best K.
  c.selection = dict(states="pretrain", transfer="finetune", task_key="data.dir")
  return c
