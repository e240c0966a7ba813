"""The DCASE 2018 cross-task baseline CNN (Kong et al., "DCASE 2018 Challenge Surrey cross-task
convolutional neural network baseline").

Four 5x5 conv blocks (64, 128, 256, 512 channels), global max pooling over time and frequency,
a linear head. With 10 classes: 4,309,450 parameters (conv 4,302,400 + BatchNorm 1,920 + head
5,130), the count of the reference implementation.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from audiotl_jax.models import common

FAMILY = "dcase_cnn"
DEFAULT_VARIANT = "base"
VARIANTS = {
    "base": dict(channels=(64, 128, 256, 512)),
    # For tests and smoke runs only.
    "tiny": dict(channels=(8, 16, 32, 64)),
}


def decode_variant(variant: str) -> dict[str, Any]:
  return common.decode_variant(FAMILY, VARIANTS, variant)


class DcaseCnn(nn.Module):
  """Conv blocks -> global max pool -> `head`; the pooled vector is the embedding."""
  num_classes: int
  channels: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["channels"]
  kernel_size: int = 5
  # Applied to the pooled vector before the head; 0 keeps training steps a function of the batch.
  dropout_rate: float = 0.0
  petl: Any = None              # models.petl.Petl: a conv adapter or an MLP head (fine-tuning)
  dtype: Any = jnp.float32

  @property
  def embedding_dim(self) -> int:
    return self.channels[-1]

  def block_names(self) -> tuple[str, ...]:
    return common.block_names(len(self.channels))

  @nn.compact
  def __call__(self, x, *, train: bool):
    out = {}
    x = common.to_image(x, self.dtype)
    x = common.conv_trunk(x, self.channels, self.kernel_size, self.dtype, train=train, out=out,
                          petl=self.petl)
    x = jnp.max(x, axis=(1, 2))
    out["pooled"] = x
    out["embedding"] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = common.head(self.num_classes, self.petl, self.dtype)(x)
    logits = logits.astype(jnp.float32)
    out["logits"] = logits
    return logits, out
