"""`audiotl probe`: classifiers on frozen embeddings (the feature-extraction recipe), checked
against scikit-learn and end to end on a tiny checkpoint."""
import json

import numpy as np
import pytest

from audiotl_jax.errors import UserError
from audiotl_jax.scores import classifiers


def _blobs(n, d=6, classes=3, noise=1.0, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, d)) * 3
  y = rng.integers(0, classes, n)
  return (centres[y] + noise * rng.normal(size=(n, d))).astype(np.float32), y


def test_l2_is_chosen_on_validation_and_matches_sklearn():
  from sklearn.linear_model import LogisticRegression
  train, val, test = _blobs(120, seed=0), _blobs(60, seed=1), _blobs(60, seed=2)
  val = (val[0], val[1]); test = (test[0], test[1])
  fit = classifiers.select_l2(train, val, test, grid=(1e-3, 1e-1, 10.0))
  accs = fit["chosen"]["val_accuracy_per_l2"]
  assert fit["chosen"]["l2"] == max(map(float, accs), key=lambda l2: (accs[str(l2)], l2))
  mean, std = train[0].mean(0), train[0].std(0)
  l2 = fit["chosen"]["l2"]
  ref = LogisticRegression(C=1 / (l2 * len(train[1])), max_iter=5000).fit(
      (train[0] - mean) / std, train[1])
  ref_acc = ref.score((test[0] - mean) / std, test[1])
  assert fit["test"]["accuracy"] == pytest.approx(ref_acc, abs=0.04)
  assert fit["num_params"] == 6 * 3 + 3


def test_mlp_learns_a_nonlinear_task_a_linear_probe_cannot():
  rng = np.random.default_rng(0)

  def xor(n):
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
  train, val, test = xor(400), xor(200), xor(200)
  linear = classifiers.select_l2(train, val, test)
  mlp = classifiers.mlp_probe(*train, *val, *test, hidden=32, steps=400, lr=1e-2, seed=0)
  assert linear["test"]["accuracy"] < 0.7 < 0.85 < mlp["test"]["accuracy"]
  assert 0 < mlp["chosen"]["step"] <= 400 and "auroc" in mlp["test"]
  again = classifiers.mlp_probe(*train, *val, *test, hidden=32, steps=400, lr=1e-2, seed=0)
  assert again["test"] == mlp["test"]  # a seed fixes the run


def test_probe_stage_hybrid_concatenates_layers(prepared, pretrained, tmp_path):
  from audiotl_jax import config as config_lib
  from audiotl_jax.stages import probe
  config = config_lib.load("configs/probe.py")
  with config.unlocked():
    config.init = str(pretrained)
    config.data.dir = str(prepared["speech_commands"])
    config.batch_size = 8
    config.progress = False
  one = probe.run(config, tmp_path / "one")
  with config.unlocked():
    config.layers = "block1+embedding"
    config.classifier = "mlp"
    config.mlp_steps = 50
    config.embeddings_dir = str(tmp_path / "one" / "embeddings")
  with pytest.raises(UserError, match="has no layer 'block1'"):
    probe.run(config, tmp_path / "two")  # a shared folder is read, never rewritten
  with config.unlocked():
    config.embeddings_dir = ""
  two = probe.run(config, tmp_path / "two")
  dims = {l: np.load(tmp_path / "two" / "embeddings" / "train" / f"{l}.npy").shape[1]
          for l in ("block1", "embedding")}
  assert one["dim"] == dims["embedding"] and two["dim"] == sum(dims.values())
  assert one["strategy"] == "probe:logistic@embedding"
  assert two["strategy"] == "probe:mlp@block1+embedding"
  saved = json.loads((tmp_path / "two" / "results.json").read_text())
  assert saved["test"] == two["test"] and 0 <= saved["test"]["accuracy"] <= 1
  assert (tmp_path / "two" / "config.json").exists()
