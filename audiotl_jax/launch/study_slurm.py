"""`audiotl study --launcher slurm` (submitit job arrays) and `--launcher tpu_vm` (one script).

SLURM: one submitit job array per step, each task one `audiotl` command line (a `StageCommand`),
the array submitted with `--dependency=afterok:<array>:<array>` on the arrays of the steps its
runs wait for, `--array=...%max_parallel` from the step's `max_parallel`, and `--requeue`. A task
is launch/slurm.sbatch's layout: one process per GPU (`--ntasks-per-node` equal to
`--gpus-per-node`, `srun --gpu-bind=none`, AUDIOTL_DISTRIBUTED=1), so every process runs the same
`audiotl` command and JAX's SLURM detection makes them one job; launch/slurm.sbatch stays the
manual way to run one stage. Near its time limit (submitit's signal, USR2) or when preempted, a
task stops its stage with SIGTERM (the stage saves the step it reached and exits 143) and
submitit requeues the same command, which resumes from the run's workdir. The job ids are kept in
W/slurm_jobs.json; running the study again submits only what is neither done nor still queued.

SLURM dependencies are between whole arrays: a fine-tuning array starts when every pre-training
of the arrays it waits for succeeded (a run-to-run edge cannot be said between two arrays, only
SLURM's `aftercorr`, task i after task i), and one failed run holds all of its dependents' array.
Runs whose selection (`--select-by`) is not made yet are held: run the study again once the
`select/*` runs are done.

TPU VM: every pending run in dependency order in W/study_tpu.sh (launchers.write_tpu_vm), which
every worker of the slice runs; it stops at the first failed run.
"""
import getpass
import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import submitit

from audiotl_jax import fileio
from audiotl_jax.errors import UserError
from audiotl_jax.launch import launchers, study as study_lib

GPU_STAGES = ("pretrain", "finetune", "embed", "score")
SAVE_SECONDS = 100  # how long a stopped stage may take to save (submitit signals 120 s ahead)


class StageCommand(submitit.helpers.Checkpointable):
  """One `audiotl` command as an array task; requeued as the same command when stopped."""

  def __init__(self, audiotl: str):
    self.audiotl = audiotl
    self._proc = None

  def __call__(self, args: list, log: str):
    # Every task of the job runs the command; the first one's output goes to the run's log.
    main = os.environ.get("SLURM_PROCID", "0") == "0"
    out = open(log, "a") if main else None  # pylint: disable=consider-using-with
    try:
      self._proc = subprocess.Popen([self.audiotl, *args], stdout=out,
                                    stderr=subprocess.STDOUT if out else None,
                                    preexec_fn=_ignore_requeue_signal)
      code = self._proc.wait()
    finally:
      if out:
        out.close()
    if code:
      raise RuntimeError(f"audiotl {args[0]} exited with {code}; log: {log}")
    return code

  def checkpoint(self, args: list, log: str):
    """Stops the stage so it saves (SIGTERM: it saves the step it reached and exits), then
    resubmits the same command: the stage resumes from its workdir."""
    proc = self._proc
    if proc is not None and proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
      try:
        proc.wait(timeout=SAVE_SECONDS)
      except subprocess.TimeoutExpired:
        pass
    return submitit.helpers.DelayedSubmission(StageCommand(self.audiotl), args, log)

  def __getstate__(self):
    return {"audiotl": self.audiotl, "_proc": None}


def _ignore_requeue_signal():
  # The stage must not die of the signal that tells submitit to requeue (its default action is
  # to terminate); it is stopped with SIGTERM, which it handles by saving, from `checkpoint`.
  name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
  signal.signal(getattr(signal, f"SIG{name}", signal.SIGUSR2), signal.SIG_IGN)


def hold(runs: list) -> None:
  """Holds the runs that wait for a selection not made yet (and what waits for them)."""
  by_name = {r.name: r for r in runs}
  for run in runs:
    if run.status != "pending":
      continue
    waiting = [d for d in run.after if d.startswith("select/")
               and by_name[d].status not in ("done", "finished")]
    if waiting:
      run.status, run.blocked_by = "held", f"{waiting[0]} (selection not made yet)"
    else:
      study_lib.block(run, by_name, ("held",))


def _queued(arrays: set) -> set:
  """The arrays among `arrays` still in SLURM's queue (none where squeue cannot say)."""
  if not arrays:
    return set()
  try:
    out = subprocess.run(["squeue", "-h", "-o", "%F", "-u", getpass.getuser()],
                         capture_output=True, text=True, timeout=60)
  except (OSError, subprocess.TimeoutExpired):
    return set()
  return set(out.stdout.split()) & arrays if out.returncode == 0 else set()


def _parameters(study, step: str, stage: str, runs: list, deps: list) -> dict:
  gpu = stage in GPU_STAGES
  setup = [f"# {i}: {shlex.join(['audiotl', *r.args])}" for i, r in enumerate(runs)]
  setup += [f"cd {shlex.quote(str(Path.cwd()))}",
            "export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"]
  if gpu:
    setup += [launchers.layout_check(f"study step {step}"), "export AUDIOTL_DISTRIBUTED=1"]
  params = dict(job_name=f"audiotl-{step}", time=24 * 60, nodes=1, cpus_per_task=8,
                ntasks_per_node=4 if gpu else 1, signal_delay_s=120, stderr_to_stdout=True,
                array_parallelism=study.steps.get(step, {}).get("max_parallel") or len(runs),
                setup=setup)
  if gpu:
    params.update(gpus_per_node=4, srun_args=["--kill-on-bad-exit=1", "--gpu-bind=none"])
  for extra in (study.config.get("slurm"), study.steps.get(step, {}).get("slurm")):
    params.update(dict(extra or {}))
  params["additional_parameters"] = {"requeue": True, **(params.get("additional_parameters") or {})}
  if deps:
    params["dependency"] = "afterok:" + ":".join(deps)
  return params


def submit(study, runs: list) -> int:
  """Submits one job array per step of the pending runs; writes W/slurm_jobs.json."""
  workdir = study.workdir
  hold(runs)
  path = workdir / "slurm_jobs.json"
  previous = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
  queued = _queued({v["array"] for v in previous.values()})
  record = {"runs": {n: v for n, v in previous.items() if v["array"] in queued}, "arrays": []}
  array_of = {n: v["array"] for n, v in record["runs"].items()}
  by_name = {r.name: r for r in runs}
  groups = {}
  for run in runs:
    if run.status in ("pending", "running") and run.name in array_of:
      run.status = "submitted"  # still queued (or running) from an earlier submission
    elif run.status == "pending" and not study_lib.block(run, by_name, ("running", "blocked")):
      groups.setdefault(run.step, []).append(run)  # (a run going on outside SLURM: blocked)
  audiotl = os.environ.get("AUDIOTL", str(launchers.AUDIOTL_BIN))
  for step, group in groups.items():
    deps = list(dict.fromkeys(array_of[d] for r in group for d in r.after if d in array_of))
    params = _parameters(study, step, group[0].stage, group, deps)
    logs = [str(workdir / "logs" / f"{r.name}.log") for r in group]
    (workdir / "logs" / step).mkdir(parents=True, exist_ok=True)
    try:
      executor = submitit.SlurmExecutor(folder=workdir / "slurm" / step)
      executor.update_parameters(**params)
      jobs = executor.map_array(StageCommand(audiotl), [r.args for r in group], logs)
    except RuntimeError as e:  # submitit's "Could not detect srun", or sbatch's refusal
      first = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise UserError(f"--launcher slurm, step {step!r}: {first}") from None
    except ValueError as e:    # an unknown parameter in a `slurm` dict
      raise UserError(f"study config {study.path}: slurm parameters of step {step!r}: "
                      f"{' '.join(str(e).split())[:300]}") from None
    array = jobs[0].job_id.split("_")[0]
    for run, job, log in zip(group, jobs, logs):
      run.status, run.log = "submitted", log
      array_of[run.name] = array
      record["runs"][run.name] = {"array": array, "job": job.job_id, "step": step, "log": log}
    record["arrays"].append({"step": step, "array": array, "runs": [r.name for r in group],
                             "dependency": params.get("dependency")})
    print(f"study: {step}: {len(group)} run(s) as SLURM job {array}"
          + (f", after {params['dependency']}" if deps else ""))
  fileio.write_json(path, record, indent=2)
  _report_left(runs)
  print(f"study: job ids in {path}; `audiotl study ... --status` shows progress")
  return 0


def write_tpu(study, runs: list) -> int:
  hold(runs)
  todo = [r for r in runs if r.status == "pending"]
  _report_left(runs)
  if not todo:
    print("study: nothing to run")
    return 0
  path = launchers.write_tpu_vm(todo, study.workdir, study.spec, kind="study")
  print(f"study: {len(todo)} runs in {path}; on every worker:\n  gcloud compute tpus tpu-vm ssh "
        f"$TPU --zone $ZONE --worker=all --command \"bash {path}\"")
  return 0


def _report_left(runs: list) -> None:
  for run in runs:
    if run.status in ("held", "blocked"):
      print(f"study: {run.name} {run.status}: {run.blocked_by}")
  if any(r.status == "held" for r in runs):
    print("study: run the same command again once the select/* runs are done: it submits the "
          "held runs")
