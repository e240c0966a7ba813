"""`audiotl report`: a study's runs -> tables and plots.

A study folder holds `pretrain/<state>/results.json`, `finetune/<state>-<strategy>/results.json`
and optionally `score/scores.json` (the layout `audiotl demo` writes; a sweep writes the same).
The report answers two questions: which pre-trained state transferred best with each strategy,
and did the transferability scores rank the states as fine-tuning did (Pearson and Kendall
correlation of each score with downstream accuracy, with the sign flipped for lower-is-better
scores so that a positive correlation always means "the score predicted well").
"""
from etils.epath import Path

from audiotl_jax import fileio
from audiotl_jax.analysis import files, plots, scaling
from audiotl_jax.analysis.stats import correlations, fmt
from audiotl_jax.errors import UserError


def collect(study: Path) -> dict:
  study = fileio.path(study)
  if not study.exists():
    raise UserError(f"study folder {study} does not exist")
  pre = {p.parent.name: files.read_json(p)
         for p in sorted(study.glob(f"pretrain/*/{files.RESULTS}"))}
  fine = {}
  for p in sorted(study.glob(f"finetune/*/{files.RESULTS}")):
    r = files.read_json(p)
    name = p.parent.name
    state = name[:-len(r["strategy"]) - 1] if name.endswith("-" + r["strategy"]) else name
    fine[(state, r["strategy"])] = r
  if not fine:
    raise UserError(f"no fine-tuning results under {study}/finetune/*/results.json")
  scores = files.read_json(study / "score" / files.SCORES)
  return {"pretrain": pre, "finetune": fine, "scores": scores,
          "study": files.read_json(study / "study.json") or {}}


def write_study(study: Path, *, comparisons: list) -> None:
  """Records the study's questions, `[question, state A, state B]`: is A better than B?"""
  fileio.path(study).mkdir(parents=True, exist_ok=True)
  fileio.write_json(fileio.path(study) / "study.json", {"comparisons": comparisons}, indent=2)


def write(study: Path) -> Path:
  study = fileio.resolved(study)
  data = collect(study)
  fine = data["finetune"]
  states = sorted({s for s, _ in fine}, key=lambda s: (s == "scratch", s))
  strategies = sorted({k for _, k in fine})
  metric = next(iter(fine.values()))["metric"]
  lines = [f"# Transfer study: {study.name}", ""]

  lines += ["## Pre-training", "", "| state | subset | fraction | classes | train clips | "
            "val mAP | test mAP |", "|---|---|---|---|---|---|---|"]
  for name in states:
    r = data["pretrain"].get(name) or {}
    lines.append(f"| {name} | {r.get('subset', '')} | {r.get('fraction', '')} | "
                 f"{r.get('num_classes', '')} | {r.get('num_train_clips', 'untrained')} | "
                 f"{fmt(r.get('val', {}).get('mAP'))} | {fmt(r.get('test', {}).get('mAP'))} |")

  lines += ["", f"## Downstream test {metric} (best step chosen on validation)", "",
            "| state | " + " | ".join(strategies) + " |", "|---" * (len(strategies) + 1) + "|"]
  for name in states:
    cells = [fmt(fine[(name, s)]["test"][metric]) if (name, s) in fine else "" for s in strategies]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "![downstream accuracy](downstream.png)", ""]
  plots.plot_downstream(study / "downstream.png", fine, states, strategies, metric)
  lines += scaling.section(study, data["pretrain"], fine, strategies, metric)

  if data["scores"]:
    # One layer per table: with several scored layers, keying by state alone would silently keep
    # the last. The first scored layer is reported; ranking/ covers every layer.
    layer = data["scores"]["rows"][0].get("layer")
    rows = {r["source"]: r for r in data["scores"]["rows"] if r.get("layer") == layer}
    score_names = list(data["scores"]["scores"])
    lines += ["## Transferability scores", "", f"Layer `{layer}` (every scored layer is in "
              "`ranking/`).", "", "| state | " + " | ".join(
        f"{s} ({'higher' if data['scores']['scores'][s]['higher_is_better'] else 'lower'} is "
        f"better)" for s in score_names) + " |", "|---" * (len(score_names) + 1) + "|"]
    for name in states:
      if name in rows:
        lines.append(f"| {name} | " + " | ".join(fmt(rows[name][s]) for s in score_names) + " |")
    lines += ["", "Correlation of each score with downstream test " + metric +
              " across states (sign-corrected: positive = the score ranked well):", "",
              "| score | strategy | Pearson | Kendall |", "|---|---|---|---|"]
    corr = {}
    for s in score_names:
      sign = files.score_sign(data["scores"], s)
      for k in strategies:
        names = [n for n in states if n in rows and (n, k) in fine]
        c = correlations([sign * rows[n][s] for n in names],
                         [fine[(n, k)]["test"][metric] for n in names], ("pearson", "kendall"))
        corr[(s, k)] = c
        lines.append(f"| {s} | {k} | {fmt(c['pearson'], 3)} | {fmt(c['kendall'], 3)} |")
    lines += ["", "![scores against accuracy](scores.png)", ""]
    plots.plot_scores(study / "scores.png", rows, fine, states, strategies, score_names, metric,
                      corr)

  lines += _comparisons(data, strategies, metric)
  lines += _ranking(study)
  lines += ["## Reading it", "", _verdict(data, states, strategies, metric), ""]
  path = study / "report.md"
  fileio.write_text(path, "\n".join(lines))
  fileio.write_json(study / "report.json",
                    {"finetune": {f"{s}-{k}": r for (s, k), r in fine.items()},
                     "pretrain": data["pretrain"], "scores": data["scores"]},
                    indent=2, default=str)
  return path


def _ranking(study: Path) -> list[str]:
  """The ranking harness on the same study (rank correlations with bootstrap intervals)."""
  if not (study / "score" / files.SCORES).exists():
    return []
  from audiotl_jax.analysis import ranking  # Local: only studies with scores need it.
  path = ranking.run(scores_path=study / "score", out_dir=study / "ranking",
                     finetune=[str(study / "finetune" / "*")])
  rel = path.relative_to(study)
  return ["## Ranking harness", "", f"Pearson, Spearman, Kendall and weighted tau, top-1 hit and "
          f"regret per score, with 95 % bootstrap intervals over states, and a size-aware "
          f"variant: [{rel}]({rel}).", "", f"![ranking]({rel.parent / 'ranking.png'})", ""]


def _comparisons(data, strategies, metric) -> list[str]:
  """The study's questions as a table: A against B per strategy, with a yes/no answer."""
  questions = data["study"].get("comparisons") or []
  fine = data["finetune"]
  if not questions:
    return []
  lines = ["## The questions", "", f"| question | strategy | A | B | test {metric} A | "
           f"test {metric} B | A - B | A better? |", "|---|---|---|---|---|---|---|---|"]
  for question, a, b in questions:
    for k in strategies:
      if (a, k) not in fine or (b, k) not in fine:
        continue
      va, vb = fine[(a, k)]["test"][metric], fine[(b, k)]["test"][metric]
      answer = "yes" if va > vb else ("tie" if va == vb else "no")
      lines.append(f"| {question} | {k} | {a} | {b} | {va:.3f} | {vb:.3f} | {va - vb:+.3f} | "
                   f"**{answer}** |")
  n_test = next(iter(fine.values())).get("num_test")
  lines += ["", "Differences are single runs with one seed" +
            (f" on {n_test} test clips" if n_test else "") +
            "; a sweep over seeds gives their spread.", ""]
  return lines


def _verdict(data, states, strategies, metric) -> str:
  """Plain sentences on the question the demo asks: does similarity beat dissimilarity/scale?"""
  fine, out = data["finetune"], []
  subsets = {n: (data["pretrain"].get(n) or {}).get("subset") for n in states}
  for k in strategies:
    ranked = sorted((n for n in states if (n, k) in fine),
                    key=lambda n: -fine[(n, k)]["test"][metric])
    if ranked:
      out.append(f"With `{k}`, the best state is **{ranked[0]}** "
                 f"({metric} {fine[(ranked[0], k)]['test'][metric]:.3f}); order: "
                 + " > ".join(ranked) + ".")
  if subsets:
    out.append("States and their pre-training subsets: " + ", ".join(
        f"{n} = {subsets[n] or 'none'}" for n in states) + ".")
  return " ".join(out)

