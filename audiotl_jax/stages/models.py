"""`audiotl models`: every registered model and variant with its trainable parameter count."""
from audiotl_jax import models


def run(config, workdir=None) -> None:
  del workdir
  for name, count in models.describe_models(config.num_classes):
    print(f"{name:<20} {count:>12,}")
