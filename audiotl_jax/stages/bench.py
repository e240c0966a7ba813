"""`audiotl bench`: throughput of train steps, frontends, the input pipeline and the scores."""
from audiotl_jax import bench, fileio


def run(config, workdir) -> list[dict]:
  # Benchmarks time local work and write their tables beside it.
  workdir = fileio.local_only(workdir, "`audiotl bench` writes locally: give a local --workdir")
  return bench.run(workdir, only=[x for x in config.only.split(",") if x],
                   quick=config.quick)
