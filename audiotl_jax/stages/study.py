"""`audiotl study`: a study config (a graph of sweeps) -> its runs, in dependency order, launched.

No process set-up here: each run is its own process (launch/study.py), so this command stays light.
"""
from audiotl_jax import fileio
from audiotl_jax.errors import unknown_name
from audiotl_jax.launch import study


def run(config, workdir) -> int:
  if config.select_by:
    # The registry of scores lives with the score stage (it imports JAX: only when asked).
    from audiotl_jax.stages import score  # pylint: disable=g-import-not-at-top
    known = score.known_scores()
    if config.select_by not in known:
      raise unknown_name("score (--select-by)", config.select_by, known)
  return study.run(config.spec, fileio.path(workdir), overrides=list(config.overrides),
                   launcher=config.launcher, dry_run=config.dry_run, status=config.status,
                   only=list(config.only), exclude=list(config.exclude),
                   select_by=config.select_by, top_k=config.top_k,
                   select_layer=config.select_layer, compare_with=config.compare_with)
