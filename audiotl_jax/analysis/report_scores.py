"""The transferability sections of `audiotl report`: the scores per task, their correlation with
the fine-tuned results, and the ranking harness per task and over all tasks.

A study scores its states once per downstream task (`score/` or `score/<task>/`); which task a
scores.json belongs to is read from the files beside it (`files.scores_task`), never from the
folder name alone. Correlations are over states, against each state's mean result over seeds,
with lower-is-better scores negated ("sign-corrected"), so a positive r always means "the score
ranked the states as fine-tuning did" and the figure's slope has the sign of the printed r.
"""
from audiotl_jax.analysis import files, plots, ranking as ranking_lib, results, stats
from audiotl_jax.errors import UserError


def scored(s) -> list[tuple[str, dict]]:
  """[(task, scores.json)] for every scores file of the study and each task it applies to."""
  out = []
  for path in files.score_files(s.path):
    scores_json = files.read_json(path)
    if scores_json and scores_json.get("rows"):
      out += [(t, scores_json) for t in ranking_lib.tasks_of(path, set(s.tasks))]
  return out


def first_layer_rows(scores_json: dict) -> tuple[str, dict]:
  """The first scored layer's rows by state. One layer per table: with several scored layers,
  keying by state alone would silently keep the last; ranking/ covers every layer."""
  layer = scores_json["rows"][0].get("layer")
  return layer, {results.state_of(r.get("checkpoint") or r["source"]): r
                 for r in scores_json["rows"] if r.get("layer") == layer}


def transferability(s) -> list[str]:
  got = scored(s)
  if not got:
    return []
  lines = ["## Transferability scores", "",
           "Per task: each state's score, then the correlation of each score with the mean "
           "downstream test result over seeds across states (sign-corrected: positive = the "
           "score ranked well).", ""]
  panels = []
  for task, scores_json in got:
    layer, rows = first_layer_rows(scores_json)
    names = list(scores_json["scores"])
    facts = s.facts[task]
    lines += [f"### Task `{task}`", "", f"Layer `{layer}` (every scored layer is in "
              "`ranking/`).", "", "| state | " + " | ".join(
                  f"{n} ({'higher' if files.score_sign(scores_json, n) > 0 else 'lower'} is "
                  f"better)" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for state in (n for n in s.states if n in rows):
      lines.append(f"| {state} | " + " | ".join(stats.fmt(rows[state].get(n)) for n in names)
                   + " |")
    lines += ["", "| score | strategy | states | Pearson | Kendall |", "|---|---|---|---|---|"]
    for name in names:
      sign = files.score_sign(scores_json, name)
      panel = {"task": task, "score": name, "sign": sign, "metric": facts["metric"],
               "clip": facts["clip"], "chance": facts["chance"], "points": {}, "corr": {}}
      for k in s.strategies:
        states = [n for n in s.states if n in rows and (task, n, k) in s.cells
                  and rows[n].get(name) is not None]
        if not states:
          continue
        xs = [sign * rows[n][name] for n in states]
        cells = [s.cells[(task, n, k)] for n in states]
        c = stats.correlations(xs, [cell["mean"] for cell in cells], ("pearson", "kendall"))
        panel["points"][k] = list(zip(states, xs, cells))
        panel["corr"][k] = c
        lines.append(f"| {name} | {k} | {len(states)} | {stats.fmt(c['pearson'], 3)} | "
                     f"{stats.fmt(c['kendall'], 3)} |")
      if panel["points"]:
        panels.append(panel)
    lines += _against_accuracy(s, task, scores_json, rows)
    lines.append("")
  if panels:
    lines += ["![scores against results](scores.png)", ""]
    plots.plot_scores(s.path / "scores.png", panels, s.tuned, s.strategies)
  return lines


def _against_accuracy(s, task: str, scores_json: dict, rows: dict) -> list[str]:
  """A detection task's main metric is AUROC; studies (the NC-score paper) also report the
  scores against accuracy, which its runs record beside it: the same correlations on that."""
  if s.facts[task]["metric"] == "accuracy":
    return []
  fine = results.finetune(s.df)
  fine = fine[fine["task"] == task]
  if "test_accuracy" not in fine or fine["test_accuracy"].isna().all():
    return []
  means = fine.groupby(["state", "strategy"])["test_accuracy"].mean().to_dict()
  out = ["", "Against test accuracy (the decision at logit 0, or the argmax):", "",
         "| score | strategy | states | Pearson | Kendall |", "|---|---|---|---|---|"]
  for name in scores_json["scores"]:
    sign = files.score_sign(scores_json, name)
    for k in s.strategies:
      states = [n for n in s.states if n in rows and (n, k) in means
                and rows[n].get(name) is not None]
      if not states:
        continue
      c = stats.correlations([sign * rows[n][name] for n in states],
                             [means[(n, k)] for n in states], ("pearson", "kendall"))
      out.append(f"| {name} | {k} | {len(states)} | {stats.fmt(c['pearson'], 3)} | "
                 f"{stats.fmt(c['kendall'], 3)} |")
  return out


def ranking(s, *, num_resamples: int = 1000) -> list[str]:
  """The ranking harness on the same study (rank correlations with bootstrap intervals), per
  task and, where a score ran on several tasks, over all of them."""
  paths = files.score_files(s.path)
  if not paths:
    return []
  out = s.path / "ranking"
  lines = ["## Ranking harness", ""]
  try:
    md = ranking_lib.run(scores_path=paths, runs=results.records(results.finetune(s.df)),
                         out_dir=out, num_resamples=num_resamples)
  except UserError as e:
    return lines + [f"Nothing to rank: {e}", ""]
  rel = md.relative_to(s.path)
  lines += [f"Pearson, Spearman, Kendall and weighted tau, top-1 hit and regret per task, score "
            f"and strategy, with 95 % bootstrap intervals over states, and a size-aware "
            f"variant: [{rel}]({rel}).", ""]
  records = [r for r in files.read_json(out / "ranking.json") if r["task"] == ranking_lib.ALL]
  if records:
    lines += ["Over all tasks (mean of the per-task coefficients; interval: states resampled "
              "within each task):", "", "| score | strategy | layer | tasks | Spearman | "
              "Pearson | top-1 hit | regret |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
      lines.append(f"| {r['score']} | {r['strategy']} | {r['layer']} | {r['num_tasks']} | "
                   + " | ".join(stats.fmt(r[m], 3, r["ci"][m])
                                for m in ("spearman", "pearson", "top1_hit", "regret")) + " |")
    lines.append("")
  return lines + [f"![ranking]({rel.parent / 'ranking.png'})", ""]
