"""The seed paper's small CNN: four 3x3 conv blocks, PANNs-style global pooling, a dense embedding.

Variant `S` (the paper's model) has about 0.42 M parameters with 10 classes (422,506 exactly).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from audiotl_jax.models import common

FAMILY = "cnn"
DEFAULT_VARIANT = "S"
VARIANTS = {
    "S": dict(channels=(32, 64, 128, 256), embedding_dim=128),
    "M": dict(channels=(64, 128, 256, 512), embedding_dim=256),
    # For tests and smoke runs only.
    "tiny": dict(channels=(8, 16, 32, 32), embedding_dim=32),
}


def decode_variant(variant: str) -> dict[str, Any]:
  return common.decode_variant(FAMILY, VARIANTS, variant)


class Cnn(nn.Module):
  """Conv blocks -> global pooling -> `embedding` (Dense + ReLU) -> `head`."""
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
    # PANNs pooling: average the frequency axis away, then max + mean over time. The max keeps
    # short events that a mean over a 10 s clip would wash out; the mean keeps steady sounds.
    x = jnp.mean(x, axis=2)
    x = jnp.max(x, axis=1) + jnp.mean(x, axis=1)
    out["pooled"] = x
    x = nn.Dense(self.embedding_dim, kernel_init=nn.initializers.xavier_uniform(),
                 dtype=self.dtype, name="embedding")(x)
    x = nn.relu(x)
    out["embedding"] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = common.head(self.num_classes, self.petl, self.dtype)(x)
    logits = logits.astype(jnp.float32)
    out["logits"] = logits
    return logits, out
