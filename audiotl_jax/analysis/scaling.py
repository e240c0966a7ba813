"""Scaling curves for `audiotl report`: downstream result against pre-training data, per subset.

A scaling study pre-trains each ontology subset at several data fractions and seeds
(`configs/sweeps/scaling.py`) and fine-tunes every state (`configs/sweeps/transfer.py`). The
question is how the downstream result grows with pre-training data, and whether a similar subset
beats a larger dissimilar one. From the study's results table (`results.py`) this module groups
the pre-trained states by (subset, fraction), summarises every fine-tuning run of those states on
a task (mean, sample std, 95 % t-interval, n runs: pre-training seeds x fine-tuning seeds), fits
the gain per tenfold data with its interval, and draws one curve per subset against the number of
pre-training clips, with the pre-training mAP beside it. Only subsets pre-trained at two or more
fractions make a curve; a study without any gets no section.
"""
import collections
import math

from etils.epath import Path
import numpy as np
import pandas as pd
from scipy import stats as sp

from audiotl_jax.analysis import plots, results, stats


def _cell(values) -> dict | None:
  s = stats.describe(values)
  return s and {**s, "values": stats.finite(values).tolist()}


def points(df: pd.DataFrame, task: str) -> dict:
  """{subset: {fraction: {"clips", "states", "pretrain_mAP", strategy: cell}}} for the subsets
  pre-trained at two or more fractions; a cell is `stats.describe` plus the run `values`."""
  if "fraction" not in df or "subset" not in df:
    return {}
  pre = df[(df["stage"] == "pretrain") & df["fraction"].notna()]
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for _, r in pre.iterrows():
    groups[r["subset"]][float(r["fraction"])].append(r)
  fine = results.finetune(df)
  fine = fine[fine["task"] == task]
  column = f"test_{results.metric_of(df, task)}"
  out = {}
  for subset, by_fraction in groups.items():
    if len(by_fraction) < 2:
      continue
    out[subset] = {}
    for fraction, rows in sorted(by_fraction.items()):
      states = sorted(r["state"] for r in rows)
      row = {"clips": float(np.mean([r["num_train_clips"] for r in rows])), "states": states,
             "pretrain_mAP": _cell([r.get("val_mAP", np.nan) for r in rows])}
      mine = fine[fine["state"].isin(states)]
      for k, g in mine.groupby("strategy"):
        row[k] = _cell(g[column]) if column in g else None
      out[subset][fraction] = row
  return out


def fits(pts: dict, strategy: str) -> dict:
  """Per subset, the least-squares slope of every run's result against log10(clips), the gain
  per tenfold data, with its 95 % t-interval (NaN below three runs): {subset: {slope, ci, n}}."""
  out = {}
  for subset, rows in pts.items():
    xy = [(math.log10(r["clips"]), v) for r in rows.values()
          if r.get(strategy) and r["clips"] > 0 for v in r[strategy]["values"]]
    if len({x for x, _ in xy}) < 2:
      continue
    x, y = map(np.asarray, zip(*xy))
    fit = sp.linregress(x, y)
    half = sp.t.ppf(0.975, len(x) - 2) * fit.stderr if len(x) > 2 else float("nan")
    out[subset] = {"slope": float(fit.slope), "ci": (fit.slope - half, fit.slope + half),
                   "n": len(x)}
  return out


def section(study: Path, df: pd.DataFrame, tasks: list[str], strategies: list[str]) -> list[str]:
  """Report lines (and `scaling.png`) for the subsets pre-trained at several fractions."""
  by_task = {t: p for t in tasks if (p := points(df, t))}
  if not by_task:
    return []
  lines = ["## Scaling with pre-training data", "",
           "Downstream test result per subset and pre-training fraction: mean ± sample std "
           "[95 % t-interval] (n runs: pre-training x fine-tuning seeds). Pre-training mAP is on "
           "the held-out part of the training split.", ""]
  panels, subsets = [], sorted({s for p in by_task.values() for s in p})
  first = next(iter(by_task.values()))
  panels.append({"title": "pre-training", "ylabel": "val mAP", "curves": {
      s: [(r["clips"], r["pretrain_mAP"]) for r in rows.values() if r["pretrain_mAP"]]
      for s, rows in first.items()}})
  for task, pts in by_task.items():
    facts = results.facts(df, task)
    lines += [f"### Task `{task}` (test {facts['metric']})", "",
              "| subset | fraction | clips | pre-training mAP | " + " | ".join(strategies) + " |",
              "|---" * (4 + len(strategies)) + "|"]
    for subset, rows in sorted(pts.items()):
      for fraction, row in rows.items():
        lines.append(f"| {subset} | {fraction:g} | {row['clips']:,.0f} | "
                     f"{stats.fmt_summary(row['pretrain_mAP'])} | "
                     + " | ".join(stats.fmt_summary(row.get(k)) for k in strategies) + " |")
    lines += ["", "Gain per tenfold pre-training data (least-squares slope over the runs against "
              "log10 clips, 95 % interval):", ""]
    for k in strategies:
      slopes = fits(pts, k)
      lines.append(f"- {k}: " + (", ".join(
          f"{subset} {f['slope']:+.3f}" + ("" if math.isnan(f["ci"][0]) else
                                           f" [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}]")
          for subset, f in sorted(slopes.items())) or stats.NA))
      panels.append({"title": f"{task}: {k}", "ylabel": f"test {facts['metric']}",
                     "clip": facts["clip"], "chance": facts["chance"], "curves": {
                         s: [(r["clips"], r[k]) for r in rows.values() if r.get(k)]
                         for s, rows in pts.items()}})
    lines.append("")
  lines += ["![scaling curves](scaling.png)", ""]
  plots.plot_scaling(study / "scaling.png", panels, subsets)
  return lines
