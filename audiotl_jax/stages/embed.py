"""`audiotl embed`: stream a dataset through a model once and write layer outputs to disk.

Output, per split, under the workdir: `<split>/<name>.npy` (float32, memory-mapped while written,
one row per clip at its record index), `<split>/labels.npy` (class ids, or multi-hot rows, also
memory-mapped), `<split>/ids.json`, `<split>/metadata.parquet` (one row per clip: `index`, the
record index and row of every array; `clip_id`; `label`, the class id, or for a multi-label task
the list of ids; `label_name`, likewise names; `split`) and `<split>/metadata.json` (model,
checkpoint, parameter count, layer shapes and pooling, `model_outputs`: every output of the
model in the order it makes them, frontend), written last so a folder with metadata is complete. (A split finished before metadata.parquet existed gets it when skipped.)

Resuming: after every `flush_every` batches the memory maps are flushed and then
`<split>/progress.json` records how many batches are done. A killed run started again continues
at that batch (the rows of the batches after it are simply written again); a split with
metadata is skipped. Both records hold the settings the rows depend on (checkpoint step folder
and a hash of its weights, layers with their pooling, clip length, number of clips): a run with
other settings is refused, before any split is embedded, instead of mixing rows of two runs (a
finished split may serve a run that asks for fewer of its layers).

Every file is written atomically (`fileio`), and the memory maps' blocks are allocated when they
are created, so a full disk stops the run with an OSError, never a half-written metadata.json or
a SIGBUS on a page the disk could not back; the same command resumes once there is space.

Layers and pooling: a layer is a name of the model's output dict, optionally `name:pooling`;
see `train/inference.py` for the poolings and the ranks they apply to.

HEAR layout (`layout="hear"`, in addition to the arrays): the scene embeddings the HEAR 2021
API's `get_scene_embeddings` returns, one file per clip, as the HEAR evaluation kit stores them:
`hear/<name>/<split>/<id>.embedding.npy` (float32, shape (D,); `/` in ids becomes `__`) and
`hear/<name>/<split>.target-labels.json` ({file stem: [label names]}).
"""
import errno
import functools
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiotl_jax import config as config_lib
from audiotl_jax import fileio
from audiotl_jax.data import pipeline
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.features import featurizer
from audiotl_jax.train import adapters
from audiotl_jax.train import mesh as mesh_lib
from audiotl_jax.train import step as step_lib
from audiotl_jax.train.inference import POOLING, load_for_inference, output_name, resolve_layers

LAYOUTS = ("npy", "hear")
CLIPS = "metadata.parquet"  # the per-clip table of a split


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
  created = []  # the model's outputs in the order it makes them: its depth order

  def shapes():
    logits, out = model.apply(jax.tree.map(jnp.asarray, variables),
                              jnp.zeros((1, frames, fc.n_mels)), train=False)
    created.extend(out)  # at trace time; the returned dict comes back with its keys sorted
    return logits, out

  _, out_shapes = jax.eval_shape(shapes)
  outputs = resolve_layers(layers, pooling, out_shapes, meta["model"])

  # The statistics as an argument, not constants: one compiled program embeds every state.
  @jax.jit
  def predict(params, batch_stats, audio, norm):
    _, out = model.apply({"params": params, "batch_stats": batch_stats},
                         featurize(audio, norm=norm), train=False)
    return {name: POOLING[how][1](out[layer]) for name, (layer, how) in outputs.items()}

  params = jax.device_put(variables["params"], mesh_lib.replicated(mesh))
  batch_stats = jax.device_put(variables.get("batch_stats", {}), mesh_lib.replicated(mesh))
  norm = step_lib.norm_on_mesh(meta["norm"], mesh) if meta.get("norm") else None
  target = "multihot" if dataset.task == "multilabel" else "class"
  common = _settings(step_dir, variables, outputs, clip_seconds)
  settings, finished = {}, {}
  for split in splits:  # every split is checked before any is embedded
    split_dir = Path(out_dir) / split
    settings[split] = dict(common, num_clips=dataset.num_records(split))
    finished[split] = _finished(split_dir, settings[split])
    if finished[split] is None:
      _read_progress(split_dir, batch_size, settings[split])
  written = {}
  for split in splits:
    split_dir = Path(out_dir) / split
    if finished[split] is not None:
      written[split] = finished[split]
      if jax.process_index() == 0 and not (split_dir / CLIPS).exists():
        _write_clips(split_dir, split, json.loads((split_dir / "ids.json").read_text()),
                     finished[split].get("classes") or dataset.classes)
      print(f"embed: {split_dir} is complete; skipped")
      continue
    n = dataset.num_records(split)
    files = _stream(functools.partial(predict, norm=norm), params, batch_stats, mesh, dataset, split, n, batch_size,
                    clip_samples, target, split_dir, flush_every, progress, settings[split])
    ids = [str(i) for i in dataset.ids(split)]
    meta_out = {
        "checkpoint": str(step_dir), "model": meta["model"], "num_params": meta.get("num_params"),
        "source": meta.get("selection"), "layers": {k: list(v) for k, v in files.items()},
        "pooling": {k: how for k, (_, how) in outputs.items()},
        "layer_of": {k: layer for k, (layer, _) in outputs.items()},
        "model_outputs": created,
        "frontend": meta["frontend"], "norm": meta["norm"], "clip_seconds": clip_seconds,
        "dataset": str(dataset.path), "split": split, "num_clips": n, "task": dataset.task,
        "classes": dataset.classes, "layout": layout, "settings": settings[split],
    }
    if jax.process_index() == 0:
      fileio.write_json(split_dir / "ids.json", ids)
      _write_clips(split_dir, split, ids, dataset.classes)
      if layout == "hear":
        _write_hear(Path(out_dir), split, list(files), ids, dataset.classes)
      fileio.write_json(split_dir / "metadata.json", meta_out, indent=2)
      (split_dir / "progress.json").unlink(missing_ok=True)
    written[split] = meta_out
    print(f"embed: wrote {n} clips x {', '.join(f'{k}{tuple(v)}' for k, v in files.items())} "
          f"to {split_dir}")
  if jax.process_index() == 0:
    config_lib.write(ml_collections.ConfigDict({
        "checkpoint": str(checkpoint), "dataset": str(dataset_dir), "splits": list(splits),
        "layers": list(layers), "pooling": pooling, "layout": layout}), Path(out_dir),
        "embed_config.json")
  return written


def _stream(predict, params, batch_stats, mesh, dataset, split, n, batch_size, clip_samples,
            target, split_dir, flush_every, progress, settings) -> dict:
  """Writes pooled outputs and labels into memory maps at their record index, resumably."""
  from jax.experimental import multihost_utils
  from tqdm import tqdm
  split_dir.mkdir(parents=True, exist_ok=True)
  state = _read_progress(split_dir, batch_size, settings)
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
      _write_progress(split_dir, {"batches": done, "batch_size": batch_size, "total": total,
                                  "settings": settings})
  if main and not files:  # every batch was done before a kill: reopen for the shapes
    files = {p.stem: np.load(p, mmap_mode="r") for p in split_dir.glob("*.npy")}
  return {k: f.shape for k, f in files.items() if k != "labels"}


def _open(path: Path, value: np.ndarray, n: int):
  """The memory map for `path`: reopened when resuming, created (n, ...) otherwise."""
  try:
    if path.exists():
      f = np.load(path, mmap_mode="r+")
      if f.shape[1:] == value.shape[1:] and f.shape[0] == n:
        _allocate(path)
        return f
    f = np.lib.format.open_memmap(path, mode="w+", dtype=value.dtype,
                                  shape=(n,) + value.shape[1:])
    _allocate(path)
    return f
  except OSError as e:
    e.filename = e.filename or str(path)
    raise


def _allocate(path: Path) -> None:
  """Reserves the whole file's blocks now. A memory map is a sparse file: on a full disk the
  first write to a page the disk cannot back kills the process with SIGBUS, no error to report."""
  if not hasattr(os, "posix_fallocate"):  # macOS: no such call; a full disk stays fatal there
    return
  fd = os.open(path, os.O_RDWR)
  try:
    os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
  except OSError as e:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      raise OSError(e.errno, e.strerror, str(path)) from None
    # Any other refusal (a filesystem without fallocate): write on, as before.
  finally:
    os.close(fd)


def _settings(step_dir: Path, variables, outputs: dict, clip_seconds: float) -> dict:
  """What every row of a split depends on, besides the dataset's records."""
  return {"checkpoint": str(step_dir), "weights": adapters.fingerprint(variables),
          "layers": {k: list(v) for k, v in sorted(outputs.items())},
          "clip_seconds": float(clip_seconds)}


_WHAT = {"checkpoint": "another checkpoint", "weights": "other weights in the same checkpoint",
         "layers": "other layers", "clip_seconds": "another clip length",
         "num_clips": "another number of clips"}


def _differences(recorded: dict, now: dict, *, fewer_layers: bool = False) -> str:
  """What differs between the settings a split was embedded with and these, as text ("" if
  nothing). Keys an older record lacks are not held against it; `fewer_layers`: a subset of the
  recorded layers is no difference (a finished split holds them all)."""
  out = []
  for key, value in now.items():
    old = recorded.get(key, value)
    same = old == value
    if key == "layers" and fewer_layers:
      same = all(old.get(k) == v for k, v in value.items())
    if same or (key == "weights" and recorded.get("checkpoint") != now["checkpoint"]):
      continue  # another checkpoint has other weights: saying it once is enough
    show = {"layers": lambda x: ", ".join(sorted(f"{a}:{b}" for a, b in x.values())),
            "weights": lambda x: f"sha256 {x[:12]}",
            "clip_seconds": lambda x: f"{x} s"}.get(key, str)
    out.append(f"{_WHAT[key]} ({show(old)} there; {show(value)} now)")
  return " and ".join(out)


def _finished(split_dir: Path, settings: dict) -> dict | None:
  """The metadata of a split finished with these settings, None if the split is not finished;
  a split finished with other settings is refused."""
  path = split_dir / "metadata.json"
  if not path.exists():
    return None
  try:
    meta = json.loads(path.read_text())
  except ValueError:  # empty or cut short: an older version on a full disk
    print(f"embed: {path} is unreadable; embedding {split_dir.name} again")
    return None
  recorded = meta.get("settings") or {  # written before settings were, from what it says
      k: meta[k] for k in ("checkpoint", "clip_seconds", "num_clips") if k in meta}
  if "settings" not in meta and "layer_of" in meta and "pooling" in meta:
    recorded["layers"] = {k: [meta["layer_of"][k], how] for k, how in meta["pooling"].items()}
  differs = _differences(recorded, settings, fewer_layers=True)
  if differs:
    raise UserError(f"{split_dir} is complete with {differs}; use another workdir or delete "
                    f"{split_dir}")
  return meta


def _read_progress(split_dir: Path, batch_size: int, settings: dict) -> dict:
  path = split_dir / "progress.json"
  if not path.exists():
    return {"batches": 0}
  state = json.loads(path.read_text())
  if state.get("batch_size") != batch_size:
    raise UserError(f"{split_dir} holds a partial run with batch_size {state.get('batch_size')}; "
                    f"resume with that batch size, or delete {split_dir} to start over")
  differs = _differences(state.get("settings", {}), settings)
  if differs:
    raise UserError(f"{split_dir} holds a partial run with {differs}; use another workdir or "
                    f"delete {path}")
  return state


def _write_progress(split_dir: Path, state: dict) -> None:
  fileio.write_json(split_dir / "progress.json", state)


def _class_names(classes) -> list[str]:
  return [c["name"] if isinstance(c, dict) else str(c) for c in classes]


def _write_clips(split_dir: Path, split: str, ids: list[str], classes) -> None:
  """`<split>/metadata.parquet` from the written labels.npy, so an analysis groups and colours
  the rows of the arrays without opening the prepared dataset."""
  import pandas as pd  # only here: the rest of embed needs no pandas
  labels = np.load(split_dir / "labels.npy", mmap_mode="r")
  names = np.asarray(_class_names(classes), dtype=object)
  if labels.ndim == 1:
    label = np.asarray(labels, np.int64)
    label_name = names[label]
  else:  # multi-hot rows, read in blocks: AudioSet's are N x 527
    label = []
    for start in range(0, len(labels), 65536):
      block = np.asarray(labels[start:start + 65536]) > 0
      _, cols = np.nonzero(block)  # row-major: each row's ids together, in order
      label += [c.tolist() for c in np.split(cols, np.cumsum(block.sum(axis=1))[:-1])]
    label_name = [names[c].tolist() for c in label]
  table = pd.DataFrame({"index": np.arange(len(ids), dtype=np.int64), "clip_id": ids,
                        "label": label,
                        "label_name": label_name, "split": split})
  with fileio.atomic(split_dir / CLIPS, "wb") as f:
    table.to_parquet(f, index=False)


def _write_hear(out_dir: Path, split: str, names, ids, classes) -> None:
  labels = np.load(out_dir / split / "labels.npy", mmap_mode="r")
  class_names = _class_names(classes)
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
      with fileio.atomic(root / f"{stem}.embedding.npy", "wb") as f:
        np.save(f, np.asarray(row, np.float32))
    fileio.write_json(out_dir / "hear" / name / f"{split}.target-labels.json", targets)


def local_out(workdir) -> Path:
  # The arrays are memory-mapped .npy files, filled in place batch by batch (resumable).
  return fileio.local_only(workdir, "`audiotl embed` and `audiotl score` write memory-mapped "
                           "arrays: give a local --workdir (the checkpoint and data.dir may be "
                           "gs://)")


def run(config, workdir) -> dict:
  """`audiotl embed`: the config's checkpoint, dataset, splits and layers -> arrays in workdir."""
  return embed(checkpoint=fileio.path(config.checkpoint),
               dataset_dir=fileio.path(config.data.dir),
               splits=list(config.data.splits), layers=list(config.layers),
               pooling=config.pooling, out_dir=local_out(workdir), batch_size=config.batch_size,
               clip_seconds=config.data.clip_seconds or None, num_devices=config.num_devices,
               layout=config.layout, flush_every=config.flush_every, progress=config.progress)
