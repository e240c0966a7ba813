"""What pre-training evaluation costs: how often it runs, on how many clips, with what uploaded.

`eval_every` sets the validation steps; `checkpoint_every` adds checkpoints between them, which
never rank as best (they have no metric). `data.max_val_clips` evaluates a fixed, seeded subset of
the validation carve. The final evaluation gets the best parameters already on the mesh, once.
"""
import json

import jax
import numpy as np
import pytest

from conftest import tiny_pretrain_config


def _val_steps(workdir):
  from audiotl_jax.train import metrics
  return sorted(r["step"] for r in metrics.read_jsonl(workdir / "metrics.jsonl")
                if "val_mAP" in r)


def test_eval_every_sets_the_validation_steps(prepared, tmp_path):
  from audiotl_jax.stages import pretrain
  config = tiny_pretrain_config(prepared["audioset"], total_steps=8, eval_every=2,
                                checkpoint_every=4)
  pretrain.run(config, tmp_path)
  assert _val_steps(tmp_path) == [2, 4, 6, 8]


@pytest.fixture
def scripted_map(monkeypatch):
  """Validation mAP 0.9 at the first evaluation, then 0.1: the best is the first evaluated step."""
  from audiotl_jax.train import metrics
  calls = []

  def fake(scores, targets):
    value = 0.9 if not calls else 0.1
    calls.append(len(targets))
    return {"mAP": value, "auc": value, "dprime": 0.0, "classes_scored": 1}

  monkeypatch.setattr(metrics, "multilabel", fake)
  return calls


def test_checkpoints_between_evaluations_resume_but_never_rank_best(prepared, tmp_path,
                                                                    scripted_map):
  """Evaluations at 4 and 8; checkpoints also at 3, 6 and at the stop (5), without a metric.
  A stop is not an evaluation, so the stopped and resumed run evaluates where an uninterrupted
  one would."""
  from audiotl_jax.stages import pretrain
  from audiotl_jax.train import checkpoints
  config = tiny_pretrain_config(prepared["audioset"], total_steps=8, eval_every=4,
                                checkpoint_every=3, keep_checkpoints=10, stop_at=5)
  assert pretrain.run(config, tmp_path) == {"stopped_at": 5}
  assert checkpoints.finished_steps(tmp_path / "checkpoints") == [3, 4, 5]
  with config.unlocked():
    config.stop_at = 0
  results = pretrain.run(config, tmp_path)
  assert _val_steps(tmp_path) == [4, 8]
  assert checkpoints.finished_steps(tmp_path / "checkpoints") == [3, 4, 5, 6, 8]
  # Steps 3, 5 and 6 carry no metric, so they never rank as best, whatever their weights.
  assert results["best_step"] == 4
  assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["step"] == 4


def test_max_val_clips_evaluates_the_same_seeded_subset(prepared, tmp_path, monkeypatch):
  from audiotl_jax.data import pipeline, selection
  from audiotl_jax.data.dataset import PreparedDataset
  from audiotl_jax.stages import pretrain
  config = tiny_pretrain_config(prepared["audioset"], total_steps=4, eval_every=2,
                                **{"data.subset": "", "data.val_fraction": 0.3,
                                   "data.max_val_clips": 3})
  carve = selection.pretrain(PreparedDataset(prepared["audioset"]), config.data).val
  assert len(carve) > 3
  seen, real = [], pipeline.eval_batches

  def spy(dataset, split, **kw):
    if split == config.data.train_split:  # validation is carved from the training split
      seen.append(np.asarray(kw["indices"]).tolist())
    return real(dataset, split, **kw)

  monkeypatch.setattr(pipeline, "eval_batches", spy)
  results = pretrain.run(config, tmp_path)
  assert len(seen) == 3  # steps 2 and 4, and the final evaluation of the best step
  assert all(s == seen[0] for s in seen) and len(seen[0]) == 3
  assert set(seen[0]) <= set(carve.tolist())
  # Seeded: any run with this data seed evaluates the same clips.
  assert pipeline.cap_indices(carve, 3, config.data.seed).tolist() == seen[0]
  assert results["num_val_clips"] == 3


def test_final_evaluation_gets_parameters_on_the_mesh_once(prepared, tmp_path, monkeypatch):
  from audiotl_jax.stages import pretrain
  from audiotl_jax.train import step
  calls, real = [], step.evaluate

  def spy(predict, params, batch_stats, *args, **kw):
    calls.append(params)
    return real(predict, params, batch_stats, *args, **kw)

  monkeypatch.setattr(step, "evaluate", spy)
  pretrain.run(tiny_pretrain_config(prepared["audioset"], total_steps=2, eval_every=2), tmp_path)
  final = calls[-2:]  # val and test of the best step, after its checkpoint was loaded
  assert len(calls) == 3
  devices = set(jax.devices())
  for params in final:
    for leaf in jax.tree.leaves(params):
      assert isinstance(leaf, jax.Array), type(leaf)
      assert leaf.committed and leaf.sharding.device_set == devices
      assert leaf.sharding.is_fully_replicated
  # Uploaded once: both evaluations get the very same arrays.
  assert all(a is b for a, b in zip(jax.tree.leaves(final[0]), jax.tree.leaves(final[1])))
