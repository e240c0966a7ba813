"""`audiotl score`: transferability scores of pre-trained states on one downstream dataset.

For every checkpoint: embed the downstream split once (the chosen layer plus the source head's
logits), then compute each score. LEEP needs a distribution over the source classes; a
multi-label source head has none, so its logits go through a softmax (a documented choice, as
in work that applies LEEP to multi-label sources). Results: `scores.json` and `scores.csv`.
"""
import csv
import json
from pathlib import Path

import jax
import numpy as np

from audiotl_jax import embedding, transferability
from audiotl_jax.errors import UserError


def _source_name(path: Path) -> str:
  return Path(path).resolve().name


def score(*, checkpoints: dict[str, Path], dataset_dir: Path, split: str, layer: str,
          scores, out_dir: Path, batch_size: int, pooling: str = "mean",
          clip_seconds: float | None = None, progress: bool = True) -> list[dict]:
  if not checkpoints:
    raise UserError("config key 'checkpoints' lists no checkpoint")
  fns = {name: transferability.get_score(name) for name in scores}
  out_dir = Path(out_dir)
  rows = []
  for name, ckpt in checkpoints.items():
    emb_dir = out_dir / "embeddings" / name
    layers = [layer] if layer == "logits" else [layer, "logits"]
    embedding.embed(checkpoint=Path(ckpt), dataset_dir=Path(dataset_dir), splits=[split],
                    layers=layers, pooling=pooling, out_dir=emb_dir, batch_size=batch_size,
                    clip_seconds=clip_seconds, progress=progress)
    feats = np.load(emb_dir / split / f"{layer}.npy", mmap_mode="r")
    logits = np.load(emb_dir / split / "logits.npy")
    labels = np.load(emb_dir / split / "labels.npy")
    if labels.ndim != 1:
      raise UserError(f"{dataset_dir} split {split!r} is multi-label; the scores here rank "
                      f"transfer to single-label tasks")
    row = {"source": name, "checkpoint": str(ckpt), "layer": layer, "num_clips": int(len(labels)),
           "dim": int(feats.shape[1])}
    probs = np.asarray(jax.nn.softmax(logits.astype(np.float64), axis=-1))
    for score_name, (fn, higher_is_better) in fns.items():
      x = probs if score_name == "leep" else np.asarray(feats)
      row[score_name] = float(fn(x, labels))
    rows.append(row)
    print("score: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in row.items() if k not in ("checkpoint",)))
  meta = {name: {"higher_is_better": bool(hib)} for name, (_, hib) in fns.items()}
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "scores.json").write_text(json.dumps({"scores": meta, "rows": rows}, indent=2) + "\n")
  with (out_dir / "scores.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return rows
