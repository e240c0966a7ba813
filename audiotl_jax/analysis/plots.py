"""The figures of `audiotl report` and the ranking harness, each written to a PNG file.

Tables and numbers live with their modules (`report.py`, `ranking.py`, `scaling.py`); this module
only draws what they computed.
"""
import matplotlib

matplotlib.use("Agg")  # Files only: no display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from audiotl_jax import fileio  # noqa: E402
from audiotl_jax.analysis.stats import fmt  # noqa: E402


def _save(fig, path, dpi: int) -> None:
  with fileio.atomic(path, "wb") as f:  # a stream has no name to take the format from
    fig.savefig(f, dpi=dpi, format=str(path).rsplit(".", 1)[-1])
  plt.close(fig)  # Reports draw many figures in one process; pyplot keeps open ones alive.


def plot_downstream(path, fine, states, strategies, metric) -> None:
  """Bars of the test metric per pre-trained state, one colour per strategy."""
  fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(states), 3.6))
  width = 0.8 / len(strategies)
  for j, k in enumerate(strategies):
    vals = [fine[(n, k)]["test"][metric] if (n, k) in fine else np.nan for n in states]
    bars = ax.bar(np.arange(len(states)) + j * width, vals, width, label=k)
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
  ax.set_xticks(np.arange(len(states)) + width * (len(strategies) - 1) / 2, states, rotation=15)
  ax.set_ylabel(f"test {metric}")
  ax.set_title("Downstream result per pre-trained state and strategy")
  ax.legend(title="strategy", fontsize=8)
  fig.tight_layout()
  _save(fig, path, 120)


def plot_scores(path, rows, fine, states, strategies, score_names, metric, corr) -> None:
  """Each score (as computed, unsigned) against the test metric, one point per state."""
  fig, axes = plt.subplots(1, len(score_names), figsize=(4.2 * len(score_names), 3.6),
                           squeeze=False)
  for ax, s in zip(axes[0], score_names):
    for k in strategies:
      names = [n for n in states if n in rows and (n, k) in fine]
      xs = [rows[n][s] for n in names]
      ys = [fine[(n, k)]["test"][metric] for n in names]
      c = corr[(s, k)]
      ax.scatter(xs, ys, label=f"{k}: r={fmt(c['pearson'], 2)}, tau={fmt(c['kendall'], 2)}")
      for x, y, n in zip(xs, ys, names):
        ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(s)
    ax.set_ylabel(f"test {metric}")
    ax.legend(fontsize=7)
  fig.suptitle("Transferability score against fine-tuned result (one point per state)")
  fig.tight_layout()
  _save(fig, path, 120)


def plot_ranking(records, path) -> None:
  """Score (sign-corrected) against the test metric, one panel per score and layer."""
  panels = sorted({(r["score"], r["layer"]) for r in records})
  cols = min(4, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
  for ax, (score, layer) in zip(axes.flat, panels):
    for r in (r for r in records if (r["score"], r["layer"]) == (score, layer)):
      ax.scatter(r["values"], r["results"],
                 label=f"{r['strategy']}: rho={fmt(r['spearman'], 3)}")
      for x, y, name in zip(r["values"], r["results"], r["states"]):
        ax.annotate(name, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
      ax.set_ylabel(f"test {r['metric']}")
    ax.set_xlabel(f"{score} ({layer})")
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.suptitle("Transferability score (higher = predicted better) against fine-tuned result")
  fig.tight_layout()
  _save(fig, path, 110)


def plot_scaling(path, pts: dict, strategies: list[str], metric: str) -> None:
  """Mean ± std over seeds against pre-training clips, one curve per subset; the pre-training
  mAP in the first panel, then one panel per fine-tuning strategy."""
  panels = ["pretrain_mAP"] + strategies
  clips = sorted({row["clips"] for rows in pts.values() for row in rows.values()})
  fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 3.6), squeeze=False)
  handles = {}
  for ax, key in zip(axes[0], panels):
    for subset, rows in sorted(pts.items()):
      got = [(row["clips"], row[key]) for row in rows.values() if row.get(key)]
      if not got:
        continue
      xs = [x for x, _ in got]
      ys = np.asarray([s["mean"] for _, s in got])
      sd = np.asarray([s["std"] for _, s in got])
      handles[subset], = ax.plot(xs, ys, marker="o", label=subset)
      if (sd > 0).any():
        ax.fill_between(xs, ys - sd, ys + sd, color=handles[subset].get_color(), alpha=0.2,
                        linewidth=0)
    if not ax.lines:
      ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    # Log scale, ticked at the clip counts actually used (matplotlib's log ticks crowd over
    # the short ranges small studies have).
    ax.set_xscale("log")
    ax.set_xticks(clips, [f"{c:,.0f}" for c in clips], rotation=30, fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("pre-training clips")
    ax.set_ylabel("val mAP" if key == "pretrain_mAP" else f"test {metric}")
    ax.set_title("pre-training" if key == "pretrain_mAP" else f"fine-tuned: {key}")
    ax.grid(alpha=0.3)
  fig.legend(handles.values(), handles.keys(), title="subset", fontsize=8, loc="center right")
  fig.suptitle("Scaling with pre-training data (mean ± std over seeds)")
  fig.tight_layout(rect=(0, 0, 0.86, 1))
  _save(fig, path, 120)
