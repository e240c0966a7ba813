"""`audiotl report`: a study folder's runs -> report.md, report.json and plots."""
from etils.epath import Path

from audiotl_jax import fileio
from audiotl_jax.analysis import report


def run(config, workdir) -> Path:
  del config  # the study folder says everything
  path = report.write(fileio.path(workdir))
  print(f"report: {path}")
  return path
