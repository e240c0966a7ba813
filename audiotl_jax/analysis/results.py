"""A study's runs as one tidy table: one row per run, the one collector every analysis reads.

A study folder W holds a folder per step and one per run under it (`W/pretrain/<state>/`,
`W/finetune/<run>/`; a step with a single run may hold its results.json itself). Run names are
not parsed: each run is identified from its own files,

  state     the folder name of results.json's `init` (a step folder or `checkpoints/`: the run
            folder above it); empty init = "scratch"; a pre-training run: its own folder name,
  task      the folder name of config.json's `data.dir` (with `@<k>-shot` for a few-shot run,
            which answers another question than the full training set),
  seed      config.json's `seed` (else results.json's); `fold` the k of a `<task>_fold<k>` folder,

and carries every metric (`test_<m>`, `val_<m>`), the other scalars of results.json (`seconds`,
`num_trainable`, `num_params`, ...; its `task`, the kind of labels, as `task_type`) and the
run's config flattened (`config.data.dir`, ...). `write_tables` saves it as W/results.parquet
and W/results.csv, which pandas and polars read directly.
"""
import functools
import json

from etils.epath import Path
import numpy as np
import pandas as pd

from audiotl_jax import fileio
from audiotl_jax.analysis import files, stats
from audiotl_jax.errors import UserError

ID = ("step", "run", "stage", "state", "task", "strategy", "seed", "fold")
FIRST = ("seconds", "num_trainable", "num_params")  # after the metrics, before the rest
SCRATCH = "scratch"  # the state of a run fine-tuned from random initialisation
UNNAMED = "downstream"  # the task of a run without config.json (older or hand-made folders)


def run_dirs(study: Path) -> list[Path]:
  """Every folder with a results.json, one or two levels below the study folder."""
  found = {p.parent for pattern in (f"*/*/{files.RESULTS}", f"*/{files.RESULTS}")
           for p in study.glob(pattern)}
  return sorted(found, key=str)


def state_of(init) -> str:
  """The pre-trained state a fine-tuning run started from, named by its run folder."""
  if not init:
    return SCRATCH
  p = fileio.path(str(init).rstrip("/"))
  if p.name.isdigit() and p.parent.name == "checkpoints":
    p = p.parent.parent
  elif p.name == "checkpoints":
    p = p.parent
  return p.name


def task_of(config: dict | None) -> tuple[str | None, int | None]:
  """(task, fold) of a run's config: its data folder's name (+ `@<k>-shot` for a few-shot run);
  a folder `<name>_fold<k>` (ESC-50's cross-validation folds, each prepared apart) is fold k of
  task `<name>`, so the folds are replicates of one task, as seeds are."""
  data = (config or {}).get("data") or {}
  if not data.get("dir"):
    return None, None
  name, fold = files.folder_task(data["dir"])
  shots = data.get("few_shot") or 0
  return (f"{name}@{shots}-shot" if shots else name), fold


def dataset_of(task: str) -> str:
  """The dataset a task is drawn from (a few-shot task's scores are the full split's)."""
  return str(task).split("@")[0]


def flatten(tree: dict, prefix: str = "config.") -> dict:
  """{"config.a.b": value}: nested dicts flattened; lists as JSON text (a cell holds one value)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = json.dumps(v) if isinstance(v, (list, tuple)) else v
  return out


def _legacy_state(name: str, strategy: str, seed) -> str:
  """Old hand-made folders without `init`: `<state>-<strategy>[-s<seed>]`."""
  for suffix in (f"-{strategy}-s{seed}", f"-{strategy}"):
    if name.endswith(suffix):
      return name[:-len(suffix)]
  return name


def row(run_dir: Path, study: Path | None = None) -> dict | None:
  """The table row of one run folder; None when it holds no results.json."""
  r = files.read_json(run_dir / files.RESULTS)
  if r is None:
    return None
  config = files.read_json(run_dir / "config.json")
  step = run_dir.name if study is not None and run_dir.parent == study else run_dir.parent.name
  stage = r.get("stage") or ("finetune" if "strategy" in r else step)
  seed = (config or {}).get("seed", r.get("seed"))
  task, fold = task_of(config)
  if "init" in r:  # a run that starts from a state: fine-tuning (or a probe)
    state, task = state_of(r["init"]), task or UNNAMED
  elif stage == "finetune":
    state, task = _legacy_state(run_dir.name, r.get("strategy"), seed), task or UNNAMED
  else:  # a state itself (pre-training, an untrained init, imported weights)
    state = run_dir.name
  out = {"step": step, "run": run_dir.name, "stage": stage, "state": state, "task": task,
         "strategy": r.get("strategy"), "seed": seed, "fold": fold}
  for split in ("test", "val"):
    out.update({f"{split}_{k}": v for k, v in (r.get(split) or {}).items()
                if isinstance(v, (int, float))})
  for k, v in r.items():
    if k in ("stage", "strategy", "seed") or isinstance(v, (dict, list)):
      continue
    out["task_type" if k == "task" else k] = v
  if stage == "finetune" and out.get("num_classes") is None:
    out["num_classes"] = _num_classes(config, run_dir)
  out["path"] = str(run_dir)
  return {**out, **flatten(config or {})}


def _num_classes(config, run_dir: Path) -> int | None:
  """The downstream class count from the prepared dataset's manifest, if it is reachable (the
  chance level the plots start their accuracy axes at). A relative `data.dir` was relative to
  where the run was started, often a few folders above the run: those are tried too."""
  d = ((config or {}).get("data") or {}).get("dir")
  if not d:
    return None
  d = fileio.path(d)
  tries = [d] if d.is_absolute() else [d, *(p / d for p in list(run_dir.parents)[:5])]
  for t in tries:
    classes = _manifest_classes(str(t))
    if classes:
      return classes
  return None


@functools.lru_cache(maxsize=64)
def _manifest_classes(folder: str) -> int | None:
  """Class count of a prepared dataset (read once per report: a study's runs share a few)."""
  manifest = files.read_json(fileio.path(folder) / "manifest.json")
  return len(manifest["classes"]) if manifest and manifest.get("classes") else None


def table(study: Path) -> pd.DataFrame:
  """One row per run of the study folder; a one-line `UserError` when there is none."""
  study = fileio.path(study)
  if not study.exists():
    raise UserError(f"study folder {study} does not exist")
  rows = [r for d in run_dirs(study) if (r := row(d, study))]
  # Steps whose runs are themselves the pre-trained states (study.json `state_steps`, e.g. the
  # NC study's source models, trained by fine-tuning from scratch): states, not transfers.
  sources = set((files.read_json(study / "study.json") or {}).get("state_steps") or ())
  for r in rows:
    if r["step"] in sources:
      r.update(stage="source", state=r["run"])
  if not rows:
    raise UserError(f"no results.json under {study}/*/*/ (no finished run)")
  return frame(rows)


def frame(rows: list[dict]) -> pd.DataFrame:
  """The rows as a table in a fixed column order, each column of one type (Parquet needs it)."""
  df = pd.DataFrame(rows)
  metrics = sorted(c for c in df if c.startswith(("test_", "val_")))
  rest = [c for c in df if c not in (*ID, *metrics, *FIRST) and not c.startswith("config.")]
  config = sorted(c for c in df if c.startswith("config."))
  df = df.reindex(columns=[*ID, *metrics, *FIRST, *rest, *config])
  for c in ("seed", "fold"):
    df[c] = pd.array([None if pd.isna(v) else int(v) for v in df[c]], dtype="Int64")
  for c in df.columns[df.dtypes == object]:
    kinds = {type(v) for v in df[c] if v is not None and not _nan(v)}
    if len(kinds) > 1:  # e.g. a config value that is a number in one run and text in another
      df[c] = [None if v is None or _nan(v) else str(v) for v in df[c]]
  return df.sort_values(["step", "run"], kind="stable").reset_index(drop=True)


def _nan(v) -> bool:
  return isinstance(v, float) and v != v


def finetune(df: pd.DataFrame) -> pd.DataFrame:
  """The transfer runs (rows with a strategy and a downstream task): fine-tunings, and probes on
  frozen embeddings (`audiotl probe`, strategy `probe:<classifier>@<layers>`), which answer the
  same question by another recipe."""
  return df[df["stage"].isin(("finetune", "probe")) & df["strategy"].notna()]


def metric_of(df: pd.DataFrame, task: str) -> str:
  """The main metric of a task's runs (results.json `metric`), e.g. accuracy or mAP."""
  metrics = finetune(df).loc[lambda d: d["task"] == task, "metric"].dropna()
  return metrics.mode().iloc[0] if len(metrics) else "accuracy"


def write_tables(study: Path, df: pd.DataFrame | None = None) -> tuple[Path, Path]:
  """W/results.parquet and W/results.csv of the study's table (built here if not given)."""
  study = fileio.path(study)
  df = table(study) if df is None else df
  parquet, csv = study / "results.parquet", study / "results.csv"
  with fileio.atomic(parquet, "wb") as f:
    df.to_parquet(f, index=False, engine="pyarrow")
  with fileio.atomic(csv, "w", newline="") as f:
    df.to_csv(f, index=False)
  return parquet, csv


def cells(df: pd.DataFrame) -> dict:
  """(task, state, strategy) -> `stats.describe` of the task's main test metric over its runs,
  with `values` (one per run), `by_seed` ((seed, fold) -> mean of its runs: what a paired test
  pairs) and `metric`."""
  out = {}
  fine = finetune(df)
  for task in fine["task"].unique():
    metric = metric_of(df, task)
    column = f"test_{metric}"
    rows = fine[fine["task"] == task]
    if column not in rows:
      continue
    for (state, strategy), g in rows.groupby(["state", "strategy"], sort=False):
      values = g[column].astype(float)
      s = stats.describe(values)
      if s is None:
        continue
      # A replicate is a seed (and fold): an unseeded run pairs with an unseeded run.
      keys = [(int(-1 if pd.isna(a) else a), int(-1 if pd.isna(b) else b))
              for a, b in zip(g["seed"], g["fold"])]
      by_seed = {}
      for k, v in zip(keys, values):
        by_seed.setdefault(k, []).append(v)
      out[(task, state, strategy)] = {
          **s, "values": stats.finite(values).tolist(), "metric": metric,
          "by_seed": {k: float(np.nanmean(v)) for k, v in by_seed.items() if np.isfinite(v).any()}}
  return out


def facts(df: pd.DataFrame, task: str) -> dict:
  """What a task's plots need to be honest: its metric, what one test clip is worth (1/num_test)
  and chance level (1/classes, for single-label accuracy)."""
  rows = finetune(df)[lambda d: d["task"] == task]
  metric = metric_of(df, task)
  mode = lambda c: rows[c].dropna().mode().iloc[0] if c in rows and rows[c].notna().any() \
      else None
  num_test, classes, kind = mode("num_test"), mode("num_classes"), mode("task_type")
  chance = 1 / classes if metric == "accuracy" and classes and kind != "multilabel" else None
  return {"metric": metric, "num_test": num_test, "clip": 1 / num_test if num_test else None,
          "chance": chance}


def records(df: pd.DataFrame) -> list[dict]:
  """The rows as plain dicts, a missing value as None (not NaN, which is truthy)."""
  return [{k: (None if not isinstance(v, (list, tuple, dict)) and pd.isna(v) else v)
           for k, v in r.items()} for r in df.to_dict("records")]
