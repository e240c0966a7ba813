"""The SLURM layout: one task per GPU, every task seeing its node's GPUs, so the device JAX picks
from SLURM_LOCALID exists in every task. Checked against JAX's own SLURM detection with the
environment SLURM would set; no SLURM needed."""
import os
import subprocess

import jax
import pytest
from jax._src import clusters
from jax._src.clusters import slurm_cluster

from audiotl_jax.errors import UserError
from audiotl_jax.launch import launchers
from audiotl_jax.launch.sweep import Run
from audiotl_jax.train import mesh as mesh_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPUS_ON_NODE = 4  # what `sbatch --gpus-per-node=4` gives when the script does not say
PER_TASK_BINDING = ("--ntasks-per-gpu", "--gpus-per-task")


def _options(text: str) -> dict:
  """The SLURM options a script sets: its #SBATCH lines, then its srun line's flags (srun's
  override the allocation's, as in SLURM)."""
  opts = {}
  for line in text.splitlines():
    words = line.split()
    if words[:1] == ["#SBATCH"]:
      flags = words[1:]
    elif words[:1] == ["srun"]:
      flags = [w for w in words[1:] if w.startswith("--")]
    else:
      continue
    for flag in flags:
      key, _, value = flag.partition("=")
      opts[key] = value
  return opts


def _node_layout(opts: dict) -> tuple[int, list[list[str]]]:
  """(tasks on a node, the CUDA_VISIBLE_DEVICES entries of each task) as SLURM sets them.

  Per-task binding (`--ntasks-per-gpu`, `--gpus-per-task`, `--gpu-bind=single:1`) shows task i
  only GPU i; otherwise every task of the step sees every GPU allocated on the node.
  """
  gpus = int(opts.get("--gpus-per-node", GPUS_ON_NODE))
  bind = opts.get("--gpu-bind", "")
  bound = bind != "none" and (any(k in opts for k in PER_TASK_BINDING)
                              or bind.startswith(("single", "per_task")))
  tasks = gpus if "--ntasks-per-gpu" in opts else int(opts.get("--ntasks-per-node", 1))
  all_gpus = [str(i) for i in range(gpus)]
  return tasks, [[str(i)] if bound else all_gpus for i in range(tasks)]


def _slurm_env(monkeypatch, *, ntasks: int, procid: int, localid: int, visible: list[str]):
  for key, value in dict(SLURM_JOB_ID="4242", SLURM_NTASKS=str(ntasks),
                         SLURM_PROCID=str(procid), SLURM_LOCALID=str(localid),
                         SLURM_STEP_NODELIST="gpu[07-08]", SLURM_STEP_NUM_NODES="1",
                         SLURM_GPUS_ON_NODE=str(len(visible)),
                         CUDA_VISIBLE_DEVICES=",".join(visible)).items():
    monkeypatch.setenv(key, value)
  monkeypatch.delenv("JAX_LOCAL_DEVICE_IDS", raising=False)


def _scripts(tmp_path) -> dict:
  runs = [Run(name=f"r{i}", workdir=str(tmp_path / f"r{i}"), args=["pretrain", "--workdir", "x"])
          for i in range(2)]
  generated = launchers.write_slurm(runs, tmp_path, "s.py")
  return {"launch/slurm.sbatch": open(os.path.join(REPO, "launch/slurm.sbatch")).read(),
          "sweep.sbatch": generated.read_text()}


def test_every_task_gets_a_gpu_that_exists_in_it(tmp_path, monkeypatch):
  """For each task of a node laid out as the script asks, the local device ids JAX's SLURM
  detection picks (from SLURM_LOCALID) name devices that task can see, and the node's tasks
  use each GPU once: no "invalid device ordinal", no idle GPU."""
  for name, text in _scripts(tmp_path).items():
    opts = _options(text)
    tasks, visible = _node_layout(opts)
    assert tasks == GPUS_ON_NODE, (name, opts)
    used = []
    for localid in range(tasks):
      _slurm_env(monkeypatch, ntasks=tasks, procid=localid, localid=localid,
                 visible=visible[localid])
      assert slurm_cluster.SlurmCluster.is_env_present()
      assert slurm_cluster.SlurmCluster.get_process_count() == tasks
      assert slurm_cluster.SlurmCluster.get_process_id() == localid
      assert slurm_cluster.SlurmCluster.get_coordinator_address(None, None).startswith("gpu07:")
      *_, local_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
          None, None, None, None, "slurm", 300)
      assert local_ids == [localid], name
      assert all(0 <= i < len(visible[localid]) for i in local_ids), (
          f"{name}: task {localid} sees CUDA_VISIBLE_DEVICES={','.join(visible[localid])} "
          f"but JAX asks for device ordinal {local_ids}")
      used += [visible[localid][i] for i in local_ids]
    assert sorted(used) == [str(i) for i in range(GPUS_ON_NODE)], name


def test_scripts_do_not_bind_one_gpu_per_task(tmp_path):
  for name, text in _scripts(tmp_path).items():
    opts = _options(text)
    assert not set(PER_TASK_BINDING) & set(opts), (name, opts)
    assert opts["--gpu-bind"] == "none" and opts["--ntasks-per-node"] == opts["--gpus-per-node"]


@pytest.mark.parametrize("tasks,gpus,ok", [(4, 4, True), (4, 2, False), (2, 4, False)])
def test_sbatch_refuses_tasks_that_do_not_match_the_gpus(tmp_path, tasks, gpus, ok):
  """More tasks than GPUs would leave some without a device; fewer would leave GPUs idle."""
  for name, text in _scripts(tmp_path).items():
    script = tmp_path / "job.sh"
    script.write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text("#!/usr/bin/env bash\necho srun \"$@\"\n")
    (bin_dir / "srun").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=REPO,
               SLURM_ARRAY_TASK_ID="0", SLURM_NTASKS_PER_NODE=str(tasks),
               SLURM_GPUS_ON_NODE=str(gpus), AUDIOTL="true")
    out = subprocess.run(["bash", str(script), "pretrain"], env=env, capture_output=True,
                         text=True)
    if ok:
      assert out.returncode == 0 and "srun --kill-on-bad-exit=1 --gpu-bind=none" in out.stdout, (
          name, out.stderr)
    else:
      assert out.returncode == 2 and "srun" not in out.stdout, (name, out.stdout)
      assert f"{tasks} tasks per node but {gpus} GPUs" in out.stderr, (name, out.stderr)


def test_initialize_distributed_names_a_gpu_binding_jax_cannot_use(monkeypatch):
  """One GPU bound per task (CUDA_VISIBLE_DEVICES=2 in task 2): JAX would ask for ordinal 2 of
  one device. Say so in one line, before jax.distributed starts."""
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  env = dict(AUDIOTL_DISTRIBUTED="1", SLURM_JOB_ID="4242", SLURM_NTASKS="4", SLURM_PROCID="2",
             SLURM_LOCALID="2", SLURM_STEP_NODELIST="gpu07", CUDA_VISIBLE_DEVICES="2")
  with pytest.raises(UserError, match=r"SLURM_LOCALID=2 .* 1 GPU .*slurm\.sbatch"):
    mesh_lib.initialize_distributed(env)
  assert not calls
  # The layout the launchers ask for: every task sees the node's GPUs.
  assert mesh_lib.initialize_distributed({**env, "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
  # An explicit choice of devices is the user's: JAX_LOCAL_DEVICE_IDS wins over SLURM_LOCALID.
  assert mesh_lib.initialize_distributed({**env, "JAX_LOCAL_DEVICE_IDS": "0"})
  assert len(calls) == 2
