#!/usr/bin/env bash
# Run one audiotl stage on every worker of a TPU VM slice.
#
#   gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all \
#     --command "cd ~/audiotl-jax && bash launch/tpu_vm.sh pretrain \
#                --config configs/pretrain.py:subset=Animal --config.data.dir=gs-fuse/audioset \
#                --workdir /mnt/runs/animal"
#
# Every worker runs the same command. On TPU VMs jax.distributed.initialize() finds the
# coordinator by itself; AUDIOTL_DISTRIBUTED=1 asks audiotl to call it. Each process then reads
# its own shard of the records and feeds its local devices. The workdir must be shared storage
# (a GCS fuse mount or NFS) so that every process sees the same checkpoints.
#
# A failure stops this worker with a non-zero exit (set -e; exec hands audiotl's exit status to
# ssh), and the other workers' processes stop with it: jax.distributed's health checks end a job
# when one of its processes dies. gcloud's --worker=all then exits non-zero. Running the same
# command again resumes from the last checkpoint. For several runs in a row use
# `audiotl sweep --launcher tpu_vm`, whose script stops at the first failed run in the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/audiotl ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e . "jax[tpu]" \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
fi
export AUDIOTL_DISTRIBUTED=1
exec .venv/bin/audiotl "$@"
