r"""`audiotl study`: a graph of sweeps (prepare -> pretrain -> finetune -> score -> report), run in
dependency order, locally, on SLURM or on a TPU VM; what is done is skipped.

  audiotl study --config configs/studies/tiny.py --workdir runs/tiny --dry-run   # plan.json
  audiotl study --config configs/studies/tiny.py --workdir runs/tiny             # run it here
  audiotl study --config configs/studies/tiny.py --workdir runs/tiny --status
  audiotl study --config configs/studies/tiny.py --workdir runs/tiny --only 'finetune/*s1*'

A study config (`configs/studies/<name>.py`, `get_config(arg)`) has `description`, `steps`, and
optionally `report` (comparisons, published, notes, state_order: written to W/study.json, which
`audiotl report` reads), `selection` (launch/study_select.py) and `slurm` (submitit parameters for
every step). A step is a dict:

  step          its name; its runs live in W/<step>/<run>/
  stage         prepare | pretrain | finetune | embed | score (config stages: the sweep fields
                `base`, `axes`, `zip`, `fixed`, `name` of launch/sweep.py; without axes one run,
                named by `name` or the step) | synthetic | report (flag stages: `args`, a tuple of
                command-line strings, one run; `--workdir` is added unless the args give one)
  after         steps whose runs must all finish first
  max_parallel  SLURM array throttle; `slurm`: submitit parameters for this step's jobs

References: a value "@<step>" in an axis is one value per run of that step (its workdir), and the
new run waits for that run; "@<step>" in `fixed` or `args` is the comma-joined workdirs of all of
the step's runs, and the run waits for them all; "@<step>/<run>" names one run. "{study}" in any
string is the study's folder. An unknown step or run, or a cycle, is a one-line error.

Statuses: pending (to run: new, or resumed from its workdir), done (its workdir holds a finished
run: launch/sweep.py's MARKERS), running (its workdir lock or study_state.json names a live
process), finished / failed (run now), blocked (waits for a failed, blocked, running or
excluded-and-not-done run; named in `blocked_by`), excluded (--only / --exclude), not_selected
(score-guided selection left it out), held (SLURM / TPU: waits for a selection not made yet),
submitted (SLURM). A report run is run again when a run it waits for finished now.

Launchers: `local` runs one run at a time, each in its own process, logs in W/logs/<step>/,
records W/study_state.json after every run, goes on past a failure and exits 1 if any run failed
or was blocked; `slurm` submits one submitit job array per step, each after the arrays it waits
for (launch/study_slurm.py; launch/slurm.sbatch stays the manual way to run one stage, with the
same one-process-per-GPU layout); `tpu_vm` writes W/study_tpu.sh for every worker of a slice.
"""
import fnmatch
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from audiotl_jax import fileio
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.launch import launchers, study_graph, study_select, sweep

LAUNCHERS = ("local", "slurm", "tpu_vm")
REFRESH = ("report",)    # stages that aggregate: run again when an input finished anew
LOCKED = ("pretrain", "finetune")  # stages that hold workdir/.lock while they train
COUNTED = ("done", "running", "failed", "blocked", "pending", "not_selected")


def run(spec: str, workdir, *, overrides=(), launcher: str = "local", dry_run: bool = False,
        status: bool = False, only=(), exclude=(), select_by: str = "", top_k: int = 0,
        select_layer: str = "embedding", compare_with: str = "", executable=None) -> int:
  """`audiotl study`: plan, then show (--dry-run, --status) or launch. Returns the exit status."""
  if launcher not in LAUNCHERS:
    raise unknown_name("launcher", launcher, LAUNCHERS)
  if (top_k or compare_with) and not select_by:
    raise UserError("--top-k and --compare-with go with --select-by SCORE")
  workdir = fileio.local_only(workdir, "a study keeps its plan, state and logs there: give it a "
                              "local --workdir")
  workdir = Path(os.path.abspath(workdir))
  study = study_graph.load(spec, workdir, overrides)
  selection = None
  if select_by:
    selection = study_select.Selection(select_by, top_k, select_layer or "embedding",
                                       compare_with)
    study_select.add_runs(study, selection)
  runs = study.runs
  state = _read_state(workdir)
  # A status report only says what failed; a launch also cannot wait for what was left out, nor
  # (but on SLURM, where a queued job is a dependency like any other) for what runs elsewhere.
  plan(runs, state, only, exclude, retry_failed=not status,
       block_on=("failed", "blocked") + (() if status else ("excluded",)) + (
           () if status or launcher == "slurm" else ("running",)))
  if selection:
    study_select.apply(selection, runs)
  if status:
    print_status(study, runs)
    return 0
  workdir.mkdir(parents=True, exist_ok=True)
  report = study.config.get("report")
  fileio.write_json(workdir / "study.json", {
      "description": study.config.get("description", ""),
      **(report.to_dict() if hasattr(report, "to_dict") else dict(report or {}))}, indent=2)
  fileio.write_json(workdir / "plan.json", [
      {"stage": r.stage, "name": r.name, "args": r.args, "after": r.after, "workdir": r.workdir}
      for r in runs], indent=2)
  if dry_run:
    _print_plan(runs, workdir)
    return 0
  if launcher == "local":
    return run_local(runs, workdir, state, selection=selection, executable=executable)
  from audiotl_jax.launch import study_slurm  # submitit: only for the launchers that use it
  if launcher == "slurm":
    return study_slurm.submit(study, runs)
  return study_slurm.write_tpu(study, runs)


# ------------------------------------------------------------------ what each run's status is
def plan(runs: list, state: dict, only=(), exclude=(), *, retry_failed: bool = True,
         block_on=("failed", "blocked", "excluded", "running")) -> None:
  """Sets every run's status from its workdir, the recorded state and the name filters; a
  pending run that waits for one with a status in `block_on` is blocked."""
  names = [r.name for r in runs]
  for pattern in [*only, *exclude]:
    if not fnmatch.filter(names, pattern):
      raise UserError(f"pattern {pattern!r} matches no run; runs are named <step>/<run>, e.g. "
                      f"{', '.join(names[:3])}")
  for run in runs:
    entry = state.get(run.name, {})
    chosen = (not only or any(fnmatch.fnmatchcase(run.name, p) for p in only)) and not any(
        fnmatch.fnmatchcase(run.name, p) for p in exclude)
    if sweep.is_done(run.stage, run.workdir):
      run.status = "done"
    elif _live(run, entry):
      run.status = "running"
    elif not retry_failed and entry.get("status") == "failed":
      run.status = "failed"
    else:
      run.status = "pending" if chosen else "excluded"
  by_name = {r.name: r for r in runs}
  for run in runs:  # in dependency order, so a blocked run's dependents see it
    if run.status == "pending":
      block(run, by_name, block_on)


def block(run, by_name: dict, on=("failed", "blocked", "excluded", "running", "held")) -> bool:
  """Marks `run` blocked (or held) if a run it waits for has one of the statuses `on`."""
  for name in run.after:
    dep = by_name[name]
    why = {"failed": name, "blocked": dep.blocked_by, "excluded": f"{name} (excluded, not done)",
           "running": f"{name} (running)", "held": f"{name} (held)"}.get(dep.status)
    if why and dep.status in on:
      run.status, run.blocked_by = ("held" if dep.status == "held" else "blocked"), why
      return True
  return False


def _live(run, entry: dict) -> bool:
  """Is a process working on `run` now: its workdir lock's holder (train/lock.py writes host and
  pid) or the process study_state.json recorded for it, alive?"""
  holders = [entry] if entry.get("status") == "running" else []
  lock = Path(run.workdir) / ".lock"
  if run.stage in LOCKED and lock.exists():
    try:
      holders.append(json.loads(lock.read_text() or "{}"))
    except (OSError, ValueError):
      pass
  return any(fileio.holder_alive(h) for h in holders if isinstance(h, dict))


# ------------------------------------------------------------------ records
def _read_state(workdir: Path) -> dict:
  path = workdir / "study_state.json"
  try:
    return fileio.read_json(path).get("runs", {}) if path.exists() else {}
  except ValueError:
    raise UserError(f"{path} is not valid JSON; delete it (the runs' workdirs say what is "
                    "done)") from None


def _write_state(workdir: Path, state: dict) -> None:
  fileio.write_json(workdir / "study_state.json", {"runs": state}, indent=2)


def _entry(run, **extra) -> dict:
  return {"status": run.status, "exit_code": run.exit_code, "seconds": run.seconds,
          "log": run.log, "blocked_by": run.blocked_by, **extra}


def print_status(study, runs: list) -> None:
  steps = list(dict.fromkeys(r.step for r in runs))
  cols = [c for c in COUNTED if c != "not_selected" or any(r.status == c for r in runs)]
  width = max(len(s) for s in steps + ["step"])
  print(f"study: {study.workdir} ({len(runs)} runs)")
  print(f"  {'step':<{width}}  " + " ".join(f"{c:>8}" for c in cols))
  for step in steps:
    mine = [r for r in runs if r.step == step]
    # `excluded` only means "not asked for this time": for the study, still to run.
    count = {c: sum(r.status == c or (c == "pending" and r.status == "excluded") for r in mine)
             for c in cols}
    print(f"  {step:<{width}}  " + " ".join(f"{count[c]:>8}" for c in cols))
  for r in runs:
    if r.status == "blocked":
      print(f"  blocked: {r.name}, by {r.blocked_by}")


def _print_plan(runs: list, workdir: Path) -> None:
  print(f"study: {len(runs)} runs; {workdir / 'plan.json'}")
  for r in runs:
    waits = f" (after {', '.join(r.after)})" if r.after else ""
    print(f"  [{r.status}] {r.name}{waits}")
    if r.status == "pending":
      print(f"    {shlex.join(['audiotl', *r.args])}")


# ------------------------------------------------------------------ the local launcher
def run_local(runs: list, workdir: Path, state: dict, *, selection=None, executable=None) -> int:
  """Runs the pending runs in order, one at a time, each in its own process."""
  by_name = {r.name: r for r in runs}
  t0 = time.time()
  todo = sum(r.status == "pending" for r in runs)
  started = 0
  for run in runs:  # blocked by the plan (what they wait for was left out): said in the record
    if run.status == "blocked":
      state[run.name] = _entry(run)
  _write_state(workdir, state)
  for run in runs:
    if run.status == "done" and run.stage in REFRESH and any(
        by_name[d].status == "finished" for d in run.after):
      run.status = "pending"  # a report of what ran before is stale now
      todo += 1
    if run.status != "pending":
      continue
    if block(run, by_name):
      print(f"study: {run.name} blocked by {run.blocked_by}", flush=True)
      state[run.name] = _entry(run)
      _write_state(workdir, state)
      continue
    started += 1
    # A report's workdir is the study's folder: never empty, never resumed.
    partial = run.stage not in REFRESH and Path(run.workdir).is_dir() and any(
        Path(run.workdir).iterdir())
    verb = "resuming" if partial else "starting"
    print(f"study: [{started}/{todo}] {verb} {run.name} (elapsed "
          f"{launchers.clock(time.time() - t0)})", flush=True)

    def on_start(pid, run=run):
      state[run.name] = {"status": "running", "pid": pid, "host": socket.gethostname(),
                         "started": time.time(), "log": str(workdir / "logs" / f"{run.name}.log")}
      _write_state(workdir, state)
    code = launchers.execute(run, workdir / "logs" / f"{run.name}.log", executable=executable,
                             on_start=on_start)
    state[run.name] = _entry(run)
    _write_state(workdir, state)  # after every run: a killed study leaves a true record
    if code:
      print(f"study: {run.name} FAILED (exit {code}): {launchers.last_line(Path(run.log))}; "
            f"log: {run.log}", flush=True)
    if selection is not None and run.step == "select" and code == 0:
      study_select.apply(selection, runs)
  if selection is not None and study_select.write(selection, runs, workdir):
    print(f"study: selection in {workdir / 'selection.md'}")
  _summary(runs, time.time() - t0)
  return 1 if any(r.status in ("failed", "blocked") for r in runs) else 0


def _summary(runs: list, seconds: float) -> None:
  count = {s: sum(r.status == s for r in runs) for s in
           ("finished", "failed", "blocked", "done", "not_selected", "excluded", "running")}
  print("study: " + ", ".join(f"{n} {s}" for s, n in count.items() if n) +
        f", in {launchers.clock(seconds)}")
  launchers.run_table(runs, "log / blocked by", lambda r: r.log or r.blocked_by or "",
                      status_width=12)
  sys.stdout.flush()
