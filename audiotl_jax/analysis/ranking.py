"""The ranking harness: how well does each transferability score predict fine-tuning results?

Inputs: `scores.json` files of `audiotl score` (rows per checkpoint and layer; one per downstream
task, which the config.json beside it or its embeddings name) and `audiotl finetune` workdirs,
read as rows of the results table (`results.py`: `strategy`, `init` = the checkpoint path,
`task`, `metric`, `test_<metric>`). A scores.json is matched with the runs of its task; score
rows and runs by checkpoint path (resolved; a step folder matches its workdir) or, failing that,
by the checkpoint folder's name; several runs of one (task, state, strategy), e.g. seeds, are
averaged (and summarised with their t-interval, for the error bars of the figure).

For every (task, strategy, layer, score) over the matched states it reports, with the score's
sign flipped when lower is better (so positive correlation always means "ranked well"):

  pearson, spearman, kendall   linear / rank correlations with the test metric,
  weighted_tau                 `scipy.stats.weightedtau`: Kendall's tau with hyperbolic weights
                               that count swaps among the top-ranked states most,
  top1_hit                     1 if the state the score ranks first is (one of) the best,
  regret                       best test metric - test metric of the state ranked first (>= 0),

each with a percentile bootstrap confidence interval over states (resampled with replacement;
resamples where a statistic is undefined, e.g. a constant resample, are left out). Over all
tasks (task "all tasks", where a score was evaluated on two or more): the mean of the per-task
statistics, its interval from resampling the states within each task.

Two variants address the seed paper's ideal measure and are evaluated next to the plain scores:
  * size-aware, `<score>+size`: z(score) + size_weight * z(log #params), with z the standard
    score across the candidate states: a prior that, at equal score, larger models transfer
    better (`num_params` comes from the checkpoint metadata via `audiotl score`);
  * validation-aware: `logme_heldout` (`audiotl_jax.scores.logme_heldout`), scored by `audiotl
    score` from the training and validation splits, enters the harness as any other score.

Outputs in the workdir: `ranking.json`, `ranking.md` and `ranking.png` (score against the test
metric, one panel per task and score, one colour per strategy, one marker per state).
"""
from etils.epath import Path

import numpy as np

from audiotl_jax import fileio
from audiotl_jax.analysis import files, plots, stats
from audiotl_jax.analysis import results as results_lib
from audiotl_jax.errors import UserError

METRICS = tuple(stats.CORRELATIONS) + ("top1_hit", "regret")
ALL = "all tasks"  # the task of the records that average over tasks


def rank_metrics(scores, results) -> dict:
  """The six statistics for `scores` (higher = predicted better) against `results`."""
  x, y = np.asarray(scores, float), np.asarray(results, float)
  out = dict.fromkeys(METRICS, float("nan"))
  if len(x) < 2:
    return out
  first = int(np.argmax(x))
  out["top1_hit"] = float(y[first] >= y.max())
  out["regret"] = float(y.max() - y[first])
  out.update(stats.correlations(x, y))
  return out


def bootstrap(scores, results, *, num_resamples: int = 1000, level: float = 0.95,
              seed: int = 0) -> dict:
  """{statistic: (low, high)}: percentile intervals over resampled states."""
  x, y = np.asarray(scores, float), np.asarray(results, float)
  rng = np.random.default_rng(seed)
  draws = {m: [] for m in METRICS}
  memo = _Resampled(x, y)
  for _ in range(num_resamples):
    for k, v in memo(rng.integers(0, len(x), len(x))).items():
      draws[k].append(v)
  return _percentiles(draws, level)


class _Resampled:
  """`rank_metrics` of a resample, computed once per multiset of states: every statistic is the
  same for any order of the same pairs, and a study's few states repeat multisets often (4
  states have 35), which saves most of the scipy calls."""

  def __init__(self, x, y):
    self.x, self.y, self.seen = x, y, {}

  def __call__(self, idx) -> dict:
    key = tuple(sorted(idx.tolist()))
    if key not in self.seen:
      self.seen[key] = rank_metrics(self.x[list(key)], self.y[list(key)])
    return self.seen[key]


def _percentiles(draws: dict, level: float) -> dict:
  tail = (1 - level) / 2 * 100
  out = {}
  for k, v in draws.items():
    v = stats.finite(v)
    out[k] = (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if v.size \
        else (float("nan"), float("nan"))
  return out


def size_aware(scores, num_params, *, weight: float = 0.5) -> np.ndarray:
  """z(score) + weight * z(log #params) across states (scores already higher = better)."""
  x = np.asarray(scores, float)
  p = np.log(np.asarray(num_params, float))
  z = lambda v: (v - v.mean()) / v.std() if v.std() > 0 else np.zeros_like(v)
  return z(x) + weight * z(p)


def load_finetune(patterns) -> list[dict]:
  """The results-table rows (`results.row`) of every fine-tuning workdir matching the globs."""
  runs = []
  for pattern in patterns:
    for d in fileio.glob(pattern) or [pattern]:
      r = results_lib.row(fileio.path(d))
      if r and r["stage"] == "finetune" and r.get("init") is not None:
        runs.append(r)
  if not runs:
    raise UserError(f"no fine-tuning results.json under {', '.join(map(str, patterns))}")
  return runs


def _key(path) -> tuple[str, str]:
  p = fileio.resolved(path)
  workdir = p.parent.parent if p.name.isdigit() and p.parent.name == "checkpoints" else p
  return str(workdir), workdir.name


def match(score_rows, runs) -> dict:
  """{(strategy, layer): [{"source", "row", "result", "result_cell", "num_params", "runs"}]}:
  the runs of each scored state, their seeds averaged (`result`) and summarised."""
  by_path, by_name = {}, {}
  for r in runs:
    path, name = _key(r["init"])
    by_path.setdefault((path, r["strategy"]), []).append(r)
    by_name.setdefault((name, r["strategy"]), []).append(r)
  table = {}
  for row in score_rows:
    path, name = _key(row["checkpoint"])
    for strategy in sorted({r["strategy"] for r in runs}):
      found = by_path.get((path, strategy)) or by_name.get((name, strategy)) or \
          by_name.get((row["source"], strategy))
      if not found:
        continue
      metric = found[0]["metric"]
      values = [r.get(f"test_{metric}", np.nan) for r in found]
      cell = stats.describe(values)
      if cell is None:
        continue
      table.setdefault((strategy, row["layer"]), []).append({
          "source": row["source"], "row": row, "metric": metric, "runs": len(found),
          "result": cell["mean"], "result_cell": {**cell, "values": stats.finite(values).tolist()},
          "clip": 1 / found[0]["num_test"] if found[0].get("num_test") else None,
          "num_params": row.get("num_params") or found[0].get("num_params")})
  if not table:
    raise UserError("no score row matches a fine-tuning run (by checkpoint path or name)")
  return table


def evaluate(scores_json: dict, runs, *, task: str = "", size_weight: float = 0.5,
             num_resamples: int = 1000, seed: int = 0) -> list[dict]:
  """One record per (strategy, layer, score or variant) with statistics and intervals; `runs`
  are the runs of one task (its name goes into each record)."""
  names = list(scores_json["scores"])
  records = []
  for (strategy, layer), states in sorted(match(scores_json["rows"], runs).items()):
    results = [s["result"] for s in states]
    for name in names:
      sign = files.score_sign(scores_json, name)
      signed = [sign * s["row"][name] for s in states]
      variants = [(name, signed)]
      params = [s["num_params"] for s in states]
      if all(p for p in params):
        variants.append((f"{name}+size", list(size_aware(signed, params, weight=size_weight))))
      for label, values in variants:
        records.append({
            "task": task, "strategy": strategy, "layer": layer, "score": label, "sign": sign,
            "metric": states[0]["metric"], "num_states": len(states),
            "states": [s["source"] for s in states], "values": values, "results": results,
            "result_cells": [s["result_cell"] for s in states], "clip": states[0]["clip"],
            **rank_metrics(values, results),
            "ci": bootstrap(values, results, num_resamples=num_resamples, seed=seed)})
  return records


def across_tasks(records, *, num_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> list[dict]:
  """Per (strategy, layer, score) scored on two or more tasks: the mean of the per-task
  statistics, with a bootstrap interval that resamples the states within each task (tasks are
  the fixed design, states the sample). Per resample the tasks' defined values are averaged."""
  groups = {}
  for r in records:
    groups.setdefault((r["strategy"], r["layer"], r["score"]), []).append(r)
  rng, out = np.random.default_rng(seed), []
  for (strategy, layer, score), rs in sorted(groups.items()):
    if len({r["task"] for r in rs}) < 2:
      continue
    memos = [_Resampled(np.asarray(r["values"], float), np.asarray(r["results"], float))
             for r in rs]
    draws = {m: [] for m in METRICS}
    for _ in range(num_resamples):
      per = [memo(rng.integers(0, len(memo.x), len(memo.x))) for memo in memos]
      for m in METRICS:
        v = stats.finite([p[m] for p in per])
        draws[m].append(v.mean() if v.size else np.nan)
    ci = _percentiles(draws, level)
    means = {m: stats.finite([r[m] for r in rs]) for m in METRICS}
    out.append({"task": ALL, "tasks": [r["task"] for r in rs], "num_tasks": len(rs),
                "strategy": strategy, "layer": layer, "score": score, "sign": rs[0]["sign"],
                "metric": rs[0]["metric"], "num_states": sum(r["num_states"] for r in rs),
                **{m: float(v.mean()) if v.size else float("nan") for m, v in means.items()},
                "ci": ci})
  return out


def tasks_of(scores_path, run_tasks: set) -> list[str]:
  """The run tasks a scores.json applies to: its dataset's task and that task's few-shot
  variants; with a single task in the runs and a scores.json that names none, that task."""
  task = files.scores_task(scores_path)
  mine = sorted(t for t in run_tasks if results_lib.dataset_of(t) == task)
  if mine:
    return mine
  return sorted(run_tasks) if len(run_tasks) == 1 else []


def run(*, scores_path, finetune=(), out_dir: Path, runs=None, size_weight: float = 0.5,
        num_resamples: int = 1000, seed: int = 0) -> Path:
  """Evaluates every score against the fine-tuning runs, per task and over all tasks; writes
  ranking.{json,md,png}. `scores_path`: a scores.json or its folder, several as a list or
  comma-separated; `runs`: results-table rows (else loaded from the `finetune` globs)."""
  if isinstance(scores_path, str):
    scores_path = [p for p in scores_path.split(",") if p]
  paths = [fileio.path(p) for p in (scores_path if isinstance(scores_path, (list, tuple))
                                    else [scores_path])]
  runs = list(runs) if runs is not None else load_finetune(finetune)
  run_tasks = {r["task"] for r in runs}
  records = []
  for path in paths:
    path = path / files.SCORES if path.is_dir() else path
    scores_json = files.read_json(path)
    if scores_json is None:
      raise UserError(f"{path} does not exist (run `audiotl score` first)")
    for task in tasks_of(path, run_tasks):
      records += evaluate(scores_json, [r for r in runs if r["task"] == task], task=task,
                          size_weight=size_weight, num_resamples=num_resamples, seed=seed)
  if not records:
    raise UserError(f"no scores.json of {', '.join(map(str, paths))} is for a task of the "
                    f"fine-tuning runs ({', '.join(sorted(run_tasks))})")
  records += across_tasks(records, num_resamples=num_resamples, seed=seed)
  out_dir = fileio.path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  fileio.write_json(out_dir / "ranking.json", records, indent=2)
  lines = ["# How well each score ranks the pre-trained states", "",
           f"Sign-corrected (positive = ranked well); 95 % bootstrap intervals over states "
           f"({num_resamples} resamples; {ALL}: the mean over tasks, states resampled within "
           f"each task). `+size`: size-aware variant (weight {size_weight}).", "",
           "| task | strategy | layer | score | states | " + " | ".join(METRICS) + " |",
           "|---" * (5 + len(METRICS)) + "|"]
  for r in records:
    lines.append(f"| {r['task']} | {r['strategy']} | {r['layer']} | {r['score']} | "
                 f"{r['num_states']} | "
                 + " | ".join(stats.fmt(r[m], 3, r["ci"][m]) for m in METRICS) + " |")
  lines += ["", "![scores against fine-tuned results](ranking.png)", ""]
  fileio.write_text(out_dir / "ranking.md", "\n".join(lines))
  plots.plot_ranking(records, out_dir / "ranking.png")
  return out_dir / "ranking.md"
