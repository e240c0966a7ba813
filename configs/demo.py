r"""The embedded default: a miniature ontology / data-scale transfer study on synthetic audio.

  audiotl demo                       # = audiotl demo --config configs/demo.py --workdir runs/demo
  audiotl demo --config configs/demo.py:scale=test --workdir /tmp/demo   # seconds, for tests

Synthetic AudioSet whose sounds follow the ontology (see audiotl_jax/data/synthetic/) is
prepared like real data; the small CNN is pre-trained on a branch acoustically similar to the
downstream task (Human sounds, for speech-commands-like words), on a dissimilar one (Music), and on
a fraction of the similar one (scale); a randomly initialised CNN is the baseline. Each state is
fine-tuned with `linear` and `full`, scored with NC, LogME and LEEP, and the report says whether
the scores ranked the states as fine-tuning did.
"""
import ml_collections

from audiotl_jax.config import parse_arg
from configs import finetune as finetune_config
from configs import pretrain as pretrain_config


def get_config(arg=None):
  arg = parse_arg(arg, scale="demo")
  test = arg.scale == "test"
  c = ml_collections.ConfigDict()
  c.scale = arg.scale
  c.seed = 0
  c.downstream = "speech_commands"
  c.states = [
      dict(name="human_sounds", subset="Human sounds", fraction=1.0),
      dict(name="human_sounds_30pct", subset="Human sounds", fraction=0.3),
      dict(name="music", subset="Music", fraction=1.0),
  ] if not test else [
      dict(name="human_sounds", subset="Human sounds", fraction=1.0),
      dict(name="music", subset="Music", fraction=1.0),
  ]
  c.scratch = True
  # The questions the report answers: (question, state A, state B): is A better than B?
  c.comparisons = [
      ("similar vs dissimilar branch, same scale", "human_sounds", "music"),
      ("similarity vs scale: similar at 30 % vs dissimilar at 100 %", "human_sounds_30pct",
       "music"),
      ("similar branch vs no pre-training", "human_sounds", "scratch"),
  ] if not test else [("similar vs dissimilar branch", "human_sounds", "music")]
  c.strategies = ("linear", "full")
  c.scores = ("nc_score", "logme", "leep")

  model = "cnn:tiny" if test else "cnn:S"
  p = pretrain_config.get_config(f"model={model}")
  p.data.clip_seconds = 1.0
  p.data.val_fraction = 0.15
  p.batch_size = 32 if not test else 16
  p.num_epochs = 12.0 if not test else 1.0
  p.optim.lr = 2e-3
  p.log_every = 10
  p.eval_every = 1_000_000  # evaluate once, at the end
  p.checkpoint_every = 1_000_000
  p.frontend.n_fft = 400
  p.frontend.norm_batches = 4 if not test else 1
  p.augment.specaugment = True
  c.pretrain = p

  f = finetune_config.get_config(f"model={model}")
  f.data.clip_seconds = 1.0
  f.batch_size = 32 if not test else 16
  f.log_every = 10
  c.finetune = f
  c.finetune_lr = ml_collections.ConfigDict(dict(linear=1e-2, full=2e-3))
  # A linear probe is cheap (no backward pass through the backbone) and slow to converge; full
  # fine-tuning is ~4x dearer per step and converges in a few epochs.
  c.finetune_epochs = ml_collections.ConfigDict(
      dict(linear=8.0, full=3.0) if not test else dict(linear=1.0, full=1.0))
  c.progress = True
  return c
