"""Parameter-efficient transfer layers: LoRA, bottleneck and convolutional adapters, prompts.

A `Petl` value (frozen, hashable: it is a module field) says which extra modules a model builds.
The modules live inside the blocks under fixed names (`lora_q`, `adapter_ffn`, `conv_adapter`,
`prompt`, `prefix_key`, ...), so `masks.py` selects them by regex like any other parameter, and
a pre-trained checkpoint transplants into everything else unchanged.

Initialisation follows the rule that makes an added module train and start as the identity: the
down-projection is random and the up-projection zero (LoRA: A random, B zero, as Hu et al. 2021).
`compat=True` reproduces the original PETL_AST code (Cappellazzo et al. 2024) instead, including
its choices that differ: adapters with both projections zero (which never receive a gradient),
one LoRA pair shared by query and key with A zero and B Kaiming-uniform, sequential adapters that
replace the sub-layer's output instead of adding to it, prompts that overwrite the distillation
token, and a linear head on the mean of all tokens after a trainable final LayerNorm.

References:
  * Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
  * Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP", ICML.
  * Pfeiffer et al., 2021, "AdapterFusion", EACL.
  * Jia et al., 2022, "Visual Prompt Tuning", ECCV; Li & Liang, 2021, "Prefix-Tuning", ACL.
  * Gulati et al., 2020, "Conformer", Interspeech (the convolution module the conv adapter follows).
  * Cappellazzo et al., 2024, "Parameter-Efficient Transfer Learning of Audio Spectrogram
    Transformers", https://github.com/umbertocappellazzo/PETL_AST.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiotl_jax.errors import UserError

ADAPTER_KINDS = ("", "houlsby", "pfeiffer")
ADAPTER_MODES = ("parallel", "sequential")
ADAPTER_LOCATIONS = ("ffn", "attn")


@dataclasses.dataclass(frozen=True)
class Petl:
  """Which parameter-efficient modules a model builds (all off by default)."""
  lora_rank: int = 0
  lora_targets: tuple[str, ...] = ("q", "v")
  lora_alpha: float = 0.0            # scale = alpha / rank; 0 means scale 1
  adapter: str = ""                  # "houlsby" (attention and FFN) or "pfeiffer" (one place)
  adapter_dim: int = 0               # bottleneck width
  adapter_mode: str = "parallel"     # or "sequential"
  adapter_location: str = "ffn"      # where a Pfeiffer adapter sits: "ffn" or "attn"
  conv_adapter_dim: int = 0          # Conformer-style convolutional adapter width
  conv_kernel: int = 3
  conv_reduction: float = 0.0        # conv families: adapter width = block channels / this
  prompt_tokens: int = 0
  prompt_deep: bool = False          # a fresh set of prompts at every block, not only the first
  prefix_tokens: int = 0             # key + value vectors per block (an even number)
  head_hidden: int = 0               # > 0: an MLP head (Dense + ReLU + Dense) instead of linear
  compat: bool = False               # reproduce the PETL_AST code's choices (see module doc)

  def __post_init__(self):
    if self.adapter not in ADAPTER_KINDS:
      raise UserError(f"adapter must be one of {ADAPTER_KINDS[1:]}, got {self.adapter!r}")
    if self.adapter_mode not in ADAPTER_MODES:
      raise UserError(f"config key 'petl.adapter_mode' must be one of {ADAPTER_MODES}, got "
                      f"{self.adapter_mode!r}")
    if self.adapter_location not in ADAPTER_LOCATIONS:
      raise UserError(f"config key 'petl.adapter_location' must be one of {ADAPTER_LOCATIONS}, "
                      f"got {self.adapter_location!r}")
    bad = [t for t in self.lora_targets if t not in ("q", "k", "v", "o")]
    if bad:
      raise UserError(f"config key 'petl.lora_targets': {bad} not among q, k, v, o")
    if self.prefix_tokens % 2:
      raise UserError(f"prefix tuning splits its tokens evenly over keys and values; got an odd "
                      f"number, {self.prefix_tokens}")
    if self.adapter and self.adapter_dim < 1:
      raise UserError("a bottleneck adapter needs a width of at least 1 (lower the reduction rate)")

  @property
  def adapter_places(self) -> tuple[str, ...]:
    if self.adapter == "houlsby":
      return ("attn", "ffn")
    return (self.adapter_location,) if self.adapter == "pfeiffer" else ()


def bottleneck(width: int, reduction: float) -> int:
  """round(width / reduction), as the PETL_AST code sizes adapters; at least 1."""
  if reduction <= 0:
    raise UserError(f"a reduction rate must be positive, got {reduction}")
  return max(1, int(round(width / reduction)))


def _zeros_or(compat_zero: bool, init):
  return nn.initializers.zeros if compat_zero else init


class Bottleneck(nn.Module):
  """Dense down -> GELU -> Dense up; up starts at zero so the block starts as the identity."""
  dim: int
  compat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = nn.Dense(self.dim, dtype=self.dtype, name="down",
                 kernel_init=_zeros_or(self.compat, nn.initializers.lecun_normal()))(x)
    h = nn.gelu(h, approximate=False)
    return nn.Dense(width, dtype=self.dtype, name="up", kernel_init=nn.initializers.zeros)(h)


class LoraDelta(nn.Module):
  """x -> (x A) B * scale, the low-rank update of a frozen Dense."""
  rank: int
  features: int
  scale: float = 1.0
  compat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.compat:  # PETL_AST: A zero, B Kaiming-uniform(a=sqrt(5)).
      a_init = nn.initializers.zeros
      b_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
    else:  # Hu et al.: A random, B zero.
      a_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
      b_init = nn.initializers.zeros
    h = nn.Dense(self.rank, use_bias=False, dtype=self.dtype, kernel_init=a_init, name="a")(x)
    h = nn.Dense(self.features, use_bias=False, dtype=self.dtype, kernel_init=b_init, name="b")(h)
    return h * self.scale


class ConvAdapter(nn.Module):
  """Conformer-style convolution module as a bottleneck adapter on a token sequence.

  LayerNorm -> Dense to 2*dim -> GLU -> depthwise conv over the patch grid -> LayerNorm -> swish
  -> Dense up (zero-initialised). Conformer uses BatchNorm after the depthwise conv; a LayerNorm
  keeps the adapter free of batch statistics, so it behaves the same in a frozen (inference-mode)
  backbone and under any batch sharding. Tokens before the patches (cls, dist, prompts) skip the
  convolution: they have no grid neighbours.
  """
  dim: int
  grid: tuple[int, int]       # (frequency, time) patches
  num_special: int            # tokens before the patches
  kernel: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = nn.LayerNorm(dtype=self.dtype, name="norm_in")(x)
    h = nn.Dense(2 * self.dim, dtype=self.dtype, name="down")(h)
    h = nn.glu(h, axis=-1)
    special, patches = h[:, :self.num_special], h[:, self.num_special:]
    f, t = self.grid
    grid = patches.reshape(patches.shape[0], f, t, self.dim)
    grid = nn.Conv(self.dim, (self.kernel, self.kernel), padding="SAME",
                   feature_group_count=self.dim, dtype=self.dtype, name="depthwise")(grid)
    h = jnp.concatenate([special, grid.reshape(patches.shape)], axis=1)
    h = nn.swish(nn.LayerNorm(dtype=self.dtype, name="norm_mid")(h))
    return nn.Dense(width, dtype=self.dtype, name="up", kernel_init=nn.initializers.zeros)(h)


class ConvMapAdapter(nn.Module):
  """A residual bottleneck on a conv feature map (batch, time, freq, channels).

  1x1 conv down -> ReLU -> 3x3 depthwise conv -> ReLU -> 1x1 conv up (zero-initialised), added
  to the block's output: the CNN families' convolutional adapter.
  """
  dim: int
  kernel: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    h = nn.relu(nn.Conv(self.dim, (1, 1), dtype=self.dtype, name="down")(x))
    h = nn.Conv(self.dim, (self.kernel, self.kernel), padding="SAME", feature_group_count=self.dim,
                dtype=self.dtype, name="depthwise")(h)
    h = nn.Conv(channels, (1, 1), dtype=self.dtype, name="up",
                kernel_init=nn.initializers.zeros)(nn.relu(h))
    return x + h


def prompt_init(patch_size: int, width: int):
  """VPT's uniform init with bound sqrt(6 / (3 * patch_area + width)), as PETL_AST uses."""
  bound = math.sqrt(6.0 / (3 * patch_size * patch_size + width))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class MlpHead(nn.Module):
  """Dense + ReLU + Dense: the "small MLP" classifier for feature extraction."""
  hidden: int
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="out")(x)
