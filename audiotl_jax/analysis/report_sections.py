"""The sections of `audiotl report`, each a list of markdown lines from the study's table.

Every number over seeds is `mean ± std [95 % t-interval] (n)`; every "is A better than B?" is a
paired t-test over the seeds both ran, answered yes / no only when significant at 0.05, and
"single seed: no test" when there is nothing to test. The transferability sections are in
`report_scores.py`.
"""
import dataclasses
import math

from etils.epath import Path
import numpy as np
import pandas as pd

from audiotl_jax.analysis import plots, results, stats

# Rows that are states themselves, not runs from one ("source": study.json `state_steps`).
STATE_STAGES = ("pretrain", "init", "source")


@dataclasses.dataclass
class Study:
  path: Path
  df: pd.DataFrame  # results.table
  meta: dict  # study.json
  cells: dict  # results.cells: (task, state, strategy) -> summary over seeds
  tasks: list
  states: list  # in report order
  strategies: list
  facts: dict  # task -> results.facts

  @property
  def max_n(self) -> int:
    return max((c["n"] for c in self.cells.values()), default=0)

  @property
  def tuned(self) -> list[str]:
    """The states with a fine-tuning result, in report order."""
    have = {n for _, n, _ in self.cells}
    return [n for n in self.states if n in have]


def diff(d: float, ci=None) -> str:
  """A signed difference with its interval where there is one."""
  if d is None or math.isnan(d):
    return stats.NA
  if ci is None or math.isnan(ci[0]):
    return f"{d:+.3f}"
  return f"{d:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def pvalue(p: float) -> str:
  return stats.NA if p is None or math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def banner(s: Study) -> list[str]:
  if s.max_n >= 2:
    return []
  return ["**Single seed: every downstream result below is one run, so no result has an "
          "interval and no difference is tested; a difference of a few test clips may be "
          "chance.**", ""]


def about(s: Study, tables) -> list[str]:
  """study.json's notes, then what the data is: runs, tasks, test clips, seeds."""
  fine = results.finetune(s.df)
  lines = ["## About the data", ""]
  lines += [f"- {note}" for note in s.meta.get("notes") or []]
  lines.append(f"- {len(s.df)} runs: {len(s.df) - len(fine)} pre-training or other, "
               f"{len(fine)} fine-tuning, on {len(s.tasks)} task(s) with "
               f"{len(s.strategies)} strategy(ies); one row per run in "
               f"[{tables[0].name}]({tables[0].name}) and [{tables[1].name}]({tables[1].name}).")
  for t in s.tasks:
    f = s.facts[t]
    ns = [c["n"] for (task, _, _), c in s.cells.items() if task == t]
    clips = (f"{f['num_test']:.0f} test clips (1 clip = {f['clip']:.4f} {f['metric']})"
             if f["num_test"] else "test clips not recorded")
    chance = f", chance {f['chance']:.3f}" if f["chance"] else ""
    seeds = f"{min(ns)}–{max(ns)} seed(s) per state and strategy" if ns else \
        f"no run recorded test {f['metric']}"
    lines.append(f"- `{t}`: test {f['metric']}, {clips}{chance}; {seeds}.")
  repeats = [k for k, c in s.cells.items() if c["n"] > len(c["by_seed"])]
  if repeats:
    lines.append(f"- {len(repeats)} state x task x strategy cell(s) hold several runs of one "
                 "seed (runs that differ in another setting are pooled there; see the table).")
  return lines + [""]


def pretraining(s: Study) -> list[str]:
  rows = s.df[s.df["stage"].isin(STATE_STAGES)].set_index("state", drop=False)
  if rows.empty:
    return []
  get = lambda r, k: r.get(k) if k in r and not pd.isna(r.get(k)) else None
  lines = ["## Pre-training", "", "| state | subset | fraction | classes | train clips | "
           "val mAP | test mAP |", "|---|---|---|---|---|---|---|"]
  for name in (n for n in s.states if n in rows.index):
    r = rows.loc[name]
    r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
    clips = get(r, "num_train_clips")
    lines.append(f"| {name} | {get(r, 'subset') or ''} | {get(r, 'fraction') or ''} | "
                 f"{'' if get(r, 'num_classes') is None else int(r['num_classes'])} | "
                 f"{'untrained' if clips is None else int(clips)} | "
                 f"{stats.fmt(get(r, 'val_mAP'))} | {stats.fmt(get(r, 'test_mAP'))} |")
  return lines + [""]


def downstream(s: Study) -> list[str]:
  """Per task: mean ± std [95 % CI] (n) per state and strategy, and the figure."""
  metrics = {s.facts[t]["metric"] for t in s.tasks}
  title = f"test {metrics.pop()}" if len(metrics) == 1 else "test results"
  lines = [f"## Downstream {title} (best step chosen on validation)", "",
           "Mean ± sample std [95 % t-interval] (n seeds) per pre-trained state and strategy; "
           "n=1: a single run, no interval.", ""]
  fine = results.finetune(s.df)
  for t in s.tasks:
    f = s.facts[t]
    lines += [f"### Task `{t}`: test {f['metric']}", "",
              "| state | " + " | ".join(s.strategies) + " |", "|---" * (len(s.strategies) + 1)
              + "|"]
    for name in s.states:
      got = [s.cells.get((t, name, k)) for k in s.strategies]
      if any(got):
        lines.append(f"| {name} | " + " | ".join(stats.fmt_summary(c) for c in got) + " |")
    trainable = fine[fine["task"] == t].groupby("strategy")["num_trainable"].median() \
        if "num_trainable" in fine else pd.Series(dtype=float)
    if trainable.notna().any():
      lines += ["", "Trainable parameters: " + ", ".join(
          f"{k} {v:,.0f}" for k, v in trainable.items() if not pd.isna(v)) + "."]
    lines.append("")
  lines += ["![downstream results](downstream.png)", ""]
  plots.plot_downstream(s.path / "downstream.png", s.cells, s.tasks, s.tuned, s.strategies,
                        metrics={t: s.facts[t]["metric"] for t in s.tasks},
                        clips={t: s.facts[t]["clip"] for t in s.tasks},
                        chance={t: s.facts[t]["chance"] for t in s.tasks})
  return lines


def comparisons(s: Study) -> list[dict]:
  """Every study.json question answered per task and strategy where both states ran."""
  out = []
  for question, a, b in s.meta.get("comparisons") or []:
    for t in s.tasks:
      for k in s.strategies:
        ca, cb = s.cells.get((t, a, k)), s.cells.get((t, b, k))
        if ca and cb:
          out.append({"question": question, "task": t, "strategy": k, "a": a, "b": b,
                      **stats.paired(ca["by_seed"], cb["by_seed"])})
  return out


def questions(s: Study) -> list[str]:
  rows = comparisons(s)
  if not s.meta.get("comparisons"):
    return []
  lines = ["## The questions", "",
           "| question | task | strategy | A | B | mean A | mean B | A − B [95 % CI] | p | n | "
           "A better? |", "|---" * 11 + "|"]
  for r in rows:
    lines.append(f"| {r['question']} | {r['task']} | {r['strategy']} | {r['a']} | {r['b']} | "
                 f"{stats.fmt(r['mean_a'], 3)} | {stats.fmt(r['mean_b'], 3)} | "
                 f"{diff(r['diff'], r['ci'])} | {pvalue(r['p'])} | {r['n']} | "
                 f"**{r['verdict']}** |")
  asked = {(q, a, b) for q, a, b in s.meta["comparisons"]}
  missing = sorted(q for q, a, b in asked if not any(r["question"] == q for r in rows))
  lines += ["", "Paired by seed: A − B is the mean of the per-seed differences over the n seeds "
            "both states ran, with its 95 % t-interval; p: two-sided paired t-test. \"yes\" / "
            "\"no\" only where p < 0.05; with one seed there is nothing to test."]
  if missing:
    lines.append("Not answered (a state did not run): " + "; ".join(missing) + ".")
  return lines + [""]


def published(s: Study) -> list[str]:
  """study.json's published table beside ours: our mean over seeds in its unit, and the gap."""
  pub = s.meta.get("published")
  if not pub or not pub.get("rows"):
    return []
  unit = pub.get("unit", "")
  scale = 100.0 if unit == "%" else 1.0
  digits = 2 if unit == "%" else 3
  metric = pub.get("metric", "accuracy")
  tasks = pub.get("tasks") or sorted({t for r in pub["rows"].values() for t in r})
  lines = ["## Published results beside ours", "",
           f"Test {metric}{f' ({unit})' if unit else ''}: the published value, ours as the mean "
           f"over seeds in the same unit (n), and ours − published.", "",
           "| state | task | published | " + " | ".join(f"ours: {k} | Δ {k}" for k in s.strategies)
           + " |", "|---" * (3 + 2 * len(s.strategies)) + "|"]
  fine = results.finetune(s.df)
  column = f"test_{metric}"
  for name in order_published(s, pub["rows"]):
    for t in tasks:
      value = pub["rows"][name].get(t)
      if value is None:
        continue
      cells = []
      for k in s.strategies:
        got = fine[(fine["task"] == t) & (fine["state"] == name) & (fine["strategy"] == k)]
        v = stats.finite(got[column]) * scale if column in got else np.array([])
        cells += [f"{v.mean():.{digits}f} (n={len(v)})", f"{v.mean() - value:+.{digits}f}"] \
            if v.size else ["not run", ""]
      lines.append(f"| {name} | {t} | {value:.{digits}f} | " + " | ".join(cells) + " |")
  return lines + [""]


def order_published(s: Study, rows: dict) -> list[str]:
  return [n for n in s.states if n in rows] + [n for n in rows if n not in s.states]


def reading(s: Study) -> str:
  """Plain sentences: per task and strategy the best state, the order, and whether the best is
  significantly ahead of the runner-up."""
  out = []
  for t in s.tasks:
    for k in s.strategies:
      ranked = sorted((n for n in s.states if (t, n, k) in s.cells),
                      key=lambda n: -s.cells[(t, n, k)]["mean"])
      if not ranked:
        continue
      best = s.cells[(t, ranked[0], k)]
      text = (f"`{t}` with `{k}`: the best state is **{ranked[0]}** ({best['metric']} "
              f"{best['mean']:.3f}); order: " + " > ".join(ranked))
      if len(ranked) > 1:
        p = stats.paired(best["by_seed"], s.cells[(t, ranked[1], k)]["by_seed"])
        if p["diff"] == 0:
          text += f"; tied with {ranked[1]} (mean difference 0)"
        else:
          text += (f"; ahead of {ranked[1]} by {diff(p['diff'], p['ci'])}, "
                   + (stats.SINGLE if p["n"] < 2 else f"p = {pvalue(p['p'])}: " +
                      ("significant" if p["p"] < stats.ALPHA else "not significant")))
      out.append(text + ".")
  pre = s.df[s.df["stage"].isin(STATE_STAGES)]
  if "subset" in pre and pre["subset"].notna().any():
    subsets = dict(zip(pre["state"], pre["subset"]))
    out.append("States and their pre-training subsets: " + ", ".join(
        f"{n} = {subsets[n] if isinstance(subsets.get(n), str) else 'none'}"
        for n in s.states if n in subsets) + ".")
  return " ".join(out)


def summary(s: Study, tables) -> dict:
  """report.json: the numbers of the report, for scripts."""
  cells = [{"task": t, "state": n, "strategy": k, "metric": c["metric"], "mean": c["mean"],
            "std": c["std"], "n": c["n"], "ci": list(c["ci"]), "values": c["values"]}
           for (t, n, k), c in s.cells.items()]
  pre = s.df[s.df["stage"].isin(STATE_STAGES)]
  return {"study": s.path.name, "single_seed": s.max_n < 2, "max_seeds": s.max_n,
          "tables": [str(p) for p in tables], "tasks": s.tasks, "states": s.states,
          "strategies": s.strategies, "downstream": cells,
          "comparisons": [{k: v for k, v in r.items()} for r in comparisons(s)],
          "pretrain": {r["state"]: {k: v for k, v in r.items() if not pd.isna(v)}
                       for r in pre.drop(columns=[c for c in pre if c.startswith("config.")])
                       .to_dict("records")},
          "published": s.meta.get("published")}
