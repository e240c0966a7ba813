"""The files the analysis reads: each run's `results.json` and `audiotl score`'s `scores.json`."""
import json
import re

from audiotl_jax import fileio

RESULTS = "results.json"  # what every stage writes into its workdir when it finishes
SCORES = "scores.json"  # the file `audiotl score` writes into its workdir
FOLD = re.compile(r"(.+)_fold(\d+)")  # ESC-50's folds are prepared apart: esc50_fold<k>


def read_json(path) -> dict | None:
  """The JSON file at `path`; None when there is none (a stage that has not run, or not yet)."""
  path = fileio.path(path)
  return json.loads(path.read_text()) if path.exists() else None


def score_sign(scores: dict, name: str) -> int:
  """+1 or -1 for score `name` of a scores.json: signed values are higher-is-better, so a
  positive correlation with the downstream result always means "the score ranked well"."""
  return 1 if scores["scores"][name]["higher_is_better"] else -1


def folder_task(folder) -> tuple[str, int | None]:
  """(task, fold) named by a prepared dataset's folder: `<name>_fold<k>` is fold k of `<name>`,
  so a task's folds are replicates of it, as seeds are."""
  name = fileio.path(str(folder).rstrip("/")).name
  m = FOLD.fullmatch(name)
  return (m[1], int(m[2])) if m else (name, None)


def score_files(study) -> list:
  """Every scores.json one or two levels below the study folder (`score/`, `score/<task>/`)."""
  study = fileio.path(study)
  return sorted({p for pattern in (f"*/{SCORES}", f"*/*/{SCORES}") for p in study.glob(pattern)},
                key=str)


def scores_task(path) -> str | None:
  """The downstream task a scores.json scored: from the config.json beside it, else from the
  dataset its embeddings were made of (`embeddings/<state>/embed_config.json`); None if neither
  says."""
  folder = fileio.path(path).parent
  config = read_json(folder / "config.json") or {}
  data = config.get("data") or {}
  if data.get("dir"):
    return folder_task(data["dir"])[0]
  for embed in sorted(folder.glob("embeddings/*/embed_config.json"), key=str):
    dataset = (read_json(embed) or {}).get("dataset")
    if dataset:
      return folder_task(dataset)[0]
  return None
