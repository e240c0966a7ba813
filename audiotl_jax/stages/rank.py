"""`audiotl rank`: how well each transferability score ranks the states against fine-tuning.

`--scores` may name several scores.json files (or folders), comma-separated: one per downstream
task; each is matched with the fine-tuning runs of its task.
"""
from etils.epath import Path

from audiotl_jax import fileio
from audiotl_jax.analysis import ranking


def run(config, workdir) -> Path:
  path = ranking.run(scores_path=str(config.scores), finetune=list(config.finetune),
                     out_dir=fileio.path(workdir), size_weight=config.size_weight,
                     num_resamples=config.bootstrap)
  print(f"rank: {path}")
  return path
