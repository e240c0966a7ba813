"""VGGish (Hershey et al., 2017, "CNN Architectures for Large-Scale Audio Classification",
ICASSP; https://github.com/tensorflow/models/tree/master/research/audioset/vggish), as ported to
PyTorch by torchvggish (https://github.com/harritaylor/torchvggish), whose weights
`audiotl import` reads (`models/import_vggish.py`).

A VGG over single 0.96 s examples of 96 frames x 64 bands (`features/vggish.py`): conv 64, pool,
conv 128, pool, 2 x conv 256, pool, 2 x conv 512, pool (3x3 convs with bias, 2x2 max pools),
then fc 4096, fc 4096, fc 128, with a ReLU after every layer. `vggish:base` has 72,141,184
parameters (convs 4,499,712, fc 67,641,472); with a 527-class head, 72,209,167.

A clip of n examples arrives as (batch, n * 96, 64) and runs as a batch of batch * n examples;
the clip's `embedding` is the mean of its example embeddings (`example_embeddings`,
(batch, n, 128)), and the `head` classifies that mean. Inputs shorter than 96 frames (the VGGish
frontend never makes them; other frontends or tests may) are zero-padded to one example; frames
past the last whole example are dropped, as the official code does.

Parameters live under `block1`..`block4` (the conv groups between pools: 1, 1, 2 and 2 convs,
`conv1`, `conv2`), `embedding` (`fc1`, `fc2`, `fc3`) and `head`, the names the transfer regexes
use; `partial:K` freezes the first K conv blocks. Block outputs in `out` put a clip's examples
side by side in time: (batch, n * time, freq, channels).

Post-processing: the released AudioSet embeddings are PCA-whitened and quantised to 8 bits.
When the variables carry `batch_stats/pca_eigen_vectors` (128, 128) and `pca_means` (128,) (an
import given `--pca`), the model also returns `example_embeddings_pca`, `embedding_pca` and
their uint8 quantisations `..._quantized`, exactly as torchvggish's Postprocessor computes them.
They sit in `batch_stats`, the checkpoint's untrained state, so no optimizer ever moves them, and
a fine-tuned model (built fresh, then filled) does not carry them.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiotl_jax.errors import UserError
from audiotl_jax.features import vggish as vggish_features
from audiotl_jax.models import common
from audiotl_jax.models.convnets import head
from audiotl_jax.models.transfer import layers as transfer_layers

FAMILY = "vggish"
DEFAULT_VARIANT = "base"
VARIANTS = {
    "base": dict(channels=(64, 128, 256, 512), convs=(1, 1, 2, 2), fc_dims=(4096, 4096),
                 embedding_dim=128),
    # For tests and smoke runs only.
    "tiny": dict(channels=(8, 16, 16, 32), convs=(1, 1, 2, 2), fc_dims=(32, 32),
                 embedding_dim=16),
}
DEFAULT_INPUT = (vggish_features.EXAMPLE_FRAMES, vggish_features.N_MELS)  # one example
PCA_KEYS = ("pca_eigen_vectors", "pca_means")
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0


def postprocess(embeddings, eigen_vectors, means):
  """(..., 128) embeddings -> (PCA-whitened float32, 8-bit quantised uint8), as the release.

  (e - means) @ eigen_vectors.T, clipped to [-2, 2] and mapped onto 0..255 by rounding (half to
  even, as torch.round).
  """
  e = jnp.asarray(embeddings, jnp.float32)
  pca = jnp.matmul(e - means, jnp.asarray(eigen_vectors, jnp.float32).T,
                   precision=jax.lax.Precision.HIGHEST)
  clipped = jnp.clip(pca, QUANTIZE_MIN, QUANTIZE_MAX)
  quantized = jnp.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))
  return pca, quantized.astype(jnp.uint8)


class VggBlock(nn.Module):
  """`convs` x (3x3 conv with bias -> ReLU), then a 2x2 max pool."""
  features: int
  convs: int = 1
  adapter_reduction: float = 0.0   # > 0: a residual conv adapter after the block (PETL)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.convs):
      x = nn.relu(nn.Conv(self.features, (3, 3), padding="SAME", dtype=self.dtype,
                          kernel_init=common.conv_kernel_init, name=f"conv{i + 1}")(x))
    # SAME equals PyTorch's MaxPool2d on the even sizes VGGish sees (96 x 64 halves to 6 x 4);
    # on odd sizes it keeps the last row instead of dropping it, so no axis ever empties.
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    if self.adapter_reduction:
      x = transfer_layers.ConvMapAdapter(
          transfer_layers.bottleneck(self.features, self.adapter_reduction), dtype=self.dtype,
          name="adapter")(x)
    return x


class Embedding(nn.Module):
  """The fully connected layers: fc1, fc2 (`fc_dims`), fc3 (`embedding_dim`), each with ReLU."""
  fc_dims: tuple[int, ...]
  embedding_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    hidden = []
    for i, width in enumerate((*self.fc_dims, self.embedding_dim)):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(x))
      hidden.append(x)
    return x, hidden[:-1]


class Vggish(nn.Module):
  """Features (batch, n * 96, 64) -> (logits, out); see the module docstring."""
  num_classes: int
  channels: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["channels"]
  convs: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["convs"]
  fc_dims: tuple[int, ...] = VARIANTS[DEFAULT_VARIANT]["fc_dims"]
  embedding_dim: int = VARIANTS[DEFAULT_VARIANT]["embedding_dim"]
  example_frames: int = vggish_features.EXAMPLE_FRAMES
  dropout_rate: float = 0.0        # on the clip embedding, before the head
  petl: Any = None                 # transfer.Petl: a conv adapter or an MLP head (fine-tuning)
  dtype: Any = jnp.float32

  def block_names(self) -> tuple[str, ...]:
    return common.block_names(len(self.channels))

  @nn.compact
  def __call__(self, x, *, train: bool):
    out = {}
    x = common.to_image(x, self.dtype)
    batch, frames, bins = x.shape[:3]
    e = self.example_frames
    x = jnp.pad(x, ((0, 0), (0, max(0, e - frames)), (0, 0), (0, 0)))
    n = max(1, frames // e)
    x = x[:, :n * e].reshape(batch * n, e, bins, 1)
    if len(self.convs) != len(self.channels):
      raise UserError(f"model vggish: convs {self.convs} and channels {self.channels} must have "
                      f"one entry per block each")
    for name, features, k in zip(self.block_names(), self.channels, self.convs):
      x = VggBlock(features, k, self.petl.conv_reduction if self.petl else 0.0, self.dtype,
                   name=name)(x)
      out[name] = x.reshape(batch, n * x.shape[1], *x.shape[2:])
    # torchvggish flattens the last map in NHWC order (time, frequency, channels): the order of
    # this layout, so its first fc weights line up without any permutation.
    x, hidden = Embedding(self.fc_dims, self.embedding_dim, self.dtype, name="embedding")(
        x.reshape(batch * n, -1))
    for i, h in enumerate(hidden):
      out[f"fc{i + 1}"] = h.reshape(batch, n, -1).mean(axis=1)
    examples = x.reshape(batch, n, self.embedding_dim)
    out["example_embeddings"] = examples
    x = examples.mean(axis=1)
    out["pooled"] = out["embedding"] = x
    if all(self.has_variable("batch_stats", k) for k in PCA_KEYS):
      pca = [self.get_variable("batch_stats", k) for k in PCA_KEYS]
      out["example_embeddings_pca"], out["example_embeddings_quantized"] = postprocess(
          examples, *pca)
      out["embedding_pca"], out["embedding_quantized"] = postprocess(x, *pca)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = head(self.num_classes, self.petl, self.dtype)(x).astype(jnp.float32)
    out["logits"] = logits
    return logits, out
