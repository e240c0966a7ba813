"""`audiotl sweep`: a sweep config -> one checked `audiotl <stage>` command per run, launched.

No process set-up here: each run is its own process (`launch/`), so this command stays light.
"""
from audiotl_jax import fileio
from audiotl_jax.launch import sweep


def run(config, workdir) -> int:
  return sweep.run(config.spec, fileio.path(workdir), overrides=list(config.overrides),
                   launcher=config.launcher, dry_run=config.dry_run, only=config.only)
