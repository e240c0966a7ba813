"""`audiotl rank`: how well each transferability score ranks the states against fine-tuning."""
from etils.epath import Path

from audiotl_jax import fileio
from audiotl_jax.analysis import ranking


def run(config, workdir) -> Path:
  path = ranking.run(scores_path=fileio.path(config.scores), finetune=list(config.finetune),
                     out_dir=fileio.path(workdir), size_weight=config.size_weight,
                     num_resamples=config.bootstrap)
  print(f"rank: {path}")
  return path
