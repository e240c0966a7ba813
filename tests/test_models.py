"""Model registry and model families: parameter counts, the output contract, sharding."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from audiotl_jax import models
from audiotl_jax.errors import UserError

TINY = [n for n in models.list_models() if n.endswith(":tiny")]
# Every top-level parameter name the fine-tuning regexes may meet.
ALLOWED_TOP = re.compile(r"^(block\d+|embedding|gru|encoder_norm|bn0|head)$")
# AST's forward contract is tested in test_ast.py on a cut-down width (12 blocks of ast:tiny take
# seconds to compile on CPU); its shapes and counts are checked here too.
# Variants that only repeat another's architecture at another input set-up (cnn14_16k,
# cnn10_autrainer) are left out: their counts and shapes are still checked below.
TWINS = ("panns:cnn14_16k", "panns:cnn10_autrainer")
CONTRACT = [n for n in models.list_models() if not n.startswith("ast:") and n not in TWINS]


def _batch(batch=4, frames=32, mel_bins=16, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, frames, mel_bins), jnp.float32)


def _init(model, x):
  return jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(0), x)


def _fake_variables(model, x, seed=0):
  """Variables of the right shapes drawn with numpy: no init to compile.

  Compiling `model.init` costs seconds per model on XLA:CPU (the random draws), which would blow
  this file's time budget; the forward-pass tests only need plausible values. Kernels get
  N(0, 1 / fan_in), BatchNorm scales 1, biases and running means 0, running variances 1.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    key = jax.tree_util.keystr(path)
    if key.endswith("['var']") or key.endswith("['scale']"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if len(leaf.shape) < 2:
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), leaf.dtype)

  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _apply_both(model):
  """Jitted train and eval forward passes in one function: one compile per model and input shape.

  Returns {True: ((logits, out), batch_stats updates), False: (logits, out)}.
  """

  def both(variables, x):
    # A fixed dropout key (PANNs drop out by default), so train mode repeats exactly.
    return {True: model.apply(variables, x, train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.key(0)}),
            False: model.apply(variables, x, train=False)}

  return jax.jit(both)


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def test_list_models():
  names = models.list_models()
  for expected in ("cnn:S", "cnn:M", "cnn:tiny", "crnn:S", "crnn:tiny", "dcase_cnn:base",
                   "dcase_cnn:tiny"):
    assert expected in names
  assert len(names) == len(set(names))


def test_dcase_count_exact():
  params = models.param_shapes(models.get_model("dcase_cnn", num_classes=10))["params"]
  assert models.count_params(params) == 4_309_450
  conv = sum(models.count_params(params[b]["conv"]) for b in ("block1", "block2", "block3",
                                                              "block4"))
  bn = sum(models.count_params(params[b]["bn"]) for b in ("block1", "block2", "block3", "block4"))
  assert (conv, bn, models.count_params(params["head"])) == (4_302_400, 1_920, 5_130)


def test_cnn_and_crnn_counts():
  counts = dict(models.describe_models(10))
  print("parameter counts, 10 classes:", counts)
  assert counts["cnn:S"] == 422_506
  assert 0.42e6 <= counts["cnn:S"] <= 0.43e6
  assert counts["crnn:S"] == 537_578
  assert 0.53e6 <= counts["crnn:S"] <= 0.545e6
  assert counts["dcase_cnn:base"] == 4_309_450
  assert set(counts) == set(models.list_models())


def test_describe_excludes_batch_stats():
  shapes = models.param_shapes(models.get_model("cnn:S", num_classes=10))
  assert "batch_stats" in shapes
  assert dict(models.describe_models(10))["cnn:S"] == models.count_params(shapes["params"])


def test_default_variant():
  assert models.get_model("cnn", num_classes=3) == models.get_model("cnn:S", num_classes=3)
  assert models.get_model("crnn", num_classes=3) == models.get_model("crnn:S", num_classes=3)
  assert (models.get_model("dcase_cnn", num_classes=3)
          == models.get_model("dcase_cnn:base", num_classes=3))


@pytest.mark.parametrize("name", CONTRACT)
def test_forward_contract(name):
  model = models.get_model(name, num_classes=5)
  x = _batch()
  variables = _fake_variables(model, x)
  params = variables["params"]
  blocks = model.block_names()
  assert blocks == tuple(f"block{i + 1}" for i in range(len(blocks)))
  # Every parameter lives under a name the freezing regexes know.
  assert all(ALLOWED_TOP.match(k) for k in params), list(params)
  assert set(blocks) <= set(params) and "head" in params
  head = params["head"].get("dense", params["head"])  # AST: LayerNorm + dense
  assert head["kernel"].shape == (model.embedding_dim, 5)

  apply = _apply_both(model)
  results = apply(variables, x)
  (train_logits, _), updates = results[True]
  # Train mode repeats exactly: dropout, where a family has it by default, uses a fixed key.
  np.testing.assert_array_equal(apply(variables, x)[True][0][0], train_logits)
  for logits, out in (results[True][0], results[False]):
    assert logits.shape == (4, 5) and logits.dtype == jnp.float32
    for key in blocks + ("pooled", "embedding", "logits"):
      assert key in out, key
    assert out["embedding"].shape == (4, model.embedding_dim)
    np.testing.assert_array_equal(out["logits"], logits)
    assert np.all(np.isfinite(logits))
  if "batch_stats" not in variables:
    return  # AST: no BatchNorm, so nothing below applies.
  # Train mode normalises with batch statistics, eval mode with the running ones.
  assert not np.allclose(train_logits, results[False][0])
  # Every running mean and variance moves in train mode.
  old = jax.tree_util.tree_leaves(variables["batch_stats"])
  new = jax.tree_util.tree_leaves(updates["batch_stats"])
  assert len(old) == len(new) >= 2 * len(blocks)  # PANNs: bn0 and one BatchNorm per conv
  assert all(not np.array_equal(a, b) for a, b in zip(old, new))


# crnn covers both initialisers in play: the conv blocks' and the GRU's.
@pytest.mark.parametrize("name", ["crnn:tiny"])
def test_real_init(name):
  model = models.get_model(name, num_classes=3)
  x = _batch()
  variables = _init(model, x)
  assert _shapes(variables) == _shapes(_fake_variables(model, x))
  bs = variables["batch_stats"]["block1"]["bn"]
  np.testing.assert_array_equal(bs["mean"], 0.0)
  np.testing.assert_array_equal(bs["var"], 1.0)
  kernel = variables["params"]["block1"]["conv"]["kernel"]
  bound = (6.0 / np.prod(kernel.shape[:-1])) ** 0.5
  assert np.all(np.abs(kernel) <= bound) and np.std(kernel) > bound / 4
  logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert np.all(np.isfinite(logits))


def test_dropout_uses_rng_only_in_train():
  model = models.get_model("cnn:tiny", num_classes=3, dropout_rate=0.5)
  x = _batch()
  variables = _fake_variables(model, x)

  @jax.jit
  def run(variables, x, key):
    (train, _), _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": key})
    return train, model.apply(variables, x, train=False)[0]

  a, c = run(variables, x, jax.random.key(1))
  b, d = run(variables, x, jax.random.key(2))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(c, d)


def test_unknown_family_lists_known_names():
  with pytest.raises(UserError, match="unknown model 'resnet'") as e:
    models.get_model("resnet", num_classes=3)
  for name in models.list_models():
    assert name in str(e.value)


def test_unknown_variant_lists_known_names():
  with pytest.raises(UserError, match="unknown model 'cnn:XL'") as e:
    models.get_model("cnn:XL", num_classes=3)
  assert "cnn:S" in str(e.value) and "cnn:tiny" in str(e.value)
  with pytest.raises(UserError):
    models.get_model("dcase_cnn:S", num_classes=3)


def test_bad_overrides_and_num_classes():
  with pytest.raises(UserError, match="channels"):
    models.get_model("cnn:tiny", num_classes=3, chanels=(4, 4))
  with pytest.raises(UserError, match="channels"):
    models.get_model("cnn:tiny", num_classes=3, channels=())
  with pytest.raises(UserError, match="num_classes"):
    models.get_model("cnn:tiny", num_classes=0)
  # Lists from configs become tuples, so the module stays hashable.
  model = models.get_model("cnn:tiny", num_classes=3, channels=[4, 8])
  assert model.channels == (4, 8) and model.block_names() == ("block1", "block2")
  hash(model)


def test_wrong_input_rank():
  model = models.get_model("cnn:tiny", num_classes=3)
  with pytest.raises(UserError, match=r"\(batch, frames, mel_bins\)"):
    model.init(jax.random.key(0), jnp.zeros((2, 1, 32, 16)), train=False)


@pytest.mark.parametrize("name", models.list_models())
def test_new_num_classes_changes_only_head(name):
  a = _shapes(models.param_shapes(models.get_model(name, num_classes=10))["params"])
  b = _shapes(models.param_shapes(models.get_model(name, num_classes=527))["params"])
  assert a["head"] != b["head"]
  assert {k: v for k, v in a.items() if k != "head"} == {k: v for k, v in b.items() if k != "head"}


# Odd sizes and a single cell go through the shared pooling; crnn adds a length-1 GRU sequence.
@pytest.mark.parametrize("name,frames,mel_bins", [(n, 10, 8) for n in CONTRACT if n in TINY] + [
    ("cnn:tiny", 1, 1), ("crnn:tiny", 1, 1), ("cnn:tiny", 7, 5)])
def test_short_input(name, frames, mel_bins):
  model = models.get_model(name, num_classes=3)
  x = _batch(2, frames, mel_bins)
  results = _apply_both(model)(_fake_variables(model, x), x)
  for logits, out in (results[True][0], results[False]):
    assert logits.shape == (2, 3) and np.all(np.isfinite(logits))
    assert all(min(out[b].shape[1:3]) >= 1 for b in model.block_names())


@pytest.mark.parametrize("name", [n for n in models.list_models() if not n.endswith(":tiny")])
def test_short_input_full_size_shapes(name):
  # eval_shape traces the whole forward pass, so a pooling that empties an axis fails here.
  model = models.get_model(name, num_classes=3)
  shapes = models.param_shapes(model, frames=10, mel_bins=8)
  logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), shapes,
                             jax.ShapeDtypeStruct((2, 10, 8), jnp.float32))
  assert logits.shape == (2, 3)


def test_pooling_averages_real_cells_only():
  # An odd axis keeps its last row as its own average instead of halving it with padded zeros.
  from audiotl_jax.models.common import pool2x2
  y = pool2x2(jnp.ones((1, 3, 1, 1)))
  assert y.shape == (1, 2, 1, 1)
  np.testing.assert_allclose(y, 1.0)


# dcase_cnn shares cnn's blocks; crnn adds the GRU scan.
@pytest.mark.parametrize("name", ["cnn:tiny", "crnn:tiny"])
def test_sharded_matches_unsharded(devices, name):
  model = models.get_model(name, num_classes=4)
  x = _batch(16, 32, 16, seed=3)
  variables = _fake_variables(model, x)
  mesh = jax.make_mesh((8,), ("data",))
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  apply = _apply_both(model)
  ref, got = apply(variables, x), apply(vs, xs)
  assert len(xs.sharding.device_set) == 8
  for r, g in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got)):
    # Includes the train-mode batch_stats updates: BatchNorm must reduce over the global batch,
    # not per shard.
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_bfloat16_compute_keeps_float32_params_and_logits(name):
  model = models.get_model(name, num_classes=3, dtype=jnp.bfloat16)
  shapes = models.param_shapes(model)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
  logits, out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), shapes,
                               jax.ShapeDtypeStruct((2, 100, 64), jnp.float32))
  assert logits.dtype == jnp.float32
  # The conv trunk really runs in bfloat16 (pooling must not promote it back).
  assert all(out[b].dtype == jnp.bfloat16 for b in model.block_names())
