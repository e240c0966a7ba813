"""CRNN: the `cnn` conv blocks followed by a GRU over time.

Variant `S` has the conv blocks of `cnn:S` and a 128-unit GRU: 537,578 parameters with 10 classes.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from audiotl_jax.models import common

FAMILY = "crnn"
DEFAULT_VARIANT = "S"
VARIANTS = {
    "S": dict(channels=(32, 64, 128, 256), embedding_dim=128),
    # For tests and smoke runs only.
    "tiny": dict(channels=(8, 16, 32, 32), embedding_dim=16),
}


def decode_variant(variant: str) -> dict[str, Any]:
  return common.decode_variant(FAMILY, VARIANTS, variant)


class Crnn(nn.Module):
  """Conv blocks -> mean over frequency -> `gru` -> max + mean over time -> `head`.

  The pooled GRU output is the embedding: there is no dense embedding layer, so
  `embedding_dim` is the GRU width.
  """
  num_classes: int
  channels: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["channels"]
  embedding_dim: int = VARIANTS[DEFAULT_VARIANT]["embedding_dim"]
  kernel_size: int = 3
  # Applied to the embedding before the head; 0 keeps training steps a function of the batch.
  dropout_rate: float = 0.0
  petl: Any = None              # models.petl.Petl: a conv adapter or an MLP head (fine-tuning)
  dtype: Any = jnp.float32

  def block_names(self) -> tuple[str, ...]:
    return common.block_names(len(self.channels))

  @nn.compact
  def __call__(self, x, *, train: bool):
    out = {}
    x = common.to_image(x, self.dtype)
    x = common.conv_trunk(x, self.channels, self.kernel_size, self.dtype, train=train, out=out,
                          petl=self.petl)
    x = jnp.mean(x, axis=2)  # (batch, time, channels)
    out["sequence"] = x
    # parent=None: otherwise the cell would be registered in this module's scope (as a top-level
    # `GRUCell_0`) instead of being adopted by the RNN, and escape the `gru` name the freezing
    # regexes rely on.
    cell = nn.GRUCell(features=self.embedding_dim, dtype=self.dtype, parent=None)
    x = nn.RNN(cell, name="gru")(x)
    out["gru"] = x
    x = jnp.max(x, axis=1) + jnp.mean(x, axis=1)
    out["pooled"] = x
    out["embedding"] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = common.head(self.num_classes, self.petl, self.dtype)(x)
    logits = logits.astype(jnp.float32)
    out["logits"] = logits
    return logits, out
