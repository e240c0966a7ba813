"""The one training loop: pre-training and fine-tuning differ only in the `Task` they hand it.

A stage (`stages/pretrain.py`, `stages/finetune.py`) decides WHAT is trained: the records and
classes, the model with any added modules, the strategy's masks, the pre-trained weights, the
loss and the evaluator. This loop decides HOW, the same way for both, in the order a reader
expects: mesh, data, optimizer and state, restore or start, step, evaluation, loop, final test.
The workdir holds everything: config.json, checkpoints/ (model, optimizer, iterator position,
metadata), metrics.jsonl, tensorboard/ and results.json.
"""
import contextlib
import dataclasses
import json
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm import tqdm

import audiotl_jax
from audiotl_jax import config as config_lib
from audiotl_jax import fileio
from audiotl_jax import models
from audiotl_jax.data import pipeline, sampling
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.models import transfer
from audiotl_jax.train import aot, checkpoints, mesh as mesh_lib, metrics as metrics_lib
from audiotl_jax.train import lock, preemption, prefetch, state as state_lib, step as step_lib


@dataclasses.dataclass
class Task:
  """What a stage trains; everything the loop does not decide by itself."""
  stage: str                    # "pretrain" or "finetune": logs, metadata, results
  dataset: Any                  # data.dataset.PreparedDataset
  selection: Any                # data.selection.Selection: records, classes, class map
  splits: tuple[str, str, str]  # (train, validation, test) split names of the dataset
  target: str                   # "multihot" (pre-training) or "class"
  model: Any                    # the Flax module, added transfer modules included
  frontend: Any                 # the frontend config block the features are computed with
  loss_fn: Callable             # (logits, targets) -> scalar
  metrics_fn: Callable          # (logits, labels) host arrays -> {name: value}
  main_metric: str              # the validation metric that picks the best step
  eval_every: int               # steps between evaluations (each one saves a checkpoint)
  metadata: dict                # stage-specific checkpoint metadata, merged into the common one
  results: dict                 # stage-specific fields of results.json
  checkpoint_every: int = 0     # steps between checkpoints besides the evaluations'; 0: none
  strategy: Any = None          # models.transfer.Strategy (masks); None: everything trains
  pretrained: dict | None = None  # {params, batch_stats} host trees to start from
  on_finish: Callable | None = None  # (state, metadata, results) -> None, after the final test
  desc: str = ""                # progress-bar label


def begin(config, workdir, stage: str) -> dict | None:
  """The results of an already finished run in `workdir`, else None after writing the config.

  A finished workdir keeps the config.json it finished with: a re-run with other settings must
  not leave a config that contradicts its results.json.

  The workdir's lock comes first (a second run must not touch the workdir at all); `train`
  gives it back when it ends.
  """
  workdir = fileio.path(workdir)
  lock.hold(workdir)
  try:
    done = checkpoints.finished_run(workdir, stage)
    if done is None:
      _check_resume_config(config, workdir)
      if jax.process_index() == 0:  # one writer of a shared file: no rename race between hosts
        config_lib.write(config, workdir)
  except BaseException:
    lock.release(workdir)
    raise
  if done is not None:
    lock.release(workdir)
  return done


# Keys that change how a run is watched or laid out, never what it computes: a resume may
# change them freely. Everything else must match the run being resumed.
RESUMABLE_CHANGES = ("progress", "log_every", "num_devices", "stop_at", "keep_checkpoints",
                     "allow_changes", "data.prefetch", "data.dir", "label")
# Not data.worker_count: Grain's saved iterator state has one entry per worker.


def _check_resume_config(config, workdir) -> None:
  """Refuses to resume a run under a config that would change its results, unless allowed.

  With `allow_changes`, the old config.json is kept in `config_history/` before the new one
  replaces it, so the workdir still says what every part of the run was computed with.
  """
  path = workdir / "config.json"
  ckpt = workdir / "checkpoints"
  if not path.exists() or not (ckpt.is_dir() and checkpoints.finished_steps(ckpt)):
    return  # nothing to resume: the config describes a fresh run
  try:
    old = json.loads(path.read_text())
  except ValueError:
    return  # unreadable (a crash mid-write in an old version): nothing to compare with
  changed = config_lib.changed_keys(old, config_lib.to_dict(config), ignore=RESUMABLE_CHANGES)
  # A key the saved config lacks is an option added to audiotl since the run began (it takes
  # its default), not a change: a run started by an older version still resumes.
  changed = [k for k in changed if _has_key(old, k)]
  if not changed:
    return
  if not config.get("allow_changes", False):
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    raise UserError(f"{workdir} holds a run started with another config ({shown} differ from "
                    f"its config.json); resume with the same settings, use a new workdir, or "
                    f"pass --config.allow_changes=true to go on with the new ones")
  if jax.process_index() != 0:
    return  # process 0 keeps the history: one writer of shared files
  history = workdir / "config_history"
  history.mkdir(exist_ok=True)
  kept = history / f"config.{len(list(history.glob('config.*.json'))):03d}.json"
  fileio.write_text(kept, path.read_text())
  print(f"resume: config keys {', '.join(changed)} changed (allowed); the old config is in {kept}")


def _has_key(tree: dict, dotted: str) -> bool:
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return False
    tree = tree[part]
  return True


def _restore(ckpt, step: int, state, data_iter, batch_size: int):
  """The state saved at `step`, with `data_iter` moved to where the run was.

  Grain saves one iterator file per process, so a run resumed on another number of processes
  has none of its own: its position is rebuilt from the step alone (`pipeline.seek`).
  """
  writers = pipeline.saved_process_count(ckpt.directory / str(step) / "data")
  if writers in (None, jax.process_count()):
    state = ckpt.restore(step, state, data_iter)
    moved = pipeline.upgrade_position(data_iter, step, batch_size=batch_size)
    if moved and jax.process_index() == 0:
      print(f"resume: step {step}'s data position was saved in the old (per-record) form; "
            f"it is rebuilt from the step")
    return state
  state = ckpt.restore(step, state, None)
  try:
    pipeline.seek(data_iter, step, batch_size=batch_size)
  except UserError as e:
    raise UserError(f"{ckpt.directory / str(step)} was saved by {writers} processes and this "
                    f"run has {jax.process_count()}, but {e}; resume with {writers} processes, "
                    f"or with config key 'data.worker_count' at 0 or 1, or in a new workdir"
                    ) from e
  if jax.process_index() == 0:
    print(f"resume: step {step} was saved by {writers} processes and resumes on "
          f"{jax.process_count()}; the data position is rebuilt from the step")
  return state


def check_sample_rate(dataset, fcfg) -> None:
  if dataset.sample_rate != fcfg.sample_rate:
    raise UserError(f"{dataset.path} holds {dataset.sample_rate} Hz audio but config key "
                    f"'frontend.sample_rate' is {fcfg.sample_rate}: prepare it again with "
                    f"`audiotl prepare ... --config.sample_rate={fcfg.sample_rate}` or change "
                    f"the config")


def clip_samples(config, dataset) -> int:
  return int(round(config.data.clip_seconds * dataset.sample_rate))


def train(config, workdir, task: Task) -> dict:
  """Trains `task` as `config` says; returns (and writes) its results.

  Every way out (results, `stop_at`, preemption, an error, Ctrl-C) waits for the saves in
  flight, gives the SIGTERM handler back and releases the workdir's lock: `exits` holds them.
  """
  with contextlib.ExitStack() as exits:
    lock.hold(workdir)
    exits.callback(lock.release, workdir)
    return _train(config, fileio.path(workdir), task, exits)


def _close_quietly(writer) -> None:
  """The metrics writer on a way out: left open, its flush at interpreter exit fails again (on a
  full disk with a traceback after the one-line error); the error that ended the run is the
  one to report, so a second one from closing is dropped."""
  try:
    writer.close()
  except OSError:
    pass


def _train(config, workdir, task: Task, exits: contextlib.ExitStack) -> dict:
  is_main = jax.process_index() == 0
  t_start = time.time()
  dataset, sel, fc = task.dataset, task.selection, task.frontend
  train_split, val_split, test_split = task.splits
  strategy = task.strategy

  # ---------------------------------------------------------------- mesh
  mesh = mesh_lib.make_mesh(config.num_devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)

  # ---------------------------------------------------------------- data
  samples = clip_samples(config, dataset)
  common = dict(class_map=sel.class_map, num_classes=sel.num_classes, target=task.target,
                batch_size=config.batch_size, clip_samples=samples,
                process_index=jax.process_index(), process_count=jax.process_count())
  # Balanced sampling weights come from the labels of this run's own training records.
  weights = (sampling.balanced_weights(dataset, train_split, sel.train, sel.class_map)
             if config.data.get("balanced", False) else None)

  def train_iter(seed):
    return pipeline.train_iterator(dataset, train_split, indices=sel.train, seed=seed,
                                   worker_count=config.data.worker_count, weights=weights,
                                   **common)

  def eval_iter(split, indices):
    return pipeline.eval_batches(dataset, split, indices=indices, **common)

  data_iter = train_iter(config.data.seed)

  # ---------------------------------------------------------------- optimizer and state
  frames = featurizer.feature_frames(fc, samples)
  total_steps = state_lib.resolve_steps(config, len(sel.train))
  tx = state_lib.make_optimizer(config.optim, total_steps,
                                trainable=strategy.trainable if strategy else None)
  params = stats = None
  if task.pretrained is not None:  # kept where path and shape agree; the rest starts fresh
    shapes = state_lib.variable_shapes(task.model, frames=frames, n_mels=fc.n_mels)
    params, fresh = transfer.transplant(task.pretrained["params"], shapes["params"],
                                        resize=transfer.resize_leaf)
    stats, _ = transfer.transplant(task.pretrained.get("batch_stats", {}),
                                   shapes.get("batch_stats", {}))
    if is_main:
      print(f"{task.stage}: kept pre-trained weights; fresh: {', '.join(fresh) or 'none'}")
  state, shardings = state_lib.create(task.model, tx, mesh, frames=frames, n_mels=fc.n_mels,
                                      seed=config.seed, params=params, batch_stats=stats)
  num_params = models.count_params(state.params)

  # ---------------------------------------------------------------- step
  # The feature statistics are an argument (one program for every run of these shapes), so the
  # step compiles from shapes alone, in a thread, while the checkpoint is restored or the
  # statistics are measured below.
  featurize = featurizer.make_featurizer(fc, None)
  step_fn = step_lib.jit_train_step(step_lib.make_train_step(
      task.model, featurize, tx, loss_fn=task.loss_fn, augment=config.augment,
      num_classes=sel.num_classes, target=task.target,
      model_train=strategy.model_train if strategy else True,
      trainable=strategy.trainable if strategy else None,
      stats_trainable=strategy.stats_trainable if strategy else None, mesh=mesh), shardings, mesh)
  predict = step_lib.make_predict(task.model, featurize)
  if not config.get("init_only", False):
    batch = aot.shapes(pipeline.train_batch_spec(
        batch_size=config.batch_size, clip_samples=samples, num_classes=sel.num_classes,
        target=task.target), mesh_lib.batch_sharding(mesh))
    norm_spec = jax.ShapeDtypeStruct((2,), np.float32, sharding=mesh_lib.replicated(mesh))
    # A thread still inside JAX when the interpreter exits aborts it: wait, on every way out.
    compiling = aot.Ahead(step_fn, state, batch, norm_spec)
    exits.callback(compiling.wait)
    # Then the evaluation's (eval batches have the training batch's shape), for the first eval.
    predicting = aot.Ahead(predict, *aot.like((state.params, state.batch_stats)),
                           batch["audio"], norm_spec, after=compiling)
    exits.callback(predicting.wait)

  # ---------------------------------------------------------------- restore or start
  ckpt = exits.enter_context(checkpoints.Checkpointer(
      workdir, keep=config.keep_checkpoints, best_metric=f"val_{task.main_metric}"))
  # The newest intact step: a damaged one is named, set aside and passed over.
  latest, restored, saved = ckpt.resume(
      lambda step: _restore(ckpt, step, state, data_iter, config.batch_size))
  if latest is not None:
    state, norm = restored, saved["norm"]
    if is_main:
      print(f"{task.stage}: resuming from step {latest} in {ckpt.directory}")
  else:
    norm = step_lib.compute_norm(fc, train_iter(config.data.seed + 1), mesh, fc.norm_batches)
  metadata = {
      "stage": task.stage, "num_classes": sel.num_classes, "classes": sel.classes,
      "frontend": config_lib.to_dict(fc), "norm": norm, "clip_seconds": config.data.clip_seconds,
      "dataset": str(dataset.path), "config": config_lib.to_dict(config),
      "num_params": num_params, "audiotl_version": audiotl_jax.__version__, **task.metadata,
  }

  if config.get("init_only", False):
    # The from-scratch baseline as a checkpoint, so it can be scored and fine-tuned like the rest.
    ckpt.save(0, state, data_iter, metadata)
    ckpt.close()
    results = {"stage": "init", "model": metadata["model"], "subset": "none (random init)",
               "num_classes": sel.num_classes, "num_params": num_params, "best_step": 0}
    if is_main:
      fileio.write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
      print(f"{task.stage}: saved the randomly initialised {metadata['model']} to "
            f"{ckpt.directory}")
    return results

  step_fn, predict = compiling.get(), predicting.get()
  norm_arg = step_lib.norm_on_mesh(norm, mesh)

  # ---------------------------------------------------------------- evaluation
  def evaluate(split, indices, name):
    logits, labels, _, _ = step_lib.evaluate(
        predict, state.params, state.batch_stats, eval_iter(split, indices), mesh,
        num_batches=-(-len(indices) // config.batch_size), desc=name if config.progress else None,
        norm=norm_arg)
    return task.metrics_fn(logits, labels)

  # ---------------------------------------------------------------- loop
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  exits.callback(_close_quietly, writer)
  start = int(state.step)
  pending, last_good = [], latest
  t_log, clips_since = time.time(), 0
  progress = tqdm(total=total_steps, initial=start, desc=task.desc or task.stage, unit="step",
                  disable=not (is_main and config.progress))
  stop_at = config.get("stop_at", 0)
  notice = preemption.Notice()  # from now on SIGTERM only sets a flag, looked at between steps
  exits.callback(notice.restore)
  # Batch n+1 goes onto the devices while step n runs; saves record the batches consumed, not
  # those queued (train/prefetch.py).
  data_iter = prefetch.DevicePrefetch(data_iter, mesh, depth=config.data.get("prefetch", 2))
  # Its thread must be gone before the interpreter shuts down: a daemon thread still inside
  # JAX at exit aborts the process (seen as "FATAL: exception not rethrown").
  exits.callback(data_iter.close)
  for step in range(start + 1, total_steps + 1):
    state, m = step_fn(state, next(data_iter), norm_arg)
    pending.append((step, m))
    clips_since += config.batch_size
    progress.update(1)
    last, stopping = step == total_steps, step == stop_at and step != total_steps
    evaluate_now = step % task.eval_every == 0 or last
    save_now = (evaluate_now or stopping
                or bool(task.checkpoint_every) and step % task.checkpoint_every == 0)
    if step % config.log_every == 0 or save_now:
      if not all(bool(m["finite"]) for _, m in pending):  # The one host sync, on purpose.
        last_good = ckpt.committed_step()  # the message may name only a save that is on disk
      step_lib.check_finite(pending, last_good, ckpt.directory)
      loss = float(pending[-1][1]["loss"])
      rate = clips_since / max(time.time() - t_log, 1e-9)
      writer.write(step, {"train_loss": loss, "grad_norm": float(pending[-1][1]["grad_norm"]),
                          "clips_per_s": rate})
      progress.set_postfix(loss=f"{loss:.4f}", clips_s=f"{rate:.0f}")
      pending, t_log, clips_since = [], time.time(), 0
    if evaluate_now:
      val = evaluate(val_split, sel.val, "val")
      writer.write(step, {f"val_{k}": v for k, v in val.items()})
    if save_now:
      # Only an evaluated step carries a metric, so only it can rank as best.
      ckpt.save(step, state, data_iter, metadata,
                metrics={f"val_{task.main_metric}": val[task.main_metric]} if evaluate_now
                else None)
      last_good = step
    if stopping:
      ckpt.close()
      progress.close()
      print(f"{task.stage}: stopped at step {step} as config key 'stop_at' asked; run again to "
            f"resume")
      return {"stopped_at": step}
    if notice.reached(step):  # SIGTERM: save this step, wait for it, stop; a re-run resumes
      if last_good != step:
        ckpt.save(step, state, data_iter, metadata)
      ckpt.wait()
      progress.close()
      message = (f"{task.stage}: preempted (SIGTERM) at step {step}, saved in {ckpt.directory}; "
                 f"run the same command again to resume")
      if is_main:
        print(message, file=sys.stderr)
      raise preemption.Preempted(step, message)
  progress.close()
  notice.restore()
  ckpt.wait()

  # ---------------------------------------------------------------- final test (once)
  best = ckpt.best_step() or ckpt.latest_step()
  if best is not None:
    checkpoints.mark_best(workdir, best, {})
    model_vars, _, _ = checkpoints.load_model(ckpt.directory / str(best))
    # On the mesh once: host arrays would be uploaded again by every predict call.
    replicated = mesh_lib.replicated(mesh)
    model_vars = jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(replicated, np.asarray(x)), model_vars)
    state = state.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"])
  val = evaluate(val_split, sel.val, "val")
  test = evaluate(test_split, sel.test, "test") if len(sel.test) else {}
  results = {"stage": task.stage, **task.results, "best_step": best, "total_steps": total_steps,
             "num_params": num_params, "val": val, "test": test,
             "seconds": time.time() - t_start}
  if task.on_finish is not None:
    task.on_finish(state, metadata, results)
  if is_main:
    path = workdir / "results.json"
    fileio.write_text(path, json.dumps(results, indent=2) + "\n")
    writer.write(total_steps, {f"test_{k}": v for k, v in test.items()})
    name = task.main_metric
    print(f"{task.stage}: done. val {name} {val[name]:.4f}, test {name} "
          f"{test.get(name, float('nan')):.4f} (best step {best}); results in {path}")
  writer.close()
  ckpt.close()
  return results
