"""Score-guided selection: score every pre-trained state on each task first, then fine-tune only
the top K (`audiotl study ... --select-by SCORE --top-k K`).

The study config's `selection` names `states` (the step(s) whose runs are the pre-trained
states), optional `extra_states` (fixed workdirs), `transfer` (the step(s) whose runs take a state
through the `init` key) and `task_key` (the key naming the downstream task, e.g. `data.dir`).
Per distinct task among the transfer runs the plan gains `select/<task>`: `audiotl score` of
every state on that task, which every transfer run of the task waits for. Once it is done its
scores.json ranks the states; transfer runs from states outside the top K become `not_selected`
(never run), and so do runs that take one of those runs as an axis value. `selection.json` and
`selection.md` give per task the ranking and the chosen states and, with `--compare-with` a
finished full study, the regret (best mean test metric over all states minus the best over the
chosen ones, per strategy) and the compute saved, measured there (else estimated from this
study's finished runs, and said to be an estimate).
"""
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from audiotl_jax import config as config_lib, fileio
from audiotl_jax.errors import UserError
from audiotl_jax.launch import sweep
from audiotl_jax.launch.study_graph import Run, normpath

FIELDS = ("states", "extra_states", "transfer", "task_key")
SCORE_CONFIG = "configs/score.py"


@dataclass
class Selection:
  score: str
  top_k: int
  layer: str = "embedding"
  compare_with: str = ""
  states: dict = field(default_factory=dict)  # state name (its folder's) -> workdir
  tasks: dict = field(default_factory=dict)   # task slug -> {task, select, runs}
  chosen: dict = field(default_factory=dict)  # task slug -> {ranking, chosen, higher_is_better}
  task_key: str = ""


def _steps(value, what: str, study) -> tuple:
  names = (value,) if isinstance(value, str) else tuple(value or ())
  for n in names:
    if n not in study.steps:
      raise UserError(f"study config {study.path}: selection.{what} names step {n!r}, which is "
                      f"not a step; steps: {', '.join(study.steps)}")
  if not names:
    raise UserError(f"study config {study.path}: selection.{what} is missing")
  return names


def add_runs(study, sel: Selection) -> None:
  """Adds a `select/<task>` run per task and makes the transfer runs wait for it."""
  cfg = dict(study.config.get("selection") or {})
  if not cfg:
    raise UserError(f"study config {study.path} has no `selection` ({', '.join(FIELDS)}); "
                    "--select-by needs it")
  unknown = sorted(set(cfg) - set(FIELDS))
  if unknown:
    raise UserError(f"study config {study.path}: unknown selection field(s) {unknown}; known: "
                    f"{', '.join(FIELDS)}")
  if sel.top_k < 1:
    raise UserError(f"--top-k must be at least 1 with --select-by, got {sel.top_k}")
  state_steps = _steps(cfg.get("states"), "states", study)
  transfer_steps = _steps(cfg.get("transfer"), "transfer", study)
  sel.task_key = str(cfg.get("task_key") or "")
  state_runs = [r for r in study.runs if r.step in state_steps]
  paths = [r.workdir for r in state_runs] + [
      str(cfg_path).replace("{study}", str(study.workdir)) for cfg_path in
      cfg.get("extra_states", ())]
  for p in paths:
    name = Path(normpath(p)).name  # what `audiotl score` names each state by
    if name in sel.states:
      raise UserError(f"selection states {sel.states[name]} and {p} share the folder name "
                      f"{name!r}, which is how scores.json names a state")
    sel.states[name] = normpath(p)
  transfer = [r for r in study.runs if r.step in transfer_steps]
  for r in transfer:
    if sel.task_key not in r.keys:
      raise UserError(f"selection.task_key {sel.task_key!r} is neither an axis nor fixed in step "
                      f"{r.step!r}")
    task = str(r.keys[sel.task_key])
    entry = sel.tasks.setdefault(sweep.slug(task), {"task": task, "runs": []})
    if entry["task"] != task:
      raise UserError(f"selection tasks {entry['task']} and {task} share the folder name "
                      f"{sweep.slug(task)!r}; give them distinct folder names")
    entry["runs"].append(r.name)
  names = {r.name for r in state_runs}
  by_name = {r.name: r for r in study.runs}
  added = []
  for slug, entry in sel.tasks.items():
    workdir = study.workdir / "select" / slug
    overrides = [f"checkpoints={','.join(sel.states.values())}", f"data.dir={entry['task']}",
                 f"scores={sweep.to_text((sel.score,))}", f"layers={sel.layer}", "progress=false"]
    config_lib.load(SCORE_CONFIG, overrides)  # a bad layer or path type fails here, by name
    others = [d for n in entry["runs"] for d in by_name[n].after if d not in names]
    entry["select"] = f"select/{slug}"
    added.append(Run(name=entry["select"], workdir=str(workdir), step="select", stage="score",
                     args=["score", "--config", SCORE_CONFIG, *(f"--config.{o}" for o in overrides),
                           "--workdir", str(workdir)],
                     after=list(dict.fromkeys([*names, *others])),
                     keys={"data.dir": entry["task"]}))
    for n in entry["runs"]:
      by_name[n].after.append(entry["select"])
  first = min(study.runs.index(r) for r in transfer)  # after every state run, by construction
  study.runs[first:first] = added


def apply(sel: Selection, runs: list) -> None:
  """Ranks the states of every task whose select run is done; marks the runs it leaves out."""
  by_name = {r.name: r for r in runs}
  for slug, entry in sel.tasks.items():
    select = by_name[entry["select"]]
    if slug in sel.chosen or select.status not in ("done", "finished"):
      continue
    ranking, higher = _ranking(sel, Path(select.workdir) / "scores.json")
    chosen = [s for s, _ in ranking[:sel.top_k]]
    sel.chosen[slug] = {"ranking": ranking, "chosen": chosen, "higher_is_better": higher}
    keep = {sel.states[s] for s in chosen}
    for name in entry["runs"]:
      run = by_name[name]
      init = normpath(run.keys.get("init", ""))
      if init in sel.states.values() and init not in keep and run.status == "pending":
        run.status = "not_selected"
  for run in runs:  # runs cut from a left-out run (an axis value of theirs) go with it
    if run.status == "pending" and any(by_name[f].status == "not_selected" for f in run.follows):
      run.status = "not_selected"


def _ranking(sel: Selection, path: Path):
  data = json.loads(path.read_text())
  meta = data.get("scores", {}).get(sel.score)
  if meta is None:
    has = ", ".join(data.get("scores", {}))
    raise UserError(f"{path} holds no score {sel.score!r} (it has {has}); delete {path.parent} "
                    "to score again")
  layer = sel.layer.replace(":", "_")  # the row's layer is the output name: `name_pooling`
  values = {r["source"]: float(r[sel.score]) for r in data.get("rows", [])
            if r.get("layer") == layer and r.get("source") in sel.states}
  higher = bool(meta["higher_is_better"])

  def key(state):
    v = values.get(state, math.nan)
    return (math.isnan(v), -v if higher else v)  # a state without a score ranks last
  order = sorted(sel.states, key=key)
  return [(s, values.get(s, math.nan)) for s in order], higher


# ------------------------------------------------------------------ what selection cost and saved
def write(sel: Selection, runs: list, workdir: Path) -> dict | None:
  """selection.json and selection.md for the tasks ranked so far (None if none is yet)."""
  if not sel.chosen:
    return None
  full = Path(sel.compare_with) if sel.compare_with else None
  if full is not None and not full.is_dir():
    raise UserError(f"--compare-with {full}: no such study folder")
  tasks, left_out = {}, {r.name for r in runs if r.status == "not_selected"}
  for slug, c in sel.chosen.items():
    entry = sel.tasks[slug]
    tasks[slug] = {"task": entry["task"], "select": entry["select"],
                   "ranking": [{"state": s, sel.score: v} for s, v in c["ranking"]],
                   "chosen": c["chosen"],
                   "not_selected": [n for n in entry["runs"] if n in left_out]}
    if full is not None:
      tasks[slug]["regret"] = _regret(full, sel, slug, c["chosen"], runs)
  record = {"score": sel.score, "top_k": sel.top_k, "layer": sel.layer,
            "higher_is_better": next(iter(sel.chosen.values()))["higher_is_better"],
            "compare_with": str(full) if full else None, "tasks": tasks,
            "compute_saved": _saved(full, runs)}
  fileio.write_json(workdir / "selection.json", record, indent=2)
  fileio.write_text(workdir / "selection.md", _markdown(record))
  return record


def _read(path: Path) -> dict:
  return json.loads(path.read_text()) if path.exists() else {}


def _lookup(config: dict, dotted: str):
  for part in dotted.split("."):
    config = config.get(part) if isinstance(config, dict) else None
  return config


def _regret(full: Path, sel: Selection, slug: str, chosen: list, runs: list) -> dict:
  """Per strategy: best mean test metric over all states in `full` minus the best over `chosen`."""
  steps = {r.step for r in runs if r.name in sel.tasks[slug]["runs"]}
  means = defaultdict(lambda: defaultdict(list))  # strategy -> state -> test metrics
  for step in sorted(steps):
    for result in sorted((full / step).glob("*/results.json")):
      r = json.loads(result.read_text())
      task = _lookup(_read(result.parent / "config.json"), sel.task_key)
      if task is None or sweep.slug(task) != slug or not r.get("test"):
        continue
      state = Path(normpath(r.get("init", ""))).name or "scratch"
      means[r.get("strategy", "")][state].append(float(r["test"][r["metric"]]))
  out = {}
  for strategy, by_state in sorted(means.items()):
    mean = {s: sum(v) / len(v) for s, v in by_state.items()}
    best = max(mean, key=mean.get)
    picked = [s for s in chosen if s in mean]
    best_chosen = max(picked, key=mean.get) if picked else None
    out[strategy] = {"best_state": best, "best": mean[best], "best_chosen_state": best_chosen,
                     "best_chosen": mean[best_chosen] if picked else None,
                     "regret": mean[best] - mean[best_chosen] if picked else None}
  return out


def _cost(workdir: Path) -> tuple[float, float] | None:
  """(seconds, device-seconds) of a finished run, from its results.json and config.json."""
  result = _read(workdir / "results.json")
  if "seconds" not in result:
    return None
  devices = _read(workdir / "config.json").get("num_devices") or 1
  return float(result["seconds"]), float(result["seconds"]) * devices


def _saved(full: Path | None, runs: list) -> dict:
  skipped = [r for r in runs if r.status == "not_selected"]
  costs, missing = [], []
  for run in skipped:
    if full is not None:
      cost = _cost(full / run.step / run.name.split("/", 1)[1])
    else:  # the mean of this study's finished runs of the same step
      done = [c for c in (_cost(Path(r.workdir)) for r in runs
                          if r.step == run.step and r.status in ("done", "finished")) if c]
      cost = tuple(sum(x) / len(done) for x in zip(*done)) if done else None
    (costs.append(cost) if cost else missing.append(run.name))
  seconds = sum(c[0] for c in costs)
  return {"runs": len(skipped), "seconds": seconds,
          "device_hours": sum(c[1] for c in costs) / 3600, "estimate": full is None,
          "source": (f"measured in the full study {full}" if full is not None else
                     "the mean of this study's finished runs of the same step"),
          "unknown": missing}


def _markdown(record: dict) -> str:
  hib = "higher" if record["higher_is_better"] else "lower"
  lines = [f"# Score-guided selection: {record['score']} ({hib} is better), top "
           f"{record['top_k']}, layer `{record['layer']}`", ""]
  for slug, t in record["tasks"].items():
    lines += [f"## {slug}", "", f"Task `{t['task']}`, scored by `{t['select']}`.", "",
              f"| rank | state | {record['score']} | chosen |", "|---|---|---|---|"]
    for i, row in enumerate(t["ranking"], 1):
      lines.append(f"| {i} | {row['state']} | {row[record['score']]:.4f} | "
                   f"{'yes' if row['state'] in t['chosen'] else ''} |")
    lines += ["", f"Not run: {', '.join(t['not_selected']) or 'none'}.", ""]
    if "regret" in t:
      lines += [f"Regret against {record['compare_with']} (mean test metric over seeds):", "",
                "| strategy | best state | best | best chosen state | best chosen | regret |",
                "|---|---|---|---|---|---|"]
      for k, g in t["regret"].items():
        f = (lambda x: "" if x is None else f"{x:.4f}")
        lines.append(f"| {k} | {g['best_state']} | {f(g['best'])} | "
                     f"{g['best_chosen_state'] or 'none of the chosen ran there'} | "
                     f"{f(g['best_chosen'])} | {f(g['regret'])} |")
      lines.append("")
  s = record["compute_saved"]
  lines += ["## Compute saved", "",
            f"{s['runs']} runs not run: {s['seconds']:.0f} s, {s['device_hours']:.3f} device-hours"
            f" ({'an estimate: ' if s['estimate'] else ''}{s['source']})."]
  if s["unknown"]:
    lines.append(f"No cost known for {', '.join(s['unknown'])}.")
  return "\n".join(lines) + "\n"

