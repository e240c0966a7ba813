"""PANNs: the AudioSet CNNs of Kong et al. (2020), "PANNs: Large-Scale Pretrained Audio Neural
Networks for Audio Pattern Recognition", IEEE/ACM TASLP; https://github.com/qiuqiangkong/
audioset_tagging_cnn (pytorch/models.py: Cnn6, Cnn10, Cnn14, Cnn14_16k).

Log-mel (batch, frames, 64) -> `bn0` (BatchNorm per mel bin) -> conv blocks, each followed by
dropout 0.2 -> mean over frequency -> max + mean over time (`pooled`) -> dropout 0.5 ->
`embedding` (the official `fc1`, Dense + ReLU) -> `head` (the official `fc_audioset`). A block is
two 3x3 convs without bias, each with BatchNorm and ReLU (Cnn6: one 5x5), then 2x2 average
pooling; Cnn14's sixth block does not pool. The official dropout after `fc1` only touches the
embedding it returns, never the logits, so it is left out.

Trainable parameters with 527 classes: cnn6 4,837,455; cnn10 5,219,279; cnn14 80,753,615.

The log-mel frontend is outside the model, as for every family here (`features/panns.py`,
frontend kind `panns`); `frontend_setup` names the set-up the released weights were trained
with, which `audiotl import` checks against the file's STFT and mel buffers and writes into the
checkpoint's metadata. Pooling floors odd sizes as PyTorch's avg_pool2d does (the official
numbers depend on it).
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiotl_jax.models import common
from audiotl_jax.models import convnets
from audiotl_jax.models.transfer import layers as transfer_layers

FAMILY = "panns"
DEFAULT_VARIANT = "cnn14"
_CNN10 = dict(channels=(64, 128, 256, 512), embedding_dim=512)
_CNN14 = dict(channels=(64, 128, 256, 512, 1024, 2048), embedding_dim=2048, pool_last=False)
VARIANTS = {
    "cnn6": dict(_CNN10, convs=1, kernel_size=5),
    "cnn10": dict(_CNN10),
    # autrainer's Cnn10, used by the published study: no dropout around fc1.
    "cnn10_autrainer": dict(_CNN10, fc_dropout=0.0),
    "cnn14": dict(_CNN14),
    "cnn14_16k": dict(_CNN14, frontend_setup="16k"),  # the official Cnn14_16k: the same network
    # For tests and smoke runs only.
    "tiny": dict(channels=(8, 16, 32, 32), embedding_dim=32, frontend_setup="16k"),
}


def xavier_uniform(key, shape, dtype=jnp.float32):
  """The official init_layer's xavier_uniform_, drawn flat (XLA:CPU compiles it far faster)."""
  receptive = math.prod(shape[:-2])
  bound = math.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
  return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)


def batch_norm(train: bool, dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=common.BN_MOMENTUM,
                      epsilon=common.BN_EPSILON, dtype=dtype, name=name)


def pool2x2(x: jnp.ndarray) -> jnp.ndarray:
  """PyTorch's avg_pool2d(kernel_size=2) on (batch, time, freq, channels): an odd last row or
  column is dropped, as the official numbers need. An axis already down to 1 stays 1 (PyTorch
  would fail there), so short clips still run."""
  window = tuple(2 if size >= 2 else 1 for size in x.shape[1:3])
  return nn.avg_pool(x, window, strides=window, padding="VALID").astype(x.dtype)


def dropout(rng, x: jnp.ndarray, rate: float) -> jnp.ndarray:
  """Inverted dropout whose mask is drawn flat and reshaped: XLA:CPU compiles a random draw of
  a 4-D shape far slower (measured: panns:tiny's train step compiles in 6 s, against 12 s; see
  common.conv_kernel_init)."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.size,)).reshape(x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class PannsBlock(nn.Module):
  """`convs` x (conv without bias -> BatchNorm -> ReLU), then optional 2x2 average pooling.

  Submodules `conv1`/`bn1` (and `conv2`/`bn2`) carry the official names.
  """
  features: int
  convs: int = 2
  kernel_size: int = 3
  pool: bool = True
  adapter_reduction: float = 0.0   # > 0: a residual conv adapter after the block (PETL)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    k = self.kernel_size
    for i in range(1, self.convs + 1):
      x = nn.Conv(self.features, (k, k), padding="SAME", use_bias=False,
                  kernel_init=xavier_uniform, dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(batch_norm(train, self.dtype, f"bn{i}")(x))
    if self.pool:
      x = pool2x2(x)
    if self.adapter_reduction:
      x = transfer_layers.ConvMapAdapter(
          transfer_layers.bottleneck(self.features, self.adapter_reduction), dtype=self.dtype,
          name="adapter")(x)
    return x


class Panns(nn.Module):
  """Log-mel features (batch, frames, mel_bins) -> (logits, out)."""
  num_classes: int
  channels: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["channels"]
  embedding_dim: int = VARIANTS[DEFAULT_VARIANT]["embedding_dim"]
  convs: int = 2                  # convs per block (Cnn6: 1)
  kernel_size: int = 3
  pool_last: bool = True          # Cnn14's sixth block does not pool
  block_dropout: float = 0.2
  fc_dropout: float = 0.5         # before fc1 (`embedding`)
  frontend_setup: str = "32k"     # features.panns.SETUPS: the released weights' frontend
  petl: Any = None                # transfer.Petl: a conv adapter or an MLP head (fine-tuning)
  dtype: Any = jnp.float32

  def block_names(self) -> tuple[str, ...]:
    return common.block_names(len(self.channels))

  def stem_names(self) -> tuple[str, ...]:
    """Parameters below block1: frozen by `partial:k` for any k >= 1."""
    return ("bn0",)

  @nn.compact
  def __call__(self, x, *, train: bool):
    out = {}
    x = common.to_image(x, self.dtype)     # (batch, time, mel, 1)
    # bn0 normalises each mel bin over batch and time: the official transposes bins to channels.
    x = batch_norm(train, self.dtype, "bn0")(x[..., 0])[..., None]
    last = len(self.channels) - 1
    for i, (name, features) in enumerate(zip(self.block_names(), self.channels)):
      x = PannsBlock(features, self.convs, self.kernel_size, pool=self.pool_last or i < last,
                     adapter_reduction=self.petl.conv_reduction if self.petl else 0.0,
                     dtype=self.dtype, name=name)(x, train=train)
      out[name] = x
      if train and self.block_dropout:
        x = dropout(self.make_rng("dropout"), x, self.block_dropout)
    x = jnp.mean(x, axis=2)
    x = jnp.max(x, axis=1) + jnp.mean(x, axis=1)
    out["pooled"] = x
    if train and self.fc_dropout:
      x = dropout(self.make_rng("dropout"), x, self.fc_dropout)
    x = nn.relu(nn.Dense(self.embedding_dim, kernel_init=nn.initializers.xavier_uniform(),
                         dtype=self.dtype, name="embedding")(x))
    out["embedding"] = x
    logits = convnets.head(self.num_classes, self.petl, self.dtype)(x).astype(jnp.float32)
    out["logits"] = logits
    return logits, out
