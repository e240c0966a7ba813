"""The launchers of `audiotl sweep` (and the parts `audiotl study` shares: `execute` runs one run
in its own process, `write_tpu_vm` any runs in order): run the planned runs here, or write a
SLURM job array or a TPU-VM script that runs them there.

Each takes the runs still to do (see `sweep.Run`: name, args, workdir) and never decides what is
done: that is the plan's job, and every stage skips or resumes from its own workdir anyway, so a
script started twice, or a task requeued, does no work twice.
"""
import shlex
import subprocess
import sys
import time
from pathlib import Path

from audiotl_jax import fileio

# The audiotl of the environment that writes the scripts (a venv of the checkout, or wherever
# audiotl-jax is installed); AUDIOTL=... overrides it in the scripts.
AUDIOTL_BIN = Path(sys.prefix) / "bin" / "audiotl"


def clock(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m // 60}:{m % 60:02d}:{s:02d}"


def last_line(log: Path) -> str:
  lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
  return lines[-1].strip() if lines else ""


def run_local(runs: list, workdir: Path, *, record=lambda: None, executable=None) -> int:
  """Runs the pending runs one after another, each in its own process, logging to logs/.

  A failed run is recorded and the next one starts: in a long sweep one bad run must not cost
  the night. `record()` rewrites sweep.json; `executable` replaces `python -m audiotl_jax`
  (tests use a cheap stand-in).
  """
  todo = [r for r in runs if r.status in ("new", "resume")]
  t0 = time.time()
  for i, run in enumerate(todo):
    verb = "resuming" if run.status == "resume" else "starting"
    print(f"sweep: [{i + 1}/{len(todo)}] {verb} {run.name} (elapsed {clock(time.time() - t0)})",
          flush=True)
    code = execute(run, workdir / "logs" / f"{run.name}.log", executable=executable)
    if code:
      print(f"sweep: [{i + 1}/{len(todo)}] {run.name} FAILED (exit {code}): "
            f"{last_line(Path(run.log))}; log: {run.log}", flush=True)
    record()  # after every run: a killed sweep leaves a true record
  _summary(runs, time.time() - t0)
  return 1 if any(r.status == "failed" for r in runs) else 0


def execute(run, log: Path, *, executable=None, on_start=lambda pid: None) -> int:
  """Runs one run in its own process, its output in `log`; sets its status (finished or
  failed), exit code, seconds and log, and returns the exit code.

  `on_start(pid)` is called once the process is started (a study records it: a run whose
  process is alive is running). `executable` replaces `python -m audiotl_jax`."""
  executable = list(executable or [sys.executable, "-m", "audiotl_jax"])
  log = Path(log)
  log.parent.mkdir(parents=True, exist_ok=True)
  start = time.time()
  with open(log, "w") as out:
    proc = subprocess.Popen([*executable, *run.args], stdout=out, stderr=subprocess.STDOUT)
    try:
      on_start(proc.pid)
    finally:
      code = proc.wait()
  run.seconds, run.exit_code, run.log = round(time.time() - start, 1), code, str(log)
  run.status = "finished" if code == 0 else "failed"
  return code


def _summary(runs: list, seconds: float) -> None:
  count = {s: sum(r.status == s for r in runs) for s in
           ("finished", "failed", "done", "excluded")}
  print(f"sweep: {count['finished']} finished, {count['failed']} failed, {count['done']} skipped "
        f"(already done), {count['excluded']} excluded, in {clock(seconds)}")
  run_table(runs, "log", lambda r: r.log or "", status_width=9)


def run_table(runs: list, last: str, detail, *, status_width: int) -> None:
  """The per-run table a sweep and a study print at the end: name, status, seconds and
  `detail(run)` under the heading `last`."""
  width = max(len(r.name) for r in runs)
  print(f"  {'run':<{width}}  {'status':<{status_width}} {'seconds':>8}  {last}")
  for r in runs:
    secs = f"{r.seconds:.0f}" if r.seconds is not None else "-"
    print(f"  {r.name:<{width}}  {r.status:<{status_width}} {secs:>8}  {detail(r)}")


def _array_cases(todo: list) -> str:
  return "\n".join(f"  {i}) args=({shlex.join(r.args)}) ;;" for i, r in enumerate(todo))


# Why no per-task GPU binding: see launch/slurm.sbatch. JAX's SLURM detection sets each
# process's local_device_ids to [SLURM_LOCALID], an ordinal among the GPUs the task sees, so every
# task must see all of its node's GPUs and there must be one task per GPU.
def layout_check(script: str) -> str:
  """Shell lines that stop a job whose node has other than one task per GPU."""
  return f"""\
tasks=${{SLURM_NTASKS_PER_NODE:-}}; gpus=${{SLURM_GPUS_ON_NODE:-}}
if [ -n "$tasks" ] && [ -n "$gpus" ] && [ "$tasks" != "$gpus" ]; then
  echo "{script}: $tasks tasks per node but $gpus GPUs per node;" \\
    "give --ntasks-per-node=$gpus" >&2
  exit 2
fi"""


_SLURM_LAYOUT = layout_check("sweep.sbatch")


def write_slurm(todo: list, workdir: Path, spec: str, *, max_parallel: int = 0) -> Path:
  """A SLURM job array with launch/slurm.sbatch's conventions; the commands are inside the
  script, so re-planning the sweep (which rewrites runs.txt) cannot shift a queued task."""
  logs = (workdir / "logs").resolve()
  logs.mkdir(parents=True, exist_ok=True)  # SLURM does not create the --output folder
  throttle = f"%{max_parallel}" if max_parallel else ""
  path = workdir / "sweep.sbatch"
  fileio.write_text(path, f"""#!/usr/bin/env bash
# audiotl sweep --config {spec}
# {len(todo)} runs as a SLURM job array: task i runs line i+1 of runs.txt. The defaults give each
# array task one 4-GPU node; for other nodes set both counts when submitting, e.g.
#   sbatch --nodes=1 --gpus-per-node=8 --ntasks-per-node=8 {path}
# As launch/slurm.sbatch: one process per GPU, each seeing its node's GPUs (JAX picks device
# SLURM_LOCALID), AUDIOTL_DISTRIBUTED=1, requeue-safe (a requeued task resumes from its
# workdir; a finished run returns at once). Set AUDIOTL to another binary.
#SBATCH --job-name=audiotl-sweep
#SBATCH --array=0-{len(todo) - 1}{throttle}
#SBATCH --gpus-per-node=4
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --output={logs}/%x-%A_%a.out
set -euo pipefail
cd {shlex.quote(str(Path.cwd()))}
{_SLURM_LAYOUT}
export AUDIOTL_DISTRIBUTED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${{XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}}
AUDIOTL=${{AUDIOTL:-{shlex.quote(str(AUDIOTL_BIN))}}}
case "$SLURM_ARRAY_TASK_ID" in
{_array_cases(todo)}
  *) echo "sweep.sbatch: no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;
esac
srun --kill-on-bad-exit=1 --gpu-bind=none "$AUDIOTL" "${{args[@]}}"
""")
  return path


def write_tpu_vm(todo: list, workdir: Path, spec: str, *, kind: str = "sweep") -> Path:
  """A script every worker of a TPU slice runs: the same runs in the same order, each one
  multi-host job, with launch/tpu_vm.sh's set-up and environment.

  The first failed run stops the script on that worker with the run's exit status: the
  workers' processes form one job, so a worker that went on to the next run would start it
  without the others and wait in its first collective. The failure stops the other workers'
  processes too (jax.distributed's health checks end a job whose process died), so each script
  stops at the same run.
  """
  path = workdir / f"{kind}_tpu.sh"
  lines = "\n".join(f"run {shlex.quote(r.name)} {shlex.join(r.args)}" for r in todo)
  fileio.write_text(path, f"""#!/usr/bin/env bash
# audiotl {kind} --config {spec}
# {len(todo)} runs, one after another, on every worker of a TPU VM slice:
#   gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command "bash {path.resolve()}"
# The first failed run stops this script with its exit status, so gcloud's --worker=all exits
# non-zero too, and no worker starts a run the others are not in. Running this again resumes
# (finished runs return at once, partial ones continue from their checkpoints). Set AUDIOTL to
# another binary.
set -uo pipefail
cd {shlex.quote(str(Path.cwd()))}
AUDIOTL=${{AUDIOTL:-{shlex.quote(str(AUDIOTL_BIN))}}}
# launch/tpu_vm.sh (run from the checkout) creates the venv with jax[tpu] when it is missing.
[ -x "$AUDIOTL" ] || bash launch/tpu_vm.sh --help > /dev/null
export AUDIOTL_DISTRIBUTED=1
done_runs=0
run() {{
  local name=$1 code=0; shift
  echo "{kind}: $name"
  "$AUDIOTL" "$@" || code=$?
  if [ "$code" -ne 0 ]; then
    echo "{kind}: $name FAILED (exit $code) after $done_runs of {len(todo)} runs; stopping." \
      "Fix it and re-run this script on every worker: it resumes." >&2
    exit "$code"
  fi
  done_runs=$((done_runs + 1))
}}
{lines}
echo "{kind}: {len(todo)} runs finished"
""")
  path.chmod(0o755)
  return path
