"""Training-time augmentation inside the jitted step: SpecAugment, mixup, random gain.

Pure functions of a PRNG key and arrays; counts and widths are Python values, static under
`jax.jit`, and masks are built from iota comparisons, so shapes stay static.

References:
  * Park et al., 2019, "SpecAugment: A Simple Data Augmentation Method for Automatic Speech
    Recognition", Interspeech, https://arxiv.org/abs/1904.08779.
  * Zhang et al., 2018, "mixup: Beyond Empirical Risk Minimization", ICLR,
    https://arxiv.org/abs/1710.09412.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError


@functools.partial(jax.jit, static_argnames=("freq_masks", "freq_width", "time_masks",
                                             "time_width", "mask_value"))
def spec_augment(rng: jax.Array, features: jax.Array, *, freq_masks: int = 2, freq_width: int = 8,
                 time_masks: int = 2, time_width: int = 20, mask_value: float = 0.0) -> jax.Array:
  """SpecAugment frequency and time masking (Park et al., 2019), without time warping.

  Each example gets its own `freq_masks` bands of bins and `time_masks` spans of frames set to
  `mask_value`. A mask's width is uniform in {0, ..., width} (capped at the axis size) and its
  start uniform over the positions where it fits, as in the paper. Masks are built from iota
  comparisons, so shapes are static and nothing is sliced dynamically.

  Args:
    rng: a PRNG key; the result is a pure function of it.
    features: (batch, frames, bins), e.g. `log_mel` output. The default mask_value=0.0 is
      the mean once features went through `normalize`, the usual place for SpecAugment; on
      raw dB features pass a neutral value yourself (e.g. the dataset mean).
    freq_masks, freq_width: how many frequency masks, and the largest width in bins.
    time_masks, time_width: how many time masks, and the largest width in frames.
    mask_value: the value written into masked cells.

  Returns:
    Features of the same shape and dtype.
  """
  if features.ndim != 3:
    raise UserError(f"spec_augment expects features of shape (batch, frames, bins), got shape "
                    f"{tuple(features.shape)}")
  for name, value in (("freq_masks", freq_masks), ("freq_width", freq_width),
                      ("time_masks", time_masks), ("time_width", time_width)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
      raise UserError(f"spec_augment: {name} must be a non-negative int, got {value!r}")
  batch, frames, bins = features.shape
  freq_rng, time_rng = jax.random.split(rng)
  freq = _band_mask(freq_rng, batch=batch, size=bins, count=freq_masks, width=freq_width)
  time = _band_mask(time_rng, batch=batch, size=frames, count=time_masks, width=time_width)
  masked = freq[:, None, :] | time[:, :, None]
  return jnp.where(masked, jnp.asarray(mask_value, features.dtype), features)


def _band_mask(rng: jax.Array, *, batch: int, size: int, count: int, width: int) -> jax.Array:
  """(batch, size) bool: the union of `count` random bands of width U{0..width} per example."""
  width = min(width, size)
  width_rng, start_rng = jax.random.split(rng)
  widths = jax.random.randint(width_rng, (batch, count, 1), 0, width + 1)
  # maxval is exclusive: starts lie in [0, size - w], so every band fits inside the axis.
  starts = jax.random.randint(start_rng, (batch, count, 1), 0, size - widths + 1)
  position = jax.lax.broadcasted_iota(jnp.int32, (batch, count, size), 2)
  return jnp.any((position >= starts) & (position < starts + widths), axis=1)


@functools.partial(jax.jit, static_argnames=("alpha", "replicated"))
def mixup(rng: jax.Array, x: jax.Array, y: jax.Array, *, alpha: float,
          replicated=None) -> tuple[jax.Array, jax.Array]:
  """mixup (Zhang et al., 2018): blend each example with a partner from the same batch.

  With a random permutation `p` of the batch and lambda_i ~ Beta(alpha, alpha) per example,
  returns x_i' = lambda_i x_i + (1 - lambda_i) x_p(i) and y_i' likewise with the same lambda_i,
  so a one-hot (or any sum-to-one) label row keeps summing to one. Apply it inside the train
  step, on the waveforms or on the features (before SpecAugment), after the batch is on the
  device: the partner is another example of the global batch, so under a data-sharded batch
  XLA inserts the cross-device gather for `x[p]` itself.

  Args:
    rng: a PRNG key; the result is a pure function of it.
    x: (batch, ...) float inputs (waveforms or features).
    y: (batch, classes) float labels, one-hot or multi-hot.
    alpha: Beta concentration (static); alpha <= 0 turns mixup off and returns (x, y) as is.
    replicated: the mesh's replicated sharding, when x is sharded over a mesh: the partners and
      lambdas are then drawn whole on every device. Left to follow the batch's sharding, the
      Beta draw's rejection loop is partitioned, with an all-reduce in its condition, and on
      XLA:CPU's devices in one process that loop raced the partner gather and deadlocked (seen
      as a rendezvous timeout and an abort, about 1 run in 4 on 8 devices).

  Returns:
    (x', y') with the shapes and dtypes of (x, y).
  """
  if not (jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(y.dtype, jnp.floating)):
    raise UserError(f"mixup needs float x and y (labels as one-hot/multi-hot floats), got "
                    f"{jnp.dtype(x.dtype).name} and {jnp.dtype(y.dtype).name}")
  if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
    raise UserError(f"mixup needs x and y with the same batch size, got shapes "
                    f"{tuple(x.shape)} and {tuple(y.shape)}")
  if not math.isfinite(alpha):
    raise UserError(f"mixup alpha must be finite, got {alpha!r}")
  if alpha <= 0:
    return x, y
  batch = x.shape[0]
  perm_rng, lam_rng = jax.random.split(rng)
  partner = jax.random.permutation(perm_rng, batch)
  lam = jax.random.beta(lam_rng, alpha, alpha, (batch,), dtype=jnp.float32)
  if replicated is not None:
    partner, lam = jax.lax.with_sharding_constraint((partner, lam), replicated)
  return _blend(x, x[partner], lam), _blend(y, y[partner], lam)


def _blend(a: jax.Array, b: jax.Array, lam: jax.Array) -> jax.Array:
  """lam * a + (1 - lam) * b with lam broadcast over the trailing axes, in a's dtype."""
  lam = lam.reshape(lam.shape + (1,) * (a.ndim - 1))
  dtype = jnp.promote_types(a.dtype, jnp.float32)  # blend bf16 inputs in float32
  mixed = lam.astype(dtype) * a.astype(dtype) + (1 - lam).astype(dtype) * b.astype(dtype)
  return mixed.astype(a.dtype)


def random_gain(rng: jax.Array, waveforms: jax.Array, *, max_db: float) -> jax.Array:
  """Scales each waveform by its own gain, uniform in [-max_db, max_db] dB.

  Recordings differ in level by tens of dB; a model should not key on it. Apply to float
  waveforms inside the train step (before the log-mel, where a gain is a per-clip offset the
  normalisation does not undo). No clipping: the float signal may exceed full scale.
  """
  if max_db <= 0:
    return waveforms
  db = jax.random.uniform(rng, (waveforms.shape[0],), minval=-max_db, maxval=max_db)
  gain = jnp.power(10.0, db / 20.0).astype(waveforms.dtype)
  return waveforms * gain.reshape((-1,) + (1,) * (waveforms.ndim - 1))
