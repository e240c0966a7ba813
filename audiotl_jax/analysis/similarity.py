"""How alike the pre-trained states are: in what they compute, and in their weights.

Representations: for every scored layer, the states x states matrix of linear CKA
(`scores/cka.py`) between the states' embeddings of the same downstream clips, as `audiotl
score` exported them (`score/embeddings/<state>/<split>/<layer>.npy`, the scored split; every
state's `ids.json` must list the same clips). Matrices small enough to hold use the full form;
larger ones the minibatch estimator, streamed from the memory maps.

Weights: the cosine distance between every pair of states' flattened parameters, on the
parameters they all share with equal shapes, never the classification head
(`scores/params.py`: loading a checkpoint needs JAX and Orbax, which analysis reaches only
through scores). Each state's checkpoint is the step its embeddings were made from (their
metadata.json), else `pretrain/<state>`.

States are ordered by ontology subset, then pre-training fraction (`pretrain/<state>/
results.json`), the untrained `scratch` baseline last. `section(study)` writes
`similarity_<layer>.png`, `param_distance.png` and `similarity.json` into the study folder and
returns the report's markdown. The helpers the other sections share (where the score stage's
outputs are, the state order, figure files) live here too.
"""
import json
import math
import re

from etils.epath import Path
import matplotlib

matplotlib.use("Agg")  # Files only: no display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from audiotl_jax import fileio  # noqa: E402
from audiotl_jax.analysis import files  # noqa: E402
from audiotl_jax.analysis.stats import fmt  # noqa: E402
from audiotl_jax.errors import UserError  # noqa: E402
from audiotl_jax.scores import cka  # noqa: E402
from audiotl_jax.scores import params as params_lib  # noqa: E402

FULL_CKA_BYTES = 1 << 30  # both matrices of a pair under this: the full form, in memory


# ------------------------------------------------------------------------- the study's files
def score_folders(study) -> dict[str, Path]:
  """{task: folder holding scores.json} of the study's `score` step: `score/`, or `score/<task>/`
  for each downstream task of a study scored on several; the task as `files.scores_task` reads
  it from the folder (else the folder's name), as the report's score sections name it."""
  study = fileio.path(study)
  out = {}
  for path in files.score_files(study):
    if path.parent != study / "score" and path.parent.parent != study / "score":
      continue  # e.g. a guided study's select/<task>/: the same states, scored for choosing
    out[files.scores_task(path) or path.parent.name] = path.parent
  return out


def suffix(tasks, task: str) -> str:
  """"" for a study's only task, else "_<task>": file names stay short in the common case."""
  return "" if len(tasks) == 1 else f"_{slug(task)}"


def slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def scored(folder) -> tuple[dict, list[str], str]:
  """(scores.json, its layers in the model's order, the scored split) of a score folder.

  The order is `depth_order` (the score stage records the order the model computes its
  outputs in), else that of the `layers` key (older score folders)."""
  data = files.read_json(fileio.path(folder) / files.SCORES)
  layers = (data.get("depth_order") or data.get("layers")
            or list(dict.fromkeys(r["layer"] for r in data["rows"])))
  return data, layers, data.get("split") or "train"


def split_dir(folder, state: str, split: str) -> Path:
  return fileio.path(folder) / "embeddings" / state / split


def state_order(study, states) -> list[str]:
  """`states` by ontology subset, then fraction; states without a pre-training record after,
  by name; the untrained baseline (`scratch`, or an init-only run) last."""
  def key(name):
    r = files.read_json(fileio.path(study) / "pretrain" / name / files.RESULTS) or {}
    scratch = name == "scratch" or r.get("stage") == "init"
    subset, fraction = r.get("subset"), r.get("fraction")
    return (scratch, subset is None, str(subset or ""),
            fraction if isinstance(fraction, (int, float)) else math.inf, name)
  return sorted(states, key=key)


def save_figure(fig, path, dpi: int = 110) -> None:
  """Writes `fig` atomically (bbox tight: legends beside the axes stay in) and closes it."""
  with fileio.atomic(path, "wb") as f:
    fig.savefig(f, dpi=dpi, format=str(path).rsplit(".", 1)[-1], bbox_inches="tight")
  plt.close(fig)


# ------------------------------------------------------------------------- computation
def cka_matrices(study) -> list[dict]:
  """One record per (task, layer): states, clips, estimator and the CKA matrix."""
  records = []
  for task, folder in score_folders(study).items():
    data, layers, split = scored(folder)
    states = state_order(study, dict.fromkeys(r["source"] for r in data["rows"]))
    # States whose embeddings were not kept (or a score folder written by hand) are left out.
    states = [s for s in states if (split_dir(folder, s, split) / "ids.json").exists()]
    if len(states) < 2:
      continue
    ids = {s: json.loads((split_dir(folder, s, split) / "ids.json").read_text()) for s in states}
    if any(ids[s] != ids[states[0]] for s in states):
      raise UserError(f"the states' embeddings in {folder}/embeddings are not of the same clips "
                      f"(ids.json differ); CKA compares the same clips")
    for layer in layers:
      arrays = [np.load(split_dir(folder, s, split) / f"{layer}.npy", mmap_mode="r")
                for s in states]
      matrix = np.ones((len(states), len(states)))
      full = all(2 * a.size * 4 <= FULL_CKA_BYTES for a in arrays)
      for i in range(len(states)):
        for j in range(i, len(states)):  # the diagonal too: NaN for a constant embedding
          value = (float(cka.linear_cka(arrays[i], arrays[j])) if full
                   else cka.minibatch_cka(arrays[i], arrays[j]))
          matrix[i, j] = matrix[j, i] = value
      records.append({"task": task, "split": split, "layer": layer, "states": states,
                      "num_clips": len(ids[states[0]]),
                      "estimator": "full" if full else "minibatch", "matrix": matrix})
  return records


def checkpoints_of(study) -> dict:
  """{state: checkpoint}: the step each state's embeddings came from, else pretrain/<state>."""
  study, out = fileio.path(study), {}
  for folder in score_folders(study).values():
    for meta in sorted(folder.glob("embeddings/*/*/metadata.json")):
      step = Path(json.loads(meta.read_text())["checkpoint"])
      if step.exists():
        out.setdefault(meta.parent.parent.name, step)
  for run in sorted(study.glob("pretrain/*/checkpoints")):
    out.setdefault(run.parent.name, run.parent)
  return {s: out[s] for s in state_order(study, out)}


def param_distances(study) -> dict | None:
  """Cosine distances between the states' shared parameters (None: fewer than two states)."""
  ckpts = checkpoints_of(study)
  if len(ckpts) < 2:
    return None
  distance, info = params_lib.cosine_distances(
      {s: params_lib.flat_params(c) for s, c in ckpts.items()})
  return {"states": list(ckpts), "matrix": distance, **info,
          "checkpoints": {s: str(c) for s, c in ckpts.items()}}


# ------------------------------------------------------------------------- outputs
def heatmap(path, matrix, states, *, title: str, label: str, vmax: float | None = None) -> None:
  """A states x states matrix with every cell annotated."""
  n = len(states)
  fig, ax = plt.subplots(figsize=(2.2 + 0.75 * n, 1.6 + 0.65 * n))
  top = vmax or (float(np.nanmax(matrix)) if np.isfinite(matrix).any() else 0.0) or 1.0
  image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=top)
  for i in range(n):
    for j in range(n):
      value = matrix[i, j]
      dark = np.isfinite(value) and value < 0.6 * image.norm.vmax
      ax.text(j, i, _cell(value, vmax == 1), ha="center", va="center", fontsize=7,
              color="white" if dark else "black")
  ax.set_xticks(range(n), states, rotation=35, ha="right", fontsize=8)
  ax.set_yticks(range(n), states, fontsize=8)
  fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.04, format="%.2g")
  ax.set_title(title, fontsize=9)
  save_figure(fig, path)


def _cell(value, unit: bool) -> str:
  """CKA (in [0, 1]) to 3 decimals; distances, often ~1e-3 between states of one run, to 3
  significant digits."""
  if not np.isfinite(value):
    return fmt(None)
  return fmt(float(value), 3) if unit else f"{value:.3g}"


def _table(matrix, states, unit: bool) -> list[str]:
  lines = ["| | " + " | ".join(states) + " |", "|---" * (len(states) + 1) + "|"]
  for name, row in zip(states, matrix):
    lines.append(f"| {name} | " + " | ".join(_cell(v, unit) for v in row) + " |")
  return lines


def _jsonable(value):
  if isinstance(value, np.ndarray):
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in value]
  return value


def section(study) -> list[str]:
  """Markdown lines of "How alike the pre-trained states are"; writes the images and
  similarity.json into the study folder."""
  study = fileio.path(study)
  folders = score_folders(study)
  lines = ["## How alike the pre-trained states are", ""]
  records = cka_matrices(study) if folders else []
  lines += ["Linear CKA (Kornblith et al. 2019) between the states' embeddings of the same "
            "downstream clips: 1 = the same representation up to rotation and scale.", ""]
  if not records:
    lines += ["No embeddings from `audiotl score` in this study.", ""]
  for r in records:
    name = f"similarity{suffix(folders, r['task'])}_{slug(r['layer'])}.png"
    heatmap(study / name, r["matrix"], r["states"], vmax=1,
            title=f"linear CKA, layer {r['layer']} ({r['task']} {r['split']}, "
                  f"{r['num_clips']} clips)", label="linear CKA")
    lines += [f"### Layer `{r['layer']}` ({r['task']}, {r['split']} split, {r['num_clips']} "
              f"clips, {r['estimator']} CKA)", ""] + _table(r["matrix"], r["states"], True)
    lines += ["", f"![linear CKA, {r['layer']}]({name})", ""]
  params = param_distances(study)
  if params:
    heatmap(study / "param_distance.png", params["matrix"], params["states"],
            title="cosine distance between parameters (head excluded)", label="1 - cosine")
    lines += ["### Distance in weight space", "",
              f"Cosine distance between the states' flattened parameters: the "
              f"{params['num_params']:,} parameters in {params['leaves']} arrays that every "
              f"state has with the same shape (left out: the classification head"
              + (f" and {len(params['left_out'])} array(s) not shared" if params["left_out"]
                 else "") + ").", ""]
    lines += _table(params["matrix"], params["states"], False)
    lines += ["", "![parameter distance](param_distance.png)", ""]
  fileio.write_json(study / "similarity.json", {
      "cka": [{k: _jsonable(v) for k, v in r.items()} for r in records],
      "param_distance": params and {k: _jsonable(v) for k, v in params.items()}}, indent=2)
  return lines
