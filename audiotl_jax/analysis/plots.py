"""The figures of `audiotl report` and the ranking harness, each written to a PNG file.

Tables and numbers live with their modules (`report.py`, `ranking.py`, `scaling.py`); this module
only draws what they computed, and draws it so that it does not overstate:

  * every mean carries its 95 % t-interval over seeds (none where n = 1, and the title says
    "single seed"), with the single seeds as small dots beside it;
  * accuracy-like axes start at chance (1/classes) where it is known, else a little below the
    lowest interval, and always span at least ten test clips; each panel says what one test clip
    is worth, so a reader can tell a one-clip difference from a real one;
  * scores whose lower value is better are drawn sign-corrected (-score, said on the axis), so
    the slope the reader sees has the sign of the printed correlation;
  * panels sit in a grid of at most three columns, one legend beside them (states by marker,
    strategies by colour) instead of labels that overlap.

Every function returns its (closed) Figure, so tests read the axes instead of pixels.
"""
import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # Files only: no display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402

from audiotl_jax import fileio  # noqa: E402
from audiotl_jax.analysis.stats import fmt  # noqa: E402

COLS = 3  # panels per row at most
PANEL = (4.0, 3.3)  # inches per panel; with the legend, 3 columns stay under 1,600 px at DPI
LEGEND = 1.9  # inches beside the grid
DPI = 110
MARKERS = "osD^vP*Xhp<>"
MIN_CLIPS = 10  # an axis spans at least this many test clips: one clip never fills a plot
INTERVAL = "mean over seeds, 95 % t-interval"
SINGLE = "single seed: no interval"


def _save(fig, path, dpi: int = DPI):
  with fileio.atomic(path, "wb") as f:  # a stream has no name to take the format from
    fig.savefig(f, dpi=dpi, format=str(path).rsplit(".", 1)[-1])
  plt.close(fig)  # Reports draw many figures in one process; pyplot keeps open ones alive.
  return fig


def _grid(n: int, title: str):
  """A figure of `n` panels in rows of at most COLS, with room on the right for one legend."""
  cols = max(1, min(COLS, n))
  rows = max(1, math.ceil(n / cols))
  width = max(7.5, cols * PANEL[0] + LEGEND)  # one panel still has room for the title
  fig, axes = plt.subplots(rows, cols, figsize=(width, rows * PANEL[1] + 0.9), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis("off")
  # Wrapped to the figure's width (about 15 characters an inch at this size): a one-panel
  # figure must not cut its own title.
  fig.suptitle(textwrap.fill(title, int(width * 15)), fontsize=10)
  return fig, list(axes.flat[:n]), 1 - LEGEND / width


def _finish(fig, right: float, handles, caption: str):
  fig.legend(handles=handles, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=8,
             frameon=False)
  fig.text(0.01, 0.005, caption, fontsize=7, va="bottom", wrap=True)
  fig.tight_layout(rect=(0, 0.04, right, 0.95))


def colour(j: int):
  return plt.get_cmap("tab10")(j % 10)


def legend_handles(strategies=(), states=(), title_strategy="strategy") -> list:
  """Colour per strategy (or subset), marker per state: a legend table instead of labels."""
  out = [Line2D([], [], color=colour(j), marker="o", ls="", label=f"{title_strategy}: {k}")
         for j, k in enumerate(strategies)]
  return out + [Line2D([], [], color="0.35", marker=MARKERS[i % len(MARKERS)], ls="",
                       label=s) for i, s in enumerate(states)]


def axis_range(lows, highs, *, chance=None, clip=None) -> tuple[float, float]:
  """(bottom, top) of a result axis: from chance level when it is known and below the data, else
  a little below the lowest interval; never narrower than MIN_CLIPS test clips, never below 0."""
  lows, highs = (np.asarray([v for v in x if v is not None and np.isfinite(v)], float)
                 for x in (lows, highs))
  if not lows.size:
    return 0.0, 1.0
  lo, hi = float(lows.min()), float(highs.max())
  need = max(MIN_CLIPS * (clip or 0), 0.05)
  pad = max(0.12 * (hi - lo), (need - (hi - lo)) / 2, 0.005)
  # Chance is where a classifier's "nothing learnt" sits: the natural floor when it is known.
  bottom = chance if chance and chance < lo else lo - pad
  top = hi + pad
  if hi <= 1:  # a rate: a little headroom above 1 for the top interval at most
    top = min(top, 1.02)
  bottom = max(0.0, min(bottom, top - need))
  return bottom, max(top, bottom + need)


def score_label(name: str, sign: int) -> str:
  """The axis label of a score drawn sign-corrected (lower-is-better scores are negated)."""
  if sign < 0:
    return f"\u2212{name} (sign-corrected: higher = predicts better)"
  return f"{name} (higher = predicts better)"


def clip_note(clip) -> str:
  return f"1 test clip = {clip:.3f}" if clip else ""


def _yerr(cells):
  """Error bar lengths below and above each mean; NaN (no bar) where n < 2."""
  lo = [c["mean"] - c["ci"][0] if c and c["n"] > 1 else np.nan for c in cells]
  hi = [c["ci"][1] - c["mean"] if c and c["n"] > 1 else np.nan for c in cells]
  return np.asarray([lo, hi], float)


def _bounds(cells):
  """The lowest and highest values an axis must show: interval ends (or means) and seeds."""
  cells = [c for c in cells if c]
  seeds = [v for c in cells for v in c.get("values", ())]
  return ([c["ci"][0] if c["n"] > 1 else c["mean"] for c in cells] + seeds,
          [c["ci"][1] if c["n"] > 1 else c["mean"] for c in cells] + seeds)


def _title(cells) -> str:
  return SINGLE if max((c["n"] for c in cells if c), default=1) < 2 else \
      INTERVAL + " (none where n = 1)"


def plot_downstream(path, cells: dict, tasks, states, strategies, *, metrics: dict,
                    clips: dict, chance: dict):
  """Per task a panel: the mean test metric of each state (x) and strategy (colour), its interval
  and the single seeds. `cells` maps (task, state, strategy) -> `stats.describe` + `values`."""
  fig, axes, right = _grid(len(tasks), "Downstream test result per pre-trained state\n"
                           + _title(list(cells.values())))
  width = 0.7 / max(1, len(strategies))
  for ax, task in zip(axes, tasks):
    got = []
    for j, k in enumerate(strategies):
      xs = np.arange(len(states)) + (j - (len(strategies) - 1) / 2) * width
      row = [cells.get((task, s, k)) for s in states]
      got += row
      ax.errorbar(xs, [c["mean"] if c else np.nan for c in row], yerr=_yerr(row), fmt="o",
                  color=colour(j), capsize=3, ms=5, zorder=3)
      for x, c in zip(xs, row):
        if c and c["n"] > 1:
          ax.scatter([x + width / 4] * len(c["values"]), c["values"], s=7, color=colour(j),
                     alpha=0.45, linewidths=0, zorder=2)
    ax.set_ylim(*axis_range(*_bounds(got), chance=chance.get(task), clip=clips.get(task)))
    if chance.get(task):
      ax.axhline(chance[task], ls=":", color="0.5", lw=1)
    ax.set_xticks(np.arange(len(states)), states, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metrics[task]}")
    ax.set_title(f"{task}   ({clip_note(clips.get(task))})" if clips.get(task) else task,
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
  _finish(fig, right, legend_handles(strategies),
          "Points: mean over seeds; bars: 95 % t-interval over seeds; small dots: single seeds; "
          "dotted line: chance (1/classes). The axis starts at chance or just below the data.")
  return _save(fig, path)


def _scatter_panel(ax, series, states, *, chance=None, clip=None):
  """One score panel: `series` = [(strategy index, [(state, x, cell)])]."""
  got = []
  for j, points in series:
    row = [c for _, _, c in points]
    got += row
    ax.errorbar([x for _, x, _ in points], [c["mean"] for c in row], yerr=_yerr(row),
                fmt="none", ecolor=colour(j), capsize=2, lw=1)
    for state, x, c in points:
      ax.scatter([x], [c["mean"]], color=colour(j), marker=MARKERS[states.index(state)
                                                                  % len(MARKERS)], s=28, zorder=3)
  ax.set_ylim(*axis_range(*_bounds(got), chance=chance, clip=clip))
  ax.grid(alpha=0.3)


def plot_scores(path, panels: list[dict], states, strategies):
  """Per (task, score) a panel: the sign-corrected score of each state against its mean test
  metric (with interval), one colour per strategy, Pearson r and Kendall tau printed; each
  panel dict has task, score, sign, metric, clip, chance, points {strategy: [(state, x, cell)]}
  and corr {strategy: {pearson, kendall}}."""
  cells = [c for p in panels for pts in p["points"].values() for _, _, c in pts]
  fig, axes, right = _grid(len(panels), "Transferability score against fine-tuned result, one "
                           "point per state\n" + _title(cells))
  for ax, p in zip(axes, panels):
    _scatter_panel(ax, [(strategies.index(k), pts) for k, pts in p["points"].items()], states,
                   chance=p.get("chance"), clip=p.get("clip"))
    ax.text(0.02, 0.98, "\n".join(f"{k}: r={fmt(c['pearson'], 2)}, \u03c4={fmt(c['kendall'], 2)}"
                                  for k, c in p["corr"].items()),
            transform=ax.transAxes, va="top", fontsize=7)
    ax.set_xlabel(score_label(p["score"], p["sign"]), fontsize=8)
    ax.set_ylabel(f"test {p['metric']}")
    ax.set_title(f"{p['task']}: {p['score']}   ({clip_note(p.get('clip'))})", fontsize=9)
  _finish(fig, right, legend_handles(strategies, states),
          "x: the score, negated where lower is better, so r > 0 = the score ranked the states "
          "as fine-tuning did. Bars: 95 % t-interval of the result over seeds.")
  return _save(fig, path)


def plot_ranking(records, path):
  """Score (sign-corrected) against the test metric, one panel per task, score and layer."""
  per_task = [r for r in records if r.get("values")]
  panels = sorted({(r.get("task", ""), r["score"], r["layer"]) for r in per_task})
  states = sorted({s for r in per_task for s in r["states"]})
  strategies = sorted({r["strategy"] for r in per_task})
  fig, axes, right = _grid(len(panels), "Transferability score (sign-corrected: higher = "
                           "predicted better) against fine-tuned result\n" + _title(
                               [c for r in per_task for c in r["result_cells"]]))
  for ax, (task, score, layer) in zip(axes, panels):
    mine = [r for r in per_task if (r.get("task", ""), r["score"], r["layer"]) ==
            (task, score, layer)]
    series = [(strategies.index(r["strategy"]), [
        (s, x, c) for s, x, c in zip(r["states"], r["values"], r["result_cells"])])
              for r in mine]
    _scatter_panel(ax, series, states, clip=mine[0].get("clip"))
    ax.text(0.02, 0.98, "\n".join(f"{r['strategy']}: \u03c1={fmt(r['spearman'], 2)}"
                                  for r in mine), transform=ax.transAxes, va="top", fontsize=7)
    ax.set_xlabel(score_label(score, mine[0].get("sign", 1)) + f" [{layer}]", fontsize=7)
    ax.set_ylabel(f"test {mine[0]['metric']}")
    ax.set_title(f"{task}: {score}" if task else score, fontsize=9)
  _finish(fig, right, legend_handles(strategies, states),
          "Bars: 95 % t-interval of the result over seeds (none where n = 1).")
  return _save(fig, path, DPI)


def plot_scaling(path, panels: list[dict], subsets: list[str]):
  """Result against pre-training clips, one curve per subset with its interval; each panel dict
  has title, ylabel, clip, chance, curves {subset: [(clips, cell)]}."""
  cells = [c for p in panels for pts in p["curves"].values() for _, c in pts]
  fig, axes, right = _grid(len(panels), "Scaling with pre-training data\n" + _title(cells))
  ticks = sorted({x for p in panels for pts in p["curves"].values() for x, _ in pts})
  for ax, p in zip(axes, panels):
    got = []
    for subset, pts in p["curves"].items():
      row = [c for _, c in pts]
      got += row
      ax.errorbar([x for x, _ in pts], [c["mean"] for c in row], yerr=_yerr(row), fmt="-o",
                  color=colour(subsets.index(subset)), capsize=3, ms=4)
    if not got:
      ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    else:
      ax.set_ylim(*axis_range(*_bounds(got), chance=p.get("chance"), clip=p.get("clip")))
    # Log scale, ticked at the clip counts actually used (matplotlib's log ticks crowd over
    # the short ranges small studies have).
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{c:,.0f}" for c in ticks], rotation=30, fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("pre-training clips")
    ax.set_ylabel(p["ylabel"])
    note = clip_note(p.get("clip"))
    ax.set_title(p["title"] + (f"   ({note})" if note else ""), fontsize=9)
    ax.grid(alpha=0.3)
  _finish(fig, right, legend_handles(subsets, title_strategy="subset"),
          "Points: mean over runs (pre-training x fine-tuning seeds); bars: 95 % t-interval.")
  return _save(fig, path)
