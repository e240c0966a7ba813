"""`audiotl embed`: stream a dataset through a model once and write layer outputs to disk.

Output, per split, under the workdir: `<split>/<name>.npy` (float32, memory-mapped while written,
one row per clip at its record index), `<split>/labels.npy` (class ids, or multi-hot rows, also
memory-mapped), `<split>/ids.json`, and `<split>/metadata.json` (model, checkpoint, parameter
count, layer shapes and pooling, frontend), written last so a folder with metadata is complete.

Resuming: after every `flush_every` batches the memory maps are flushed and then
`<split>/progress.json` records how many batches are done. A killed run started again continues
at that batch (the rows of the batches after it are simply written again); a split with
metadata is skipped.

Layers and pooling: a layer is a name of the model's output dict, optionally `name:pooling`;
see `train/inference.py` for the poolings and the ranks they apply to.

HEAR layout (`layout="hear"`, in addition to the arrays): the scene embeddings the HEAR 2021
API's `get_scene_embeddings` returns, one file per clip, as the HEAR evaluation kit stores them:
`hear/<name>/<split>/<id>.embedding.npy` (float32, shape (D,); `/` in ids becomes `__`) and
`hear/<name>/<split>.target-labels.json` ({file stem: [label names]}).
"""
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiotl_jax import config as config_lib
from audiotl_jax.data import pipeline
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.features import featurizer
from audiotl_jax.train import mesh as mesh_lib
from audiotl_jax.train.inference import POOLING, load_for_inference, output_name, resolve_layers

LAYOUTS = ("npy", "hear")


def embed(*, checkpoint: Path, dataset_dir: Path, splits, layers, pooling: str, out_dir: Path,
          batch_size: int, clip_seconds: float | None = None, num_devices: int = 0,
          layout: str = "npy", flush_every: int = 50, progress: bool = True) -> dict:
  """Embeds `splits` of a prepared dataset; returns {split: metadata}."""
  if layout not in LAYOUTS:
    raise unknown_name("layout", layout, LAYOUTS)
  model, variables, meta, featurize, fc, step_dir = load_for_inference(checkpoint)
  dataset = PreparedDataset(dataset_dir)
  if dataset.sample_rate != fc.sample_rate:
    raise UserError(f"{dataset.path} holds {dataset.sample_rate} Hz audio; the checkpoint's "
                    f"frontend expects {fc.sample_rate} Hz")
  for split in splits:  # every split name before any work: a typo must not cost a whole split
    dataset.num_records(split)
  mesh = mesh_lib.make_mesh(num_devices)
  mesh_lib.check_batch_size(batch_size, mesh, "batch_size")
  clip_seconds = clip_seconds or meta.get("clip_seconds") or dataset.manifest.get("clip_seconds")
  clip_samples = int(round(clip_seconds * dataset.sample_rate))
  frames = featurizer.feature_frames(fc, clip_samples)  # log-mel or AST's padded fbank frames
  _, out_shapes = jax.eval_shape(
      lambda: model.apply(jax.tree.map(jnp.asarray, variables),
                          jnp.zeros((1, frames, fc.n_mels)), train=False))
  outputs = resolve_layers(layers, pooling, out_shapes, meta["model"])

  @jax.jit
  def predict(params, batch_stats, audio):
    _, out = model.apply({"params": params, "batch_stats": batch_stats}, featurize(audio),
                         train=False)
    return {name: POOLING[how][1](out[layer]) for name, (layer, how) in outputs.items()}

  params = jax.device_put(variables["params"], mesh_lib.replicated(mesh))
  batch_stats = jax.device_put(variables.get("batch_stats", {}), mesh_lib.replicated(mesh))
  target = "multihot" if dataset.task == "multilabel" else "class"
  written = {}
  for split in splits:
    split_dir = Path(out_dir) / split
    if (split_dir / "metadata.json").exists():
      written[split] = json.loads((split_dir / "metadata.json").read_text())
      print(f"embed: {split_dir} is complete; skipped")
      continue
    n = dataset.num_records(split)
    files = _stream(predict, params, batch_stats, mesh, dataset, split, n, batch_size,
                    clip_samples, target, split_dir, flush_every, progress)
    ids = [str(i) for i in dataset.ids(split)]
    meta_out = {
        "checkpoint": str(step_dir), "model": meta["model"], "num_params": meta.get("num_params"),
        "source": meta.get("selection"), "layers": {k: list(v) for k, v in files.items()},
        "pooling": {k: how for k, (_, how) in outputs.items()},
        "layer_of": {k: layer for k, (layer, _) in outputs.items()},
        "frontend": meta["frontend"], "norm": meta["norm"], "clip_seconds": clip_seconds,
        "dataset": str(dataset.path), "split": split, "num_clips": n, "task": dataset.task,
        "classes": dataset.classes, "layout": layout,
    }
    if jax.process_index() == 0:
      (split_dir / "ids.json").write_text(json.dumps(ids))
      if layout == "hear":
        _write_hear(Path(out_dir), split, list(files), ids, dataset.classes)
      (split_dir / "metadata.json").write_text(json.dumps(meta_out, indent=2) + "\n")
      (split_dir / "progress.json").unlink(missing_ok=True)
    written[split] = meta_out
    print(f"embed: wrote {n} clips x {', '.join(f'{k}{tuple(v)}' for k, v in files.items())} "
          f"to {split_dir}")
  config_lib.write(ml_collections.ConfigDict({
      "checkpoint": str(checkpoint), "dataset": str(dataset_dir), "splits": list(splits),
      "layers": list(layers), "pooling": pooling, "layout": layout}), Path(out_dir),
      "embed_config.json")
  return written


def _stream(predict, params, batch_stats, mesh, dataset, split, n, batch_size, clip_samples,
            target, split_dir, flush_every, progress) -> dict:
  """Writes pooled outputs and labels into memory maps at their record index, resumably."""
  from jax.experimental import multihost_utils
  from tqdm import tqdm
  split_dir.mkdir(parents=True, exist_ok=True)
  state = _read_progress(split_dir, batch_size)
  done = state["batches"]
  total = pipeline.num_eval_batches(dataset, split, batch_size=batch_size)
  if done:
    print(f"embed: {split} resumes at batch {done} of {total}")
  remaining = np.arange(done * batch_size, n)  # global batch b covers indices [b*B, (b+1)*B)
  batches = [] if not remaining.size else pipeline.eval_batches(
      dataset, split, indices=remaining, class_map=np.arange(dataset.num_classes, dtype=np.int32),
      num_classes=dataset.num_classes, target=target, batch_size=batch_size,
      clip_samples=clip_samples, process_index=jax.process_index(),
      process_count=jax.process_count())
  main = jax.process_index() == 0
  files = {}
  for batch in tqdm(batches, total=total - done, desc=f"embed {split}", disable=not progress,
                    leave=False):
    g = mesh_lib.to_global(batch, mesh)
    outs = predict(params, batch_stats, g["audio"])
    outs, label, mask, index = multihost_utils.process_allgather(
        (outs, g["label"], g["mask"], g["index"]), tiled=True)
    keep = np.asarray(mask) > 0
    rows = np.asarray(index)[keep]
    arrays = {k: np.asarray(v, np.float32)[keep] for k, v in outs.items()}
    arrays["labels"] = np.asarray(label)[keep]
    if main:
      for name, value in arrays.items():
        if name not in files:
          files[name] = _open(split_dir / f"{name}.npy", value, n)
        files[name][rows] = value  # Row i is record i, whichever process read it.
    done += 1
    if main and (done % flush_every == 0 or done == total):
      for f in files.values():
        f.flush()
      _write_progress(split_dir, {"batches": done, "batch_size": batch_size, "total": total})
  if main and not files:  # every batch was done before a kill: reopen for the shapes
    files = {p.stem: np.load(p, mmap_mode="r") for p in split_dir.glob("*.npy")}
  return {k: f.shape for k, f in files.items() if k != "labels"}


def _open(path: Path, value: np.ndarray, n: int):
  """The memory map for `path`: reopened when resuming, created (n, ...) otherwise."""
  if path.exists():
    f = np.load(path, mmap_mode="r+")
    if f.shape[1:] == value.shape[1:] and f.shape[0] == n:
      return f
  return np.lib.format.open_memmap(path, mode="w+", dtype=value.dtype, shape=(n,) +
                                   value.shape[1:])


def _read_progress(split_dir: Path, batch_size: int) -> dict:
  path = split_dir / "progress.json"
  if not path.exists():
    return {"batches": 0}
  state = json.loads(path.read_text())
  if state.get("batch_size") != batch_size:
    raise UserError(f"{split_dir} holds a partial run with batch_size {state.get('batch_size')}; "
                    f"resume with that batch size, or delete {split_dir} to start over")
  return state


def _write_progress(split_dir: Path, state: dict) -> None:
  """Atomically (write, then rename): a kill leaves the old or the new file, never half."""
  tmp = split_dir / "progress.json.tmp"
  tmp.write_text(json.dumps(state))
  os.replace(tmp, split_dir / "progress.json")


def _write_hear(out_dir: Path, split: str, names, ids, classes) -> None:
  labels = np.load(out_dir / split / "labels.npy", mmap_mode="r")
  class_names = [c["name"] if isinstance(c, dict) else str(c) for c in classes]
  stems = [i.replace("/", "__") for i in ids]
  if labels.ndim == 1:
    targets = {s: [class_names[int(y)]] for s, y in zip(stems, labels)}
  else:
    targets = {s: [class_names[j] for j in np.flatnonzero(row)] for s, row in zip(stems, labels)}
  for name in names:
    emb = np.load(out_dir / split / f"{name}.npy", mmap_mode="r")
    root = out_dir / "hear" / name / split
    root.mkdir(parents=True, exist_ok=True)
    for stem, row in zip(stems, emb):
      np.save(root / f"{stem}.embedding.npy", np.asarray(row, np.float32))
    (out_dir / "hear" / name / f"{split}.target-labels.json").write_text(json.dumps(targets))


def run(config, workdir) -> dict:
  """`audiotl embed`: the config's checkpoint, dataset, splits and layers -> arrays in workdir."""
  return embed(checkpoint=Path(config.checkpoint), dataset_dir=Path(config.data.dir),
               splits=list(config.data.splits), layers=list(config.layers),
               pooling=config.pooling, out_dir=Path(workdir), batch_size=config.batch_size,
               clip_seconds=config.data.clip_seconds or None, num_devices=config.num_devices,
               layout=config.layout, flush_every=config.flush_every, progress=config.progress)
