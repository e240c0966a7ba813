"""2-D projections of one layer's embeddings, coloured by class, one panel per state.

Reads the score stage's exports: `score/embeddings/<state>/<split>/<layer>.npy` and the split's
`metadata.parquet` (class per clip). Methods: `pca` (numpy SVD, always), `tsne`
(scikit-learn, after PCA to 50 dims as is usual) and `umap` (only where `umap-learn` is
installed; it is no dependency). A multi-label clip is coloured by its first class.

`section(study)` writes `projection_<layer>_pca.png`, and `projection_<layer>_tsne.png` while
the split is small enough for t-SNE to be cheap (`tsne_max` clips), for the layer `embedding`
when it was scored, else the last scored layer (the deepest, as the `layers` key lists them).
"""
import importlib.util
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from audiotl_jax import fileio
from audiotl_jax.analysis.similarity import (save_figure, score_folders, scored, slug,
                                             split_dir, state_order, suffix)
from audiotl_jax.errors import UserError, unknown_name

METHODS = ("pca", "tsne", "umap")
TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
TSNE_MAX = 2000  # clips; t-SNE on more costs minutes per state
MAX_CLIPS = 5000  # clips drawn (seeded, the same for every state): more only hide each other


def project(x, method: str = "pca", *, seed: int = 0) -> np.ndarray:
  """(N, D) embeddings -> (N, 2) points."""
  if method not in METHODS:
    raise unknown_name("projection method", method, METHODS)
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or len(x) < 3:
    raise UserError(f"a projection needs at least 3 clips of 2-D embeddings, got {x.shape}")
  if method == "pca":
    return _pca(x, 2)
  if method == "tsne":
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    # One thread: OpenMP's spinning threads made t-SNE 10x slower on a shared 2-core machine,
    # and at <= TSNE_MAX clips one thread takes seconds. 500 iterations settle such small maps.
    with threadpool_limits(1):
      return TSNE(2, perplexity=perplexity, init="pca", max_iter=500,
                  random_state=seed).fit_transform(_pca(x, min(50, *x.shape)))
  if importlib.util.find_spec("umap") is None:
    raise UserError("method 'umap' needs the umap-learn package (pip install umap-learn)")
  import umap  # pylint: disable=import-outside-toplevel
  return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)


def _pca(x: np.ndarray, k: int) -> np.ndarray:
  centred = x - x.mean(axis=0)
  u, s, vt = np.linalg.svd(centred, full_matrices=False)
  # SVD's signs are arbitrary; fixing them keeps a plot from mirroring between runs.
  signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
  out = (u * s * signs)[:, :k]
  return np.pad(out, ((0, 0), (0, k - out.shape[1])))  # D = 1: a flat second axis


def plot(path, points: dict, labels, label_names: dict, title: str) -> None:
  """`points` {state: (N, 2)} in panels (<= 3 columns), coloured by `labels` (class ids), a
  legend of `label_names` {id: name} beside."""
  states = list(points)
  cols = min(3, len(states))
  rows = -(-len(states) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(0.4 + 3.4 * cols, 0.4 + 3.2 * rows),
                           squeeze=False)
  classes = sorted(label_names)
  cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20
                      else "turbo")
  colours = {c: cmap(i if len(classes) <= 20 else i / max(1, len(classes) - 1))
             for i, c in enumerate(classes)}
  labels = np.asarray(labels)
  for ax, state in zip(axes.flat, states):
    for c in classes:
      at = labels == c
      ax.scatter(*points[state][at].T, s=6, alpha=0.7, color=colours[c], label=label_names[c],
                 linewidths=0)
    ax.set_title(state, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in list(axes.flat)[len(states):]:
    ax.axis("off")
  handles, names = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, names, title="class", loc="center left", bbox_to_anchor=(1.0, 0.5),
             fontsize=7, markerscale=2, ncol=-(-len(classes) // 24))
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  save_figure(fig, path)


def clip_classes(folder) -> tuple[np.ndarray, dict]:
  """(class id per clip, {id: name}) from a split's metadata.parquet (a multi-label clip: its
  first class, -1 for none); from labels.npy and metadata.json for a split embedded before
  there was a metadata.parquet."""
  folder = fileio.path(folder)
  if not (folder / "metadata.parquet").exists():
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    classes = json.loads((folder / "metadata.json").read_text())["classes"]
    names = [c["name"] if isinstance(c, dict) else str(c) for c in classes]
    ids = (np.asarray(labels, np.int64) if labels.ndim == 1 else
           np.where(np.asarray(labels).any(axis=1), np.asarray(labels).argmax(axis=1), -1))
    return ids, {int(i): names[i] if i >= 0 else "none" for i in np.unique(ids)}
  table = pd.read_parquet(folder / "metadata.parquet")
  multi = table["label"].map(lambda v: not np.isscalar(v))
  if multi.any():
    first = [(int(v[0]), str(n[0])) if len(v) else (-1, "none")
             for v, n in zip(table["label"], table["label_name"])]
  else:
    first = [(int(v), str(n)) for v, n in zip(table["label"], table["label_name"])]
  ids = np.array([i for i, _ in first])
  return ids, dict(sorted(set(first)))


def section(study, *, layer: str | None = None, methods=None, tsne_max: int = TSNE_MAX,
            max_clips: int = MAX_CLIPS, seed: int = 0) -> list[str]:
  """Markdown lines of "Embeddings in two dimensions"; writes the projection PNGs.

  `methods` defaults to PCA, plus t-SNE for at most `tsne_max` clips; a split of more than
  `max_clips` clips is plotted through a seeded sample of that many."""
  study = fileio.path(study)
  folders = score_folders(study)
  lines = ["## Embeddings in two dimensions", ""]
  if not folders:
    return lines + ["No embeddings from `audiotl score` in this study.", ""]
  for task, folder in folders.items():
    data, layers, split = scored(folder)
    if len(folders) > 1:
      lines += [f"### {task}", ""]
    chosen = layer or ("embedding" if "embedding" in layers else layers[-1])
    if chosen not in layers:
      raise UserError(f"layer {chosen!r} was not scored in {folder}; scored: {', '.join(layers)}")
    states = state_order(study, dict.fromkeys(r["source"] for r in data["rows"]))
    # Only states whose embeddings of that layer were kept.
    states = [s for s in states if (split_dir(folder, s, split) / f"{chosen}.npy").exists()]
    if not states:
      lines += [f"No embeddings of layer `{chosen}` kept in {folder}/embeddings.", ""]
      continue
    labels, names = clip_classes(split_dir(folder, states[0], split))
    total = len(labels)
    rows = np.arange(total)
    if total > max_clips:
      rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_clips, replace=False))
      labels = labels[rows]
    todo = list(methods or ["pca"] + (["tsne"] if len(labels) <= tsne_max else []))
    for method in todo:
      points = {s: project(np.load(split_dir(folder, s, split) / f"{chosen}.npy",
                                   mmap_mode="r")[rows], method, seed=seed) for s in states}
      name = f"projection{suffix(folders, task)}_{slug(chosen)}_{method}.png"
      plot(study / name, points, labels, names,
           f"{TITLES[method]} of layer {chosen} ({task} {split}, {len(labels)} clips)")
      lines += [f"![{TITLES[method]} of {chosen}]({name})", ""]
    if len(rows) < total:
      lines += [f"A seeded sample of {len(rows)} of the {total} clips is shown.", ""]
    if "tsne" not in todo and not methods:
      lines += [f"t-SNE left out: {len(labels)} clips is more than {tsne_max}.", ""]
  return lines
