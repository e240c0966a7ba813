"""`audiotl sweep`: expansion, key checks, skip/resume, launch scripts, and a real local sweep."""
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audiotl_jax import cli as main_lib
from audiotl_jax.launch import sweep as sweep_lib
from audiotl_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write_sweep(tmp_path, body: str, name: str = "s.py") -> str:
  """A sweep config file whose get_config sets the fields in `body`."""
  path = tmp_path / name
  path.write_text("import ml_collections\n\ndef get_config(arg=None):\n"
                  "  c = ml_collections.ConfigDict()\n"
                  + textwrap.indent(textwrap.dedent(body), "  ") + "  return c\n")
  return str(path)


PRETRAIN = """\
c.stage = "pretrain"
c.base = "pretrain.py:model=cnn:tiny"
c.axes = (("data.subset", ("Human sounds", "Music")), ("data.fraction", (0.5, 1.0)),
          ("seed", (0,)))
c.fixed = (("data.dir", "/data/as"), ("progress", False))
"""


def expand(tmp_path, body=PRETRAIN, overrides=()):
  config = sweep_lib.load(write_sweep(tmp_path, body), overrides)
  return sweep_lib.expand(config, tmp_path / "sw")


# ------------------------------------------------------------------ expansion
def test_product_names_and_commands(tmp_path):
  runs = expand(tmp_path)
  assert [r.name for r in runs] == [
      "subset-Human_sounds__fraction-0.5__seed-0", "subset-Human_sounds__fraction-1.0__seed-0",
      "subset-Music__fraction-0.5__seed-0", "subset-Music__fraction-1.0__seed-0"]
  first = runs[0]
  assert first.args == [
      "pretrain", "--config", "pretrain.py:model=cnn:tiny", "--config.data.dir=/data/as",
      "--config.progress=false", "--config.data.subset=Human sounds",
      "--config.data.fraction=0.5", "--config.seed=0", "--workdir", str(first.workdir)]
  assert Path(first.workdir) == tmp_path / "sw" / first.name
  # The command string parses back into exactly the arguments, quoting and all.
  assert shlex.split(first.command) == ["audiotl", *first.args]
  # And the stage itself accepts every override with the right type.
  from audiotl_jax import config as config_lib
  cfg = config_lib.load(first.args[2], [a[len("--config."):] for a in first.args[3:-2]])
  assert cfg.data.subset == "Human sounds" and cfg.data.fraction == 0.5 and cfg.progress is False


def test_zip_template_and_config_argument_axis(tmp_path):
  runs = expand(tmp_path, """\
c.stage = "finetune"
c.base = "finetune.py:model=cnn:tiny"
c.axes = (("init", ("runs/pre/Music-1.0", "runs/pre/Animal-0.1")),
          (":strategy", ("linear", "full")), ("optim.lr", (1e-2, 1e-3)))
c.zip = ((":strategy", "optim.lr"),)
c.name = "{init}-{strategy}"
""")
  assert [r.name for r in runs] == ["Music-1.0-linear", "Music-1.0-full", "Animal-0.1-linear",
                                    "Animal-0.1-full"]
  full = runs[1]
  assert full.args[2] == "finetune.py:model=cnn:tiny,strategy=full"  # the argument, merged
  assert "--config.optim.lr=0.001" in full.args and "--config.init=runs/pre/Music-1.0" in full.args


@pytest.mark.parametrize("body,message", [
    (PRETRAIN.replace('"data.subset"', '"data.subst"'),
     r"axis key 'data.subst'.*did you mean 'data.subset'"),
    (PRETRAIN.replace('"progress", False', '"batch_sze", 4'),
     r"fixed key 'batch_sze'.*did you mean 'batch_size'"),
    (PRETRAIN.replace("(0.5, 1.0)", "(0.5, 'half')"), r"data.fraction: expected a number"),
    (PRETRAIN.replace('("seed", (0,))', '(":modl", ("cnn:S",))'), r"config argument 'modl'"),
    (PRETRAIN + "c.axis = ()\n", r"unknown field\(s\) 'axis'"),
    (PRETRAIN + 'c.zip = (("data.fraction", "seed"),)\n', r"unequal lengths"),
    (PRETRAIN + 'c.zip = (("data.fractoin", "seed"),)\n', r"'data.fractoin', which is not an axis"),
    (PRETRAIN + 'c.name = "{subset}"\n', r"share workdir name"),
    (PRETRAIN + 'c.name = "{subsett}"\n', r"unknown sweep name placeholder 'subsett'"),
    (PRETRAIN.replace('"pretrain"', '"pretrian"'), r"unknown sweep stage 'pretrian'"),
    (PRETRAIN.replace('("seed", (0,))', '("seed", ())'), r"axis 'seed' needs a non-empty"),
])
def test_bad_sweeps_fail_by_name(tmp_path, body, message):
  with pytest.raises(UserError, match=message):
    expand(tmp_path, body)


def test_sweep_fields_take_overrides(tmp_path):
  runs = expand(tmp_path, overrides=["base=pretrain.py:model=cnn:S"])
  assert runs[0].args[2] == "pretrain.py:model=cnn:S"


def test_shipped_sweeps_expand(tmp_path):
  scaling = sweep_lib.expand(sweep_lib.load(str(REPO / "configs/sweeps/scaling.py")), tmp_path)
  assert len(scaling) == 7 * 4 * 3
  assert scaling[-1].name == "Channel_environment_and_background-1.0-s2"
  assert "--config.data.seed=2" in scaling[-1].args  # zipped with seed
  tiny = sweep_lib.expand(sweep_lib.load(str(REPO / "configs/sweeps/demo_tiny.py")), tmp_path)
  assert [r.name for r in tiny] == ["subset-Human_sounds", "subset-Music"]


def test_finished_chains_a_sweep(tmp_path):
  for name, done in (("a", True), ("b", False), ("c", True)):
    (tmp_path / "pre" / name).mkdir(parents=True)
    if done:
      (tmp_path / "pre" / name / "results.json").write_text("{}")
  assert sweep_lib.finished(str(tmp_path / "pre/*")) == (str(tmp_path / "pre/a"),
                                                        str(tmp_path / "pre/c"))
  spec = str(REPO / f"configs/sweeps/transfer.py:pretrained={tmp_path / 'pre'}")
  runs = sweep_lib.expand(sweep_lib.load(spec), tmp_path / "ft")
  assert [r.name for r in runs] == ["a-linear", "a-full", "c-linear", "c-full"]


# ------------------------------------------------------------------ planning and records
def mark_finished(workdir: Path):
  """What `checkpointing.finished` reads: results.json in the run's folder."""
  workdir.mkdir(parents=True)
  (workdir / "results.json").write_text(json.dumps({"test": {"mAP": 0.5}}))


def test_dry_run_skip_done_resume_and_only(tmp_path, capsys):
  spec = write_sweep(tmp_path, PRETRAIN)
  out = tmp_path / "sw"
  mark_finished(out / "subset-Music__fraction-1.0__seed-0")
  partial = out / "subset-Music__fraction-0.5__seed-0"
  (partial / "checkpoints" / "2").mkdir(parents=True)  # stopped mid-run
  assert main_lib.main(["sweep", "--config", spec, "--workdir", str(out), "--dry-run"]) == 0
  record = json.loads((out / "sweep.json").read_text())
  status = {r["name"]: r["status"] for r in record["runs"]}
  assert status == {"subset-Human_sounds__fraction-0.5__seed-0": "new",
                    "subset-Human_sounds__fraction-1.0__seed-0": "new",
                    "subset-Music__fraction-0.5__seed-0": "resume",
                    "subset-Music__fraction-1.0__seed-0": "done"}
  lines = (out / "runs.txt").read_text().splitlines()
  assert lines == [r["command"] for r in record["runs"] if r["status"] in ("new", "resume")]
  assert "4 runs: 2 new, 1 to resume, 1 done" in capsys.readouterr().out
  assert not (out / "subset-Human_sounds__fraction-0.5__seed-0").exists()  # nothing ran
  # --only: a glob, or a substring of the name.
  assert main_lib.main(["sweep", "--config", spec, "--workdir", str(out), "--dry-run",
                        "--only", "Human*0.5*"]) == 0
  record = json.loads((out / "sweep.json").read_text())
  assert [r["status"] for r in record["runs"]] == ["new", "excluded", "excluded", "done"]
  with pytest.raises(UserError, match="matches no run"):
    main_lib.main(["sweep", "--config", spec, "--workdir", str(out), "--only", "Animal"])


def test_print_launcher_prints_only_commands(tmp_path, capsys):
  spec = write_sweep(tmp_path, PRETRAIN)
  assert main_lib.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "sw"),
                        "--launcher", "print", "--config.base=pretrain.py:model=cnn:S"]) == 0
  out = capsys.readouterr()
  assert out.out.splitlines() == (tmp_path / "sw/runs.txt").read_text().splitlines()
  assert all("model=cnn:S" in line for line in out.out.splitlines())
  assert "4 runs" in out.err


# ------------------------------------------------------------------ launch scripts
def fake_bin(tmp_path, name: str, body: str) -> Path:
  path = tmp_path / "bin" / name
  path.parent.mkdir(exist_ok=True)
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(0o755)
  return path


def test_slurm_array_runs_line_i_of_runs_txt(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  spec = write_sweep(tmp_path, PRETRAIN + "c.max_parallel = 2\n")
  mark_finished(tmp_path / "sw/subset-Music__fraction-1.0__seed-0")
  assert main_lib.main(["sweep", "--config", spec, "--workdir", "sw", "--launcher", "slurm"]) == 0
  script = tmp_path / "sw/sweep.sbatch"
  text = script.read_text()
  assert "#SBATCH --array=0-2%2" in text and "export AUDIOTL_DISTRIBUTED=1" in text
  assert f"#SBATCH --output={tmp_path}/sw/logs/" in text and (tmp_path / "sw/logs").is_dir()
  assert 'srun --kill-on-bad-exit=1 --gpu-bind=none "$AUDIOTL" "${args[@]}"' in text
  # Run array task 1 with stand-ins for srun and audiotl: it must run line 2 of runs.txt.
  fake_bin(tmp_path, "srun", 'while [[ $1 == --* ]]; do shift; done; "$@"\n')
  audiotl = fake_bin(tmp_path, "audiotl", 'printf "%s\\n" audiotl "$@" "$AUDIOTL_DISTRIBUTED"\n')
  env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
             SLURM_ARRAY_TASK_ID="1", AUDIOTL=str(audiotl))
  out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
  line = (tmp_path / "sw/runs.txt").read_text().splitlines()[1]
  assert out.stdout.splitlines() == shlex.split(line) + ["1"]
  env["SLURM_ARRAY_TASK_ID"] = "3"
  assert subprocess.run(["bash", str(script)], env=env, capture_output=True).returncode == 2


def test_tpu_vm_script_runs_every_command_in_order(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  spec = write_sweep(tmp_path, PRETRAIN)
  assert main_lib.main(["sweep", "--config", spec, "--workdir", "sw", "--launcher", "tpu_vm"]) == 0
  script = tmp_path / "sw/sweep_tpu.sh"
  assert "export AUDIOTL_DISTRIBUTED=1" in script.read_text()
  audiotl = fake_bin(tmp_path, "audiotl", 'printf "%s\\n" "$@" ---- >> calls.txt\n')
  out = subprocess.run(["bash", str(script)], env=dict(os.environ, AUDIOTL=str(audiotl)),
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  calls = (tmp_path / "calls.txt").read_text().split("----\n")[:-1]
  assert [c.splitlines() for c in calls] == [
      shlex.split(line)[1:] for line in (tmp_path / "sw/runs.txt").read_text().splitlines()]
  assert "4 runs finished" in out.stdout


def test_tpu_vm_script_stops_at_the_first_failed_run(tmp_path, monkeypatch):
  """Every worker runs the same script: a worker that went on to the next run after a failure
  would start it without the others (stopped by the failure too, or still in the old run), so
  the script stops there, non-zero, and a re-run resumes."""
  monkeypatch.chdir(tmp_path)
  spec = write_sweep(tmp_path, PRETRAIN)
  assert main_lib.main(["sweep", "--config", spec, "--workdir", "sw", "--launcher", "tpu_vm"]) == 0
  script = tmp_path / "sw/sweep_tpu.sh"
  # A stand-in audiotl that logs each start and fails the 2nd run with exit 3.
  audiotl = fake_bin(tmp_path, "audiotl",
                     'echo "$*" >> starts.txt; [ "$(wc -l < starts.txt)" -ne 2 ] || exit 3\n')
  out = subprocess.run(["bash", str(script)], env=dict(os.environ, AUDIOTL=str(audiotl)),
                       capture_output=True, text=True)
  assert out.returncode == 3, (out.stdout, out.stderr)
  runs = (tmp_path / "sw/runs.txt").read_text().splitlines()
  starts = (tmp_path / "starts.txt").read_text().splitlines()
  assert starts == [" ".join(shlex.split(line)[1:]) for line in runs[:2]]  # no 3rd start
  assert out.stderr.count("FAILED") == 1 and "re-run" in out.stderr


def test_tpu_vm_sh_exits_with_the_stage_status(tmp_path):
  """launch/tpu_vm.sh runs one stage: its failure is the worker's exit status, which is what
  makes gcloud's --worker=all report it."""
  (tmp_path / "launch").mkdir()
  (tmp_path / "launch/tpu_vm.sh").write_text((REPO / "launch/tpu_vm.sh").read_text())
  fake_bin(tmp_path, "audiotl", 'echo "$AUDIOTL_DISTRIBUTED $*"; exit 5\n')
  (tmp_path / ".venv").mkdir()
  (tmp_path / ".venv/bin").symlink_to(tmp_path / "bin")
  out = subprocess.run(["bash", str(tmp_path / "launch/tpu_vm.sh"), "pretrain", "--workdir", "w"],
                       capture_output=True, text=True)
  assert out.returncode == 5 and out.stdout == "1 pretrain --workdir w\n"


# ------------------------------------------------------------------ the local launcher
FAKE_STAGE = """\
import pathlib, sys
args = sys.argv[1:]
workdir = pathlib.Path(args[args.index("--workdir") + 1])
if (workdir / "checkpoints").exists():
  print("resumed from", workdir / "checkpoints")
if "--config.data.subset=Music" in args:
  print("audiotl: error: no clips in subset 'Music'", file=sys.stderr)
  sys.exit(2)
workdir.mkdir(parents=True, exist_ok=True)
(workdir / "results.json").write_text("{}")
"""


def test_local_failure_is_recorded_and_the_others_run(tmp_path, capsys):
  """A cheap stand-in for `audiotl`, so this checks the launcher alone, in a second: a partial
  run is resumed in its own workdir, a failure is recorded and the next run still starts."""
  spec = write_sweep(tmp_path, PRETRAIN)
  out = tmp_path / "sw"
  mark_finished(out / "subset-Human_sounds__fraction-1.0__seed-0")
  (out / "subset-Human_sounds__fraction-0.5__seed-0/checkpoints/2").mkdir(parents=True)
  stage = tmp_path / "fake_stage.py"
  stage.write_text(FAKE_STAGE)
  assert sweep_lib.run(spec, out, executable=[sys.executable, str(stage)]) == 1
  record = {r["name"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}
  assert [r["status"] for r in record.values()] == ["finished", "done", "failed", "failed"]
  failed = record["subset-Music__fraction-0.5__seed-0"]
  assert failed["exit_code"] == 2 and "no clips in subset" in Path(failed["log"]).read_text()
  resumed = record["subset-Human_sounds__fraction-0.5__seed-0"]
  assert (Path(resumed["workdir"]) / "results.json").exists()
  assert "resumed from" in Path(resumed["log"]).read_text()  # same workdir, so the stage resumes
  text = capsys.readouterr().out
  assert "[1/3] resuming subset-Human_sounds__fraction-0.5__seed-0" in text
  assert "[2/3] starting" in text and "[3/3]" in text and "FAILED (exit 2)" in text
  assert "1 finished, 2 failed, 1 skipped (already done)" in text


def test_local_sweep_end_to_end(prepared, tmp_path, capsys, monkeypatch):
  """Two tiny pre-trainings through `audiotl sweep` in real subprocesses, then the same sweep
  again: everything done, nothing run."""
  monkeypatch.chdir(REPO)
  spec = f"configs/sweeps/demo_tiny.py:data={prepared['audioset']}"
  out = tmp_path / "sw"
  assert main_lib.main(["sweep", "--config", spec, "--workdir", str(out)]) == 0
  record = json.loads((out / "sweep.json").read_text())
  assert [r["status"] for r in record["runs"]] == ["finished", "finished"]
  for r in record["runs"]:
    results = json.loads((Path(r["workdir"]) / "results.json").read_text())
    assert results and Path(r["log"]).exists()
  capsys.readouterr()
  assert main_lib.main(["sweep", "--config", spec, "--workdir", str(out)]) == 0
  assert "2 done (skipped)" in capsys.readouterr().out
  assert [r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]] == ["done"] * 2
