"""`audiotl finetune`: transfer to a downstream task with a strategy (a mask over the model).

What is trained: a checkpoint's model (or a fresh one) with the modules the strategy adds, a new
head for the task's classes, the strategy's masks over parameters and BatchNorm statistics,
cross-entropy (or BCE for a binary task). The best step is chosen on the validation split; the
test split is scored once, at the end, with the best checkpoint, into `workdir/results.json`.
How it is trained is `train/loop.py`, shared with pre-training.
"""
import dataclasses

import jax
import ml_collections
import numpy as np

from audiotl_jax import fileio, models
from audiotl_jax.data import selection
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.models import transfer
from audiotl_jax.train import adapters, checkpoints, loop, metrics as metrics_lib
from audiotl_jax.train import state as state_lib, step as step_lib


def _check_before_writing(config) -> None:
  """Names, paths and the model, checked before any file is written or any data is read.

  A pre-trained checkpoint brings its own model: config key 'model.name' is set to it, so the
  config.json of the run says what was really trained.
  """
  if config.init:
    init = fileio.path(config.init)
    if init.is_file():
      raise UserError(f"config key 'init': {init} is a file; give a pre-training workdir, its "
                      f"checkpoints/ folder or one step folder")
    source = checkpoints.read_metadata(init)  # a one-line error for anything but a checkpoint
    if source["model"] != config.model.name:
      print(f"finetune: config key 'model.name' is {config.model.name!r} but {init} holds "
            f"{source['model']!r}; fine-tuning {source['model']!r}")
      with config.unlocked():
        config.model.name = source["model"]
  # Strategy, model and PETL options: building the (parameter-free) module checks them all.
  transfer.model_for(config.strategy, config.model.name, num_classes=2,
                     petl_config=config.get("petl"), **step_lib.model_options(config.model))
  PreparedDataset(config.data.dir)


def _say_cropped(dataset, config, sel) -> None:
  """Once per run: how many clips are longer than data.clip_seconds (the model sees their start)."""
  limit = loop.clip_samples(config, dataset)
  for split, indices in ((config.data.train_split, sel.train), (config.data.val_split, sel.val),
                         (config.data.test_split, sel.test)):
    lengths = dataset.num_samples(split)
    if lengths is None or not len(indices):
      continue
    longer = int(np.sum(lengths[np.asarray(indices)] > limit))
    if longer:
      print(f"finetune: {longer} of {len(indices)} {split} clips are longer than config key "
            f"'data.clip_seconds' = {config.data.clip_seconds:g} s; each is cropped to its start")


def run(config, workdir) -> dict:
  workdir = fileio.path(workdir)
  is_main = jax.process_index() == 0
  _check_before_writing(config)
  done = loop.begin(config, workdir, "finetune")
  if done is not None:
    return done

  # ---------------------------------------------------------------- pre-trained weights
  pretrained, source_meta, step_dir = None, {}, None
  fc = config.frontend
  model_name = config.model.name
  if config.init:
    pretrained, source_meta, step_dir = checkpoints.load_model(fileio.path(config.init))
    model_name = source_meta["model"]
    if config.frontend_from_checkpoint:
      fc = ml_collections.ConfigDict(source_meta["frontend"])
    if is_main:
      print(f"finetune: from {step_dir} ({model_name}, pre-trained on "
            f"{source_meta.get('selection', '?')})")

  # ---------------------------------------------------------------- data
  dataset = PreparedDataset(config.data.dir)
  loop.check_sample_rate(dataset, fc)
  sel = selection.downstream(dataset, config.data)
  task_kind = dataset.task
  if config.get("task", "") == "multiclass" and task_kind == "binary":
    # A binary task as two classes (softmax cross-entropy, accuracy), as studies that report
    # accuracy on a detection task train it (e.g. DCASE 2018 Task 3 in the ontology study).
    task_kind = "multiclass"
  elif config.get("task", ""):
    raise UserError(f"config key 'task' = {config.task!r}: only 'multiclass' (a binary task as "
                    f"two classes) or '' (the dataset's own, {task_kind!r}) is supported")
  if task_kind == "multilabel":
    raise UserError(f"{dataset.path} is a multi-label dataset; `audiotl finetune` handles "
                    f"single-label and binary tasks (use `audiotl pretrain` for multi-label)")
  num_outputs = 1 if task_kind == "binary" else sel.num_classes
  if is_main:
    print(f"finetune: {sel.description}")
    _say_cropped(dataset, config, sel)

  # ---------------------------------------------------------------- model and strategy
  model, strategy_ctx = transfer.model_for(config.strategy, model_name, num_classes=num_outputs,
                                           petl_config=config.get("petl"),
                                           **step_lib.model_options(config.model))
  frames = featurizer.feature_frames(fc, loop.clip_samples(config, dataset))
  abstract = state_lib.variable_shapes(model, frames=frames, n_mels=fc.n_mels)
  strategy = transfer.make_strategy(config.strategy, abstract["params"],
                                    abstract.get("batch_stats", {}), model.block_names(),
                                    **strategy_ctx)
  num_params = models.count_params(abstract["params"])
  num_trainable = transfer.count_trainable(abstract["params"], strategy.trainable)
  if pretrained is None and config.strategy != "full" and is_main:
    print(f"finetune: no config key 'init' given: strategy {config.strategy!r} on a randomly "
          f"initialised backbone (a from-scratch baseline)")
  if is_main:
    print(f"finetune: strategy {strategy.name}: {strategy.description}; trainable parameters "
          f"{num_trainable:,} of {num_params:,}")

  # ---------------------------------------------------------------- objective
  main_metric = metrics_lib.MAIN_METRIC[task_kind]
  if task_kind == "binary":
    loss_fn = lambda logits, y: step_lib.bce_loss(logits[:, 0], y[:, 1])  # y: one-hot of {0, 1}
  else:
    loss_fn = step_lib.ce_loss
  class_weights = None
  if config.get("class_balanced", False):
    if task_kind != "multiclass":
      raise UserError(f"config key 'class_balanced' applies to single-label tasks; "
                      f"{dataset.path} is {task_kind} (set 'task' to 'multiclass' for a binary "
                      f"task trained as two classes)")
    train_labels = dataset.labels(config.data.train_split)
    counts = np.bincount([int(train_labels[i][0]) for i in sel.train],
                         minlength=num_outputs)
    class_weights = step_lib.balanced_class_weights(counts)
    loss_fn = step_lib.weighted_ce_loss(class_weights)
    if is_main:
      print(f"finetune: class-balanced cross-entropy, weights "
            f"{', '.join(f'{w:.2f}' for w in class_weights)}")
  steps_per_epoch = max(1, len(sel.train) // config.batch_size)

  def save_adapter(state, metadata, results):
    # The trainable leaves only, tied to the backbone they were trained on.
    if is_main and pretrained is not None and config.get("save_adapter", True):
      results["adapter"] = str(adapters.save(
          workdir / "adapter", {"params": state.params, "batch_stats": state.batch_stats},
          {"params": strategy.trainable, "batch_stats": strategy.stats_trainable}, metadata,
          {"path": str(step_dir), "fingerprint": adapters.fingerprint(pretrained["params"])}))

  task = loop.Task(
      stage="finetune", dataset=dataset, selection=sel,
      splits=(config.data.train_split, config.data.val_split, config.data.test_split),
      target="class", model=model, frontend=fc, loss_fn=loss_fn,
      metrics_fn=lambda logits, labels: metrics_lib.for_task(task_kind, logits, labels),
      main_metric=main_metric, eval_every=config.eval_every or steps_per_epoch,
      strategy=strategy, pretrained=pretrained, on_finish=save_adapter,
      desc=f"finetune {strategy.name}",
      metadata={
          "model": model_name, "task": task_kind, "num_classes": num_outputs,
          # What this model was trained on, for runs that start from it (a source model).
          "selection": sel.description,
          "strategy": strategy.name, "init": str(config.init),
          "source": {k: source_meta.get(k) for k in ("model", "selection")},
          "num_trainable": num_trainable,
          "petl": dataclasses.asdict(model.petl) if getattr(model, "petl", None) else None},
      results={"task": task_kind, "metric": main_metric, "strategy": strategy.name,
               "init": str(config.init), "model": model_name,
               "source_selection": source_meta.get("selection"),
               "num_trainable": num_trainable, "num_test": int(len(sel.test)),
               "seed": int(config.seed), "dataset": dataset.manifest.get("dataset"),
               "class_weights": None if class_weights is None else class_weights.tolist()})
  return loop.train(config, workdir, task)
