"""`audiotl study`: the plan of the tiny study, references and cycles, the local launcher with a
stand-in stage (order, failures, blocking, skipping), --only / --exclude, --status, the SLURM
arrays through submitit with a fake sbatch, the TPU-VM script, score-guided selection, and real
runs of the tiny study."""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from audiotl_jax import cli as main_lib
from audiotl_jax import config as config_lib
from audiotl_jax.errors import UserError
from audiotl_jax.launch import study as study_lib

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs/studies/tiny.py")
PRETRAIN = ["pretrain/Human_sounds", "pretrain/Music"]
FINETUNE = [f"finetune/{s}-s{i}-linear" for s in ("Human_sounds", "Music") for i in (0, 1)]
NAMES = ["data/raw", "prepare/audioset", "prepare/speech_commands", *PRETRAIN, *FINETUNE,
         "score/speech_commands", "report/report"]

# A stand-in for `python -m audiotl_jax`: records the workdir it was given, fails for one run,
# and otherwise leaves the file by which the study knows the stage finished.
FAKE_STAGE = """\
import json, pathlib, sys
calls, fail, args = sys.argv[1], sys.argv[2], sys.argv[3:]
stage, workdir = args[0], pathlib.Path(args[args.index("--workdir") + 1])
with open(calls, "a") as f:
  f.write(str(workdir) + "\\n")
if fail and str(workdir).endswith("/" + fail):
  print("audiotl: error: stand-in failure", file=sys.stderr)
  sys.exit(3)
workdir.mkdir(parents=True, exist_ok=True)
marker, text = {"synthetic": (".synthetic.json", '{"complete": true}'),
                "prepare": ("manifest.json", "{}"), "score": ("scores.json", "{}"),
                "report": ("report.md", "# report")}.get(stage, ("results.json",
                                                                 '{"seconds": 30.0}'))
(workdir / marker).write_text(text)
"""


def plan_of(workdir: Path, *extra) -> list:
  assert main_lib.main(["study", "--config", TINY, "--workdir", str(workdir), "--dry-run",
                        *extra]) == 0
  return json.loads((workdir / "plan.json").read_text())


class Fake:
  """The stand-in stage, and the runs it was called for, by name, in order."""

  def __init__(self, tmp_path: Path, workdir: Path):
    self.script, self.calls_file = tmp_path / "fake_stage.py", tmp_path / "calls.txt"
    self.script.write_text(FAKE_STAGE)
    self.workdir = workdir

  def run(self, fail: str = "", **kwargs) -> int:
    self.calls_file.write_text("")
    return study_lib.run(TINY, self.workdir, executable=[
        sys.executable, str(self.script), str(self.calls_file), fail], **kwargs)

  def calls(self) -> list:
    by_dir = {r["workdir"]: r["name"] for r in json.loads(
        (self.workdir / "plan.json").read_text())}
    return [by_dir[line] for line in self.calls_file.read_text().splitlines()]

  def state(self) -> dict:
    return json.loads((self.workdir / "study_state.json").read_text())["runs"]


def mark_done(workdir: Path, *names) -> None:
  """Leaves each run's marker, as a finished run would."""
  markers = {"data": (".synthetic.json", '{"complete": true}'), "prepare": ("manifest.json", "{}")}
  for name in names:
    marker, text = markers.get(name.split("/")[0], ("results.json", '{"seconds": 30.0}'))
    (workdir / name).mkdir(parents=True, exist_ok=True)
    (workdir / name / marker).write_text(text)


# ------------------------------------------------------------------ the plan
def test_tiny_plan_has_the_schema_and_the_edges(tmp_path):
  w = tmp_path / "w"
  plan = plan_of(w)
  assert [r["name"] for r in plan] == NAMES
  assert all(set(r) == {"stage", "name", "args", "after", "workdir"} for r in plan)
  runs = {r["name"]: r for r in plan}
  for r in plan:
    assert r["args"][0] == r["stage"]
    assert r["args"][r["args"].index("--workdir") + 1] == r["workdir"]
    # Every dependency comes earlier in the plan: it is an order to run them in.
    assert all(NAMES.index(d) < NAMES.index(r["name"]) for d in r["after"])
  for name in FINETUNE:
    state = "pretrain/" + name.split("/")[1].split("-s")[0]
    assert runs[name]["after"] == ["prepare/speech_commands", state]  # its own state, no other
    assert f"--config.init={w / state}" in runs[name]["args"]
    assert f"--config.data.dir={w / 'prepare/speech_commands'}" in runs[name]["args"]
  assert runs["finetune/Music-s1-linear"]["workdir"] == str(w / "finetune/Music-s1-linear")
  assert "--config.seed=1" in runs["finetune/Music-s1-linear"]["args"]
  assert "--config.data.seed=1" in runs["finetune/Music-s1-linear"]["args"]  # zipped
  assert sorted(runs["score/speech_commands"]["after"]) == ["prepare/speech_commands", *PRETRAIN]
  assert f"--config.checkpoints={w / PRETRAIN[0]},{w / PRETRAIN[1]}" in runs[
      "score/speech_commands"]["args"]
  assert sorted(runs["report/report"]["after"]) == sorted(FINETUNE + ["score/speech_commands"])
  assert runs["report/report"]["args"] == ["report", "--workdir", str(w)]  # "{study}"
  assert runs["data/raw"]["args"] == ["synthetic", "--scale", "test", "--workdir",
                                      str(w / "data/raw")]
  assert f"--config.root={w / 'data/raw/speech_commands'}" in runs["prepare/speech_commands"][
      "args"]
  # Every command is one `audiotl` accepts: its flags parse and its overrides type-check.
  for r in plan:
    args = main_lib._parser().parse_args([a for a in r["args"] if not a.startswith("--config.")])
    if r["stage"] in ("prepare", "pretrain", "finetune", "score"):
      config_lib.load(args.config, [a[9:] for a in r["args"] if a.startswith("--config.")])
  assert json.loads((w / "study.json").read_text())["comparisons"] == [
      ["similar vs dissimilar branch", "Human_sounds", "Music"]]


def write_study(tmp_path, steps: str) -> str:
  path = tmp_path / "study.py"
  path.write_text("def get_config(arg=None):\n  import ml_collections\n"
                  "  c = ml_collections.ConfigDict()\n  c.description = 'x'\n"
                  f"  c.steps = {textwrap.dedent(steps).strip()}\n  return c\n")
  return str(path)


def pre(extra=""):
  return ("dict(step='pre', stage='pretrain', base='pretrain.py:model=cnn:tiny', "
          "axes=(('data.subset', ('Music', 'Animal')),), name='{subset}'" + extra + ")")


def ft(ref, extra=""):
  return ("dict(step='ft', stage='finetune', base='finetune.py:model=cnn:tiny', "
          "axes=(('init', '" + ref + "'),)" + extra + ")")


@pytest.mark.parametrize("steps,message", [
    ([pre(", after=('ft',)"), ft("@pre")],
     r"steps wait for each other in a cycle: pre -> ft -> pre$"),
    ([pre(), ft("@pree")], r"step 'ft': reference '@pree' names no step; steps: pre, ft$"),
    ([pre(), ft("@pre/Jazz")],
     r"step 'ft': reference '@pre/Jazz' names no run of step 'pre'; its runs: Music, Animal$"),
    ([pre(), ft("@pre", ", after=('prep',)")],
     r"step 'ft': `after` names 'prep', which is not a step; steps: pre, ft$"),
    (["dict(step='r', stage='report', base='x.py')"], r"stage report takes `args`"),
    (["dict(step='r', stage='reprt', args=())"], r"unknown stage 'reprt'; known: .*report"),
])
def test_bad_graphs_fail_in_one_line(tmp_path, steps, message):
  with pytest.raises(UserError, match=message) as e:
    study_lib.run(write_study(tmp_path, "[" + ", ".join(steps) + "]"), tmp_path / "w",
                  dry_run=True)
  assert "\n" not in str(e.value)


# ------------------------------------------------------------------ the local launcher
def test_local_order_failure_blocking_status_and_skipping(tmp_path, capsys):
  w = tmp_path / "w"
  fake = Fake(tmp_path, w)
  assert fake.run(fail="pretrain/Music") == 1
  blocked = ["finetune/Music-s0-linear", "finetune/Music-s1-linear", "score/speech_commands",
             "report/report"]
  # Dependency order (the plan's), past the failure; nothing that waits for it.
  assert fake.calls() == [n for n in NAMES if n not in blocked]
  state = fake.state()
  assert state["pretrain/Music"]["status"] == "failed" and state["pretrain/Music"]["exit_code"] == 3
  assert {n for n, s in state.items() if s["status"] == "blocked"} == set(blocked)
  assert {state[n]["blocked_by"] for n in blocked} == {"pretrain/Music"}
  assert all(state[n]["status"] == "finished" for n in NAMES if n not in blocked + [
      "pretrain/Music"])
  assert "stand-in failure" in (w / "logs/pretrain/Music.log").read_text()
  out = capsys.readouterr().out
  assert "pretrain/Music FAILED (exit 3)" in out and "6 finished, 1 failed, 4 blocked" in out

  assert study_lib.run(TINY, w, status=True) == 0
  table = status_table(capsys.readouterr().out)
  assert table == {"data": [1, 0, 0, 0, 0], "prepare": [2, 0, 0, 0, 0],
                   "pretrain": [1, 0, 1, 0, 0], "finetune": [2, 0, 0, 2, 0],
                   "score": [0, 0, 0, 1, 0], "report": [0, 0, 0, 1, 0]}

  # Again, without the failure: only what did not finish runs; then nothing.
  assert fake.run() == 0
  assert fake.calls() == ["pretrain/Music", *blocked]
  assert fake.run() == 0
  assert fake.calls() == []
  assert all(s["status"] in ("finished", "done") for s in fake.state().values())


def status_table(out: str) -> dict:
  lines = out.splitlines()
  head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["step"])
  assert lines[head].split() == ["step", "done", "running", "failed", "blocked", "pending"]
  return {line.split()[0]: [int(x) for x in line.split()[1:]] for line in lines[head + 1:]
          if line.startswith("  ") and not line.strip().startswith("blocked:")}


def test_only_and_exclude(tmp_path):
  w = tmp_path / "w"
  fake = Fake(tmp_path, w)
  # Selected runs whose dependencies are neither selected nor done are blocked, not run.
  assert fake.run(only=["finetune/*s1*"]) == 1
  assert fake.calls() == []
  assert fake.state()["finetune/Music-s1-linear"]["blocked_by"] == (
      "prepare/speech_commands (excluded, not done)")
  mark_done(w, "data/raw", "prepare/audioset", "prepare/speech_commands", *PRETRAIN)
  assert fake.run(only=["finetune/*s1*"], exclude=["finetune/Music*"]) == 0
  assert fake.calls() == ["finetune/Human_sounds-s1-linear"]
  assert fake.run(only=["finetune/*", "score/*"], exclude=["*s0*"]) == 0
  assert fake.calls() == ["finetune/Music-s1-linear", "score/speech_commands"]
  with pytest.raises(UserError, match=r"pattern 'finetune/Animal\*' matches no run"):
    fake.run(only=["finetune/Animal*"])


def test_status_counts_running_failed_blocked(tmp_path, capsys):
  w = tmp_path / "w"
  mark_done(w, "data/raw", "prepare/audioset", "prepare/speech_commands")
  # A live training run's lock (train/lock.py's fields), and a lock its dead holder left.
  (w / PRETRAIN[0]).mkdir(parents=True)
  (w / PRETRAIN[0] / ".lock").write_text(json.dumps({"host": socket.gethostname(),
                                                     "pid": os.getpid()}))
  dead = subprocess.Popen(["true"])
  dead.wait()
  (w / FINETUNE[1]).mkdir(parents=True)
  (w / FINETUNE[1] / ".lock").write_text(json.dumps({"host": socket.gethostname(),
                                                     "pid": dead.pid}))
  sleeper = subprocess.Popen(["sleep", "30"])
  try:
    (w / "study_state.json").write_text(json.dumps({"runs": {
        PRETRAIN[1]: {"status": "failed", "exit_code": 1},
        FINETUNE[0]: {"status": "running", "pid": sleeper.pid, "host": socket.gethostname()},
        "report/report": {"status": "running", "pid": dead.pid, "host": socket.gethostname()},
    }}))
    assert main_lib.main(["study", "--config", TINY, "--workdir", str(w), "--status"]) == 0
  finally:
    sleeper.kill()
    sleeper.wait()
  out = capsys.readouterr().out
  assert status_table(out) == {"data": [1, 0, 0, 0, 0], "prepare": [2, 0, 0, 0, 0],
                               "pretrain": [0, 1, 1, 0, 0], "finetune": [0, 1, 0, 2, 1],
                               "score": [0, 0, 0, 1, 0], "report": [0, 0, 0, 1, 0]}
  assert "blocked: finetune/Music-s0-linear, by pretrain/Music" in out
  assert not (w / "plan.json").exists()  # --status writes nothing


# ------------------------------------------------------------------ SLURM and TPU VM
FAKE_SBATCH = """\
#!/usr/bin/env bash
n=$(( $(cat "$SBATCH_LOG.count" 2>/dev/null || echo 100) + 1 ))
echo $n > "$SBATCH_LOG.count"
{ echo "=== job $n: $*"; cat "${@: -1}"; } >> "$SBATCH_LOG"
echo "Submitted batch job $n"
"""


def fake_bin(tmp_path, name: str, body: str) -> None:
  path = tmp_path / "bin" / name
  path.parent.mkdir(exist_ok=True)
  path.write_text(body if body.startswith("#!") else "#!/usr/bin/env bash\n" + body)
  path.chmod(0o755)


def test_slurm_arrays_dependencies_and_requeue(tmp_path, monkeypatch):
  submitit = pytest.importorskip("submitit")
  from audiotl_jax.launch import study_slurm
  spec = tmp_path / "study.py"  # the tiny study, its fine-tunings at most 2 at a time
  spec.write_text(f"import runpy\ndef get_config(arg=None):\n"
                  f"  c = runpy.run_path({TINY!r})['get_config'](arg)\n"
                  f"  c.steps[3]['max_parallel'] = 2\n  c.slurm = dict(partition='gpu')\n"
                  f"  return c\n")
  log = tmp_path / "sbatch.log"
  fake_bin(tmp_path, "sbatch", FAKE_SBATCH)
  fake_bin(tmp_path, "srun", "exit 0\n")  # submitit looks for it to know it is on SLURM
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  monkeypatch.setenv("SBATCH_LOG", str(log))
  w = tmp_path / "w"
  mark_done(w, "data/raw")
  assert study_lib.run(str(spec), w, launcher="slurm") == 0
  jobs = {j.split(":")[0].split()[-1]: j for j in log.read_text().split("=== job ")[1:]}
  assert list(jobs) == ["101", "102", "103", "104", "105"]  # prepare ... report; data was done
  step_of = {a["array"]: a["step"] for a in json.loads((w / "slurm_jobs.json").read_text())[
      "arrays"]}
  assert step_of == {"101": "prepare", "102": "pretrain", "103": "finetune", "104": "score",
                     "105": "report"}

  def option(job, key):
    found = [line.split("=", 1)[1] for line in jobs[job].splitlines()
             if line.startswith(f"#SBATCH --{key}=")]
    return found[0] if found else None

  deps = {step_of[j]: sorted(step_of[i] for i in (option(j, "dependency") or "afterok:")[
      len("afterok:"):].split(":") if i) for j in jobs}
  assert deps == {"prepare": [], "pretrain": ["prepare"], "finetune": ["prepare", "pretrain"],
                  "score": ["prepare", "pretrain"], "report": ["finetune", "score"]}
  assert [option(j, "array") for j in jobs] == ["0-1%2", "0-1%2", "0-3%2", None, None]
  for j in jobs:
    assert "#SBATCH --requeue" in jobs[j] and option(j, "partition") == "gpu"
  finetune = jobs["103"]
  assert option("103", "gpus-per-node") == "4" and option("103", "ntasks-per-node") == "4"
  assert "--gpu-bind=none" in finetune and "export AUDIOTL_DISTRIBUTED=1" in finetune
  # What each array task runs: the plan's command lines, as submitit pickled them.
  plan = {r["name"]: r["args"] for r in json.loads((w / "plan.json").read_text())}
  for name in FINETUNE + ["report/report"]:
    record = json.loads((w / "slurm_jobs.json").read_text())["runs"][name]
    delayed = submitit.helpers.DelayedSubmission.load(
        w / "slurm" / name.split("/")[0] / f"{record['job']}_submitted.pkl")
    assert isinstance(delayed.function, study_slurm.StageCommand)
    assert list(delayed.args[0]) == plan[name] and delayed.args[1] == record["log"]
  # Again while the arrays are queued: nothing is submitted twice.
  fake_bin(tmp_path, "squeue", "printf '%s\\n' 101 102 103 104 105\n")
  assert study_lib.run(str(spec), w, launcher="slurm") == 0
  assert log.read_text().count("=== job") == 5
  # Later: prepare and pretrain done, the fine-tunings still queued, score and report gone from
  # the queue unfinished. Those two go again, the report after the queued array and the new one.
  mark_done(w, "prepare/audioset", "prepare/speech_commands", *PRETRAIN)
  fake_bin(tmp_path, "squeue", "echo 103\n")
  assert study_lib.run(str(spec), w, launcher="slurm") == 0
  again = log.read_text().split("=== job ")[6:]
  assert [j.split(":")[0] for j in again] == ["106", "107"]
  assert "dependency" not in again[0] and "#SBATCH --dependency=afterok:103:106" in again[1]


def test_stage_command_saves_and_requeues_the_same_command(tmp_path):
  pytest.importorskip("submitit")
  from audiotl_jax.launch import study_slurm
  audiotl = tmp_path / "audiotl"
  audiotl.write_text(f"#!/usr/bin/env bash\ntrap 'echo saved > {tmp_path}/saved.txt; exit 143' "
                     f"TERM\necho started > {tmp_path}/started.txt\n"
                     "while true; do sleep 0.05; done\n")
  audiotl.chmod(0o755)
  command = study_slurm.StageCommand(str(audiotl))
  args, log, errors = ["pretrain", "--workdir", "x"], str(tmp_path / "run.log"), []
  thread = threading.Thread(target=lambda: errors.append(_raises(command, args, log)))
  thread.start()
  for _ in range(250):
    if (tmp_path / "started.txt").exists():
      break
    time.sleep(0.02)
  again = command.checkpoint(args, log)  # what submitit calls on its requeue signal
  thread.join(10)
  assert (tmp_path / "saved.txt").exists()  # the stage was stopped so that it saves
  assert isinstance(again.function, study_slurm.StageCommand) and again.args == (args, log)
  assert again.function.audiotl == str(audiotl) and "exited with 143" in errors[0]


def _raises(fn, *args) -> str:
  try:
    fn(*args)
  except RuntimeError as e:
    return str(e)
  return ""


def test_tpu_vm_script_runs_the_pending_runs_in_order(tmp_path):
  w = tmp_path / "w"
  mark_done(w, "data/raw", "prepare/audioset")
  assert study_lib.run(TINY, w, launcher="tpu_vm") == 0
  audiotl = tmp_path / "audiotl"
  audiotl.write_text(f"#!/usr/bin/env bash\necho \"${{@: -1}}\" >> {tmp_path / 'calls.txt'}\n")
  audiotl.chmod(0o755)
  out = subprocess.run(["bash", str(w / "study_tpu.sh")], capture_output=True, text=True,
                       env=dict(os.environ, AUDIOTL=str(audiotl)), cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  by_dir = {r["workdir"]: r["name"] for r in json.loads((w / "plan.json").read_text())}
  calls = [by_dir[line] for line in (tmp_path / "calls.txt").read_text().splitlines()]
  assert calls == [n for n in NAMES if n not in ("data/raw", "prepare/audioset")]


# ------------------------------------------------------------------ score-guided selection
def fabricate_full_study(root: Path) -> None:
  """Fine-tuning results of a full study elsewhere: Human_sounds 0.6, 0.8 (mean 0.7) on 1 device;
  Music 0.9, 0.7 (mean 0.8) on 4 devices."""
  for state, accs, secs, devices in (("Human_sounds", (0.6, 0.8), (100, 120), 0),
                                     ("Music", (0.9, 0.7), (200, 220), 4)):
    for seed, (acc, sec) in enumerate(zip(accs, secs)):
      run = root / "finetune" / f"{state}-s{seed}-linear"
      run.mkdir(parents=True)
      (run / "results.json").write_text(json.dumps({
          "init": f"/elsewhere/pretrain/{state}", "strategy": "linear", "metric": "accuracy",
          "test": {"accuracy": acc}, "seconds": sec}))
      (run / "config.json").write_text(json.dumps({
          "data": {"dir": "/elsewhere/prepare/speech_commands"}, "num_devices": devices}))


@pytest.mark.parametrize("score,higher,chosen,compare", [
    ("nc_score", False, "Human_sounds", True),   # lower is better: the smaller score wins
    ("logme", True, "Music", False),
])
def test_selection_runs_only_the_top_k(tmp_path, score, higher, chosen, compare):
  w, full = tmp_path / "w", tmp_path / "full"
  fabricate_full_study(full)
  mark_done(w, "data/raw", "prepare/audioset", "prepare/speech_commands", *PRETRAIN)
  select = w / "select/speech_commands"
  select.mkdir(parents=True)
  (select / "scores.json").write_text(json.dumps({
      "scores": {score: {"higher_is_better": higher}},
      "rows": [{"source": "Human_sounds", "layer": "embedding", score: 0.9},
               {"source": "Music", "layer": "embedding", score: 1.2},
               {"source": "Music", "layer": "logits", score: -5.0}]}))
  fake = Fake(tmp_path, w)
  assert fake.run(select_by=score, top_k=1, compare_with=str(full) if compare else "") == 0
  plan = {r["name"]: r for r in json.loads((w / "plan.json").read_text())}
  assert sorted(plan["select/speech_commands"]["after"]) == ["prepare/speech_commands", *PRETRAIN]
  assert f"--config.scores=('{score}',)" in plan["select/speech_commands"]["args"]
  assert all("select/speech_commands" in plan[n]["after"] for n in FINETUNE)
  ran = [n for n in FINETUNE if n.startswith(f"finetune/{chosen}")]
  assert fake.calls() == [*ran, "score/speech_commands", "report/report"]
  assert {n for n, s in fake.state().items() if s["status"] == "finished"} == set(
      ran + ["score/speech_commands", "report/report"])
  record = json.loads((w / "selection.json").read_text())
  task = record["tasks"]["speech_commands"]
  assert task["chosen"] == [chosen] and len(task["ranking"]) == 2
  assert task["not_selected"] == [n for n in FINETUNE if n not in ran]
  saved = record["compute_saved"]
  if compare:  # Music's runs measured in the full study: 200 + 220 s on 4 devices
    assert task["regret"]["linear"]["regret"] == pytest.approx(0.8 - 0.7)
    assert saved["seconds"] == 420 and saved["device_hours"] == pytest.approx(420 * 4 / 3600)
    assert not saved["estimate"]
  else:  # Human_sounds' runs estimated from this study's finished ones (30 s each, 1 device)
    assert "regret" not in task
    assert saved["seconds"] == 60 and saved["device_hours"] == pytest.approx(60 / 3600)
    assert saved["estimate"]
  assert "an estimate" in (w / "selection.md").read_text() or compare


def test_unknown_selection_score_lists_the_scores(tmp_path):
  with pytest.raises(UserError, match=r"unknown score \(--select-by\) 'logmee'; known: .*logme"):
    main_lib.main(["study", "--config", TINY, "--workdir", str(tmp_path / "w"), "--select-by",
                   "logmee", "--top-k", "1"])


# ------------------------------------------------------------------ real runs
def test_real_subset_end_to_end(prepared, tmp_path, capsys):
  """One real pre-training and one fine-tuning of it through `audiotl study`, on the session's
  prepared data, then the same command again: both done, nothing run."""
  w = tmp_path / "w"
  shutil.copytree(prepared["audioset"].parent / "raw", w / "data" / "raw")
  for name in ("audioset", "speech_commands"):
    shutil.copytree(prepared[name], w / "prepare" / name)
  argv = ["study", "--config", TINY, "--workdir", str(w), "--only", "pretrain/Human_sounds",
          "--only", "finetune/Human_sounds-s0-linear"]
  assert main_lib.main(argv) == 0, capsys.readouterr().out
  result = json.loads((w / "finetune/Human_sounds-s0-linear/results.json").read_text())
  assert result["init"] == str(w / "pretrain/Human_sounds") and "accuracy" in result["test"]
  assert (w / "pretrain/Human_sounds/results.json").exists()
  capsys.readouterr()
  assert main_lib.main(argv) == 0
  assert "study: 5 done, 6 excluded" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, capsys):
  """The whole tiny study through `audiotl study`, each run a real process, to its report."""
  w = tmp_path / "w"
  assert main_lib.main(["study", "--config", TINY, "--workdir", str(w)]) == 0
  state = json.loads((w / "study_state.json").read_text())["runs"]
  assert set(state) == set(NAMES) and {s["status"] for s in state.values()} == {"finished"}
  report = (w / "report.md").read_text()
  assert "Human_sounds" in report and "Music" in report
  capsys.readouterr()
  assert main_lib.main(["study", "--config", TINY, "--workdir", str(w)]) == 0
  assert "study: 11 done" in capsys.readouterr().out


def test_a_sigkilled_study_resumes_without_redoing_finished_runs(tmp_path):
  """The study process itself killed with SIGKILL at a random run: study_state.json and the
  runs' markers stay true, and the same command finishes the rest, running nothing twice."""
  import random
  import signal
  w = tmp_path / "w"
  script, calls = tmp_path / "fake_stage.py", tmp_path / "calls.txt"
  # The stand-in stage, slowed so the kill lands while a run is in flight.
  script.write_text("import time; time.sleep(0.3)\n" + FAKE_STAGE)
  calls.write_text("")
  driver = (f"import sys; from audiotl_jax.launch import study; sys.exit(study.run("
            f"{TINY!r}, {str(w)!r}, executable=[sys.executable, {str(script)!r}, "
            f"{str(calls)!r}, '']))")
  proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  target = random.Random().randint(2, len(NAMES) - 2)  # runs started before the kill
  deadline = time.time() + 120
  while len(calls.read_text().splitlines()) < target and time.time() < deadline:
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)  # the study and its in-flight stage, no clean-up
  proc.wait()
  started = calls.read_text().splitlines()
  finished = [d for d in started if any(Path(d, m).exists() for m in (
      "results.json", "manifest.json", ".synthetic.json", "scores.json", "report.md"))]
  assert 0 < len(finished) < len(NAMES)

  calls.write_text("")
  code = study_lib.run(TINY, w, executable=[sys.executable, str(script), str(calls), ""])
  rerun = calls.read_text().splitlines()
  assert code == 0
  assert not set(rerun) & set(finished)  # nothing finished before the kill ran again
  by_dir = {r["workdir"]: r["name"] for r in json.loads((w / "plan.json").read_text())}
  assert sorted(by_dir[d] for d in finished + rerun) == sorted(NAMES)
