"""What a score-guided study would have cost and lost, computed from a full study in hindsight.

`audiotl study --select-by SCORE --top-k K` fine-tunes only the K states a score ranks highest
(launch/study_select.py). A study that fine-tuned every state can say what that would have given
for every score at once: per task and strategy, the states each score would have chosen, the
regret (the best mean test result over all states minus the best over the chosen ones: what
trusting the score would have lost) and the compute saved (the fine-tunings of the other states,
from the runs' own `seconds`).
"""
from audiotl_jax.analysis import report_scores, results, stats


def _seconds(s, task: str, strategy: str) -> dict:
  """state -> total seconds of its fine-tunings for (task, strategy) (every seed)."""
  fine = results.finetune(s.df)
  rows = fine[(fine["task"] == task) & (fine["strategy"] == strategy)]
  if "seconds" not in rows:
    return {}
  return rows.groupby("state")["seconds"].sum().to_dict()


def section(s, *, top_k: int = 1) -> list[str]:
  """Markdown lines; empty when the study has no scores or fewer than top_k + 1 states."""
  got = report_scores.scored(s)
  out = []
  for task, scores_json in got:
    layer, rows = report_scores.first_layer_rows(scores_json)
    for strategy in s.strategies:
      means = {n: s.cells[(task, n, strategy)]["mean"] for n in s.states
               if (task, n, strategy) in s.cells and n in rows}
      if len(means) <= top_k:
        continue
      best = max(means.values())
      cost = _seconds(s, task, strategy)
      total = sum(cost.get(n, 0.0) for n in means)
      for name in scores_json["scores"]:
        sign = 1 if scores_json["scores"][name].get("higher_is_better", True) else -1
        ranked = sorted((n for n in means if rows[n].get(name) is not None),
                        key=lambda n: -sign * rows[n][name])
        chosen = ranked[:top_k]
        if not chosen:
          continue
        regret = best - max(means[n] for n in chosen)
        saved = sum(cost.get(n, 0.0) for n in means if n not in chosen)
        out.append(f"| {task} | {strategy} | {name} | {', '.join(chosen)} | "
                   f"{stats.fmt(regret, 3)} | {saved:.0f} s of {total:.0f} s "
                   f"({100 * saved / total if total else 0:.0f} %) |")
  if not out:
    return []
  return ["## Score-guided selection, in hindsight", "",
          f"Had only the top {top_k} state(s) by each score (layer `{layer}`) been fine-tuned: "
          "regret = best mean test result over all states minus the best over the chosen "
          "(0 = the score found the best state); compute saved = the other states' fine-tunings "
          "(their own `seconds`, all seeds). `audiotl study --select-by SCORE --top-k K` runs "
          "such a study for real.", "",
          "| task | strategy | score | chosen | regret | compute saved |",
          "|---|---|---|---|---|---|", *out, ""]
