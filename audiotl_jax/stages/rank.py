"""`audiotl rank`: how well each transferability score ranks the states against fine-tuning."""
from pathlib import Path

from audiotl_jax.analysis import ranking


def run(config, workdir) -> Path:
  path = ranking.run(scores_path=Path(config.scores), finetune=list(config.finetune),
                     out_dir=Path(workdir), size_weight=config.size_weight,
                     num_resamples=config.bootstrap)
  print(f"rank: {path}")
  return path
