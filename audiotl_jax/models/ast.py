"""Audio Spectrogram Transformer (Gong, Chung & Glass, 2021, "AST: Audio Spectrogram
Transformer", Interspeech; https://github.com/YuanGongND/ast).

16x16 patches of the (mel bins x frames) spectrogram taken with frequency and time strides
(default 10 and 10: 12 x 101 = 1212 patches for 128 bins x 1024 frames), a cls and a
distillation token, learned position embeddings, pre-norm ViT blocks, and a head (LayerNorm +
Dense) on the mean of the cls and dist outputs. `ast:base` is ViT-B/16 as in the paper: its
encoder has 86,187,264 parameters at 1212 patches (85,708,032 for 500 frames); with the 527-class
head, 86,594,063.

Parameters live under `embedding` (patch projection, tokens, position embeddings), `block1` ..
`blockN`, `encoder_norm` and `head`: the names the fine-tuning masks use. Position embeddings are
stored as a (1, freq, time, width) grid plus (1, 2, width) for the two tokens, so a checkpoint
made for another input length is resized (`resize_pos_embed`) rather than rejected.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError
from audiotl_jax.models import common
from audiotl_jax.models.transfer import layers as petl_lib

FAMILY = "ast"
DEFAULT_VARIANT = "base"
VARIANTS = {
    # DeiT-Ti, DeiT-S and ViT-B widths, as the AST paper's model sizes.
    "tiny": dict(width=192, depth=12, num_heads=3, mlp_dim=768),
    "small": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "base": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
}
NUM_TOKENS = 2  # cls + distillation
DEFAULT_INPUT = (1024, 128)  # (frames, mel bins) of a 10 s AudioSet clip: 12 x 101 patches


def decode_variant(variant: str) -> dict[str, Any]:
  return common.decode_variant(FAMILY, VARIANTS, variant)


def patch_grid(mel_bins: int, frames: int, patch: int = 16, fstride: int = 10,
               tstride: int = 10) -> tuple[int, int]:
  """(frequency, time) patches; inputs shorter than a patch are zero-padded up to one."""
  return ((max(mel_bins, patch) - patch) // fstride + 1,
          (max(frames, patch) - patch) // tstride + 1)


def resize_pos_embed(grid: np.ndarray, f_new: int, t_new: int) -> np.ndarray:
  """Resizes a (1, f, t, width) position grid as the official AST code does.

  Time first: a shorter grid is cut from the middle, a longer one bilinearly interpolated; then
  frequency the same way. Offsets are int(old / 2) - int(new / 2), the official arithmetic.
  """
  grid = np.asarray(grid)
  _, f_old, t_old, width = grid.shape

  def axis(g, axis_, new):
    old = g.shape[axis_]
    if new == old:
      return g
    if new < old:
      start = old // 2 - new // 2
      return np.take(g, np.arange(start, start + new), axis=axis_)
    shape = list(g.shape)
    shape[axis_] = new
    # jax.image.resize 'bilinear' uses half-pixel centres: PyTorch's align_corners=False.
    return np.asarray(jax.image.resize(jnp.asarray(g), shape, "bilinear", antialias=False))

  return axis(axis(grid, 2, t_new), 1, f_new)


def _flat_normal(std: float):
  """N(0, std) drawn flat and reshaped: XLA:CPU compiles a flat draw far faster (see common)."""

  def init(key, shape, dtype=jnp.float32):
    return (std * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)

  return init


# Bytes of attention probabilities per step of `_cpu_attention`'s loop (float32, batch x heads x
# n x m): small enough to stay in cache. 1-16 MiB timed within noise of each other at 146-1214
# tokens on a 2-core EPYC; all heads at once (70 MB a clip at AST-base's 1214 tokens) was 2-3x
# slower.
_CPU_ATTENTION_BYTES = 4 << 20


def _softmax_attention(q, k, v):
  """(..., n, d) queries, (..., m, d) keys and values -> (..., n, d).

  The arithmetic of jax.nn.dot_product_attention's XLA path (float32 logits scaled after the dot,
  float32 softmax, probabilities cast to the value dtype), on heads-first operands.
  """
  precision = jax.lax.DotAlgorithmPreset.BF16_BF16_F32 if q.dtype == jnp.bfloat16 else None
  logits = jnp.einsum("...qd,...kd->...qk", q, k, precision=precision,
                      preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))
  logits *= jnp.array(1 / math.sqrt(q.shape[-1]), logits.dtype)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(k.dtype)
  return jnp.einsum("...qk,...kd->...qd", probs, v)


def _cpu_attention(q, k, v):
  """(batch, n, heads, d) attention for XLA:CPU, which has no fused attention kernel.

  jax.nn.dot_product_attention there materialises every head's probabilities at once and makes
  several memory-bound passes over them (forward and backward), and its (b, n, h, d) dots cost
  transposes of them. Here a loop takes a cache-sized group of heads at a time, each step
  recomputed in the backward pass rather than stored: forward + backward of the attention
  1.1-3.6x faster at 146-1214 tokens and batch 1-8 (AST-base heads, 2-core EPYC), within 1.5x of
  PyTorch's fused CPU kernel. A query's softmax never spans steps, so only float rounding differs
  (~1e-7 relative). The loop runs over heads, never the batch, and each step's rows are
  batch-major: a batch-sharded mesh still partitions every step.
  """
  b, n, h, d = q.shape
  m = k.shape[1]
  group = max(g for g in range(1, h + 1)
              if h % g == 0 and (g == 1 or g * b * n * m * 4 <= _CPU_ATTENTION_BYTES))
  # (b, len, h, d) -> (h / group, b * group, len, d): steps first, then batch-major rows.
  steps = lambda t: t.reshape(b, t.shape[1], h // group, group, d).transpose(2, 0, 3, 1, 4) \
      .reshape(h // group, b * group, t.shape[1], d)
  q, k, v = steps(q), steps(k), steps(v)
  if group == h:
    y = _softmax_attention(q, k, v)
  else:
    step = jax.checkpoint(_softmax_attention)
    y = jax.lax.map(lambda qkv: step(*qkv), (q, k, v))
  return y.reshape(h // group, b, group, n, d).transpose(1, 3, 0, 2, 4).reshape(b, n, h, d)


def dot_product_attention(q, k, v):
  """(batch, n, heads, d) queries, (batch, m, heads, d) keys and values -> (batch, n, heads, d).

  The platform is picked at lowering (not from the default backend at trace time): accelerators
  keep jax.nn.dot_product_attention and whatever fused kernel it finds there.
  """
  return jax.lax.platform_dependent(q, k, v, cpu=_cpu_attention,
                                    default=jax.nn.dot_product_attention)


class Attention(nn.Module):
  num_heads: int
  petl: petl_lib.Petl
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, width = x.shape
    p = self.petl
    dense = lambda name: nn.Dense(width, dtype=self.dtype, name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    if p.lora_rank:
      scale = (p.lora_alpha or p.lora_rank) / p.lora_rank
      lora = lambda name: petl_lib.LoraDelta(p.lora_rank, width, scale, compat=p.compat,
                                             dtype=self.dtype, name=name)
      if p.compat:  # PETL_AST: one pair, added to both query and key.
        delta = lora("lora_qk")(x)
        q, k = q + delta, k + delta
      else:
        q = q + lora("lora_q")(x) if "q" in p.lora_targets else q
        k = k + lora("lora_k")(x) if "k" in p.lora_targets else k
        v = v + lora("lora_v")(x) if "v" in p.lora_targets else v
    if p.prefix_tokens:
      # Prefix vectors join the keys and values after projection; their order is immaterial
      # to attention, so they are appended.
      init = petl_lib.prompt_init(16, width)
      half = p.prefix_tokens // 2
      pk = self.param("prefix_key", init, (half, width)).astype(k.dtype)
      pv = self.param("prefix_value", init, (half, width)).astype(v.dtype)
      k = jnp.concatenate([k, jnp.broadcast_to(pk, (b, half, width))], axis=1)
      v = jnp.concatenate([v, jnp.broadcast_to(pv, (b, half, width))], axis=1)
    heads = lambda t: t.reshape(b, t.shape[1], self.num_heads, width // self.num_heads)
    y = dot_product_attention(heads(q), heads(k), heads(v)).reshape(b, n, width)
    out = dense("out")(y)
    if p.lora_rank and not p.compat and "o" in p.lora_targets:
      out = out + lora("lora_o")(y)
    return out


class Block(nn.Module):
  """Pre-norm ViT block with the optional adapters, LoRA, prefixes and prompts of `petl`."""
  num_heads: int
  mlp_dim: int
  petl: petl_lib.Petl
  grid: tuple[int, int]
  num_special: int           # tokens before the patches once this block's prompts are in
  index: int = 0             # 0-based position in the stack (prompts enter at 0, or at each)
  dtype: Any = jnp.float32

  def _adapter(self, place):
    return petl_lib.Bottleneck(self.petl.adapter_dim, compat=self.petl.compat, dtype=self.dtype,
                               name=f"adapter_{place}")

  def _combine(self, place, h, sub_in, sub_out):
    """h + sub-layer output, with the adapter of `place` (if any) in parallel or in sequence."""
    p = self.petl
    if place not in p.adapter_places:
      return h + sub_out
    if p.adapter_mode == "parallel":
      return h + sub_out + self._adapter(place)(sub_in)
    if p.compat:  # PETL_AST (apply_residual=False): the adapter replaces the sub-layer output.
      return h + self._adapter(place)(sub_out)
    return h + sub_out + self._adapter(place)(sub_out)

  def _prompts(self, x):
    """Inserts this block's prompt tokens after the cls and dist tokens.

    Block 0 inserts them (PETL_AST overwrites the dist token instead); a deep block replaces
    the previous block's prompts with its own.
    """
    p = self.petl
    if not p.prompt_tokens or not (self.index == 0 or p.prompt_deep):
      return x
    width = x.shape[-1]
    prompt = self.param("prompt", petl_lib.prompt_init(16, width), (p.prompt_tokens, width))
    prompt = jnp.broadcast_to(prompt.astype(x.dtype), (x.shape[0],) + prompt.shape)
    keep = 1 if p.compat else NUM_TOKENS
    start = keep + p.prompt_tokens if self.index else NUM_TOKENS
    return jnp.concatenate([x[:, :keep], prompt, x[:, start:]], axis=1)

  @nn.compact
  def __call__(self, x):
    x = self._prompts(x)
    width = x.shape[-1]
    ln = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
    a_in = ln("norm1")(x)
    a_out = Attention(self.num_heads, self.petl, self.dtype, name="attn")(a_in)
    x = self._combine("attn", x, a_in, a_out)
    f_in = ln("norm2")(x)
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(f_in)
    f_out = nn.Dense(width, dtype=self.dtype, name="fc2")(nn.gelu(h, approximate=False))
    if self.petl.conv_adapter_dim:
      f_out = f_out + petl_lib.ConvAdapter(
          self.petl.conv_adapter_dim, self.grid, self.num_special, self.petl.conv_kernel,
          self.dtype, name="conv_adapter")(f_in)
    return self._combine("ffn", x, f_in, f_out)


class PatchEmbed(nn.Module):
  """(batch, bins, frames, 1) -> (batch, 2 + f * t, width) with tokens and positions added."""
  width: int
  patch_size: int
  fstride: int
  tstride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    ps = self.patch_size
    x = nn.Conv(self.width, (ps, ps), strides=(self.fstride, self.tstride), padding="VALID",
                kernel_init=_flat_normal(1 / ps), dtype=self.dtype, name="proj")(x)
    b, f, t, w = x.shape
    init = _flat_normal(0.02)
    pos = self.param("pos_embed", init, (1, f, t, w)).astype(x.dtype)
    x = (x + pos).reshape(b, f * t, w)
    tokens = jnp.concatenate([self.param("cls_token", init, (1, 1, w)),
                              self.param("dist_token", init, (1, 1, w))], axis=1)
    tokens = tokens + self.param("token_pos_embed", init, (1, NUM_TOKENS, w))
    tokens = jnp.broadcast_to(tokens.astype(x.dtype), (b, NUM_TOKENS, w))
    return jnp.concatenate([tokens, x], axis=1), (f, t)


class Head(nn.Module):
  """LayerNorm + Dense (the official AST head); Dense only in compat mode; or an MLP."""
  num_classes: int
  hidden: int = 0
  layer_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.layer_norm:  # PyTorch's default eps in the official mlp_head (timm's blocks: 1e-6).
      x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    if self.hidden:
      return petl_lib.MlpHead(self.hidden, self.num_classes, self.dtype, name="mlp")(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="dense")(x)


class Ast(nn.Module):
  """Features (batch, frames, mel_bins) -> (logits, out)."""
  num_classes: int
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 16
  fstride: int = 10
  tstride: int = 10
  petl: petl_lib.Petl = petl_lib.Petl()
  remat: bool = False        # recompute block activations in the backward pass (memory for FLOPs)
  dtype: Any = jnp.float32

  @property
  def embedding_dim(self) -> int:
    return self.width

  def block_names(self) -> tuple[str, ...]:
    return common.block_names(self.depth)

  def stem_names(self) -> tuple[str, ...]:
    """Parameters below block1: frozen by `partial:k` for any k >= 1."""
    return ("embedding",)

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.width % self.num_heads:
      raise UserError(f"AST width {self.width} is not divisible by num_heads {self.num_heads}")
    out = {}
    p = self.petl
    x = jnp.swapaxes(common.to_image(x, self.dtype), 1, 2)   # (batch, bins, frames, 1) as AST
    ps = self.patch_size
    x = jnp.pad(x, ((0, 0), (0, max(0, ps - x.shape[1])), (0, max(0, ps - x.shape[2])), (0, 0)))
    x, grid = PatchEmbed(self.width, ps, self.fstride, self.tstride, self.dtype,
                         name="embedding")(x)
    num_special = NUM_TOKENS
    if p.prompt_tokens:
      num_special = (1 if p.compat else NUM_TOKENS) + p.prompt_tokens
    block_cls = nn.remat(Block) if self.remat else Block
    for i, name in enumerate(self.block_names()):
      x = block_cls(self.num_heads, self.mlp_dim, p, grid, num_special, i, self.dtype,
                    name=name)(x)
      out[name] = x
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x)
    out["cls"], out["patch_mean"] = x[:, 0], x[:, num_special:].mean(axis=1)
    if p.compat:  # PETL_AST classifies the mean of every token; its dist token may be gone.
      out["dist"] = x[:, 0] if p.prompt_tokens else x[:, 1]
      pooled = x.mean(axis=1)
    else:
      out["dist"] = x[:, 1]
      pooled = (x[:, 0] + x[:, 1]) / 2
    out["cls_dist_mean"] = (out["cls"] + out["dist"]) / 2
    out["pooled"] = out["embedding"] = out["cls_dist_mean"] if not p.compat else pooled
    logits = Head(self.num_classes, p.head_hidden, layer_norm=not p.compat, dtype=self.dtype,
                  name="head")(pooled)
    logits = logits.astype(jnp.float32)
    out["logits"] = logits
    return logits, out
