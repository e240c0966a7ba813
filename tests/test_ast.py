"""AST: exact parameter counts, patch grid, outputs, position-embedding resizing, bf16, remat."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiotl_jax import models
from audiotl_jax.models import ast, transfer

SMALL = dict(width=32, depth=2, num_heads=2, mlp_dim=64)


def _fake_variables(model, x, seed=0):
  """Variables of the right shapes from numpy (no init to compile: seconds on XLA:CPU)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


def _encoder(params):
  return models.count_params({k: v for k, v in params.items() if k != "head"})


def test_ast_base_parameter_counts():
  model = models.get_model("ast:base", num_classes=527)
  assert (model.width, model.depth, model.num_heads) == (768, 12, 12)
  shapes = models.param_shapes(model, frames=1024, mel_bins=128)
  assert "batch_stats" not in shapes
  params = shapes["params"]
  assert params["embedding"]["pos_embed"].shape == (1, 12, 101, 768)   # 1212 patches
  assert _encoder(params) == 86_187_264
  assert models.count_params(params) == 86_594_063
  assert _encoder(models.param_shapes(model, frames=500, mel_bins=128)["params"]) == 85_708_032
  assert ast.patch_grid(128, 1024) == (12, 101) and ast.patch_grid(128, 500) == (12, 49)
  # Strides are fields: 16/16 (no overlap) gives 8 x 64 patches.
  coarse = models.get_model("ast:base", num_classes=527, fstride=16, tstride=16)
  assert models.param_shapes(coarse, 1024, 128)["params"]["embedding"]["pos_embed"].shape[1:3] \
      == (8, 64)


def test_variants_by_name():
  names = [n for n in models.list_models() if n.startswith("ast:")]
  assert names == ["ast:tiny", "ast:small", "ast:base"]
  assert models.get_model("ast", num_classes=3) == models.get_model("ast:base", num_classes=3)
  assert models.get_model("ast:small", num_classes=3).width == 384


def test_outputs_and_head_on_cls_dist_mean():
  model = models.get_model("ast:tiny", num_classes=4, **SMALL)
  x = jax.random.normal(jax.random.key(0), (3, 40, 24))
  variables = _fake_variables(model, x)
  logits, out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  f, t = ast.patch_grid(24, 40)
  assert out["block2"].shape == (3, 2 + f * t, 32)
  for k in ("cls", "dist", "cls_dist_mean", "patch_mean", "embedding"):
    assert out[k].shape == (3, 32), k
  np.testing.assert_allclose(out["cls_dist_mean"], (out["cls"] + out["dist"]) / 2, atol=1e-6)
  np.testing.assert_array_equal(out["embedding"], out["cls_dist_mean"])
  head = jax.jit(lambda p, e: ast.Head(4).apply({"params": p}, e))(
      variables["params"]["head"], out["cls_dist_mean"])
  np.testing.assert_allclose(logits, head, atol=1e-5)
  # The model contract of models/__init__.py.
  assert model.block_names() == ("block1", "block2") and model.embedding_dim == 32
  assert set(variables["params"]) == {"embedding", "block1", "block2", "encoder_norm", "head"}
  assert variables["params"]["head"]["dense"]["kernel"].shape == (32, 4)
  assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
  np.testing.assert_array_equal(out["logits"], logits)
  # A tiny input (shorter than one patch) is padded, never a crash.
  shapes = models.param_shapes(model, frames=5, mel_bins=7)
  assert shapes["params"]["embedding"]["pos_embed"].shape == (1, 1, 1, 32)
  tiny_logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True), shapes,
                                  jax.ShapeDtypeStruct((2, 5, 7), jnp.float32))
  assert tiny_logits.shape == (2, 4)


def test_resize_pos_embed_as_the_official_code():
  grid = np.arange(2 * 6, dtype=np.float32).reshape(1, 2, 6, 1)
  # Shorter in time: the middle (offset 6 // 2 - 2 // 2 = 2); fewer frequency rows likewise.
  np.testing.assert_array_equal(ast.resize_pos_embed(grid, 2, 2)[0, :, :, 0], [[2, 3], [8, 9]])
  np.testing.assert_array_equal(ast.resize_pos_embed(grid, 1, 6)[0, :, :, 0], [np.arange(6, 12)])
  # Longer: bilinear with half-pixel centres (PyTorch's align_corners=False): 2 -> 4 samples of
  # (0, 1) give (0, 0.25, 0.75, 1).
  ramp = np.asarray([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
  np.testing.assert_allclose(ast.resize_pos_embed(ramp, 1, 4)[0, 0, :, 0], [0, 0.25, 0.75, 1])
  # Transplanting a checkpoint made for 1024 frames into a 500-frame model resizes, never fails.
  src = np.random.default_rng(0).standard_normal((1, 12, 101, 8)).astype(np.float32)
  tgt = np.zeros((1, 12, 49, 8), np.float32)
  out, fresh = transfer.transplant({"embedding": {"pos_embed": src}},
                                   {"embedding": {"pos_embed": tgt}}, resize=transfer.resize_leaf)
  np.testing.assert_array_equal(out["embedding"]["pos_embed"], src[:, :, 26:75])
  assert fresh == []


def test_bfloat16_compute_and_remat_keep_the_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 40, 24))
  y = jax.nn.one_hot(jnp.asarray([0, 2]), 3)
  base = models.get_model("ast:tiny", num_classes=3, **SMALL)
  variables = _fake_variables(base, x)

  def grads(model):
    def loss(p):
      logits, _ = model.apply({"params": p}, x, train=True)
      return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y, -1))
    return jax.jit(jax.grad(loss))(variables["params"])

  ref = grads(base)
  remat = grads(models.get_model("ast:tiny", num_classes=3, remat=True, **SMALL))
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
  bf16 = models.get_model("ast:tiny", num_classes=3, dtype=jnp.bfloat16, **SMALL)
  logits, out = jax.eval_shape(lambda v, x: bf16.apply(v, x, train=False), variables, x)
  assert logits.dtype == jnp.float32 and out["block1"].dtype == jnp.bfloat16
  ref_logits = jax.jit(lambda v, x: base.apply(v, x, train=False)[0])(variables, x)
  logits16 = jax.jit(lambda v, x: bf16.apply(v, x, train=False)[0])(variables, x)
  np.testing.assert_allclose(logits16, ref_logits, atol=0.1 * np.abs(ref_logits).max())


@pytest.mark.parametrize("model_cfg", ["logmel"])
def test_model_options_from_config(model_cfg):
  import ml_collections
  from audiotl_jax.errors import UserError
  from audiotl_jax.train import step as steps
  opts = steps.model_options(ml_collections.ConfigDict(dict(dtype="bfloat16", remat=True)))
  assert opts == {"dtype": jnp.bfloat16, "remat": True}
  assert steps.model_options(ml_collections.ConfigDict(dict(name="cnn"))) == {}
  with pytest.raises(UserError, match="model.dtype"):
    steps.model_options(ml_collections.ConfigDict(dict(dtype="float16")))
  with pytest.raises(UserError, match="option for model 'cnn:tiny'.*remat"):
    models.get_model("cnn:tiny", num_classes=3, remat=True)


def test_train_flops_for_mfu():
  from audiotl_jax.bench import ast as bench_ast
  model = models.get_model("ast:base", num_classes=527)
  n, d = 1214, 768
  forward = 12 * (24 * n * d * d + 4 * n * n * d) + 2 * 1212 * 256 * d + 2 * d * 527
  assert bench_ast.ast_train_flops(model, 1024, 128) == 3 * forward
  assert 780e9 < bench_ast.ast_train_flops(model, 1024, 128) < 790e9  # ~0.78 TFLOP per clip
