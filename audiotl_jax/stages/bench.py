"""`audiotl bench`: throughput of train steps, frontends, the input pipeline and the scores."""
from pathlib import Path

from audiotl_jax import bench


def run(config, workdir) -> list[dict]:
  return bench.run(Path(workdir), only=[x for x in config.only.split(",") if x],
                   quick=config.quick)
