"""The files the analysis reads: each run's `results.json` and `audiotl score`'s `scores.json`."""
import json

from audiotl_jax import fileio

RESULTS = "results.json"  # what every stage writes into its workdir when it finishes
SCORES = "scores.json"  # the file `audiotl score` writes into its workdir


def read_json(path) -> dict | None:
  """The JSON file at `path`; None when there is none (a stage that has not run, or not yet)."""
  path = fileio.path(path)
  return json.loads(path.read_text()) if path.exists() else None


def score_sign(scores: dict, name: str) -> int:
  """+1 or -1 for score `name` of a scores.json: signed values are higher-is-better, so a
  positive correlation with the downstream result always means "the score ranked well"."""
  return 1 if scores["scores"][name]["higher_is_better"] else -1
