"""Scaling curves for `audiotl report`: downstream result against pre-training data, per subset.

A scaling study pre-trains each ontology subset at several data fractions and seeds
(`configs/sweeps/scaling.py`) and fine-tunes every state (`configs/sweeps/transfer.py`). The
question is how the downstream result grows with pre-training data, and whether a similar subset
beats a larger dissimilar one. This module groups the pre-trained states by (subset, fraction),
averages over seeds (mean, sample std, n), and draws one curve per subset and strategy against
the number of pre-training clips, with the pre-training mAP beside it. Only subsets pre-trained at
two or more fractions make a curve; a study without any gets no section.
"""
import collections
import math

from etils.epath import Path
import numpy as np

from audiotl_jax.analysis import plots, stats


def points(pretrain: dict, finetune: dict, metric: str) -> dict:
  """{subset: {fraction: {"clips", "pretrain_mAP", strategy: summary}}} over seeds, for subsets
  with at least two fractions. `pretrain` maps state -> its results.json; `finetune` maps
  (state, strategy) -> results.json."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for state, r in pretrain.items():
    if r and r.get("stage") == "pretrain" and r.get("fraction") is not None:
      groups[r["subset"]][float(r["fraction"])].append(state)
  out = {}
  for subset, by_fraction in groups.items():
    if len(by_fraction) < 2:
      continue
    out[subset] = {}
    for fraction, states in sorted(by_fraction.items()):
      row = {"clips": float(np.mean([pretrain[s]["num_train_clips"] for s in states])),
             "pretrain_mAP": stats.summary([pretrain[s]["val"]["mAP"] for s in states]),
             "states": sorted(states)}
      strategies = sorted({k for s, k in finetune if s in states})
      for k in strategies:
        row[k] = stats.summary([finetune[(s, k)]["test"][metric] for s in states
                                if (s, k) in finetune])
      out[subset][fraction] = row
  return out


def _cell(s: dict | None, digits: int = 3) -> str:
  """A `stats.summary` as a table cell: the spread only where there were several seeds."""
  if not s:
    return stats.NA
  spread = f" ± {s['std']:.{digits}f}" if s["n"] > 1 else ""
  return f"{s['mean']:.{digits}f}{spread} (n={s['n']})"


def section(study: Path, pretrain: dict, finetune: dict, strategies: list[str],
            metric: str) -> list[str]:
  """Report lines (and `scaling.png`) for the subsets pre-trained at several fractions."""
  pts = points(pretrain, finetune, metric)
  if not pts:
    return []
  lines = ["## Scaling with pre-training data", "",
           f"Downstream test {metric} per subset and pre-training fraction: mean ± sample std over "
           "seeds (n states). Pre-training mAP is on the held-out part of the training split.", "",
           "| subset | fraction | clips | pre-training mAP | " + " | ".join(strategies) + " |",
           "|---" * (4 + len(strategies)) + "|"]
  for subset, rows in sorted(pts.items()):
    for fraction, row in rows.items():
      lines.append(f"| {subset} | {fraction:g} | {row['clips']:,.0f} | "
                   f"{_cell(row['pretrain_mAP'])} | "
                   + " | ".join(_cell(row.get(k)) for k in strategies) + " |")
  lines += ["", "Gain per tenfold pre-training data (least-squares slope of the mean against "
            "log10 clips):", ""]
  for k in strategies:
    slopes = fits(pts, k)
    lines.append(f"- {k}: " + ", ".join(f"{subset} {slope:+.3f}"
                                        for subset, slope in sorted(slopes.items())))
  lines += ["", "![scaling curves](scaling.png)", ""]
  plots.plot_scaling(study / "scaling.png", pts, strategies, metric)
  return lines


def fits(pts: dict, strategy: str) -> dict:
  """Per subset, the slope of the result against log10(clips): the gain per tenfold data."""
  out = {}
  for subset, rows in pts.items():
    xy = [(math.log10(r["clips"]), r[strategy]["mean"]) for r in rows.values()
          if r.get(strategy) and r["clips"] > 0]
    if len(xy) >= 2:
      x, y = map(np.asarray, zip(*xy))
      out[subset] = float(np.polyfit(x, y, 1)[0])
  return out
