"""Transfer to a downstream task with a strategy (a freeze mask): one readable loop.

Sections: mesh, data, model and strategy, restore or start, step, evaluation, loop, final test.
The best step is chosen on the validation split; the test split is scored once, at the end, with
the best checkpoint, into `workdir/results.json`.
"""
import dataclasses
import json
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

import audiotl_jax
from audiotl_jax import config as config_lib
from audiotl_jax import fbank, models, peft
from audiotl_jax.data import pipeline, sampling, selection
from audiotl_jax.data.prepare import PreparedDataset
from audiotl_jax.errors import UserError
from audiotl_jax.train import checkpointing, mesh as mesh_lib, metrics as metrics_lib, steps
from audiotl_jax.train import state as state_lib
from audiotl_jax.train.pretrain import check_sample_rate


def train(config, workdir) -> dict:
  workdir = Path(workdir)
  config_lib.write(config, workdir)
  is_main = jax.process_index() == 0
  t_start = time.time()
  done = checkpointing.finished_run(workdir, "finetune")
  if done is not None:
    return done

  # ---------------------------------------------------------------- mesh
  mesh = mesh_lib.make_mesh(config.num_devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)

  # ---------------------------------------------------------------- pre-trained weights
  pretrained, source_meta = None, {}
  fc = config.frontend
  model_name = config.model.name
  if config.init:
    pretrained, source_meta, step_dir = checkpointing.load_model(Path(config.init))
    model_name = source_meta["model"]
    if config.frontend_from_checkpoint:
      fc = ml_collections.ConfigDict(source_meta["frontend"])
    if is_main:
      print(f"finetune: from {step_dir} ({model_name}, pre-trained on "
            f"{source_meta.get('selection', '?')})")

  # ---------------------------------------------------------------- data
  dataset = PreparedDataset(config.data.dir)
  check_sample_rate(dataset, fc)
  sel = selection.downstream(dataset, config.data)
  task = dataset.task
  if task == "multilabel":
    raise UserError(f"{dataset.path} is a multi-label dataset; `audiotl finetune` handles "
                    f"single-label and binary tasks (use `audiotl pretrain` for multi-label)")
  num_outputs = 1 if task == "binary" else sel.num_classes
  clip_samples = int(round(config.data.clip_seconds * dataset.sample_rate))
  if is_main:
    print(f"finetune: {sel.description}")

  def batches(split, indices, seed=None):
    common = dict(indices=indices, class_map=sel.class_map, num_classes=sel.num_classes,
                  target="class", batch_size=config.batch_size, clip_samples=clip_samples,
                  process_index=jax.process_index(), process_count=jax.process_count())
    if seed is None:
      return pipeline.eval_batches(dataset, split, **common)
    weights = (sampling.balanced_weights(dataset, split, indices, sel.class_map)
               if config.data.get("balanced", False) else None)
    return pipeline.train_iterator(dataset, split, seed=seed, weights=weights,
                                   worker_count=config.data.worker_count, **common)

  data_iter = batches(config.data.train_split, sel.train, seed=config.data.seed)

  # ---------------------------------------------------------------- model and strategy
  model_options = steps.model_options(config.model)
  model, strategy_ctx = peft.model_for(config.strategy, model_name, num_classes=num_outputs,
                                       petl_config=config.get("petl"), **model_options)
  frames = fbank.feature_frames(fc, clip_samples)
  total_steps = state_lib.resolve_steps(config, len(sel.train))
  steps_per_epoch = max(1, len(sel.train) // config.batch_size)
  eval_every = config.eval_every or steps_per_epoch
  abstract = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0)}, jax.numpy.zeros((1, frames, fc.n_mels)), train=False))
  strategy = peft.make_strategy(config.strategy, abstract["params"],
                                abstract.get("batch_stats", {}), model.block_names(),
                                **strategy_ctx)
  tx = state_lib.make_optimizer(config.optim, total_steps, trainable=strategy.trainable)
  state, shardings = state_lib.create(model, tx, mesh, frames=frames, n_mels=fc.n_mels,
                                      seed=config.seed)
  if pretrained is not None:
    params, fresh = peft.transplant(pretrained["params"], jax.device_get(state.params),
                                    resize=peft.resize_leaf)
    stats, _ = peft.transplant(pretrained.get("batch_stats", {}), jax.device_get(state.batch_stats))
    state, shardings = state_lib.create(model, tx, mesh, frames=frames, n_mels=fc.n_mels,
                                        seed=config.seed, params=params, batch_stats=stats)
    if is_main:
      print(f"finetune: kept pre-trained weights; fresh: {', '.join(fresh) or 'none'}")
  elif config.strategy != "full" and is_main:
    print(f"finetune: no config key 'init' given: strategy {config.strategy!r} on a randomly "
          f"initialised backbone (a from-scratch baseline)")
  num_params = models.count_params(state.params)
  num_trainable = peft.count_trainable(state.params, strategy.trainable)
  if is_main:
    print(f"finetune: strategy {strategy.name}: {strategy.description}; trainable parameters "
          f"{num_trainable:,} of {num_params:,}")

  # ---------------------------------------------------------------- restore or start
  main_metric = metrics_lib.MAIN_METRIC[task]
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                    best_metric=f"val_{main_metric}")
  latest = ckpt.latest_step()
  if latest is not None:
    state = ckpt.restore(latest, state, data_iter)
    norm = checkpointing.read_metadata(ckpt.directory / str(latest))["norm"]
  else:
    norm = steps.compute_norm(fc, batches(config.data.train_split, sel.train,
                                          seed=config.data.seed + 1), mesh, fc.norm_batches)
  metadata = {
      "stage": "finetune", "model": model_name, "num_classes": num_outputs, "task": task,
      "classes": sel.classes, "frontend": config_lib.to_dict(fc), "norm": norm,
      "clip_seconds": config.data.clip_seconds, "strategy": strategy.name,
      "init": str(config.init), "source": {k: source_meta.get(k) for k in ("model", "selection")},
      "num_params": num_params, "num_trainable": num_trainable, "dataset": str(dataset.path),
      "petl": dataclasses.asdict(model.petl) if getattr(model, "petl", None) else None,
      "config": config_lib.to_dict(config), "audiotl_version": audiotl_jax.__version__,
  }

  # ---------------------------------------------------------------- step
  featurize = steps.make_featurizer(fc, norm)
  if task == "binary":
    loss_fn = lambda logits, y: steps.bce_loss(logits[:, 0], y[:, 1])  # y is one-hot of {0, 1}.
  else:
    loss_fn = steps.ce_loss
  step_fn = steps.jit_train_step(steps.make_train_step(
      model, featurize, tx, loss_fn=loss_fn, augment=config.augment,
      num_classes=sel.num_classes, target="class", model_train=strategy.model_train,
      trainable=strategy.trainable, stats_trainable=strategy.stats_trainable), shardings, mesh)
  predict = steps.make_predict(model, featurize)

  # ---------------------------------------------------------------- evaluation
  def evaluate(split, indices, name):
    logits, labels, _, _ = steps.evaluate(
        predict, state.params, state.batch_stats, batches(split, indices), mesh,
        num_batches=-(-len(indices) // config.batch_size), desc=name if config.progress else None)
    return metrics_lib.for_task(task, logits, labels)

  # ---------------------------------------------------------------- loop
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  start = int(state.step)
  pending, last_good, best_val = [], latest, -np.inf
  progress = tqdm(total=total_steps, initial=start, desc=f"finetune {strategy.name}", unit="step",
                  disable=not (is_main and config.progress))
  for step in range(start + 1, total_steps + 1):
    state, m = step_fn(state, mesh_lib.to_global(next(data_iter), mesh))
    pending.append((step, m))
    progress.update(1)
    last = step == total_steps
    if step % config.log_every == 0 or step % eval_every == 0 or last:
      steps.check_finite(pending, last_good, ckpt.directory)
      writer.write(step, {"train_loss": float(pending[-1][1]["loss"])})
      progress.set_postfix(loss=f"{float(pending[-1][1]['loss']):.4f}")
      pending = []
    if step % eval_every == 0 or last:
      val = evaluate(config.data.val_split, sel.val, "val")
      writer.write(step, {f"val_{k}": v for k, v in val.items()})
      ckpt.save(step, state, data_iter, metadata, metrics={f"val_{main_metric}": val[main_metric]})
      last_good = step
      if val[main_metric] > best_val:
        best_val = val[main_metric]
  progress.close()
  ckpt.wait()

  # ---------------------------------------------------------------- final test (once)
  best = ckpt.best_step() or ckpt.latest_step()
  model_vars, best_meta, _ = checkpointing.load_model(ckpt.directory / str(best))
  checkpointing.mark_best(workdir, best, {})
  state = state.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"])
  val = evaluate(config.data.val_split, sel.val, "val")
  test = evaluate(config.data.test_split, sel.test, "test")
  results = {
      "stage": "finetune", "task": task, "metric": main_metric, "strategy": strategy.name,
      "init": str(config.init), "model": model_name,
      "source_selection": source_meta.get("selection"), "best_step": best,
      "total_steps": total_steps, "num_params": num_params, "num_trainable": num_trainable,
      "num_test": int(len(sel.test)), "val": val, "test": test,
      "seconds": time.time() - t_start,
  }
  if is_main and pretrained is not None and config.get("save_adapter", True):
    # The trainable leaves only, tied to the backbone they were trained on.
    adapter_dir = checkpointing.save_adapter(
        workdir / "adapter", {"params": state.params, "batch_stats": state.batch_stats},
        {"params": strategy.trainable, "batch_stats": strategy.stats_trainable}, metadata,
        {"path": str(step_dir), "fingerprint": checkpointing.fingerprint(pretrained["params"])})
    results["adapter"] = str(adapter_dir)
  if is_main:
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    writer.write(total_steps, {f"test_{k}": v for k, v in test.items()})
    print(f"finetune: done. val {main_metric} {val[main_metric]:.4f}, test {main_metric} "
          f"{test[main_metric]:.4f} (best step {best}); results in {workdir / 'results.json'}")
  writer.close()
  ckpt.close()
  return results
