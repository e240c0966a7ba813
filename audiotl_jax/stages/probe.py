"""`audiotl probe`: a new classifier on a frozen model's embeddings (feature extraction).

The splits are embedded once (`stages/embed.py`, resumable), the chosen layers' pooled outputs
concatenated (a `+`-joined list is a hybrid of several layers), and a classifier fitted on the
training split: logistic regression with its L2 weight chosen on the validation split, or a
small MLP early-stopped on it. The test split is scored once. `results.json` has the fields of a
fine-tuning's (strategy `probe:<classifier>@<layers>`), so a study's report lists probes beside
fine-tunings.
"""
import time

import numpy as np

from audiotl_jax import config as config_lib, fileio
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.scores import classifiers
from audiotl_jax.stages import embed as embedding
from audiotl_jax.train import checkpoints

CLASSIFIERS = ("logistic", "mlp")


def _features(emb_dir, split: str, layers: list[str]) -> tuple[np.ndarray, np.ndarray]:
  feats = [np.load(emb_dir / split / f"{embedding.output_name(l)}.npy") for l in layers]
  return np.concatenate(feats, axis=1), np.load(emb_dir / split / "labels.npy")


def run(config, workdir) -> dict:
  workdir = fileio.path(workdir)
  if (workdir / "results.json").exists():
    return fileio.read_json(workdir / "results.json")
  if config.classifier not in CLASSIFIERS:
    raise unknown_name("classifier (config key 'classifier')", config.classifier, CLASSIFIERS)
  if not config.init:
    raise UserError("set config key 'init': the checkpoint whose embeddings are probed")
  layers = [x for x in str(config.layers).split("+") if x]
  if not layers:
    raise UserError("config key 'layers' names no layer")
  meta = checkpoints.read_metadata(fileio.path(config.init))  # one line for a non-checkpoint
  dataset = PreparedDataset(config.data.dir)
  if dataset.task == "multilabel":
    raise UserError(f"{dataset.path} is multi-label; `audiotl probe` fits single-label tasks")
  t0 = time.time()
  d = config.data
  splits = [d.train_split, d.val_split, d.test_split]
  if config.embeddings_dir:  # written by `audiotl embed` (a study's embed step), read only
    emb_dir = fileio.path(config.embeddings_dir)
    for split in splits:
      for layer in layers:
        if not (emb_dir / split / f"{embedding.output_name(layer)}.npy").exists():
          raise UserError(f"config key 'embeddings_dir': {emb_dir / split} has no layer "
                          f"{layer!r}; embed it there first (`audiotl embed`, config key "
                          f"'layers') or leave 'embeddings_dir' empty")
  else:
    emb_dir = embedding.local_out(workdir) / "embeddings"
    embedding.embed(checkpoint=fileio.path(config.init), dataset_dir=fileio.path(d.dir),
                    splits=splits, layers=layers, pooling=config.pooling, out_dir=emb_dir,
                    batch_size=config.batch_size, clip_seconds=d.clip_seconds or None,
                    progress=config.progress)
  train, val, test = (_features(emb_dir, s, layers) for s in
                      (d.train_split, d.val_split, d.test_split))
  if config.classifier == "logistic":
    fit = classifiers.select_l2(train, val, test, grid=tuple(config.l2_grid))
  else:
    fit = classifiers.mlp_probe(*train, *val, *test, hidden=int(config.mlp_hidden),
                              steps=int(config.mlp_steps), seed=int(config.seed))
  metric = "auroc" if dataset.task == "binary" else "accuracy"
  num_classes = len(np.unique(train[1]))
  dim = train[0].shape[1]
  results = {
      "stage": "probe", "task": dataset.task, "metric": metric,
      # `label` names the layer set where it differs by model (e.g. "hybrid"), so one study's
      # backbones share the report's columns.
      "strategy": f"probe:{config.classifier}@{config.get('label') or '+'.join(layers)}",
      "init": str(config.init),
      "model": meta.get("model"), "dataset": dataset.manifest.get("dataset"),
      "layers": layers, "dim": int(dim), "seed": int(config.seed),
      "num_trainable": int(fit["num_params"]), "num_test": int(len(test[1])),
      "val": fit["val"], "test": fit["test"], "chosen": fit.get("chosen"),
      "num_classes": int(num_classes), "seconds": time.time() - t0}
  config_lib.write(config, workdir)
  fileio.write_json(workdir / "results.json", results, indent=2)
  print(f"probe: {results['strategy']} on {dim} dims: val {metric} "
        f"{fit['val'].get(metric, float('nan')):.4f}, test {fit['test'].get(metric, float('nan')):.4f}")
  return results
