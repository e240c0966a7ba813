r"""The study's main pre-training sweep: AudioSet's ontology branches x data fractions x seeds.

  audiotl sweep --config configs/sweeps/scaling.py:data=data/audioset \
      --workdir runs/scaling --launcher slurm              # 7 x 4 x 3 = 84 runs
  audiotl sweep --config configs/sweeps/scaling.py:model=ast:base,seeds=1 \
      --workdir runs/scaling_ast --only "Music-*" --dry-run

Arguments after the colon: data (a folder written by `audiotl prepare` with reader audioset),
split (its training split: unbalanced_train, the ~2M clips; balanced_train, the 20k), model
(see `audiotl models`), seeds (how many). Run folders are named `<branch>-<fraction>-s<seed>`;
fine-tune them with configs/sweeps/transfer.py.
"""
import ml_collections

from audiotl_jax.config import parse_arg

# The seven top-level branches of the AudioSet ontology (`audiotl ontology plan` counts them).
BRANCHES = ("Human sounds", "Animal", "Music", "Natural sounds", "Sounds of things",
            "Source-ambiguous sounds", "Channel, environment and background")


def get_config(arg=None):
  arg = parse_arg(arg, data="data/audioset", split="unbalanced_train", model="cnn:S", seeds=3)
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"
  c.base = f"pretrain.py:model={arg.model}"
  seeds = tuple(range(arg.seeds))
  c.axes = (
      ("data.subset", BRANCHES),
      ("data.fraction", (0.1, 0.25, 0.5, 1.0)),
      ("seed", seeds),
      ("data.seed", seeds),
  )
  # A seed draws both the initialisation and which clips make up a fraction, so the spread over
  # seeds includes the luck of the data draw, which is what a scaling curve has to carry.
  c.zip = (("seed", "data.seed"),)
  c.fixed = (
      ("data.dir", arg.data),
      ("data.train_split", arg.split),
      ("progress", False),      # logs, not terminals: no progress bars in them
  )
  c.name = "{subset}-{fraction}-s{seed}"
  c.max_parallel = 0
  return c
