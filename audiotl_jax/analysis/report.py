"""`audiotl report`: a study's runs -> report.md, report.json, the results table and plots.

A study folder holds a folder per step and one per run (`pretrain/<state>/`, `finetune/<run>/`,
`score/` or `score/<task>/`; the layout `audiotl demo` and `audiotl study` write), and
optionally `study.json`:

  comparisons   [[question, state A, state B], ...]: is A better than B? Answered per task and
                strategy by a paired t-test over seeds,
  state_order   the order of the states in every table and plot (else sorted, scratch last),
  published     {"metric", "unit", "tasks", "rows": {state: {task: value}}}: a paper's table,
                shown beside ours,
  notes         lines for the report's "About the data".

Everything is computed from one table, `results.py`'s (also saved as results.parquet and
results.csv): downstream results per task as mean ± std [95 % t-interval] (n seeds), the study's
questions, the published comparison, scaling curves, and whether the transferability scores
ranked the states as fine-tuning did (correlations per task, with the sign flipped for
lower-is-better scores so that a positive correlation always means "the score predicted well";
the ranking harness per task and over all tasks). The sections are in `report_sections.py` and
`report_scores.py`; where the study exported embeddings (`audiotl score`), `layers.py` (scores
and a linear probe across depth), `similarity.py` (CKA and parameter distance between states)
and `projection.py` (2-D maps of the embeddings) add theirs.
"""
from etils.epath import Path

from audiotl_jax import fileio
from audiotl_jax.analysis import (files, guided, layers, projection, report_scores, results,
                                  scaling, similarity)
from audiotl_jax.analysis import report_sections as sections
from audiotl_jax.errors import UserError

STUDY = "study.json"


def read_study(study: Path) -> dict:
  """The study's study.json ({} when there is none)."""
  return files.read_json(fileio.path(study) / STUDY) or {}


def write_study(study: Path, *, comparisons: list | None = None, **fields) -> Path:
  """Records the study's questions, `[question, state A, state B]` (is A better than B?), and
  any other study.json field (state_order, published, notes), keeping the fields already there."""
  study = fileio.path(study)
  study.mkdir(parents=True, exist_ok=True)
  meta = read_study(study)
  if comparisons is not None:
    meta["comparisons"] = [list(c) for c in comparisons]
  meta.update(fields)
  return fileio.write_json(study / STUDY, meta, indent=2)


def order_states(states, meta: dict) -> list[str]:
  """study.json's `state_order` first (those that ran), then the rest sorted, scratch last."""
  states = set(states)
  first = [s for s in meta.get("state_order") or [] if s in states]
  rest = sorted(states - set(first), key=lambda s: (s == results.SCRATCH, s))
  return first + rest


def context(study: Path) -> sections.Study:
  """The study's table and what every section reads from it."""
  df = results.table(study)
  fine = results.finetune(df)
  if fine.empty:
    raise UserError(f"no fine-tuning results under {study} (*/*/results.json with a strategy)")
  meta = read_study(study)
  tasks = sorted(fine["task"].unique())
  cells = results.cells(df)
  states = {s for (_, s, _) in cells}
  states |= set(df.loc[df["stage"].isin(sections.STATE_STAGES), "state"])
  return sections.Study(
      path=study, df=df, meta=meta, cells=cells, tasks=tasks,
      states=order_states(states, meta), strategies=sorted(fine["strategy"].unique()),
      facts={t: results.facts(df, t) for t in tasks})


def write(study: Path, *, num_resamples: int = 1000) -> Path:
  """Writes report.md, report.json, results.{parquet,csv} and the figures into the study."""
  study = fileio.resolved(study)
  if not study.exists():
    raise UserError(f"study folder {study} does not exist")
  s = context(study)
  tables = results.write_tables(study, s.df)
  lines = [f"# Transfer study: {study.name}", ""]
  lines += sections.banner(s)
  lines += sections.about(s, tables)
  lines += sections.pretraining(s)
  lines += sections.downstream(s)
  lines += sections.questions(s)
  lines += sections.published(s)
  lines += scaling.section(study, s.df, s.tasks, s.strategies)
  lines += report_scores.transferability(s)
  lines += report_scores.ranking(s, num_resamples=num_resamples)
  lines += guided.section(s)
  folders = similarity.score_folders(study)
  if folders:
    lines += layers.section(study)
  if any((f / "embeddings").is_dir() for f in folders.values()):  # the exported embeddings
    lines += similarity.section(study)
    lines += projection.section(study)
  if (study / "selection.md").exists():  # `audiotl study --select-by`
    lines += ["## Score-guided selection", "", "Which states were fine-tuned, chosen by a "
              "transferability score, with the regret and the compute saved: "
              "[selection.md](selection.md).", ""]
  lines += ["## Reading it", "", sections.reading(s), ""]
  path = study / "report.md"
  fileio.write_text(path, "\n".join(lines))
  fileio.write_json(study / "report.json", sections.summary(s, tables), indent=2, default=str)
  return path
