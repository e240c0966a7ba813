"""Orbax checkpoints: model, optimizer, step, the Grain iterator position and JSON metadata.

Items in each step directory:
  model     {params, batch_stats}: what fine-tuning and embedding need, restorable on its own
  train     {opt_state, step, rng}: what only resuming needs
  data      the Grain iterator state, so a resumed run sees exactly the batches it would have seen
  metadata  JSON: config, model name, classes, frontend settings and normalisation, version
Saving is asynchronous and atomic (Orbax writes to a temporary directory and renames). The manager
keeps the latest `keep` steps plus the best by the validation metric.
"""
import json
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from audiotl_jax.errors import UserError

ITEMS = ("model", "train", "data", "metadata")


class Checkpointer:
  """A `CheckpointManager` in `workdir/checkpoints` with our item layout."""

  def __init__(self, workdir: Path, *, keep: int = 2, best_metric: str | None = None,
               best_mode: str = "max"):
    self.directory = Path(workdir).resolve() / "checkpoints"
    preserve = [policies.LatestN(n=keep)]
    if best_metric:
      preserve.append(policies.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=(best_mode == "min"), n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(preserve), create=True,
        enable_async_checkpointing=True, cleanup_tmp_directories=True)
    handlers = {
        "model": ocp.StandardCheckpointHandler(),
        "train": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
        "metadata": ocp.JsonCheckpointHandler(),
    }
    self.best_metric = best_metric
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

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
    self.manager.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=True)

  def save_model(self, step: int, variables: dict, metadata: dict):
    """Only the `model` and `metadata` items: a checkpoint to start from, not to resume (the
    imported weights of `audiotl import`). `load_model` reads it like any other."""
    self.manager.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(variables), metadata=ocp.args.JsonSave(metadata)), force=True)

  def restore(self, step: int, abstract_state, data_iter):
    """Restores the full train state (laid out like `abstract_state`) and the iterator in place."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    args = {
        "model": ocp.args.StandardRestore(
            {"params": abstract.params, "batch_stats": abstract.batch_stats}),
        "train": ocp.args.StandardRestore(
            {"opt_state": abstract.opt_state, "step": abstract.step, "rng": abstract.rng}),
    }
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    return abstract_state.replace(
        params=out.model["params"], batch_stats=out.model["batch_stats"],
        opt_state=out.train["opt_state"], step=out.train["step"], rng=out.train["rng"])

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def _step_dir(path: Path) -> Path:
  """A workdir, its checkpoints/ folder or one step folder -> the step folder to read."""
  path = Path(path).resolve()
  if (path / "metadata").exists() and (path / "model").exists():
    return path
  ckpt = path / "checkpoints" if (path / "checkpoints").exists() else path
  if not ckpt.exists():
    raise UserError(f"checkpoint path {path} does not exist")
  step = _best_or_latest(ckpt)
  if step is None:
    raise UserError(f"no finished checkpoint under {ckpt} (expected numbered step folders)")
  return ckpt / str(step)


def finished_steps(ckpt: Path) -> list[int]:
  """Steps whose folder Orbax finished (temporary folders carry a suffix and are skipped)."""
  return sorted(int(p.name) for p in Path(ckpt).iterdir()
                if p.is_dir() and p.name.isdigit() and (p / "model").exists())


def _best_or_latest(ckpt: Path) -> int | None:
  """The step recorded as best in `best.json` by the loop, else the latest."""
  steps = finished_steps(ckpt)
  best = ckpt / "best.json"
  if best.exists():
    step = json.loads(best.read_text()).get("step")
    if step is not None and int(step) in steps:
      return int(step)
  return steps[-1] if steps else None


def read_metadata(path: Path) -> dict:
  step_dir = _step_dir(path)
  return ocp.JsonCheckpointHandler().restore(step_dir / "metadata")


def load_model(path: Path) -> tuple[dict, dict, Path]:
  """Loads {params, batch_stats} and metadata from a workdir or step folder (host arrays).

  Used by fine-tuning and embedding, which lay the arrays out on their own mesh afterwards.
  """
  step_dir = _step_dir(path)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      model = ckptr.restore(step_dir / "model")
  except Exception as e:  # Orbax raises many types for a damaged folder; name the folder.
    raise UserError(f"could not read the model checkpoint in {step_dir}: {e}") from e
  model = jax.tree.map(lambda x: jax.device_get(x), model)
  return model, read_metadata(step_dir), step_dir


def mark_best(workdir: Path, step: int, metrics: dict[str, Any]) -> None:
  """Records which step is best, so readers need not know the metric."""
  path = Path(workdir).resolve() / "checkpoints" / "best.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps({"step": int(step), "metrics": metrics}, indent=2))
  tmp.replace(path)


def finished(workdir: Path) -> dict | None:
  """The results of a finished run in `workdir`, or None: a finished stage is not run again."""
  path = workdir / "results.json"
  return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------ adapter-only checkpoints
# A PETL run changes a few hundred thousand of a backbone's ~86 M parameters; its result is
# stored as just the trainable leaves (`adapter.npz`) plus `adapter.json` naming the backbone
# checkpoint and a fingerprint of its parameters, and is loaded back onto that backbone only.
ADAPTER_ARRAYS, ADAPTER_META = "adapter.npz", "adapter.json"


def fingerprint(params) -> str:
  """sha256 over every leaf's path, shape, dtype and bytes: which backbone this is, exactly."""
  import hashlib
  import flax
  import numpy as np
  h = hashlib.sha256()
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  for key in sorted(flat):
    a = np.ascontiguousarray(np.asarray(jax.device_get(flat[key])))
    h.update(f"{key}|{a.shape}|{a.dtype}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save_adapter(directory: Path, variables: dict, masks: dict, metadata: dict,
                 backbone: dict) -> Path:
  """Writes the leaves of `variables` (params, batch_stats) where `masks` is True.

  `backbone` is {"path": checkpoint path, "fingerprint": fingerprint(its params)}; it goes into
  the metadata so `load_adapter` can refuse any other backbone.
  """
  import flax
  import numpy as np
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for collection, tree in variables.items():
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
    keep = flax.traverse_util.flatten_dict(flax.core.unfreeze(masks[collection]), sep="/")
    arrays.update({f"{collection}/{k}": np.asarray(jax.device_get(v))
                   for k, v in flat.items() if keep[k]})
  tmp = directory / (ADAPTER_ARRAYS + ".tmp.npz")
  np.savez(tmp, **arrays)
  tmp.replace(directory / ADAPTER_ARRAYS)
  meta = dict(metadata, backbone=backbone, num_adapter_values=int(sum(a.size for a in
                                                                      arrays.values())))
  (directory / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n")
  return directory


def load_adapter(directory: Path, variables: dict, *, backbone_params) -> tuple[dict, dict]:
  """Overlays an adapter-only checkpoint on a model's variables -> (variables, metadata).

  `variables` are {params, batch_stats} of the model the adapter was trained with, its added
  modules included (fresh from `init`, then the backbone transplanted in), so every saved leaf
  has a place. `backbone_params` are the backbone checkpoint's own parameters: a backbone whose
  fingerprint differs from the recorded one is refused.
  """
  import flax
  import numpy as np
  directory = Path(directory)
  if not (directory / ADAPTER_META).exists():
    raise UserError(f"{directory} holds no adapter checkpoint ({ADAPTER_META} is missing)")
  meta = json.loads((directory / ADAPTER_META).read_text())
  got = fingerprint(backbone_params)
  want = meta["backbone"]["fingerprint"]
  if got != want:
    raise UserError(
        f"the adapter in {directory} was trained on the backbone {meta['backbone']['path']} "
        f"(fingerprint {want[:12]}); the backbone given has fingerprint {got[:12]}: load it onto "
        f"the checkpoint it was trained with")
  arrays = np.load(directory / ADAPTER_ARRAYS)
  out = {}
  for collection in ("params", "batch_stats"):
    flat = flax.traverse_util.flatten_dict(
        flax.core.unfreeze(variables.get(collection, {})), sep="/")
    for key in arrays.files:
      c, _, path = key.partition("/")
      if c != collection:
        continue
      if path not in flat:
        raise UserError(f"adapter leaf {path!r} of {directory} has no place in the model: was it "
                        f"trained with another strategy ({meta.get('strategy')})?")
      if tuple(flat[path].shape) != tuple(arrays[key].shape):
        raise UserError(f"adapter leaf {path!r} of {directory} has shape {arrays[key].shape}, "
                        f"the model needs {tuple(flat[path].shape)}")
      flat[path] = arrays[key]
    out[collection] = flax.traverse_util.unflatten_dict(flat, sep="/") if flat else {}
  return out, meta


def finished_run(workdir: Path, stage: str) -> dict | None:
  """`finished(workdir)`, saying so once: a stage started again on a finished workdir returns
  the results it has instead of training again."""
  results = finished(workdir)
  if results is not None and jax.process_index() == 0:
    print(f"{stage}: {workdir} already holds a finished run; results in "
          f"{workdir / 'results.json'}")
  return results
