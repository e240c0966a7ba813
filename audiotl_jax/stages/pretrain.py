"""`audiotl pretrain`: multi-label pre-training on an ontology subset of AudioSet.

What is trained: the subset's classes that occur in the training data (`data.selection`), a
model from the registry, binary cross-entropy, mAP on a validation carve of the training
records. How it is trained is `train/loop.py`, shared with fine-tuning.
"""
from pathlib import Path

import jax
import numpy as np

from audiotl_jax import models
from audiotl_jax.data import selection
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.train import loop, metrics as metrics_lib, step as step_lib


def run(config, workdir) -> dict:
  workdir = Path(workdir)
  done = loop.begin(config, workdir, "pretrain")
  if done is not None:
    return done
  dataset = PreparedDataset(config.data.dir)
  loop.check_sample_rate(dataset, config.frontend)
  sel = selection.pretrain(dataset, config.data)
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
      main_metric="mAP", eval_every=config.checkpoint_every,
      metadata={"model": config.model.name, "task": "multilabel",
                "selection": sel.description},
      results={"model": config.model.name, "subset": config.data.subset or "all",
               "fraction": config.data.fraction, "seed": config.seed,
               "data_seed": config.data.get("seed"), "num_classes": sel.num_classes,
               "num_train_clips": int(len(sel.train))})
  return loop.train(config, workdir, task)
