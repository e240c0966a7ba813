"""Multi-label pre-training on an ontology subset of AudioSet: one readable loop.

Sections, in order: mesh, data, model and optimizer, restore or start, step, evaluation, loop,
final test. The workdir holds everything: config.json, checkpoints/ (model, optimizer, iterator
position, metadata), metrics.jsonl, tensorboard/ and results.json.
"""
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

import audiotl_jax
from audiotl_jax import config as config_lib
from audiotl_jax import fbank, frontend
from audiotl_jax import models
from audiotl_jax.data import pipeline, sampling, selection
from audiotl_jax.data.prepare import PreparedDataset
from audiotl_jax.errors import UserError
from audiotl_jax.train import checkpointing, mesh as mesh_lib, metrics as metrics_lib, steps
from audiotl_jax.train import state as state_lib
from audiotl_jax.train.state import make_optimizer, resolve_steps


def check_sample_rate(dataset, fcfg):
  if dataset.sample_rate != fcfg.sample_rate:
    raise UserError(f"{dataset.path} holds {dataset.sample_rate} Hz audio but config key "
                    f"'frontend.sample_rate' is {fcfg.sample_rate}: prepare it again with "
                    f"--sample-rate {fcfg.sample_rate} or change the config")


def train(config, workdir) -> dict:
  workdir = Path(workdir)
  config_lib.write(config, workdir)
  is_main = jax.process_index() == 0
  t_start = time.time()

  done = checkpointing.finished_run(workdir, "pretrain")
  if done is not None:
    return done

  # ---------------------------------------------------------------- mesh
  mesh = mesh_lib.make_mesh(config.num_devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)

  # ---------------------------------------------------------------- data
  dataset = PreparedDataset(config.data.dir)
  check_sample_rate(dataset, config.frontend)
  sel = selection.pretrain(dataset, config.data)
  clip_samples = int(round(config.data.clip_seconds * dataset.sample_rate))
  if is_main:
    print(f"pretrain: {sel.description}")

  # Balanced sampling weights come from the labels of this run's own training records.
  weights = (sampling.balanced_weights(dataset, config.data.train_split, sel.train, sel.class_map)
             if config.data.get("balanced", False) else None)

  def train_iter(seed):
    return pipeline.train_iterator(
        dataset, config.data.train_split, indices=sel.train, class_map=sel.class_map,
        num_classes=sel.num_classes, target="multihot", batch_size=config.batch_size,
        clip_samples=clip_samples, seed=seed, process_index=jax.process_index(),
        process_count=jax.process_count(), worker_count=config.data.worker_count,
        weights=weights)

  def eval_iter(split, indices):
    return pipeline.eval_batches(
        dataset, split, indices=indices, class_map=sel.class_map, num_classes=sel.num_classes,
        target="multihot", batch_size=config.batch_size, clip_samples=clip_samples,
        process_index=jax.process_index(), process_count=jax.process_count())

  data_iter = train_iter(config.data.seed)

  # ---------------------------------------------------------------- model and optimizer
  model = models.get_model(config.model.name, num_classes=sel.num_classes,
                           **steps.model_options(config.model))
  fc = config.frontend
  frames = fbank.feature_frames(fc, clip_samples)
  total_steps = resolve_steps(config, len(sel.train))
  tx = make_optimizer(config.optim, total_steps)

  state, shardings = state_lib.create(model, tx, mesh, frames=frames, n_mels=fc.n_mels,
                                      seed=config.seed)
  num_params = models.count_params(state.params)

  # ---------------------------------------------------------------- restore or start
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints, best_metric="val_mAP")
  latest = ckpt.latest_step()
  if latest is not None:
    state = ckpt.restore(latest, state, data_iter)
    norm = checkpointing.read_metadata(ckpt.directory / str(latest))["norm"]
    if is_main:
      print(f"pretrain: resuming from step {latest} in {ckpt.directory}")
  else:
    norm = steps.compute_norm(fc, train_iter(config.data.seed + 1), mesh, fc.norm_batches)
  metadata = {
      "stage": "pretrain", "model": config.model.name, "num_classes": sel.num_classes,
      "classes": sel.classes, "task": "multilabel", "frontend": config_lib.to_dict(fc),
      "norm": norm, "clip_seconds": config.data.clip_seconds, "selection": sel.description,
      "dataset": str(dataset.path), "config": config_lib.to_dict(config),
      "num_params": num_params, "audiotl_version": audiotl_jax.__version__,
  }

  if config.get("init_only", False):
    # The from-scratch baseline as a checkpoint, so it can be scored and fine-tuned like the rest.
    ckpt.save(0, state, data_iter, metadata)
    ckpt.close()
    results = {"stage": "init", "model": config.model.name, "subset": "none (random init)",
               "num_classes": sel.num_classes, "num_params": num_params, "best_step": 0}
    if is_main:
      (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
      print(f"pretrain: saved the randomly initialised {config.model.name} to {ckpt.directory}")
    return results

  # ---------------------------------------------------------------- step
  featurize = steps.make_featurizer(fc, norm)
  step_fn = steps.jit_train_step(steps.make_train_step(
      model, featurize, tx, loss_fn=steps.bce_loss, augment=config.augment,
      num_classes=sel.num_classes, target="multihot"), shardings, mesh)
  predict = steps.make_predict(model, featurize)

  # ---------------------------------------------------------------- evaluation
  def evaluate(split, indices, name):
    logits, labels, _, _ = steps.evaluate(
        predict, state.params, state.batch_stats, eval_iter(split, indices), mesh,
        num_batches=-(-len(indices) // config.batch_size), desc=name if config.progress else None)
    return metrics_lib.multilabel(np.asarray(jax.nn.sigmoid(logits)), labels)

  # ---------------------------------------------------------------- loop
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  start = int(state.step)
  pending, last_good = [], latest
  t_log, clips_since = time.time(), 0
  progress = tqdm(total=total_steps, initial=start, desc="pretrain", unit="step",
                  disable=not (is_main and config.progress))
  stop_at = config.get("stop_at", 0)
  for step in range(start + 1, total_steps + 1):
    batch = next(data_iter)
    state, m = step_fn(state, mesh_lib.to_global(batch, mesh))
    pending.append((step, m))
    clips_since += config.batch_size
    progress.update(1)
    last = step == total_steps or step == stop_at
    if step % config.log_every == 0 or last or step % config.checkpoint_every == 0:
      steps.check_finite(pending, last_good, ckpt.directory)  # The one host sync, on purpose.
      rate = clips_since / max(time.time() - t_log, 1e-9)
      writer.write(step, {"train_loss": float(pending[-1][1]["loss"]),
                          "grad_norm": float(pending[-1][1]["grad_norm"]), "clips_per_s": rate})
      progress.set_postfix(loss=f"{float(pending[-1][1]['loss']):.4f}", clips_s=f"{rate:.0f}")
      pending, t_log, clips_since = [], time.time(), 0
    if step % config.checkpoint_every == 0 or last:
      val = evaluate(config.data.train_split, sel.val, "val")
      writer.write(step, {f"val_{k}": v for k, v in val.items()})
      ckpt.save(step, state, data_iter, metadata, metrics={"val_mAP": val["mAP"]})
      last_good = step
    if step == stop_at and not step == total_steps:
      ckpt.close()
      progress.close()
      print(f"pretrain: stopped at step {step} as config key 'stop_at' asked; run again to resume")
      return {"stopped_at": step}
  progress.close()
  ckpt.wait()

  # ---------------------------------------------------------------- final test (once)
  results_path = workdir / "results.json"
  best = ckpt.best_step() or ckpt.latest_step()
  if best is not None:
    checkpointing.mark_best(workdir, best, {})
    model_vars, _, _ = checkpointing.load_model(ckpt.directory / str(best))
    state = state.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"])
  val = evaluate(config.data.train_split, sel.val, "val")
  test = evaluate(config.data.test_split, sel.test, "test") if len(sel.test) else {}
  results = {
      "stage": "pretrain", "model": config.model.name, "subset": config.data.subset or "all",
      "fraction": config.data.fraction, "seed": config.seed,
      "data_seed": config.data.get("seed"), "num_classes": sel.num_classes,
      "num_train_clips": int(len(sel.train)), "num_params": num_params, "best_step": best,
      "total_steps": total_steps, "val": val, "test": test,
      "seconds": time.time() - t_start,
  }
  if is_main:
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    writer.write(total_steps, {f"test_{k}": v for k, v in test.items()})
    print(f"pretrain: done. val mAP {val['mAP']:.4f}, test mAP {test.get('mAP', float('nan')):.4f}; "
          f"results in {results_path}")
  writer.close()
  ckpt.close()
  return results
