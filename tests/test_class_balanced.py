"""Class-balanced cross-entropy and binary tasks trained as two classes (the ontology/data-scale
study's protocol): the loss matches torch's weighted CrossEntropyLoss by hand, and fine-tuning
really uses it."""
import json

import numpy as np
import pytest

from audiotl_jax.errors import UserError
from audiotl_jax.train import step as step_lib
from test_finetune_checks import _config


def test_balanced_weights_are_inverse_frequency_and_sum_to_the_class_count():
  w = step_lib.balanced_class_weights([10, 30, 60, 0])
  assert w[3] == 0  # no clips: no weight, not infinity
  assert np.isclose(w.sum(), 4)
  assert np.allclose(w[0] / w[1], 3) and np.allclose(w[0] / w[2], 6)


def test_weighted_loss_is_the_weighted_mean_of_per_clip_cross_entropy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 3)).astype(np.float32)
  labels = np.array([0, 0, 0, 1, 2, 2])
  targets = np.eye(3, dtype=np.float32)[labels]
  weights = np.array([0.5, 2.0, 0.5], np.float32)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  ce = -logp[np.arange(6), labels]
  expected = (weights[labels] * ce).sum() / weights[labels].sum()  # torch's reduction="mean"
  got = float(step_lib.weighted_ce_loss(weights)(logits, targets))
  assert got == pytest.approx(expected, rel=1e-5)
  # Equal weights: plain cross-entropy; unequal ones change it.
  assert float(step_lib.weighted_ce_loss(np.ones(3))(logits, targets)) == pytest.approx(
      float(step_lib.ce_loss(logits, targets)), rel=1e-6)
  assert abs(got - float(step_lib.ce_loss(logits, targets))) > 1e-3


def test_finetune_records_the_class_weights_of_its_training_selection(prepared, pretrained,
                                                                       tmp_path):
  from audiotl_jax.data.dataset import PreparedDataset
  from audiotl_jax.stages import finetune
  config = _config(prepared, init=str(pretrained), class_balanced=True, total_steps=2,
                   eval_every=2)
  results = finetune.run(config, tmp_path / "run")
  ds = PreparedDataset(prepared["speech_commands"])
  counts = np.bincount([int(ls[0]) for ls in ds.labels("train")], minlength=ds.num_classes)
  assert np.allclose(results["class_weights"], step_lib.balanced_class_weights(counts))
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert saved["seed"] == config.seed and saved["dataset"] == "speech_commands"


def test_task_key_rejects_anything_but_multiclass(prepared, tmp_path):
  from audiotl_jax.stages import finetune
  with pytest.raises(UserError, match="config key 'task'"):
    finetune.run(_config(prepared, task="multilabel", total_steps=2), tmp_path / "run")
