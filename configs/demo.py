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
  # Every question is answered over these fine-tuning seeds (each draws its own labelled clips
  # and head), with intervals and a paired test in the report.
  c.seeds = (0, 1, 2) if not test else (0, 1)
  c.notes = [
      "What the synthetic data makes true by construction: spoken words are built like the Human "
      "sounds branch (glottal pulses through formant filters), and in both the speaker (pitch, "
      "vocal-tract size, tempo) varies from clip to clip while what is said (vowels, consonants) "
      "sets the class, so features learnt on Human sounds tell vowels apart whoever speaks; "
      "Music is built from harmonic tones and shares little with words. Pre-training sees 720 "
      "clips of a branch; the downstream task has 2 labelled clips per word (config key "
      "finetune.data.few_shot), drawn anew by each seed, as scarce real downstream data is. "
      "Every state is fine-tuned with the same steps and rates. These words are simple: with 4 "
      "labelled clips per word and full fine-tuning run to convergence (80 steps), a "
      "from-scratch CNN drew level with the Human-sounds state, which is why the demo uses 2. "
      "The demo checks that the study recovers these effects; it says nothing about real audio.",
  ]
  c.scores = ("nc_score", "logme", "leep")
  # The layers scored and probed (the first is the report's score table's): every block of the
  # CNN, mean-pooled, and the embedding.
  c.score_layers = ("embedding", "block1", "block2", "block3", "block4")

  model = "cnn:tiny" if test else "cnn:S"
  p = pretrain_config.get_config(f"model={model}")
  p.data.clip_seconds = 1.0
  p.data.val_fraction = 0.15
  p.batch_size = 32 if not test else 16
  p.num_epochs = 8.0 if not test else 1.0
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
  f.data.few_shot = 2 if not test else 0
  f.eval_every = 10 if not test else 2
  f.batch_size = 32 if not test else 16
  f.log_every = 10
  c.finetune = f
  # The probe's rate is high enough for it to converge in its 80 steps on a few dozen clips (at
  # 1e-2 it had not); one rate per strategy, the same for every state.
  c.finetune_lr = ml_collections.ConfigDict(dict(linear=2e-2, full=2e-3))
  # Steps, not epochs: with a few labelled clips an epoch is one step. A linear probe is cheap
  # (no backward pass through the backbone) and slow to converge; full fine-tuning is ~4x dearer
  # per step and converges sooner.
  c.finetune_steps = ml_collections.ConfigDict(
      dict(linear=80, full=40) if not test else dict(linear=2, full=2))
  c.progress = True
  return c
