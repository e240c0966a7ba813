"""Layer-wise transfer: how each score, and a linear probe, change with depth.

Reads what `audiotl score` wrote with several `layers` and `probe="linear"`: the rows of
`score/scores.json` (or `score/<task>/scores.json` per downstream task), one per (state,
layer). Depth is its `depth_order`, the order the model computes the layers in (recorded by
`audiotl embed`; older folders: the `layers` key's order). Layer names are whatever the family
calls its outputs (`block1`..., `embedding`; AST `block3:cls` as `block3_cls`, `cls`; VGGish
`fc1`...): nothing here parses them.

For each state, the layer where the probe is most accurate is set against each score's best
layer (scores are sign-corrected first, so "best" is the highest for every score), and the
Spearman correlation over layers says whether a score follows the probe's shape across depth
(undefined for fewer than three layers). `section(study)` writes `layers.png` (or
`layers_<task>.png` with several tasks): one panel per score plus one for the probe, a line per
state across depth.
"""
import matplotlib.pyplot as plt
import numpy as np

from audiotl_jax import fileio
from audiotl_jax.analysis import files
from audiotl_jax.analysis.similarity import (save_figure, score_folders, scored, state_order,
                                             suffix)
from audiotl_jax.analysis.stats import correlations, fmt

PROBE = "probe accuracy"  # the panel and column name of the probe's metric


def curves(data: dict, layers: list[str]) -> dict:
  """{state: {panel: values over `layers`}} with scores sign-corrected (higher is better) and
  the probe's accuracy under `PROBE`; NaN where a (state, layer) row is missing."""
  metric = (data.get("probe") or {}).get("metric", "accuracy")
  out = {}
  for row in data["rows"]:
    state = out.setdefault(row["source"], {})
    at = layers.index(row["layer"]) if row["layer"] in layers else None
    if at is None:
      continue
    values = {s: files.score_sign(data, s) * row[s] for s in data["scores"] if s in row}
    if "probe" in row:
      values[PROBE] = row["probe"].get(metric)
    for name, value in values.items():
      state.setdefault(name, np.full(len(layers), np.nan))[at] = (
          np.nan if value is None else float(value))
  return out


def best_layers(curve: dict, layers: list[str]) -> dict:
  """Per panel of one state: the best layer (the first of ties), and for scores, whether it is
  one of the probe's best layers (ties count: a probe at 1.0 on three layers has three) and the
  Spearman correlation with the probe over layers. A score equal at every layer (LEEP and NCE
  read the source head, not the layer) has no best layer."""
  out = {}
  probe = curve.get(PROBE)
  for name, values in curve.items():
    if np.isnan(values).all():
      continue
    if name != PROBE and np.nanmax(values) == np.nanmin(values):
      out[name] = {"layer": None}
      continue
    best = layers[int(np.nanargmax(values))]
    out[name] = {"layer": best}
    if probe is not None and name != PROBE and not np.isnan(probe).all():
      ok = np.isfinite(values) & np.isfinite(probe)
      at_best = probe[layers.index(best)]
      out[name]["agrees"] = bool(np.isfinite(at_best) and at_best >= np.nanmax(probe))
      out[name]["spearman"] = correlations(values[ok], probe[ok], ("spearman",))["spearman"]
  return out


def _axis_label(data: dict, name: str) -> str:
  if name == PROBE:
    return f"probe accuracy ({data['probe']['split']})"
  if data["scores"][name]["higher_is_better"]:
    return name
  return f"-{name} (lower is better: negated)"


def plot(path, data: dict, layers: list[str], states: list[str], title: str) -> None:
  """One panel per score (+ the probe), a line per state over depth; legend beside."""
  curve = curves(data, layers)
  panels = [s for s in data["scores"]] + ([PROBE] if data.get("probe") else [])
  cols = min(3, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(0.4 + 3.6 * cols, 0.6 + 3.0 * rows),
                           squeeze=False)
  x = np.arange(len(layers))
  for ax, name in zip(axes.flat, panels):
    for state in states:
      if name in curve.get(state, {}):
        ax.plot(x, curve[state][name], marker="o", label=state)
    ax.set_xticks(x, layers, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(_axis_label(data, name), fontsize=8)
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, labels, title="state", loc="center left", bbox_to_anchor=(1.0, 0.5),
             fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  save_figure(fig, path)


def section(study) -> list[str]:
  """Markdown lines of "Layer-wise transfer"; writes layers.png into the study folder."""
  study = fileio.path(study)
  folders = score_folders(study)
  lines = ["## Layer-wise transfer", ""]
  if not folders:
    return lines + ["No `audiotl score` results in this study.", ""]
  for task, folder in folders.items():
    data, layers, split = scored(folder)
    states = state_order(study, dict.fromkeys(r["source"] for r in data["rows"]))
    if len(folders) > 1:
      lines += [f"### {task}", ""]
    if len(layers) < 2:
      lines += [f"Only one layer was scored (`{layers[0]}`); list several in the score "
                "stage's `layers` key (with `probe=linear`) to compare depths.", ""]
      continue
    name = f"layers{suffix(folders, task)}.png"
    plot(study / name, data, layers, states, f"Scores and probe across depth ({task}, scores "
         f"on {split})")
    lines += _table(data, layers, states)
    lines += ["", f"![layer-wise transfer]({name})", ""]
  return lines


def _table(data: dict, layers: list[str], states: list[str]) -> list[str]:
  curve = curves(data, layers)
  scores = list(data["scores"])
  probe = data.get("probe")
  lines = [f"Layers in the model's order: {', '.join(f'`{x}`' for x in layers)}. Scores are "
           "sign-corrected (higher = predicted better)."]
  if probe:
    lines[0] += (f" The probe is trained on {probe.get('train_split', 'the scored split')} and "
                 f"evaluated on {probe['split']}; each score cell: its best layer, whether that "
                 "is the probe's best layer, and the Spearman correlation with the probe over "
                 "layers.")
  head = ["state"] + (["best probe layer (accuracy)"] if probe else []) + scores
  lines += ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  agree = total = 0
  for state in states:
    best = best_layers(curve.get(state, {}), layers)
    cells = [state]
    if probe:
      b = best.get(PROBE)
      acc = b and float(np.nanmax(curve[state][PROBE]))
      cells.append(f"`{b['layer']}` ({fmt(acc, 3)})" if b else "n/a")
    for s in scores:
      b = best.get(s)
      if not b:
        cells.append("n/a")
      elif b["layer"] is None:
        cells.append("same at every layer")
      elif "agrees" in b:
        agree, total = agree + b["agrees"], total + 1
        cells.append(f"`{b['layer']}` ({'agrees' if b['agrees'] else 'differs'}), "
                     f"rho {fmt(b['spearman'], 2)}")
      else:
        cells.append(f"`{b['layer']}`")
    lines.append("| " + " | ".join(cells) + " |")
  if total:
    lines += ["", f"A score's best layer was the probe's best layer for {agree} of {total} "
              "(state, score) pairs."]
  return lines
