r"""Two tiny pre-trainings on the synthetic data of `audiotl demo`: a sweep in a minute on a CPU.

  audiotl demo --config configs/demo.py:scale=test --workdir runs/demo   # makes the data
  audiotl sweep --config configs/sweeps/demo_tiny.py --workdir runs/sweep_tiny
  audiotl sweep --config configs/sweeps/demo_tiny.py --workdir runs/sweep_tiny   # all skipped

Arguments after the colon: data (a prepared AudioSet folder; default: the demo's), steps.
"""
import ml_collections

from audiotl_jax.config import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, data="runs/demo/data/audioset", steps=4)
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"
  c.base = "pretrain.py:model=cnn:tiny,runlocal"
  c.axes = (("data.subset", ("Human sounds", "Music")),)
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
