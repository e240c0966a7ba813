"""Training: sharded step equivalence, no recompilation, exact resume, divergence, fine-tuning."""
import json

import jax
import ml_collections
import numpy as np
import pytest

from audiotl_jax import models
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.train import mesh as mesh_lib, metrics, state as state_lib
from audiotl_jax.train import checkpoints as checkpointing
from audiotl_jax.train import step as steps
from configs import common
from conftest import tiny_pretrain_config

FRONTEND = ml_collections.ConfigDict(dict(sample_rate=16000, n_fft=256, hop_length=160, n_mels=32,
                                          fmin=0.0, fmax=8000.0))


def _batch(rng, batch=16, samples=4000, classes=5):
  return {"audio": rng.integers(-8000, 8000, (batch, samples)).astype(np.int16),
          "label": (rng.random((batch, classes)) < 0.3).astype(np.float32)}


def _run_steps(num_devices, batch, num_steps=2):
  model = models.get_model("cnn:tiny", num_classes=5)
  featurize = featurizer.make_featurizer(FRONTEND, {"mean": -30.0, "std": 15.0})
  tx = state_lib.make_optimizer(common.optim(1e-3), total_steps=10)
  mesh = mesh_lib.make_mesh(num_devices)
  state, shardings = state_lib.create(model, tx, mesh, frames=26, n_mels=32, seed=0)
  step = steps.jit_train_step(steps.make_train_step(
      model, featurize, tx, loss_fn=steps.bce_loss, augment=common.augment(mixup_alpha=0.0),
      num_classes=5, target="multihot"), shardings, mesh)
  norm = steps.norm_on_mesh({"mean": -30.0, "std": 15.0}, mesh)
  losses = []
  for _ in range(num_steps):
    state, m = step(state, mesh_lib.to_global(batch, mesh), norm)
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state), step


def test_sharded_step_matches_single_device(devices):
  batch = _batch(np.random.default_rng(0))
  losses1, state1, _ = _run_steps(1, batch)
  losses8, state8, _ = _run_steps(8, batch)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(state8.params), jax.tree.leaves(state1.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(state8.batch_stats), jax.tree.leaves(state1.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_train_step_compiles_once(devices):
  _, _, step = _run_steps(8, _batch(np.random.default_rng(1)), num_steps=3)
  assert step._cache_size() == 1


def test_runs_whose_feature_statistics_differ_compile_one_train_step(prepared, tmp_path,
                                                                     monkeypatch):
  """The statistics are an argument of the step, not constants in it: two runs on different
  draws of the data (so different statistics) lower to the same programs, which the caches
  then serve to the second (a sweep's runs all differ this way)."""
  import hashlib
  from audiotl_jax.stages import pretrain
  from audiotl_jax.train import aot
  programs, init = [], aot.Ahead.__init__

  def recording(self, jitted, *args, **kwargs):
    programs.append(hashlib.sha256(jitted.lower(*args).as_text().encode()).hexdigest())
    init(self, jitted, *args, **kwargs)

  monkeypatch.setattr(aot.Ahead, "__init__", recording)
  norms = []
  for seed in (0, 1):
    config = tiny_pretrain_config(prepared["audioset"], total_steps=2, **{"data.seed": seed})
    pretrain.run(config, tmp_path / str(seed))
    _, meta, _ = checkpointing.load_model(tmp_path / str(seed))
    norms.append(meta["norm"])
  assert norms[0] != norms[1]
  assert len(programs) == 4  # each run: its train step, then its evaluation's predict
  assert programs[:2] == programs[2:] and programs[0] != programs[1]


def test_pretrain_resume_matches_uninterrupted(prepared, tmp_path):
  from audiotl_jax.stages import pretrain
  whole, parts = tmp_path / "whole", tmp_path / "parts"
  pretrain.run(tiny_pretrain_config(prepared["audioset"]), whole)
  out = pretrain.run(tiny_pretrain_config(prepared["audioset"], stop_at=2), parts)
  assert out == {"stopped_at": 2}
  assert checkpointing.finished_steps(parts / "checkpoints") == [2]
  pretrain.run(tiny_pretrain_config(prepared["audioset"]), parts)

  def losses(workdir):
    rows = [r for r in metrics.read_jsonl(workdir / "metrics.jsonl") if "train_loss" in r]
    return {r["step"]: r["train_loss"] for r in rows}

  lw, lp = losses(whole), losses(parts)
  assert sorted(lw) == sorted(lp) == [1, 2, 3, 4]
  np.testing.assert_allclose([lp[s] for s in (1, 2, 3, 4)], [lw[s] for s in (1, 2, 3, 4)],
                             rtol=1e-5)
  # Same step, same data position, same parameters.
  steps_w = checkpointing.finished_steps(whole / "checkpoints")
  steps_p = checkpointing.finished_steps(parts / "checkpoints")
  assert steps_w[-1] == steps_p[-1] == 4
  def iterator_state(workdir):  # The Grain state files, not Orbax's commit marker.
    return {p.name: p.read_text() for p in (workdir / "checkpoints/4/data").iterdir()
            if p.is_file() and "commit" not in p.name}

  data_w, data_p = iterator_state(whole), iterator_state(parts)
  # The Grain state counts batches (issue 13: one element per batch): 4 steps.
  assert data_w and '"next_index": 4' in "".join(data_w.values())
  assert data_w == data_p
  mw, _, _ = checkpointing.load_model(whole / "checkpoints" / "4")
  mp, _, _ = checkpointing.load_model(parts / "checkpoints" / "4")
  for a, b in zip(jax.tree.leaves(mw), jax.tree.leaves(mp)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # A finished workdir is not trained again.
  again = pretrain.run(tiny_pretrain_config(prepared["audioset"]), whole)
  assert again["total_steps"] == 4


def test_nonfinite_loss_stops_and_keeps_last_good(prepared, tmp_path):
  from audiotl_jax.stages import pretrain
  config = tiny_pretrain_config(prepared["audioset"])
  with config.unlocked():
    config.optim.lr = float("nan")
  with pytest.raises(steps.TrainingDiverged, match="non-finite at step 1"):
    pretrain.run(config, tmp_path)
  assert not (tmp_path / "checkpoints").exists() or \
      checkpointing.finished_steps(tmp_path / "checkpoints") == []


def _finetune_config(prepared, pretrained, strategy, **overrides):
  from audiotl_jax import config as config_lib
  config = config_lib.load(f"configs/finetune.py:strategy={strategy},runlocal")
  with config.unlocked():
    config.init = str(pretrained)
    config.data.dir = str(prepared["speech_commands"])
    config.batch_size = 8
    config.total_steps = 3
    config.eval_every = 3
    config.progress = False
    for k, v in overrides.items():
      config[k] = v
  return config


@pytest.mark.parametrize("strategy,frozen,trained", [
    ("linear", ["block1", "block2", "block3", "block4", "embedding"], ["head"]),
    ("partial:2", ["block1", "block2"], ["block3", "head"]),
])
def test_finetune_strategy_freezes_what_it_says(prepared, pretrained, tmp_path, strategy, frozen,
                                                trained):
  from audiotl_jax.stages import finetune
  results = finetune.run(_finetune_config(prepared, pretrained, strategy), tmp_path)
  assert results["metric"] == "accuracy" and 0.0 <= results["test"]["accuracy"] <= 1.0
  assert json.loads((tmp_path / "results.json").read_text())["strategy"] == strategy
  before, _, _ = checkpointing.load_model(pretrained)
  after, meta, _ = checkpointing.load_model(tmp_path)
  assert meta["strategy"] == strategy and meta["num_trainable"] < meta["num_params"]
  for name in frozen:
    for a, b in zip(jax.tree.leaves(before["params"][name]), jax.tree.leaves(after["params"][name])):
      np.testing.assert_array_equal(a, b)
    if name in before["batch_stats"]:
      for a, b in zip(jax.tree.leaves(before["batch_stats"][name]),
                      jax.tree.leaves(after["batch_stats"][name])):
        np.testing.assert_array_equal(a, b)
  for name in trained:
    if name == "head":
      continue  # A new head: nothing to compare against.
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(before["params"][name]), jax.tree.leaves(after["params"][name])))


def test_finetune_rejects_test_split_as_validation(prepared, pretrained, tmp_path):
  from audiotl_jax.stages import finetune
  config = _finetune_config(prepared, pretrained, "linear")
  with config.unlocked():
    config.data.val_split = "test"
  with pytest.raises(UserError, match="same split"):
    finetune.run(config, tmp_path)


def test_unknown_strategy_lists_known(prepared, pretrained, tmp_path):
  from audiotl_jax.stages import finetune
  with pytest.raises(UserError, match="known: bitfit, conv_adapter, deep_prompt, full"):
    finetune.run(_finetune_config(prepared, pretrained, "frobnicate"), tmp_path)
  with pytest.raises(UserError, match="'lora' is not supported for model family 'cnn'"):
    finetune.run(_finetune_config(prepared, pretrained, "lora"), tmp_path / "lora")


def test_embed_and_score(prepared, pretrained, tmp_path):
  from audiotl_jax.stages import embed as embedding
  from audiotl_jax.stages import score as scoring
  embedding.embed(checkpoint=pretrained, dataset_dir=prepared["speech_commands"],
                  splits=["train", "test"], layers=["embedding", "block2"], pooling="mean",
                  out_dir=tmp_path / "emb", batch_size=8, progress=False)
  meta = json.loads((tmp_path / "emb/train/metadata.json").read_text())
  n = meta["num_clips"]
  emb = np.load(tmp_path / "emb/train/embedding.npy")
  assert emb.shape == (n, 32) and np.isfinite(emb).all()
  assert np.load(tmp_path / "emb/train/block2.npy").shape[0] == n
  assert np.load(tmp_path / "emb/train/labels.npy").shape == (n,)
  assert len(json.loads((tmp_path / "emb/train/ids.json").read_text())) == n
  with pytest.raises(UserError, match="unknown layer"):
    embedding.embed(checkpoint=pretrained, dataset_dir=prepared["speech_commands"],
                    splits=["train"], layers=["nope"], pooling="mean", out_dir=tmp_path / "x",
                    batch_size=8, progress=False)
  rows = scoring.score(checkpoints={"a": pretrained}, dataset_dir=prepared["speech_commands"],
                       split="train", layer="embedding", scores=["nc_score", "logme", "leep"],
                       out_dir=tmp_path / "score", batch_size=8, progress=False)
  assert set(rows[0]) >= {"nc_score", "logme", "leep"}
  assert all(np.isfinite(rows[0][k]) for k in ("nc_score", "logme", "leep"))


def test_finetune_binary_detection_reports_auroc(tmp_path):
  """A two-class CSV manifest is a detection task: BCE on one output, AUROC on the test split."""
  import soundfile as sf
  from audiotl_jax import config as config_lib
  from audiotl_jax.data import readers
  from audiotl_jax.data import shard_writer as prepare
  from audiotl_jax.stages import finetune
  rng = np.random.default_rng(0)
  rows = ["path,label"]
  for i in range(40):
    label = "bird" if i % 2 else "nobird"
    t = np.arange(8000) / 16000
    tone = np.sin(2 * np.pi * (3000 + 1500 * t) * t) if label == "bird" else 0
    sf.write(tmp_path / f"clip{i}.wav", (0.3 * tone + 0.05 * rng.standard_normal(8000)),
             16000, subtype="PCM_16")
    rows.append(f"clip{i}.wav,{label}")
  (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
  listing = readers.get_reader("csv")(tmp_path / "items.csv")
  assert listing.task == "binary"
  prepare.prepare(listing, tmp_path / "prepared", sample_rate=16000, clip_seconds=0.5,
                  num_workers=1, progress=False)
  config = config_lib.load("configs/finetune.py:strategy=full,model=cnn:tiny,runlocal")
  with config.unlocked():
    config.data.dir = str(tmp_path / "prepared")
    config.data.clip_seconds = 0.5
    config.batch_size = 8
    config.total_steps = 4
    config.eval_every = 2
    config.frontend.n_mels = 32
    config.progress = False
  results = finetune.run(config, tmp_path / "run")
  assert results["metric"] == "auroc" and results["task"] == "binary"
  assert 0.0 <= results["test"]["auroc"] <= 1.0
  _, meta, _ = checkpointing.load_model(tmp_path / "run")
  assert meta["num_classes"] == 1


def test_create_keeps_given_leaves_and_draws_the_rest_as_a_fresh_start_would():
  """Fine-tuning's one init program: a given leaf is kept exactly; a placeholder leaf (the new
  head) gets the value a fresh init with the same seed gives it; the key is PRNGKey's."""
  for seed in (0, 1, 12345, 2**31 - 1):
    np.testing.assert_array_equal(state_lib.host_key(seed), jax.random.PRNGKey(seed))
  model = models.get_model("cnn:tiny", num_classes=5)
  tx = state_lib.make_optimizer(common.optim(1e-3), total_steps=10)
  mesh = mesh_lib.make_mesh()
  fresh, _ = state_lib.create(model, tx, mesh, frames=26, n_mels=32, seed=3)
  shapes = state_lib.variable_shapes(model, frames=26, n_mels=32)
  given = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes["params"])
  given["head"] = shapes["params"]["head"]  # placeholders: drawn fresh
  state, _ = state_lib.create(model, tx, mesh, frames=26, n_mels=32, seed=3, params=given,
                              batch_stats=shapes["batch_stats"])
  fresh_params = dict(_named_leaves(fresh.params))
  for name, leaf in _named_leaves(state.params):
    if "head" in name:
      np.testing.assert_array_equal(leaf, fresh_params[name])
    else:
      assert np.all(leaf == 0.5), name
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.batch_stats),
               jax.device_get(fresh.batch_stats))
  assert int(state.step) == 0
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(state.opt_state))


def _named_leaves(tree):
  return [(jax.tree_util.keystr(p), np.asarray(v))
          for p, v in jax.tree_util.tree_leaves_with_path(tree)]
