"""`audiotl report`: a study folder's runs -> report.md, report.json and plots."""
from pathlib import Path

from audiotl_jax.analysis import report


def run(config, workdir) -> Path:
  del config  # the study folder says everything
  path = report.write(Path(workdir))
  print(f"report: {path}")
  return path
