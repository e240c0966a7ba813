"""The conv families: conv blocks, a family's own pooling, dropout and a classifier head.

  cnn        the seed paper's small CNN: four 3x3 conv blocks, PANNs-style global pooling, a
             dense embedding. `cnn:S` (the paper's model): 422,506 parameters with 10 classes.
  crnn       the `cnn` conv blocks followed by a GRU over time. `crnn:S` (the conv blocks of
             `cnn:S` and a 128-unit GRU): 537,578 parameters with 10 classes.
  dcase_cnn  the DCASE 2018 cross-task baseline (Kong et al., "DCASE 2018 Challenge Surrey
             cross-task convolutional neural network baseline"): four 5x5 conv blocks (64, 128,
             256, 512 channels), global max pooling, a linear head. `dcase_cnn:base` with 10
             classes: 4,309,450 parameters (conv 4,302,400 + BatchNorm 1,920 + head 5,130), the
             count of the reference implementation.

The families differ only in `pool` (the conv map -> the embedding); `ConvNet.__call__` runs the
rest, so the parameter names the fine-tuning regexes freeze (`block1`..`blockN`, `embedding` or
`gru`, `head`) and the intermediates in `out` are the same for all three.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from audiotl_jax.models import common
from audiotl_jax.models.transfer import layers as transfer_layers


def head(num_classes: int, petl, dtype) -> nn.Module:
  """The classifier, named `head`: Dense, or the PETL MLP when `petl.head_hidden` is set."""
  if petl is not None and petl.head_hidden:
    return transfer_layers.MlpHead(petl.head_hidden, num_classes, dtype, name="head")
  return nn.Dense(num_classes, kernel_init=nn.initializers.xavier_uniform(), dtype=dtype,
                  name="head")


class ConvNet(nn.Module):
  """The fields and the forward pass the conv families share; a family adds `pool`.

  Not registered itself: its `channels` default is empty. Each family redeclares the defaults
  from its own `VARIANTS` so that building the class directly gives its default variant.
  """
  num_classes: int
  channels: tuple[int, ...] = ()
  kernel_size: int = 3
  # Applied to the embedding before the head; 0 keeps training steps a function of the batch.
  dropout_rate: float = 0.0
  petl: Any = None              # transfer.Petl: a conv adapter or an MLP head (fine-tuning)
  dtype: Any = jnp.float32

  def block_names(self) -> tuple[str, ...]:
    return common.block_names(len(self.channels))

  def pool(self, x, out: dict) -> jnp.ndarray:
    """(batch, time, freq, channels) -> the embedding; records `pooled` (and more) in `out`.

    Each family defines it; ConvNet itself is never registered or built."""
    raise NotImplementedError(f"{type(self).__name__} defines no pooling")

  @nn.compact
  def __call__(self, x, *, train: bool):
    out = {}
    x = common.to_image(x, self.dtype)
    # The blocks are created here, in this module's scope, so they are top-level `blockK`.
    for name, features in zip(self.block_names(), self.channels):
      x = common.ConvBlock(features, kernel_size=self.kernel_size, dtype=self.dtype, name=name,
                           adapter_reduction=self.petl.conv_reduction if self.petl else 0.0
                           )(x, train=train)
      out[name] = x
    x = self.pool(x, out)
    out["embedding"] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = head(self.num_classes, self.petl, self.dtype)(x)
    # Losses and metrics stay in float32 whatever the compute dtype.
    logits = logits.astype(jnp.float32)
    out["logits"] = logits
    return logits, out


class Cnn(ConvNet):
  """Conv blocks -> global pooling -> `embedding` (Dense + ReLU) -> `head`."""
  FAMILY = "cnn"
  DEFAULT_VARIANT = "S"
  VARIANTS = {
      "S": dict(channels=(32, 64, 128, 256), embedding_dim=128),
      "M": dict(channels=(64, 128, 256, 512), embedding_dim=256),
      # For tests and smoke runs only.
      "tiny": dict(channels=(8, 16, 32, 32), embedding_dim=32),
  }
  channels: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["channels"]
  embedding_dim: int = VARIANTS[DEFAULT_VARIANT]["embedding_dim"]

  def pool(self, x, out):
    # PANNs pooling: average the frequency axis away, then max + mean over time. The max keeps
    # short events that a mean over a 10 s clip would wash out; the mean keeps steady sounds.
    x = jnp.mean(x, axis=2)
    x = jnp.max(x, axis=1) + jnp.mean(x, axis=1)
    out["pooled"] = x
    x = nn.Dense(self.embedding_dim, kernel_init=nn.initializers.xavier_uniform(),
                 dtype=self.dtype, name="embedding")(x)
    return nn.relu(x)


class Crnn(ConvNet):
  """Conv blocks -> mean over frequency -> `gru` -> max + mean over time -> `head`.

  The pooled GRU output is the embedding: there is no dense embedding layer, so
  `embedding_dim` is the GRU width.
  """
  FAMILY = "crnn"
  DEFAULT_VARIANT = "S"
  VARIANTS = {
      "S": dict(channels=(32, 64, 128, 256), embedding_dim=128),
      # For tests and smoke runs only.
      "tiny": dict(channels=(8, 16, 32, 32), embedding_dim=16),
  }
  channels: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["channels"]
  embedding_dim: int = VARIANTS[DEFAULT_VARIANT]["embedding_dim"]

  def pool(self, x, out):
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
    return x


class DcaseCnn(ConvNet):
  """Conv blocks -> global max pool -> `head`; the pooled vector is the embedding."""
  FAMILY = "dcase_cnn"
  DEFAULT_VARIANT = "base"
  VARIANTS = {
      "base": dict(channels=(64, 128, 256, 512)),
      # For tests and smoke runs only.
      "tiny": dict(channels=(8, 16, 32, 64)),
  }
  channels: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["channels"]
  kernel_size: int = 5

  # A property, not a field: the width is the last block's, so it cannot be overridden apart.
  @property
  def embedding_dim(self) -> int:
    return self.channels[-1]

  def pool(self, x, out):
    x = jnp.max(x, axis=(1, 2))
    out["pooled"] = x
    return x


# In the order the registry lists them (`audiotl models`).
FAMILIES = (Cnn, Crnn, DcaseCnn)
