"""Transfer strategies: PETL_AST trainable counts, masks, unsupported combinations, adapters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiotl_jax import models
from audiotl_jax.errors import UserError
from audiotl_jax.models import transfer


def _strategy(model_name, spec, num_classes=50, frames=500, mel_bins=128, petl_config=None,
              **overrides):
  """(model, strategy, param shapes) with the strategy's added modules; nothing allocated."""
  base = models.get_model(model_name, num_classes=num_classes, **overrides)
  family = model_name.partition(":")[0]
  p = transfer.plan(spec, family, width=base.embedding_dim, block_names=base.block_names(),
                    stem=getattr(base, "stem_names", tuple)(), petl_config=petl_config)
  extra = {"petl": transfer.make_petl(p)} if p.petl else {}
  model = models.get_model(model_name, num_classes=num_classes, **overrides, **extra)
  shapes = models.param_shapes(model, frames=frames, mel_bins=mel_bins)
  strategy = transfer.make_strategy(spec, shapes["params"], shapes.get("batch_stats", {}),
                                    model.block_names(), family=family, width=base.embedding_dim,
                                    stem=getattr(base, "stem_names", tuple)(),
                                    petl_config=petl_config)
  return model, strategy, shapes


# AST-base on ESC-50 (50 classes, 500 frames), the PETL_AST code's defaults. Each count holds the
# head (LayerNorm 1,536 + Dense 38,450 = 39,986) and, for adapters, the block LayerNorms that code
# unfroze (12 x 1,536 per norm).
PETL_AST_COUNTS = {
    "linear": 39_986,
    "lora:12": 482_354,           # 12 x 2 x (768 x 12 + 12 x 768) + head
    "lora:6": 261_170,
    "pfeiffer:96": 215_186,       # 12 x (6,152 + 6,912) adapters + 12 x 1,536 norm2 + head
    "houlsby:96": 390_386,        # 12 x 2 x 13,064 + 12 x 2 x 1,536 + head
    "deep_prompt:25": 270_386,    # 12 x 25 x 768 + head
    "prompt:25": 59_186,          # 25 x 768 + head
    "prefix:24": 261_170,         # 12 x 24 x 768 + head
}


@pytest.mark.parametrize("spec,count", PETL_AST_COUNTS.items())
def test_petl_ast_trainable_counts(spec, count):
  _, strategy, shapes = _strategy("ast:base", spec)
  assert transfer.count_trainable(shapes["params"], strategy.trainable) == count


def test_compat_reproduces_the_same_counts_with_its_own_head():
  # PETL_AST: a Dense head plus the trainable final encoder LayerNorm (same 39,986), LoRA as one
  # pair shared by query and key with width 768 / 64 = 12.
  compat = {"petl_ast_compat": True}
  _, strategy, shapes = _strategy("ast:base", "linear", petl_config=compat)
  assert "norm" not in shapes["params"]["head"]
  assert transfer.count_trainable(shapes["params"], strategy.trainable) == 39_986
  model, strategy, shapes = _strategy("ast:base", "lora", petl_config={**compat,
                                                                       "lora_reduction": 64})
  assert set(shapes["params"]["block1"]["attn"]) >= {"lora_qk"}
  assert transfer.count_trainable(shapes["params"], strategy.trainable) == 261_170
  _, strategy, shapes = _strategy("ast:base", "pfeiffer:96", petl_config=compat)
  assert transfer.count_trainable(shapes["params"], strategy.trainable) == 215_186
  # BitFit: 12 x 8,448 block biases + the final LayerNorm's bias + the Dense head (the PETL_AST
  # code leaves the patch conv's bias and the final LayerNorm's scale frozen); ours adds both
  # LayerNorm + Dense of the head and the patch conv's bias.
  _, strategy, shapes = _strategy("ast:base", "bitfit", petl_config=compat)
  assert transfer.count_trainable(shapes["params"], strategy.trainable) == 101_376 + 768 + 38_450
  _, strategy, shapes = _strategy("ast:base", "bitfit")
  assert transfer.count_trainable(shapes["params"],
                                  strategy.trainable) == 101_376 + 768 * 2 + 39_986


def test_layernorm_convention_is_selectable():
  extra = 12 * 2 * 1_536
  for spec, auto in (("houlsby:96", 390_386),):
    counts = {}
    for norms in ("auto", "none", "all"):
      _, s, shapes = _strategy("ast:base", spec, petl_config={"train_norms": norms})
      counts[norms] = transfer.count_trainable(shapes["params"], s.trainable)
    assert counts["auto"] == auto
    assert counts["all"] - counts["none"] == extra


def test_masks_select_what_they_say():
  _, s, _ = _strategy("ast:base", "pfeiffer:96")
  flat = {transfer.path_str(p): t for p, t in jax.tree_util.tree_leaves_with_path(s.trainable)}
  assert flat["block3/adapter_ffn/down/kernel"] and flat["block3/norm2/scale"]
  assert not flat["block3/norm1/scale"] and not flat["block3/attn/query/kernel"]
  assert not flat["embedding/pos_embed"] and not flat["encoder_norm/scale"]
  assert flat["head/norm/scale"] and flat["head/dense/kernel"]
  _, s, shapes = _strategy("ast:base", "bitfit")
  flat = {transfer.path_str(p): t for p, t in jax.tree_util.tree_leaves_with_path(s.trainable)}
  assert all(t == (k.endswith("bias") or k.startswith("head/")) for k, t in flat.items())
  _, s, _ = _strategy("ast:base", "partial:4")
  flat = {transfer.path_str(p): t for p, t in jax.tree_util.tree_leaves_with_path(s.trainable)}
  assert not flat["embedding/proj/kernel"] and not flat["block4/fc1/kernel"]
  assert flat["block5/fc1/kernel"] and flat["encoder_norm/scale"] and flat["head/dense/bias"]


@pytest.mark.parametrize("name", ["cnn:S", "crnn:S", "dcase_cnn:base"])
def test_conv_families_strategies(name):
  _, lin, shapes = _strategy(name, "linear", num_classes=10, frames=100, mel_bins=64)
  head = models.count_params(shapes["params"]["head"])
  assert transfer.count_trainable(shapes["params"], lin.trainable) == head
  # BitFit on bias-free convs: BatchNorm shifts (+ Dense/GRU biases) + head; statistics frozen.
  _, bit, shapes = _strategy(name, "bitfit", num_classes=10, frames=100, mel_bins=64)
  shifts = sum(shapes["params"][b]["bn"]["bias"].size for b in ("block1", "block2", "block3",
                                                                "block4"))
  assert transfer.count_trainable(shapes["params"], bit.trainable) >= head + shifts
  assert not bit.model_train and not any(jax.tree.leaves(bit.stats_trainable))
  model, conv, shapes = _strategy(name, "conv_adapter:4", num_classes=10, frames=100, mel_bins=64)
  adapter = shapes["params"]["block2"]["adapter"]
  c = model.channels[1]
  assert adapter["down"]["kernel"].shape == (1, 1, c, c // 4)
  n_adapters = sum(models.count_params(shapes["params"][b]["adapter"]) for b in model.block_names())
  assert transfer.count_trainable(shapes["params"], conv.trainable) == head + n_adapters
  model, mlp, shapes = _strategy(name, "mlp:32", num_classes=10, frames=100, mel_bins=64)
  assert set(shapes["params"]["head"]) == {"hidden", "out"}
  assert transfer.count_trainable(shapes["params"], mlp.trainable) == models.count_params(
      shapes["params"]["head"])


def test_unsupported_combination_says_so():
  for spec in ("lora:4", "houlsby", "prompt:3", "prefix:4"):
    with pytest.raises(UserError, match="not supported for model family 'cnn'.*supported for cnn"):
      _strategy("cnn:tiny", spec, num_classes=3, frames=32, mel_bins=16)
  with pytest.raises(UserError, match="known: .*lora.*partial"):
    transfer.plan("frobnicate", "ast", width=8)
  with pytest.raises(UserError, match="even"):
    transfer.plan("prefix:5", "ast", width=8)
  with pytest.raises(UserError, match="petl.reduction"):
    transfer.options({"reductoin": 3})


SMALL = dict(depth=1, width=32, num_heads=2, mlp_dim=64)  # ast:tiny cut down: fast to compile


def _tiny(spec, petl_config=None):
  return _strategy("ast:tiny", spec, num_classes=3, frames=48, mel_bins=32,
                   petl_config=petl_config, **SMALL)


def test_added_modules_start_as_identity_and_train():
  """Up-projections start at zero, so an adapted model computes what the backbone computed;
  gradients reach the down-projection only through the up one, which must not stay zero."""
  x = jax.random.normal(jax.random.key(1), (2, 48, 32))
  base = models.get_model("ast:tiny", num_classes=3, **SMALL)
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(lambda x: base.init(jax.random.key(0), x, train=False), x)
  variables = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
                           shapes)
  # Every kind of added module at once: one init and one forward/backward to compile.
  p = transfer.Petl(lora_rank=4, lora_targets=("q", "v", "o"), adapter="houlsby", adapter_dim=4,
                    conv_adapter_dim=4)
  model = models.get_model("ast:tiny", num_classes=3, petl=p, **SMALL)

  @jax.jit
  def run(params, x):
    loss = lambda q: jnp.sum(model.apply({"params": q}, x, train=False)[0] ** 2)
    return model.apply({"params": params}, x, train=False)[0], jax.grad(loss)(params)

  full = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
  params, fresh = transfer.transplant(variables["params"], full["params"], skip=())
  assert fresh and all("adapter" in f or "lora" in f for f in fresh)
  logits, grads = run(params, x)
  ref = jax.jit(lambda v, x: base.apply(v, x, train=False)[0])(variables, x)
  np.testing.assert_allclose(logits, ref, atol=1e-5)
  flat = {transfer.path_str(k): g for k, g in jax.tree_util.tree_leaves_with_path(grads)}
  ups = [k for k in flat if k.endswith(("up/kernel", "b/kernel"))]
  assert len(ups) == 6  # adapter_attn, adapter_ffn, conv_adapter, lora_q, lora_v, lora_o
  assert all(np.abs(flat[k]).max() > 0 for k in ups), [k for k in ups if not flat[k].any()]


def test_compat_adapters_never_train():
  # The PETL_AST code zeroes both projections: no gradient reaches either (kept for reproduction).
  x = jax.random.normal(jax.random.key(1), (2, 5, 8))
  for compat, moves in ((True, False), (False, True)):
    adapter = transfer.Bottleneck(4, compat=compat)

    @jax.jit
    def init_and_grad(x):
      params = adapter.init(jax.random.key(0), x)["params"]
      return params, jax.grad(lambda p: jnp.sum(adapter.apply({"params": p}, x) * x))(params)

    params, grads = init_and_grad(x)
    assert (np.abs(grads["up"]["kernel"]).max() > 0) == moves
    assert np.abs(grads["down"]["kernel"]).max() == 0  # up is zero in both at the start
    assert np.all(params["up"]["kernel"] == 0)


def test_petl_config_validation():
  with pytest.raises(UserError, match="adapter_mode"):
    transfer.Petl(adapter="houlsby", adapter_dim=4, adapter_mode="diagonal")
  with pytest.raises(UserError, match="lora_targets"):
    transfer.Petl(lora_rank=2, lora_targets=("x",))
  assert transfer.bottleneck(768, 96) == 8 and transfer.bottleneck(768, 64) == 12


def test_few_shot_selection(prepared):
  from audiotl_jax import config as config_lib
  from audiotl_jax.data import selection
  from audiotl_jax.data.dataset import PreparedDataset
  dataset = PreparedDataset(prepared["speech_commands"])
  dcfg = config_lib.load("configs/finetune.py").data
  with dcfg.unlocked():
    dcfg.few_shot = 2
  sel = selection.downstream(dataset, dcfg)
  labels = dataset.labels("train")
  counts = np.bincount([int(labels[i][0]) for i in sel.train], minlength=dataset.num_classes)
  available = np.bincount([int(l[0]) for l in labels], minlength=dataset.num_classes)
  np.testing.assert_array_equal(counts, np.minimum(available, 2))
  assert "2-shot, seed 0" in sel.description
  np.testing.assert_array_equal(sel.train, selection.downstream(dataset, dcfg).train)
  with dcfg.unlocked():
    dcfg.seed = 1
  assert not np.array_equal(sel.train, selection.downstream(dataset, dcfg).train)


def test_adapter_checkpoint_roundtrip_and_backbone_check(tmp_path):
  from audiotl_jax.train import adapters
  rng = np.random.default_rng(0)
  backbone = {"block1": {"conv": {"kernel": rng.standard_normal((3, 3, 1, 4)).astype(np.float32)}},
              "head": {"kernel": rng.standard_normal((4, 2)).astype(np.float32)}}
  up = {"up": {"kernel": np.ones((1, 1, 2, 4), np.float32)}}
  params = {**backbone, "block1": {**backbone["block1"], "adapter": up}}
  trainable = {"block1": {"conv": {"kernel": False}, "adapter": {"up": {"kernel": True}}},
               "head": {"kernel": True}}
  out = adapters.save(
      tmp_path / "adapter", {"params": params, "batch_stats": {}},
      {"params": trainable, "batch_stats": {}}, {"strategy": "conv_adapter"},
      {"path": "runs/backbone", "fingerprint": adapters.fingerprint(backbone)})
  stored = np.load(out / adapters.ADAPTER_ARRAYS)
  assert sorted(stored.files) == ["params/block1/adapter/up/kernel", "params/head/kernel"]
  fresh = jax.tree.map(np.zeros_like, params)
  fresh["block1"]["conv"] = backbone["block1"]["conv"]
  variables, meta = adapters.load(out, {"params": fresh}, backbone_params=backbone)
  np.testing.assert_array_equal(variables["params"]["head"]["kernel"], params["head"]["kernel"])
  np.testing.assert_array_equal(variables["params"]["block1"]["adapter"]["up"]["kernel"], 1.0)
  assert meta["backbone"]["path"] == "runs/backbone" and meta["num_adapter_values"] == 16
  other = jax.tree.map(lambda a: a + 1, backbone)
  with pytest.raises(UserError, match="trained on the backbone runs/backbone"):
    adapters.load(out, {"params": fresh}, backbone_params=other)
  with pytest.raises(UserError, match="no place in the model"):
    adapters.load(out, {"params": backbone}, backbone_params=backbone)


@pytest.mark.slow
def test_finetune_conv_adapter_few_shot_and_adapter_checkpoint(prepared, pretrained, tmp_path):
  """One PETL run in the real loop: the backbone stays as it was, the adapters and head move,
  the count lands in the metadata, and the adapter-only export loads onto its backbone only."""
  from audiotl_jax import config as config_lib
  from audiotl_jax.data import selection
  from audiotl_jax.data.dataset import PreparedDataset
  from audiotl_jax.train import adapters as adapter_lib, checkpoints as checkpointing
  from audiotl_jax.stages import finetune
  from audiotl_jax.train import inference
  config = config_lib.load("configs/finetune.py:strategy=conv_adapter:4,runlocal")
  with config.unlocked():
    config.init = str(pretrained)
    config.data.dir = str(prepared["speech_commands"])
    config.data.few_shot = 2
    config.batch_size = 8
    config.total_steps = 2
    config.eval_every = 2
    config.progress = False
  dataset = PreparedDataset(prepared["speech_commands"])
  sel = selection.downstream(dataset, config.data)
  labels = dataset.labels("train")
  counts = np.bincount([int(labels[i][0]) for i in sel.train], minlength=dataset.num_classes)
  assert counts.max() <= 2 and "2-shot" in sel.description
  np.testing.assert_array_equal(sel.train, selection.downstream(dataset, config.data).train)

  results = finetune.run(config, tmp_path / "run")
  before, _, _ = checkpointing.load_model(pretrained)
  after, meta, _ = checkpointing.load_model(tmp_path / "run")
  adapters = sum(models.count_params(after["params"][b]["adapter"]) for b in
                 ("block1", "block2", "block3", "block4"))
  assert meta["num_trainable"] == adapters + models.count_params(after["params"]["head"])
  assert meta["petl"]["conv_reduction"] == 4.0
  for b in ("block1", "block4"):
    np.testing.assert_array_equal(before["params"][b]["conv"]["kernel"],
                                  after["params"][b]["conv"]["kernel"])
    np.testing.assert_array_equal(before["batch_stats"][b]["bn"]["mean"],
                                  after["batch_stats"][b]["bn"]["mean"])
  assert np.abs(after["params"]["block4"]["adapter"]["up"]["kernel"]).max() > 0

  model, variables, ameta = inference.load_adapted(results["adapter"])
  assert ameta["strategy"] == "conv_adapter:4"
  for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  # Any other backbone is refused, by name of the one it needs.
  other = jax.tree.map(lambda a: a + 1.0, before)
  with pytest.raises(UserError, match="was trained on the backbone"):
    adapter_lib.load(results["adapter"], variables, backbone_params=other["params"])
