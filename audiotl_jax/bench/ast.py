"""`audiotl bench --only ast`: AST train-step throughput and model FLOPs utilisation (MFU).

A full fine-tuning step of AST-base on 10 s clips (fbank, 1024 frames, 1212 patches), in float32
and in bfloat16 compute (float32 parameters), with and without rematerialisation, timed like the
other train-step benchmarks (compilation excluded, the loss fetched). MFU = model FLOPs per
second / the device's peak. Model FLOPs are counted analytically (`ast_train_flops`: 3 x the
forward matmuls, the usual convention: no recomputation, no elementwise work). The peak comes from
`PEAK_FLOPS` for known accelerators (dense bf16 / fp32 tensor-core figures of the data sheets) and
is measured on CPUs (the best of a few large float32 matmuls), so CPU MFU is relative to what
XLA's matmul reaches there.
"""
import jax
import jax.numpy as jnp
import ml_collections

from audiotl_jax import models
from audiotl_jax.bench import timing
from audiotl_jax.features import fbank

# device_kind substring -> (bf16 dense peak, fp32 peak) FLOP/s per device, from data sheets.
PEAK_FLOPS = {
    "H200": (989e12, 494e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12),
    "L4": (121e12, 60e12), "TPU v4": (275e12, 275e12), "TPU v5 lite": (197e12, 197e12),
    "TPU v5": (459e12, 459e12), "TPU v6": (918e12, 918e12),
}


def ast_train_flops(model, frames: int, mel_bins: int) -> float:
  """Analytic FLOPs of one training example: 3 x forward (matmuls and convolutions only)."""
  f, t = models.ast.patch_grid(mel_bins, frames, model.patch_size, model.fstride, model.tstride)
  n, d, m = f * t + models.ast.NUM_TOKENS, model.width, model.mlp_dim
  per_block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * m
  forward = model.depth * per_block + 2 * f * t * model.patch_size ** 2 * d \
      + 2 * d * model.num_classes
  return 3.0 * forward


def peak_flops(dtype) -> tuple[float, str]:
  """(peak FLOP/s of one device for `dtype`, where the figure comes from)."""
  kind = jax.devices()[0].device_kind
  for name, (bf16, fp32) in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return (bf16 if dtype == jnp.bfloat16 else fp32), f"data sheet ({kind})"
  a = jnp.ones((2048, 2048), dtype)
  mm = jax.jit(lambda a: a @ a)
  mm(a).block_until_ready()
  best = timing.measure(lambda: mm(a).block_until_ready(), 5).best
  return 2 * 2048 ** 3 / best, f"measured 2048^2 matmul ({kind})"


def bench_ast(workdir, quick: bool) -> list[dict]:
  from audiotl_jax import config as config_lib
  from audiotl_jax.train import mesh as mesh_lib
  defaults = config_lib.load("pretrain.py:model=ast")
  mesh = mesh_lib.make_mesh()
  name, frames, batch, repeats = ("ast:tiny", 256, 2, 2) if quick else ("ast:base", 1024, 2, 3)
  if jax.default_backend() != "cpu" and not quick:
    batch = 32
  batch = timing.fit_batch(batch, mesh)
  fc = ml_collections.ConfigDict(dict(defaults.frontend))
  fc.target_frames = frames
  samples = 160 * (frames + 2)  # fbank frames of a clip, then padded/cropped to `frames`
  data = timing.random_batch(batch, samples)
  rows = []
  variants = [("float32", False), ("bfloat16", False)] if quick else \
      [("float32", False), ("bfloat16", False), ("bfloat16", True)]
  for dtype_name, remat in variants:
    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    model = models.get_model(name, num_classes=527, dtype=dtype, remat=remat)
    compile_s, sec, _ = timing.time_train_step(
        model, fc, {"mean": fbank.AUDIOSET_MEAN, "std": fbank.AUDIOSET_STD}, data, mesh, defaults,
        frames=frames, repeats=repeats)
    flops = ast_train_flops(model, frames, fc.n_mels) * batch
    peak, source = peak_flops(dtype)
    peak *= mesh.devices.size
    row = {"bench": "ast_train_step", "model": name, "frames": frames, "dtype": dtype_name,
           "remat": remat, "batch": batch, "clips_per_s": batch / sec, "step_s": sec,
           "compile_s": compile_s, "tflops_per_s": flops / sec / 1e12, "mfu": flops / sec / peak,
           "peak_source": source}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      row["peak_memory_gb"] = stats["peak_bytes_in_use"] / 1e9
    rows.append(row)
  return rows
