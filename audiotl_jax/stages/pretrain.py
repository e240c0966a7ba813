"""`audiotl pretrain`: multi-label pre-training on an ontology subset of AudioSet.

What is trained: the subset's classes that occur in the training data (`data.selection`), a
model from the registry, binary cross-entropy, mAP on a validation carve of the training
records (at most `data.max_val_clips` of it, a fixed seeded subset, when set). Evaluation runs
every `eval_every` steps and at the last one; `checkpoint_every` adds checkpoints in between.
How it is trained is `train/loop.py`, shared with fine-tuning.
"""
import dataclasses

import jax
import numpy as np

from audiotl_jax import fileio, models
from audiotl_jax.data import pipeline, selection
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError
from audiotl_jax.train import loop, metrics as metrics_lib, step as step_lib


def _check_cadence(config) -> None:
  if config.eval_every <= 0:
    raise UserError(f"config key 'eval_every' must be a positive number of steps, got "
                    f"{config.eval_every}")
  if config.checkpoint_every < 0:
    raise UserError(f"config key 'checkpoint_every' must be >= 0 (0: only at evaluations), got "
                    f"{config.checkpoint_every}")


def run(config, workdir) -> dict:
  workdir = fileio.path(workdir)
  _check_cadence(config)
  done = loop.begin(config, workdir, "pretrain")
  if done is not None:
    return done
  dataset = PreparedDataset(config.data.dir)
  loop.check_sample_rate(dataset, config.frontend)
  sel = selection.pretrain(dataset, config.data)
  # Only fewer clips are scored: the rest of the carve stays out of training all the same.
  val = pipeline.cap_indices(sel.val, config.data.get("max_val_clips", 0), config.data.seed)
  if len(val) < len(sel.val):
    sel = dataclasses.replace(sel, val=val, description=(
        f"{sel.description}; {len(val)} of the {len(sel.val)} val clips evaluated (config key "
        f"'data.max_val_clips')"))
  if jax.process_index() == 0:
    print(f"pretrain: {sel.description}")
  model = models.get_model(config.model.name, num_classes=sel.num_classes,
                           **step_lib.model_options(config.model))
  task = loop.Task(
      stage="pretrain", dataset=dataset, selection=sel,
      splits=(config.data.train_split, config.data.train_split, config.data.test_split),
      target="multihot", model=model, frontend=config.frontend, loss_fn=step_lib.bce_loss,
      metrics_fn=lambda logits, labels: metrics_lib.multilabel(
          np.asarray(jax.nn.sigmoid(logits)), labels),
      main_metric="mAP", eval_every=config.eval_every,
      checkpoint_every=config.checkpoint_every,
      metadata={"model": config.model.name, "task": "multilabel",
                "selection": sel.description},
      results={"model": config.model.name, "label": config.get("label", ""),
               "subset": config.data.subset or "all",
               "fraction": config.data.fraction, "seed": config.seed,
               "data_seed": config.data.get("seed"), "num_classes": sel.num_classes,
               "num_train_clips": int(len(sel.train)), "num_val_clips": int(len(sel.val))})
  return loop.train(config, workdir, task)
