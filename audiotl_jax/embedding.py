"""`audiotl embed`: stream a dataset through a model once and write layer outputs to disk.

Output, per split, under the workdir: `<split>/<layer>.npy` (float32, memory-mapped while written,
one row per clip, in record order), `<split>/labels.npy` (class ids, or multi-hot rows),
`<split>/ids.json`, and `<split>/metadata.json` (model, checkpoint, layer shapes, pooling,
frontend), written last so a folder with metadata is complete; a killed run redoes only the
splits without it. Feature maps (batch, time, freq, channels) are pooled to vectors.
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiotl_jax import config as config_lib
from audiotl_jax import frontend, models
from audiotl_jax.data import pipeline
from audiotl_jax.data.prepare import PreparedDataset
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.train import checkpointing, mesh as mesh_lib, steps

POOLING = {
    "mean": lambda x, axes: x.mean(axes),
    "max": lambda x, axes: x.max(axes),
    "meanmax": lambda x, axes: x.mean(axes) + x.max(axes),
}


def pool(x, how: str):
  """(batch, ..., features) -> (batch, features) over every middle axis."""
  if x.ndim == 2:
    return x
  return POOLING[how](x, tuple(range(1, x.ndim - 1)))


def load_for_inference(checkpoint: Path):
  """(model, params, batch_stats, metadata, featurize, frontend config) of a checkpoint."""
  variables, meta, step_dir = checkpointing.load_model(checkpoint)
  model = models.get_model(meta["model"], num_classes=meta["num_classes"])
  fc = ml_collections.ConfigDict(meta["frontend"])
  featurize = steps.make_featurizer(fc, meta["norm"])
  return model, variables, meta, featurize, fc, step_dir


def embed(*, checkpoint: Path, dataset_dir: Path, splits, layers, pooling: str, out_dir: Path,
          batch_size: int, clip_seconds: float | None = None, num_devices: int = 0,
          progress: bool = True) -> dict:
  if pooling not in POOLING:
    raise unknown_name("pooling", pooling, POOLING)
  model, variables, meta, featurize, fc, step_dir = load_for_inference(checkpoint)
  dataset = PreparedDataset(dataset_dir)
  if dataset.sample_rate != fc.sample_rate:
    raise UserError(f"{dataset.path} holds {dataset.sample_rate} Hz audio; the checkpoint's "
                    f"frontend expects {fc.sample_rate} Hz")
  mesh = mesh_lib.make_mesh(num_devices)
  mesh_lib.check_batch_size(batch_size, mesh, "batch_size")
  clip_seconds = clip_seconds or meta.get("clip_seconds") or dataset.manifest.get("clip_seconds")
  clip_samples = int(round(clip_seconds * dataset.sample_rate))
  frames = frontend.num_frames(clip_samples, fc.hop_length)
  _, out_shapes = jax.eval_shape(
      lambda: model.apply(jax.tree.map(jnp.asarray, variables),
                          jnp.zeros((1, frames, fc.n_mels)), train=False))
  for layer in layers:
    if layer not in out_shapes:
      raise unknown_name(f"layer of {meta['model']}", layer, out_shapes)

  @jax.jit
  def predict(params, batch_stats, audio):
    logits, out = model.apply({"params": params, "batch_stats": batch_stats}, featurize(audio),
                              train=False)
    return logits, {name: pool(out[name], pooling) for name in layers}

  params = jax.device_put(variables["params"], mesh_lib.replicated(mesh))
  batch_stats = jax.device_put(variables.get("batch_stats", {}), mesh_lib.replicated(mesh))
  task = dataset.task
  target = "multihot" if task == "multilabel" else "class"
  written = {}
  for split in splits:
    split_dir = Path(out_dir) / split
    if (split_dir / "metadata.json").exists():
      written[split] = json.loads((split_dir / "metadata.json").read_text())
      print(f"embed: {split_dir} is complete; skipped")
      continue
    n = dataset.num_records(split)
    batches = pipeline.eval_batches(
        dataset, split, class_map=np.arange(dataset.num_classes, dtype=np.int32),
        num_classes=dataset.num_classes, target=target, batch_size=batch_size,
        clip_samples=clip_samples, process_index=jax.process_index(),
        process_count=jax.process_count())
    _, feats, labels, index = _stream(predict, params, batch_stats, batches, mesh, n, batch_size,
                                      split_dir, layers, desc=f"embed {split}" if progress else None)
    meta_out = {
        "checkpoint": str(step_dir), "model": meta["model"], "source": meta.get("selection"),
        "layers": {k: list(v) for k, v in feats.items()}, "pooling": pooling,
        "frontend": meta["frontend"], "norm": meta["norm"], "clip_seconds": clip_seconds,
        "dataset": str(dataset.path), "split": split, "num_clips": n, "task": task,
        "classes": dataset.classes,
    }
    if jax.process_index() == 0:
      np.save(split_dir / "labels.npy", labels)
      (split_dir / "ids.json").write_text(json.dumps([str(i) for i in dataset.ids(split)[index]]))
      (split_dir / "metadata.json").write_text(json.dumps(meta_out, indent=2) + "\n")
    written[split] = meta_out
    print(f"embed: wrote {n} clips x {', '.join(f'{k}{tuple(v)}' for k, v in feats.items())} "
          f"to {split_dir}")
  config_lib.write(ml_collections.ConfigDict({"checkpoint": str(checkpoint), "dataset":
                                              str(dataset_dir), "splits": list(splits), "layers":
                                              list(layers), "pooling": pooling}),
                   Path(out_dir), "embed_config.json")
  return written


def _stream(predict, params, batch_stats, batches, mesh, n, batch_size, split_dir, layers, desc):
  """Writes pooled layer outputs into memory-mapped .npy files as batches arrive."""
  from jax.experimental import multihost_utils
  from tqdm import tqdm
  split_dir.mkdir(parents=True, exist_ok=True)
  files, labels, indices, row = {}, [], [], 0
  for batch in tqdm(batches, total=-(-n // batch_size), desc=desc, disable=desc is None,
                    leave=False):
    g = mesh_lib.to_global(batch, mesh)
    logits, outs = predict(params, batch_stats, g["audio"])
    outs, label, mask, index = multihost_utils.process_allgather(
        (outs, g["label"], g["mask"], g["index"]), tiled=True)
    keep = np.asarray(mask) > 0
    rows = np.asarray(index)[keep]
    for name in layers:
      value = np.asarray(outs[name], dtype=np.float32)[keep]
      if name not in files and jax.process_index() == 0:
        files[name] = np.lib.format.open_memmap(split_dir / f"{name}.npy", mode="w+",
                                                dtype=np.float32, shape=(n, value.shape[-1]))
      if name in files:
        files[name][rows] = value  # Row i is record i, whichever process read it.
    labels.append(np.asarray(label)[keep])
    indices.append(rows)
    row += len(rows)
  shapes = {}
  for name, f in files.items():
    f.flush()
    shapes[name] = f.shape
  indices = np.concatenate(indices)
  order = np.argsort(indices)
  return row, shapes, np.concatenate(labels)[order], indices[order]
