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

Results: `scores.json` ({"scores": {name: {"higher_is_better"}}, "rows": [...]}) and
`scores.csv`, one row per (checkpoint, layer), with the model's parameter count for the
size-aware variants of `analysis/ranking.py`.
"""
import csv
from pathlib import Path

import jax
import numpy as np

from audiotl_jax import fileio
from audiotl_jax import scores as scores_lib
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.scores import streaming
from audiotl_jax.stages import embed as embedding

EXTRA_SCORES = {"logme_heldout": True}  # name -> higher_is_better, beyond `SCORES`


def known_scores() -> dict:
  return {**{k: hib for k, (_, hib) in scores_lib.SCORES.items()}, **EXTRA_SCORES}


def score(*, checkpoints: dict[str, Path], dataset_dir: Path, split: str, layer=None,
          layers=None, scores, out_dir: Path, batch_size: int, pooling: str = "mean",
          val_split: str = "validation", clip_seconds: float | None = None, stream: bool = False,
          chunk_size: int = 65536, progress: bool = True) -> list[dict]:
  """Scores every (checkpoint, layer); returns the rows also written to `out_dir`."""
  if not checkpoints:
    raise UserError("config key 'checkpoints' lists no checkpoint")
  layers = list(layers or ([layer] if layer else ["embedding"]))
  higher = known_scores()
  for name in scores:
    if name not in higher:
      raise unknown_name("score", name, higher)
  out_dir, dataset_dir = Path(out_dir), fileio.path(dataset_dir)
  _check_dataset(dataset_dir, [split] + ([val_split] if "logme_heldout" in scores else []))
  rows = []
  for name, ckpt in checkpoints.items():
    emb_dir = out_dir / "embeddings" / name
    splits = [split] + ([val_split] if "logme_heldout" in scores else [])
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
      rows.append(row)
      print("score: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in row.items() if k != "checkpoint"))
  meta = {s: {"higher_is_better": bool(higher[s])} for s in scores}
  out_dir.mkdir(parents=True, exist_ok=True)
  fileio.write_json(out_dir / "scores.json", {"scores": meta, "rows": rows}, indent=2)
  with fileio.atomic(out_dir / "scores.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return rows


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
               chunk_size=config.chunk_size, progress=config.progress)

