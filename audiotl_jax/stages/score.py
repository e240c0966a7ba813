"""`audiotl score`: transferability scores of pre-trained states x layers on one downstream dataset.

For every checkpoint: embed the downstream split once (every chosen layer plus the source head's
logits; `stages/embed.py` resumes and skips finished splits), then compute each score for each
layer. LEEP and NCE read the source head: LEEP its softmax (for a multi-label source head, whose
sigmoid outputs are no distribution over source classes, the softmax of its logits: a documented
choice, as in work that applies LEEP to multi-label sources), NCE its argmax. `logme_heldout`
(the validation-aware variant) also embeds `val_split`. A multi-label downstream task is scored
with LogME's regression form on the multi-hot matrix (one-vs-rest per class); the other scores
are defined for single-label targets only.

With `stream=True`, the scores that `scores.streaming` supports are computed from the
memory-mapped embeddings chunk by chunk, for splits larger than memory.

With `probe="linear"`, every (checkpoint, layer) also gets a linear probe (`scores/probe.py`)
trained on the scored split's embeddings and evaluated on `probe_split`'s (also embedded; the
default "test" falls back to "validation" when the dataset has no test split): what the layer
supports when trained on, beside what the scores predict without training. It is no score: it
has its own key in each row and never enters the rankings.

Results: `scores.json` ({"scores": {name: {"higher_is_better"}}, "split": the scored split,
"layers": as the `layers` key lists them (the rows' order), "depth_order": the same in the
model's order, "rows": [...], and with a probe "probe": {"kind", "train_split", "split",
"metric", "metrics"}}) and `scores.csv`, one row per (checkpoint, layer), with the
model's parameter count for the size-aware variants of `analysis/ranking.py`. A probe adds
`row["probe"] = {"accuracy": ..., "auroc": ... (two-class tasks)}` to the JSON rows and
`probe_<metric>` columns to the CSV.
"""
import csv
from pathlib import Path

import jax
import numpy as np

from audiotl_jax import fileio
from audiotl_jax import scores as scores_lib
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.scores import probe as probe_lib
from audiotl_jax.scores import streaming
from audiotl_jax.stages import embed as embedding

EXTRA_SCORES = {"logme_heldout": True}  # name -> higher_is_better, beyond `SCORES`


def known_scores() -> dict:
  return {**{k: hib for k, (_, hib) in scores_lib.SCORES.items()}, **EXTRA_SCORES}


def score(*, checkpoints: dict[str, Path], dataset_dir: Path, split: str, layer=None,
          layers=None, scores, out_dir: Path, batch_size: int, pooling: str = "mean",
          val_split: str = "validation", clip_seconds: float | None = None, stream: bool = False,
          chunk_size: int = 65536, probe: str = "", probe_split: str = "test",
          progress: bool = True) -> list[dict]:
  """Scores every (checkpoint, layer); returns the rows also written to `out_dir`."""
  if not checkpoints:
    raise UserError("config key 'checkpoints' lists no checkpoint")
  layers = list(layers or ([layer] if layer else ["embedding"]))
  higher = known_scores()
  for name in scores:
    if name not in higher:
      raise unknown_name("score", name, higher)
  if probe and probe not in probe_lib.KINDS:
    raise unknown_name("probe", probe, probe_lib.KINDS)
  out_dir, dataset_dir = Path(out_dir), fileio.path(dataset_dir)
  _check_dataset(dataset_dir, [split] + ([val_split] if "logme_heldout" in scores else []))
  probe_split = _probe_split(dataset_dir, split, probe_split) if probe else None
  splits = list(dict.fromkeys([split] + ([val_split] if "logme_heldout" in scores else [])
                              + ([probe_split] if probe else [])))
  rows = []
  for name, ckpt in checkpoints.items():
    emb_dir = out_dir / "embeddings" / name
    written = embedding.embed(
        checkpoint=fileio.path(ckpt), dataset_dir=dataset_dir, splits=splits,
        layers=list(dict.fromkeys(layers + ["logits"])), pooling=pooling, out_dir=emb_dir,
        batch_size=batch_size, clip_seconds=clip_seconds, progress=progress)
    labels = np.load(emb_dir / split / "labels.npy")
    logits = np.load(emb_dir / split / "logits.npy", mmap_mode="r")
    head = _source_head(logits, need="leep" in scores or "nce" in scores)
    for layer_name in map(embedding.output_name, layers):
      feats = np.load(emb_dir / split / f"{layer_name}.npy", mmap_mode="r")
      row = {"source": name, "checkpoint": str(ckpt), "layer": layer_name,
             "model": written[split].get("model"), "num_params": written[split].get("num_params"),
             "num_clips": int(len(labels)), "dim": int(feats.shape[1])}
      row.update(_scores(scores, feats, labels, head, emb_dir, val_split, layer_name, stream,
                         chunk_size))
      if probe:
        test = emb_dir / probe_split
        row["probe"] = probe_lib.linear_probe(
            np.asarray(feats), labels, np.load(test / f"{layer_name}.npy"),
            np.load(test / "labels.npy"))
      rows.append(row)
      print("score: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in _flat(row).items() if k != "checkpoint"))
  meta = {s: {"higher_is_better": bool(higher[s])} for s in scores}
  names = list(map(embedding.output_name, layers))
  out = {"scores": meta, "split": split, "layers": names,
         "depth_order": _depth_order(names, written[split])}
  if probe:
    out["probe"] = {"kind": probe, "train_split": split, "split": probe_split,
                    "metric": "accuracy", "metrics": list(rows[0]["probe"])}
  out_dir.mkdir(parents=True, exist_ok=True)
  fileio.write_json(out_dir / "scores.json", {**out, "rows": rows}, indent=2)
  flat = [_flat(r) for r in rows]
  with fileio.atomic(out_dir / "scores.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(flat[0]))
    writer.writeheader()
    writer.writerows(flat)
  return rows


def _depth_order(names: list[str], meta: dict) -> list[str]:
  """The scored layers in the order the model computes them (the `layers` key may list the
  embedding first, for the report's table); the key's order among poolings of one layer, and
  for a split embedded before its metadata recorded the model's outputs."""
  made = meta.get("model_outputs") or []
  where = {k: made.index(v) for k, v in meta.get("layer_of", {}).items() if v in made}
  return sorted(names, key=lambda n: where.get(n, len(made)))


def _flat(row: dict) -> dict:
  """A row for the CSV: the probe's metrics as `probe_<metric>` columns."""
  out = {k: v for k, v in row.items() if k != "probe"}
  out.update({f"probe_{k}": v for k, v in row.get("probe", {}).items()})
  return out


def _probe_split(dataset_dir: Path, split: str, probe_split: str) -> str:
  """The split the probe is evaluated on: `probe_split`, or for the default "test" on a dataset
  without one, "validation"; never the split it is trained on."""
  dataset = PreparedDataset(dataset_dir)
  if dataset.task == "multilabel":
    raise UserError("the linear probe is defined for single-label tasks; this dataset is "
                    "multi-label (set probe='')")
  have = dataset.splits
  if probe_split == "test" and "test" not in have and "validation" in have:
    print("score: the dataset has no test split; the probe is evaluated on validation")
    probe_split = "validation"
  if probe_split not in have:
    raise UserError(f"probe_split {probe_split!r} is not a split of {dataset.path} "
                    f"(splits: {', '.join(have)})")
  if probe_split == split:
    raise UserError(f"probe_split {probe_split!r} is the split the probe is trained on; name "
                    "another")
  return probe_split


def _check_dataset(dataset_dir: Path, splits: list[str]) -> None:
  """What makes every score fail, said before any state is embedded: a missing split, or a
  single-label split with fewer than two classes (nothing to separate)."""
  dataset = PreparedDataset(dataset_dir)
  for split in splits:
    dataset.num_records(split)
  if dataset.task == "multilabel":
    return
  offsets, values = dataset.labels_csr(splits[0])
  present = np.unique(values[offsets[:-1][np.diff(offsets) > 0]])
  if present.size < 2:
    raise UserError(f"split {splits[0]!r} of {dataset.path} has {present.size} class(es); "
                    f"transferability scores need at least 2")


def _source_head(logits, *, need: bool):
  """(softmax probabilities, argmax) of the source head's logits, or None."""
  if not need:
    return None
  logits = np.asarray(logits, np.float64)
  return np.asarray(jax.nn.softmax(logits, axis=-1)), logits.argmax(axis=1)


def _scores(names, feats, labels, head, emb_dir, val_split, layer, stream, chunk_size) -> dict:
  out = {}
  if labels.ndim != 1:
    unsupported = [s for s in names if s != "logme"]
    if unsupported:
      raise UserError(f"the downstream task is multi-label; {', '.join(unsupported)} are defined "
                      "for single-label targets (logme scores multi-label data with its "
                      "regression form)")
    return {"logme": float(scores_lib.logme_regression(np.asarray(feats), labels))}
  streamed = [s for s in names if s in streaming.STREAMABLE] if stream else []
  if streamed:
    out.update(streaming.streaming_scores(
        feats, labels, scores=streamed, probs=head[0] if head else None, chunk_size=chunk_size,
        gbc_pca_dim=scores_lib.pca_dim_for(feats.shape)))
  for name in names:
    if name in out:
      continue
    if name == "logme_heldout":
      val = emb_dir / val_split
      out[name] = float(scores_lib.logme_heldout(
          np.asarray(feats), labels, np.load(val / f"{layer}.npy"), np.load(val / "labels.npy")))
      continue
    fn, _ = scores_lib.get_score(name)
    x = {"features": None, "probs": head and head[0],
         "source_labels": head and head[1]}[scores_lib.INPUTS[name]]
    out[name] = float(fn(np.asarray(feats) if x is None else x, labels))
  return {name: out[name] for name in names}


def run(config, workdir) -> list[dict]:
  """`audiotl score`: the config's checkpoints (comma-separated) x layers -> scores in workdir."""
  paths = [fileio.path(p) for p in str(config.checkpoints).split(",") if p]
  return score(checkpoints={fileio.resolved(p).name: p for p in paths},
               dataset_dir=fileio.path(config.data.dir), split=config.data.split,
               layers=[x for x in str(config.layers).split(",") if x],
               scores=list(config.scores), out_dir=embedding.local_out(workdir),
               batch_size=config.batch_size,
               pooling=config.pooling, val_split=config.data.val_split,
               clip_seconds=config.data.clip_seconds or None, stream=config.stream,
               chunk_size=config.chunk_size, probe=config.get("probe", ""),
               probe_split=config.get("probe_split", "test"), progress=config.progress)

