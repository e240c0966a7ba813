"""The ranking harness: how well does each transferability score predict fine-tuning results?

Inputs: a `scores.json` of `audiotl score` (rows per checkpoint and layer) and `audiotl finetune`
workdirs (each a `results.json` with `strategy`, `init` = the checkpoint path, `metric` and
`test[metric]`). Score rows and fine-tuning runs are matched by checkpoint path (resolved; a
step folder matches its workdir) or, failing that, by the checkpoint folder's name; several runs
of one (state, strategy), e.g. seeds, are averaged.

For every (strategy, layer, score) over the matched states it reports, with the score's sign
flipped when lower is better (so positive correlation always means "ranked well"):

  pearson, spearman, kendall   linear / rank correlations with the test metric,
  weighted_tau                 `scipy.stats.weightedtau`: Kendall's tau with hyperbolic weights
                               that count swaps among the top-ranked states most,
  top1_hit                     1 if the state the score ranks first is (one of) the best,
  regret                       best test metric - test metric of the state ranked first (>= 0),

each with a percentile bootstrap confidence interval over states (resampled with replacement;
resamples where a statistic is undefined, e.g. a constant resample, are left out).

Two variants address the seed paper's ideal measure and are evaluated next to the plain scores:
  * size-aware, `<score>+size`: z(score) + size_weight * z(log #params), with z the standard
    score across the candidate states: a prior that, at equal score, larger models transfer
    better (`num_params` comes from the checkpoint metadata via `audiotl score`);
  * validation-aware: `logme_heldout` (`audiotl_jax.scores.logme_heldout`), scored by `audiotl
    score` from the training and validation splits, enters the harness as any other score.

Outputs in the workdir: `ranking.json`, `ranking.md` and `ranking.png` (score against the test
metric, one panel per score, one colour per strategy).
"""
from etils.epath import Path

import numpy as np

from audiotl_jax import fileio
from audiotl_jax.analysis import files, plots, stats
from audiotl_jax.errors import UserError

METRICS = tuple(stats.CORRELATIONS) + ("top1_hit", "regret")


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
  for _ in range(num_resamples):
    idx = rng.integers(0, len(x), len(x))
    for k, v in rank_metrics(x[idx], y[idx]).items():
      draws[k].append(v)
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
  """results.json of every fine-tuning workdir matching the glob patterns."""
  runs = []
  for pattern in patterns:
    for d in fileio.glob(pattern) or [pattern]:
      r = files.read_json(fileio.path(d) / files.RESULTS)
      if r and r.get("stage", "finetune") == "finetune" and "init" in r:
        runs.append({**r, "workdir": str(d)})
  if not runs:
    raise UserError(f"no fine-tuning results.json under {', '.join(map(str, patterns))}")
  return runs


def _key(path) -> tuple[str, str]:
  p = fileio.resolved(path)
  workdir = p.parent.parent if p.name.isdigit() and p.parent.name == "checkpoints" else p
  return str(workdir), workdir.name


def match(score_rows, runs) -> dict:
  """{(strategy, layer): [{"source", "scores": {...}, "result", "num_params", "runs"}]}."""
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
      table.setdefault((strategy, row["layer"]), []).append({
          "source": row["source"], "row": row, "metric": metric, "runs": len(found),
          "result": float(np.mean([r["test"][metric] for r in found])),
          "num_params": row.get("num_params") or found[0].get("num_params")})
  if not table:
    raise UserError("no score row matches a fine-tuning run (by checkpoint path or name)")
  return table


def evaluate(scores_json: dict, runs, *, size_weight: float = 0.5, num_resamples: int = 1000,
             seed: int = 0) -> list[dict]:
  """One record per (strategy, layer, score or variant) with statistics and intervals."""
  names = list(scores_json["scores"])
  records = []
  for (strategy, layer), states in sorted(match(scores_json["rows"], runs).items()):
    results = [s["result"] for s in states]
    for name in names:
      signed = [files.score_sign(scores_json, name) * s["row"][name] for s in states]
      variants = [(name, signed)]
      params = [s["num_params"] for s in states]
      if all(p for p in params):
        variants.append((f"{name}+size", list(size_aware(signed, params, weight=size_weight))))
      for label, values in variants:
        records.append({
            "strategy": strategy, "layer": layer, "score": label, "metric": states[0]["metric"],
            "num_states": len(states), "states": [s["source"] for s in states],
            "values": values, "results": results, **rank_metrics(values, results),
            "ci": bootstrap(values, results, num_resamples=num_resamples, seed=seed)})
  return records


def run(*, scores_path: Path, finetune, out_dir: Path, size_weight: float = 0.5,
        num_resamples: int = 1000, seed: int = 0) -> Path:
  """Evaluates every score against the fine-tuning runs; writes ranking.{json,md,png}."""
  scores_path = fileio.path(scores_path)
  if scores_path.is_dir():
    scores_path = scores_path / files.SCORES
  scores_json = files.read_json(scores_path)
  if scores_json is None:
    raise UserError(f"{scores_path} does not exist (run `audiotl score` first)")
  records = evaluate(scores_json, load_finetune(finetune),
                     size_weight=size_weight, num_resamples=num_resamples, seed=seed)
  out_dir = fileio.path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  fileio.write_json(out_dir / "ranking.json", records, indent=2)
  lines = ["# How well each score ranks the pre-trained states", "",
           f"Sign-corrected (positive = ranked well); 95 % bootstrap intervals over states "
           f"({num_resamples} resamples). `+size`: size-aware variant (weight {size_weight}).", "",
           "| strategy | layer | score | states | " + " | ".join(METRICS) + " |",
           "|---" * (4 + len(METRICS)) + "|"]
  for r in records:
    lines.append(f"| {r['strategy']} | {r['layer']} | {r['score']} | {r['num_states']} | "
                 + " | ".join(stats.fmt(r[m], 3, r["ci"][m]) for m in METRICS) + " |")
  lines += ["", "![scores against fine-tuned results](ranking.png)", ""]
  fileio.write_text(out_dir / "ranking.md", "\n".join(lines))
  plots.plot_ranking(records, out_dir / "ranking.png")
  return out_dir / "ranking.md"

