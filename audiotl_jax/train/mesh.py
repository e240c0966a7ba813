"""The device mesh and how arrays are laid out on it.

The batch is split over the `data` axis; parameters and optimizer state are replicated (data
parallelism). Parameters are created already laid out: `jax.eval_shape` gives their shapes, and a
jitted init with `out_shardings` materialises them in place, never whole on one device first.
Each process feeds only its own rows; `jax.make_array_from_process_local_data` stitches the global
batch, so the same code runs on one CPU, one GPU host or a TPU pod slice.
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from audiotl_jax.errors import UserError

DATA = "data"
# Explicit multi-process settings, for clusters jax cannot detect (TPU VMs and SLURM it can).
COORDINATOR_ENV = "AUDIOTL_COORDINATOR_ADDRESS"  # host:port of process 0
NUM_PROCESSES_ENV = "AUDIOTL_NUM_PROCESSES"
PROCESS_ID_ENV = "AUDIOTL_PROCESS_ID"


# What jax's SLURM detection needs (jax/_src/clusters/slurm_cluster.py): with these set,
# jax.distributed.initialize() restricts each process to local_device_ids=[SLURM_LOCALID].
_SLURM_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")


def _check_slurm_gpus(env) -> None:
  """Refuses a SLURM task that cannot see GPU number SLURM_LOCALID.

  JAX's SLURM detection makes process SLURM_LOCALID use device ordinal SLURM_LOCALID of the
  GPUs its task sees, so the launchers give each node one task per GPU, every task seeing all
  of the node's GPUs. A job that binds one GPU per task (--ntasks-per-gpu, --gpus-per-task)
  leaves task 3 one visible GPU, and CUDA fails later with "invalid device ordinal"; say why
  now. JAX_LOCAL_DEVICE_IDS, when set, is the user's own choice and wins in jax.
  """
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if not visible or env.get("JAX_LOCAL_DEVICE_IDS") or not all(k in env for k in _SLURM_ENV):
    return
  local, count = int(env["SLURM_LOCALID"]), len(visible.split(","))
  if local >= count:
    raise UserError(
        f"SLURM_LOCALID={local} but this task sees {count} GPU{'s' * (count != 1)} "
        f"(CUDA_VISIBLE_DEVICES={visible}); JAX uses GPU number SLURM_LOCALID, so run one task "
        f"per GPU with every task seeing its node's GPUs, as launch/slurm.sbatch does "
        f"(--ntasks-per-node=GPUs per node, srun --gpu-bind=none)")


def initialize_distributed(env=None) -> bool:
  """Starts `jax.distributed` when the environment asks for it; returns whether it did.

  `AUDIOTL_DISTRIBUTED=1` (the launchers set it): jax finds the cluster itself (TPU VM metadata,
  SLURM variables, or JAX_COORDINATOR_ADDRESS); under SLURM each process gets GPU number
  SLURM_LOCALID of its node (see `_check_slurm_gpus`). `AUDIOTL_COORDINATOR_ADDRESS=host:port`
  with `AUDIOTL_NUM_PROCESSES` and `AUDIOTL_PROCESS_ID`: an explicit cluster, e.g. plain GPU
  hosts. Must run before anything touches a jax backend.
  """
  env = os.environ if env is None else env
  address = env.get(COORDINATOR_ENV)
  if address:
    try:
      num, pid = int(env[NUM_PROCESSES_ENV]), int(env[PROCESS_ID_ENV])
    except (KeyError, ValueError):
      raise UserError(f"{COORDINATOR_ENV} is set, so {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} "
                      f"must be integers; got {env.get(NUM_PROCESSES_ENV)!r}, "
                      f"{env.get(PROCESS_ID_ENV)!r}") from None
    if not 0 <= pid < num:
      raise UserError(f"{PROCESS_ID_ENV}={pid} is not in [0, {NUM_PROCESSES_ENV}={num})")
    _check_slurm_gpus(env)  # jax still reads SLURM_LOCALID for the devices
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return True
  if env.get("AUDIOTL_DISTRIBUTED") or env.get("JAX_COORDINATOR_ADDRESS"):
    _check_slurm_gpus(env)
    jax.distributed.initialize()
    return True
  return False


def make_mesh(num_devices: int | None = None) -> Mesh:
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise UserError(f"config asks for {num_devices} devices; only {len(devices)} are visible")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def check_batch_size(batch_size: int, mesh: Mesh, key: str = "batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise UserError(f"config key {key!r} = {batch_size} must be a multiple of the {n} devices "
                    f"of the mesh")
  if batch_size % jax.process_count():
    raise UserError(f"config key {key!r} = {batch_size} must be a multiple of the "
                    f"{jax.process_count()} processes")


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """This process's rows (numpy) -> one global array per key, sharded over `data`."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def create_sharded(init_fn, mesh: Mesh, *args):
  """Runs `init_fn(*args)` under jit with every output replicated over the mesh (compiled
  through the program cache: a run's init is its first program, on the critical path)."""
  from audiotl_jax.train import aot  # pylint: disable=g-import-not-at-top
  abstract = jax.eval_shape(init_fn, *args)
  shardings = jax.tree.map(lambda _: replicated(mesh), abstract)
  return aot.compile(jax.jit(init_fn, out_shardings=shardings), *args)(*args), shardings
