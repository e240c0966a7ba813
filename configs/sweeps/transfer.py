r"""Fine-tune every finished pre-training of a sweep on a downstream task with several strategies.

  audiotl sweep \
      --config configs/sweeps/transfer.py:pretrained=runs/scaling,data=data/speech_commands \
      --workdir runs/study/finetune --launcher slurm

Arguments after the colon: pretrained (a sweep folder; every run in it that has finished becomes
an `init` value, so re-running this sweep picks up pre-trainings that finished since), data (a
prepared downstream task), strategies (`+`-separated, see configs/finetune.py), model (must match
the pre-training). Runs are named `<state>-<strategy>`, the layout `audiotl report` reads from
`<study>/finetune/`.
"""
import ml_collections


from audiotl_jax import config as config_lib
from audiotl_jax.config import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, pretrained="runs/scaling", data="data/speech_commands",
                  strategies="linear+full", model="cnn:S")
  c = ml_collections.ConfigDict()
  c.stage = "finetune"
  c.base = f"finetune.py:model={arg.model}"
  c.axes = (
      ("init", config_lib.finished_runs(f"{arg.pretrained}/*")),
      # The config argument, not the `strategy` key: the argument also picks the strategy's
      # learning rate and whether SpecAugment is on.
      (":strategy", tuple(arg.strategies.split("+"))),
  )
  c.fixed = (("data.dir", arg.data), ("progress", False))
  c.name = "{init}-{strategy}"
  return c
