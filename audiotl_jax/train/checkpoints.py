"""Orbax checkpoints: model, optimizer, step, the Grain iterator position and JSON metadata.

Items in each step directory:
  model     {params, batch_stats}: what fine-tuning and embedding need, restorable on its own
  train     {opt_state, step, rng}: what only resuming needs
  data      the Grain iterator state, so a resumed run sees exactly the batches it would have seen
  metadata  JSON: config, model name, classes, frontend settings and normalisation, version
Saving is asynchronous and atomic (Orbax writes to a temporary directory and renames). The manager
keeps the latest `keep` steps plus the best by the validation metric. A step whose files are
damaged (an item folder gone, an array file cut short) is passed over for the newest intact one,
with a one-line warning: resuming moves it to `workdir/damaged_checkpoints/`.
"""
import errno
import json
import math
import shutil
import sys
from typing import Any, Callable

from etils.epath import Path
import grain
import jax
import numpy as np
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from audiotl_jax import fileio
from audiotl_jax.errors import UserError
from audiotl_jax.train import integrity

ITEMS = ("model", "train", "data", "metadata")


class Checkpointer:
  """A `CheckpointManager` in `workdir/checkpoints` with our item layout."""

  def __init__(self, workdir: Path, *, keep: int = 2, best_metric: str | None = None,
               best_mode: str = "max"):
    self.directory = fileio.resolved(workdir) / "checkpoints"
    preserve = [policies.LatestN(n=keep)]
    best_fn = None
    if best_metric:
      worst = float("-inf") if best_mode == "max" else float("inf")

      def best_fn(m):
        # A NaN metric (a validation split too small to score) must never rank as best; equal
        # values keep step order, so among ties the latest step wins.
        value = float(m[best_metric])
        return worst if math.isnan(value) else value

      preserve.append(policies.BestN(
          get_metric_fn=best_fn, reverse=(best_mode == "min"), n=1,
          keep_checkpoints_without_metrics=False))
    # `best_fn` is what makes Orbax write each step's metrics (a `metrics` item in the step
    # folder) and rank steps by them in `best_step()`; without it the metrics are dropped and
    # `best_step()` is the latest. A new manager reads them back, so the best survives a resume.
    # The preservation policy (which overrides deletion, not ranking) keeps the best plus the
    # latest `keep`.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(preserve), best_fn=best_fn,
        best_mode=best_mode, create=True, enable_async_checkpointing=True,
        cleanup_tmp_directories=True)
    handlers = {
        "model": ocp.StandardCheckpointHandler(),
        "train": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
        "metadata": ocp.JsonCheckpointHandler(),
    }
    self.best_metric = best_metric
    integrity.drop_broken_metrics(self.directory)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    self._closed = False

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step() if self.best_metric else self.latest_step()

  def save(self, step: int, state, data_iter, metadata: dict, metrics: dict | None = None):
    args = {
        "model": ocp.args.StandardSave({"params": state.params, "batch_stats": state.batch_stats}),
        "train": ocp.args.StandardSave(
            {"opt_state": state.opt_state, "step": state.step, "rng": state.rng}),
        "metadata": ocp.args.JsonSave(metadata),
    }
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self._check_space(step, state)
    self.manager.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=True)

  def _check_space(self, step: int, state) -> None:
    """Refuses a save that cannot fit, before Orbax's threads start writing it.

    A save that runs out of space mid-way fails in Orbax's and TensorStore's background
    threads, which log hundreds of traceback lines before the error reaches the loop; checked
    here, a full disk is the one line `cli.run` prints for ENOSPC. Local disks only (object
    storage has no such limit to check), with room for metadata and what the step adds.
    """
    directory = fileio.path(self.directory)
    if not fileio.is_local(directory):
      return
    need = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(
        (state.params, state.batch_stats, state.opt_state))) + (64 << 10)
    free = shutil.disk_usage(str(directory)).free
    if free < need:
      raise OSError(errno.ENOSPC, f"No space left on device: checkpoint step {step} needs about "
                    f"{need / 1e6:.1f} MB, {free / 1e6:.1f} MB free",
                    str(directory / f"{step}"))

  def save_model(self, step: int, variables: dict, metadata: dict):
    """Only the `model` and `metadata` items: a checkpoint to start from, not to resume (the
    imported weights of `audiotl import`). `load_model` reads it like any other."""
    self.manager.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(variables), metadata=ocp.args.JsonSave(metadata)), force=True)

  def restore(self, step: int, abstract_state, data_iter):
    """Restores the full train state (laid out like `abstract_state`) and the iterator in place.

    Every array is restored into the sharding of its counterpart in `abstract_state` (the fresh
    state on the current mesh), never the one recorded at save time: a run saved on 8 devices
    resumes on 1 or 2. A leaf without a sharding (a host array) is replicated on the devices
    of the state's other leaves.
    """
    shardings = [x.sharding for x in jax.tree.leaves(abstract_state) if hasattr(x, "sharding")]
    if not shardings:
      raise ValueError("restore needs a state laid out on the current mesh")
    fallback = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.asarray(list(shardings[0].device_set)), ("d",)),
        jax.sharding.PartitionSpec())

    def target(x):
      return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", fallback))

    abstract = jax.tree.map(target, abstract_state)
    args = {
        "model": ocp.args.StandardRestore(
            {"params": abstract.params, "batch_stats": abstract.batch_stats}),
        "train": ocp.args.StandardRestore(
            {"opt_state": abstract.opt_state, "step": abstract.step, "rng": abstract.rng}),
    }
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    if data_iter is not None:
      # Last, so a step whose arrays fail to restore leaves the iterator where it was.
      self.manager.restore(step, args=ocp.args.Composite(
          data=grain.checkpoint.CheckpointRestore(data_iter)))
    return abstract_state.replace(
        params=out.model["params"], batch_stats=out.model["batch_stats"],
        opt_state=out.train["opt_state"], step=out.train["step"], rng=out.train["rng"])

  def resume(self, restore: Callable[[int], Any]) -> tuple[int | None, Any, dict | None]:
    """The newest intact step: (step, what `restore(step)` gave, its metadata), or (None, None,
    None) when there is none. `restore` restores one step (`self.restore` with the fresh state
    and iterator). Damaged steps newer than it are named in a warning each and moved to
    `workdir/damaged_checkpoints/`, so the resumed run can save those step numbers again and
    Orbax never ranks them."""
    found, restored, metadata, damaged = None, None, None, []
    for step in sorted(self.manager.all_steps(), reverse=True):
      step_dir = self.directory / str(step)
      problem = integrity.damage(step_dir, ITEMS)
      if problem is None:
        try:
          metadata = ocp.JsonCheckpointHandler().restore(step_dir / "metadata")
          restored, found = restore(step), step
          break
        except UserError:
          raise  # not the files: something the user must change
        except Exception as e:  # Orbax and TensorStore raise many types for damaged files.
          problem = integrity.first_line(e)
      damaged.append((step, problem))
    self._set_aside(damaged, found)
    return found, restored, metadata if found is not None else None

  def _set_aside(self, damaged, found) -> None:
    if not damaged:
      return
    aside = self.directory.parent / "damaged_checkpoints"
    for step, problem in damaged:
      dest = aside / str(step)
      k = 0
      while dest.exists():
        k += 1
        dest = aside / f"{step}.{k}"
      if jax.process_index() == 0:
        aside.mkdir(exist_ok=True)
        if fileio.is_local(dest):
          shutil.move(str(self.directory / str(step)), str(dest))
        else:
          (self.directory / str(step)).rename(dest)
        then = f"resuming from step {found}" if found is not None else "starting afresh"
        print(f"audiotl: warning: checkpoint step {step} in {self.directory} is damaged "
              f"({problem}); moved it to {dest}, {then}", file=sys.stderr)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("audiotl: damaged checkpoints set aside")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def committed_step(self) -> int | None:
    """Waits for the saves in flight, then the newest step on disk: what a message may name."""
    try:
      self.manager.wait_until_finished()
    except Exception:  # A save that failed is not there; the listing below says what is.
      pass
    steps = finished_steps(self.directory) if self.directory.exists() else []
    return steps[-1] if steps else None

  def close(self):
    """Waits for the saves in flight, then closes; again is a no-op."""
    if self._closed:
      return
    self.manager.wait_until_finished()
    self.manager.close()
    self._closed = True

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    """Every way out of a run waits for its saves: an error or a Ctrl-C right after a save
    would otherwise throw that save away. On such a way out a failing close does not hide the
    error that got there first."""
    try:
      self.close()
    except Exception:
      if exc_type is None:
        raise


def _is_step_dir(path: Path) -> bool:
  """One step's folder, damaged ones included (a workdir or checkpoints/ folder is neither)."""
  return ((path / "_CHECKPOINT_METADATA").exists() or (path / "model").is_dir()
          or (path / "metadata").is_dir()
          or path.name.isdigit() and path.parent.name == "checkpoints")


def _candidates(path: Path) -> tuple[bool, list[Path]]:
  """A step folder: (True, [it]); a workdir or its checkpoints/ folder: (False, its step folders,
  the best first (`best.json`), then the newest to the oldest)."""
  path = fileio.resolved(path)
  if _is_step_dir(path):
    return True, [path]
  ckpt = path / "checkpoints" if (path / "checkpoints").exists() else path
  if not ckpt.exists():
    raise UserError(f"checkpoint path {path} does not exist")
  steps = sorted((int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit()),
                 reverse=True)
  if not steps:
    raise UserError(f"no finished checkpoint under {ckpt} (expected numbered step folders)")
  best = ckpt / "best.json"
  if best.exists():
    step = json.loads(best.read_text()).get("step")
    if step is not None and int(step) in steps:
      steps.remove(int(step))
      steps.insert(0, int(step))
  return False, [ckpt / str(s) for s in steps]


def finished_steps(ckpt: Path) -> list[int]:
  """Steps whose folder Orbax finished (temporary folders carry a suffix and are skipped)."""
  return sorted(int(p.name) for p in fileio.path(ckpt).iterdir()
                if p.is_dir() and p.name.isdigit() and (p / "model").exists())


def read_metadata(path: Path) -> dict:
  """The metadata of a step folder, or of the step of a workdir that `load_model` would read
  (passing over steps with damaged files)."""
  explicit, dirs = _candidates(path)
  for step_dir in dirs:
    problem = integrity.damage(step_dir, ("model", "metadata"))
    if problem is None:
      try:
        return ocp.JsonCheckpointHandler().restore(step_dir / "metadata")
      except Exception as e:
        problem = integrity.first_line(e)
    if explicit:
      raise _damaged(step_dir, problem)
  raise UserError(f"no intact checkpoint under {dirs[0].parent}: every step folder is damaged")


def _host_targets(metadata) -> Any:
  """Restore targets for a saved tree, on this process's first device.

  Without targets Orbax rebuilds each array with the sharding it was saved with, which names
  the devices of the writing run: a checkpoint saved on 8 devices would not load on 1 or 2.
  Shapes and dtypes come from the checkpoint itself, so no model needs building first.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device)
      if hasattr(m, "shape") and hasattr(m, "dtype") else m, metadata)


def load_model(path: Path) -> tuple[dict, dict, Path]:
  """Loads {params, batch_stats} and metadata from a workdir or step folder (host arrays).

  Used by fine-tuning and embedding, which lay the arrays out on their own mesh afterwards. A
  workdir whose best (or latest) step is damaged gives its newest intact step instead, with a
  one-line warning; a damaged step folder named explicitly is a UserError.
  """
  explicit, dirs = _candidates(path)
  passed = []
  for step_dir in dirs:
    problem = integrity.damage(step_dir, ("model", "metadata"))
    if problem is None:
      try:
        metadata = ocp.JsonCheckpointHandler().restore(step_dir / "metadata")
        with ocp.StandardCheckpointer() as ckptr:
          model = ckptr.restore(step_dir / "model", _host_targets(
              ocp.StandardCheckpointHandler().metadata(step_dir / "model")))
      except Exception as e:  # Orbax and TensorStore raise many types for damaged files.
        problem = integrity.first_line(e)
    if problem is not None:
      if explicit:
        raise _damaged(step_dir, problem)
      passed.append((step_dir, problem))
      continue
    if jax.process_index() == 0:
      for bad, why in passed:
        print(f"audiotl: warning: checkpoint step {bad.name} in {bad.parent} is damaged "
              f"({why}); using step {step_dir.name}", file=sys.stderr)
    model = jax.tree.map(lambda x: jax.device_get(x), model)
    return model, metadata, step_dir
  raise UserError(f"no intact checkpoint under {dirs[0].parent}: every step folder is damaged "
                  f"(step {passed[0][0].name}: {passed[0][1]})")


def _damaged(step_dir: Path, problem: str) -> UserError:
  return UserError(f"checkpoint {step_dir} is damaged ({problem}); name another step folder, or "
                   f"the workdir to load its newest intact step")


def mark_best(workdir: Path, step: int, metrics: dict[str, Any]) -> None:
  """Records which step is best, so readers need not know the metric.

  Process 0 writes it alone: every process renaming its own copy over one shared file races.
  """
  if jax.process_index() != 0:
    return
  path = fileio.resolved(workdir) / "checkpoints" / "best.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  fileio.write_text(path, json.dumps({"step": int(step), "metrics": metrics}, indent=2))


def finished(workdir: Path) -> dict | None:
  """The results of a finished run in `workdir`, or None: a finished stage is not run again."""
  path = fileio.path(workdir) / "results.json"
  return json.loads(path.read_text()) if path.exists() else None


def finished_run(workdir: Path, stage: str) -> dict | None:
  """`finished(workdir)`, saying so once: a stage started again on a finished workdir returns
  the results it has instead of training again."""
  workdir = fileio.path(workdir)
  results = finished(workdir)
  if results is not None and jax.process_index() == 0:
    print(f"{stage}: {workdir} already holds a finished run; results in "
          f"{workdir / 'results.json'}")
  return results
