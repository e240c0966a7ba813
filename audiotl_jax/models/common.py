"""Pieces shared by the model families: the conv block, pooling, variant decoding, input checks.

Layout: features arrive as (batch, frames, mel_bins) and are treated as a one-channel image in
NHWC, so height is time and width is frequency. Every conv block halves both axes.
"""
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.models.transfer import layers as transfer_layers

# PyTorch's BatchNorm2d momentum 0.1 (the reference models are PyTorch) is Flax's 0.9: Flax
# weights the old running value, PyTorch the new batch value.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def block_names(num_blocks: int) -> tuple[str, ...]:
  return tuple(f"block{i + 1}" for i in range(num_blocks))


def decode_variant(family: str, variants: Mapping[str, Mapping[str, Any]],
                   variant: str) -> dict[str, Any]:
  """The constructor fields of `family:variant` (a fresh dict, safe to update)."""
  if variant not in variants:
    raise unknown_name("model", f"{family}:{variant}", [f"{family}:{v}" for v in variants])
  return dict(variants[variant])


def to_image(x, dtype) -> jnp.ndarray:
  """(batch, frames, mel_bins) -> (batch, frames, mel_bins, 1) in the compute dtype."""
  if x.ndim != 3:
    raise UserError(
        f"models take log-mel features of shape (batch, frames, mel_bins); got shape {x.shape}")
  return jnp.asarray(x, dtype)[..., None]


def conv_kernel_init(key, shape, dtype=jnp.float32):
  """He-uniform for a conv kernel (kh, kw, in, out): U(-b, b) with b = sqrt(6 / (kh * kw * in)).

  The same distribution as `nn.initializers.he_uniform()`, drawn as a flat vector and reshaped:
  with the default partitionable threefry, XLA:CPU takes seconds to compile a random draw of a
  4-D shape (4-9 s for one 3x3x8x16 kernel here, jax 0.10) against well under a second for the
  flat draw, which made initialising even the tiny models take many seconds on CPU.
  """
  fan_in = math.prod(shape[:-1])
  bound = math.sqrt(6.0 / fan_in)
  flat = jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound)
  return flat.reshape(shape)


def pool2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 average pooling over (time, frequency) that never empties an axis.

  SAME padding rounds odd sizes up (so an axis of size 1 stays 1 and short clips survive any
  number of blocks), and count_include_pad=False keeps the padded zeros out of the average, so a
  border cell is the mean of the real cells only. On even sizes this equals PyTorch's
  avg_pool2d(kernel_size=2); on odd sizes PyTorch drops the last row instead.
  """
  y = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)
  # The divide by the (float32) cell counts would otherwise promote bfloat16 activations.
  return y.astype(x.dtype)


class ConvBlock(nn.Module):
  """Conv (no bias: BatchNorm's shift makes it redundant) -> BatchNorm -> ReLU -> 2x2 avg pool."""
  features: int
  kernel_size: int = 3
  adapter_reduction: float = 0.0   # > 0: a residual conv adapter after the block (PETL)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    k = self.kernel_size
    x = nn.Conv(self.features, (k, k), padding="SAME", use_bias=False,
                kernel_init=conv_kernel_init, dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                     dtype=self.dtype, name="bn")(x)
    x = pool2x2(nn.relu(x))
    if self.adapter_reduction:
      x = transfer_layers.ConvMapAdapter(
          transfer_layers.bottleneck(self.features, self.adapter_reduction), dtype=self.dtype,
          name="adapter")(x)
    return x

