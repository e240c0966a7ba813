"""One module per `audiotl` command, each `run(config, workdir)`: the calling convention.

Stages are the top of the package: they put data/, features/, models/, train/, scores/,
analysis/ and launch/ together into a command. Nothing outside stages/ and cli.py imports them;
a stage may run another (demo runs them all, score embeds first). A config stage's `config` comes
from its file (`configs/<stage>.py`, `--config.KEY=VALUE` overrides); a flag stage's from its
command-line flags, so every stage is called the same way. Modules are imported only when their
command runs: `audiotl sweep` must not pay for JAX.
"""
import importlib
from typing import NamedTuple

from audiotl_jax.errors import unknown_name


class Stage(NamedTuple):
  module: str          # audiotl_jax.stages.<module>
  config: str | None   # default config file in configs/; None: the config comes from flags
  setup: bool          # runs JAX work in this process: distributed set-up, compilation cache
  help: str


STAGES = {
    "demo": Stage("demo", "demo.py", True,
                  "the whole study on the embedded synthetic default, ending in a report"),
    "prepare": Stage("prepare", "prepare.py", True,
                     "raw audio + labels -> ArrayRecord shards + manifest.json"),
    "pretrain": Stage("pretrain", "pretrain.py", True,
                      "multi-label pre-training on an ontology subset of AudioSet"),
    "finetune": Stage("finetune", "finetune.py", True,
                      "transfer to a downstream task with a strategy"),
    "embed": Stage("embed", "embed.py", True, "export embeddings of any layer for a dataset"),
    "probe": Stage("probe", "probe.py", True, "a new classifier (logistic, MLP) on a frozen "
                   "model's embeddings of one layer or several"),
    "score": Stage("score", "score.py", True,
                   "transferability scores of pre-trained states on a dataset"),
    "ontology": Stage("ontology", None, False, "inspect the AudioSet ontology and plan subsets"),
    "models": Stage("models", None, False, "every model and variant with its parameter count"),
    "stats": Stage("stats", None, False,
                   "mean and std of a prepared dataset's AST fbank features"),
    "sweep": Stage("sweep", None, False, "expand a sweep config into runs; run them locally or "
                   "write SLURM / TPU-VM launches; skip what is done"),
    "study": Stage("study", None, False, "a study config (a graph of sweeps: prepare -> pretrain "
                   "-> finetune -> score -> report) run in dependency order; skip what is done"),
    "synthetic": Stage("synthetic", None, False,
                       "synthetic AudioSet and downstream tasks in their real layouts"),
    "import": Stage("import_weights", None, True, "AST weights (official .pth, Hugging Face "
                    ".safetensors/.bin) -> a checkpoint to fine-tune, embed or score from"),
    "report": Stage("report", None, False, "aggregate a study's runs into report.md and plots"),
    "rank": Stage("rank", None, False,
                  "how well each score ranks states against fine-tuning results"),
    "bench": Stage("bench", None, False,
                   "throughput of train steps, frontend, input pipeline, scores"),
}


def get(command: str):
  """The module of `command`, imported now."""
  if command not in STAGES:
    raise unknown_name("command", command, STAGES)
  return importlib.import_module(f"audiotl_jax.stages.{STAGES[command].module}")
