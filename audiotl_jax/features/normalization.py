"""Feature normalisation: the package's one meaning of "normalise", and the statistics for it.

`normalize` is (x - mean) / std. A recipe that scales differently passes its scale in `std`:
AST's dataloader (https://github.com/YuanGongND/ast/blob/master/src/dataloader.py) divides by
twice the dataset std, so `fbank.ast_features` calls `normalize(f, mean, 2 * std)`.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError


def normalize(features: jax.Array, mean, std) -> jax.Array:
  """(features - mean) / std, with statistics from `feature_stats` on a few training batches.

  A Python or numpy `std` must be positive and finite (a config's bad value fails here, with
  its value, rather than as infs in the features). A jax array is not checked: reading it would
  be a host sync, and inside a jitted step it is traced.
  """
  if isinstance(std, (int, float, np.number)) and not (math.isfinite(std) and std > 0):
    raise UserError(f"normalize needs a positive std, got {std!r}")
  return (features - mean) / std


@jax.jit
def feature_stats(features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Scalar mean and standard deviation over every element of a batch of features.

  Computed in at least float32 (two-pass, so large dB offsets do not cancel). Average the
  results of a few training batches and pass them to `normalize`.
  """
  x = features.astype(jnp.promote_types(features.dtype, jnp.float32))
  mean = jnp.mean(x)
  return mean, jnp.sqrt(jnp.mean(jnp.square(x - mean)))
