r"""Multi-label pre-training on an ontology subset of (prepared) AudioSet.

  audiotl pretrain --config configs/pretrain.py:model=cnn:S,subset=Animal \
      --config.data.dir=data/audioset_prepared --workdir runs/pretrain_animal

Arguments after the colon: model (a `family:variant` name, see `audiotl models`), subset (ontology
node names or MIDs, `+` for a union, empty for every class), fraction (of the subset's clips:
0.01 ... 1), runlocal (tiny and fast, for a laptop smoke run).
"""
import ml_collections

from audiotl_jax.config import parse_arg
from configs import common


def get_config(arg=None):
  arg = parse_arg(arg, model="cnn:S", subset="", fraction=1.0, runlocal=False)
  c = ml_collections.ConfigDict()
  c.data = dict(
      dir="",                   # a folder written by `audiotl prepare` (AudioSet layout)
      train_split="balanced_train", test_split="eval",
      subset=arg.subset, num_classes=0,   # 0: every class of the subset
      fraction=arg.fraction, val_fraction=0.1,
      clip_seconds=10.0, seed=0, worker_count=0,
      balanced=False,           # draw clips by label rarity (PANNs' balanced sampler)
      # Evaluate this many clips of the validation carve (a fixed subset, seeded by data.seed);
      # 0: all of it. AudioSet's unbalanced carve is ~200k clips: a cap makes evaluations cheap.
      max_val_clips=0)
  # AST takes the Kaldi fbank of its recipes (128 bins, 1024 frames for 10 s clips).
  c.frontend = common.frontend(arg.runlocal, kind=common.frontend_kind(arg.model))
  if arg.model.startswith("ast") and not arg.runlocal:
    c.frontend.target_frames = 1024  # AST's AudioSet recipe: 998 frames padded to 1024
  c.augment = common.augment(mixup_alpha=0.0)
  c.model = dict(name=arg.model, dtype="float32", remat=False)  # dtype: compute (bfloat16)
  c.batch_size = 64
  c.total_steps = 0             # > 0 wins over num_epochs
  c.num_epochs = 30.0
  c.optim = common.optim(1e-3)
  c.log_every = 50
  c.eval_every = 500            # steps between evaluations (and the last step); each is saved
  c.checkpoint_every = 500      # steps between checkpoints besides those of the evaluations
  c.keep_checkpoints = 2
  c.seed = 0
  # Resuming under a config that changes results is refused unless this is set (the old config
  # is then kept in config_history/).
  c.allow_changes = False
  c.num_devices = 0             # 0: every visible device
  c.progress = True
  # A name for this pre-trained state in reports and run folders (a study's run-name template
  # uses it, e.g. "30pct" or "animal"); it changes nothing in training.
  c.label = ""
  c.init_only = False           # save the randomly initialised model and stop (a scratch baseline)
  c.stop_at = 0                 # > 0: stop after this step, as a preempted job would (tests)
  if arg.runlocal:
    c.batch_size = 16
    c.total_steps = 20
    c.log_every = 5
    c.eval_every = 10
    c.checkpoint_every = 10
    c.data.clip_seconds = 1.0
  return c
