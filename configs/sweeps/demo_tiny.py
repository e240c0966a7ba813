r"""Two tiny pre-trainings on the synthetic data of `audiotl demo`: a sweep in a minute on a CPU.

  audiotl demo --config configs/demo.py:scale=test --workdir runs/demo   # makes the data
  audiotl sweep --config configs/sweeps/demo_tiny.py --workdir runs/sweep_tiny
  audiotl sweep --config configs/sweeps/demo_tiny.py --workdir runs/sweep_tiny   # all skipped

Arguments after the colon: data (a prepared AudioSet folder; default: the demo's), steps,
fractions (`+`-separated) and seeds: `demo_tiny.py:fractions=0.5+1.0,seeds=2` is a small scaling
study (8 runs) whose report has scaling curves once its states are fine-tuned
(configs/sweeps/transfer.py) into the same study folder.
"""
import ml_collections

from audiotl_jax.config import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, data="runs/demo/data/audioset", steps=4, fractions="1.0", seeds=1)
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"
  c.base = "pretrain.py:model=cnn:tiny,runlocal"
  fractions = tuple(float(f) for f in arg.fractions.split("+"))
  seeds = tuple(range(arg.seeds))
  c.axes = (("data.subset", ("Human sounds", "Music")),)
  if len(fractions) > 1 or len(seeds) > 1:
    c.axes += (("data.fraction", fractions), ("seed", seeds), ("data.seed", seeds))
    c.zip = (("seed", "data.seed"),)  # a seed draws the initialisation and the clips together
    c.name = "{subset}-{fraction}-s{seed}"
  # The settings of tests/conftest.py's tiny_pretrain_config: seconds per run on a CPU.
  c.fixed = (
      ("data.dir", arg.data),
      ("data.clip_seconds", 1.0),
      ("batch_size", 8),
      ("total_steps", arg.steps),
      ("log_every", 1),
      ("eval_every", arg.steps),
      ("checkpoint_every", arg.steps),
      ("frontend.n_mels", 32),
      ("progress", False),
  )
  return c
