"""The best checkpoint is the one with the best validation metric, not the last one.

The validation curve is scripted (it peaks at the 2nd of 5 evaluations), so the test does not
depend on what a tiny model happens to learn in a few steps.
"""
import json

import jax
import numpy as np
import pytest

from conftest import tiny_pretrain_config

EVERY, TOTAL, PEAK = 2, 10, 4  # Evaluations at steps 2, 4, 6, 8, 10; the 2nd one is best.
CURVE = [0.2, 0.9, 0.5, 0.4, 0.3]


@pytest.fixture
def scripted_map(monkeypatch):
  """`metrics.multilabel` returns the next value of CURVE (then the last one again): the loop
  calls it through the pre-training task's `metrics_fn` for every validation."""
  from audiotl_jax.train import metrics
  calls = []

  def fake(scores, targets):
    value = CURVE[min(len(calls), len(CURVE) - 1)]
    calls.append(value)
    return {"mAP": value, "auc": value, "dprime": 0.0, "classes_scored": 1}

  monkeypatch.setattr(metrics, "multilabel", fake)
  return calls


def _assert_best_is_peak(workdir, results):
  from audiotl_jax.train import checkpoints
  ckpt = workdir / "checkpoints"
  assert results["best_step"] == PEAK
  assert json.loads((ckpt / "best.json").read_text())["step"] == PEAK
  steps = checkpoints.finished_steps(ckpt)
  assert PEAK in steps and TOTAL in steps, steps
  loaded, _, step_dir = checkpoints.load_model(workdir)
  assert step_dir.name == str(PEAK)
  peak, _, _ = checkpoints.load_model(ckpt / str(PEAK))
  last, _, _ = checkpoints.load_model(ckpt / str(TOTAL))
  jax.tree.map(np.testing.assert_array_equal, loaded, peak)
  # Training moved the weights after the peak, so loading the last step would be noticed.
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(loaded["params"]), jax.tree.leaves(last["params"])))


def test_best_step_is_the_validation_peak(prepared, tmp_path, scripted_map):
  from audiotl_jax.stages import pretrain
  config = tiny_pretrain_config(prepared["audioset"], total_steps=TOTAL, checkpoint_every=EVERY)
  results = pretrain.run(config, tmp_path)
  assert scripted_map[:5] == CURVE
  _assert_best_is_peak(tmp_path, results)


def test_best_step_survives_a_resume(prepared, tmp_path, scripted_map):
  """Stopping after the peak and resuming: the new checkpoint manager reads the metrics stored
  with the earlier steps, so it neither forgets the peak nor deletes its folder."""
  from audiotl_jax.stages import pretrain
  config = tiny_pretrain_config(prepared["audioset"], total_steps=TOTAL, checkpoint_every=EVERY,
                                stop_at=6)
  assert pretrain.run(config, tmp_path) == {"stopped_at": 6}
  with config.unlocked():
    config.stop_at = 0
  results = pretrain.run(config, tmp_path)
  assert scripted_map[:5] == CURVE
  _assert_best_is_peak(tmp_path, results)
