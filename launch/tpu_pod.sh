#!/bin/bash
# One training run over a Cloud TPU pod slice (a multi-host TPU VM, e.g. v4-32): the same
# command on every worker, all of them a single JAX job.
#
#   TPU=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/shared/runs/a3b5 launch/tpu_pod.sh \
#       [--config.key=value ...]
#
# Environment: TPU, ZONE and WORKDIR (required); PROJECT (default: gcloud's); CONFIG (default
# configs/default.py); REMOTE_REPO (the repository on every worker, relative to the home
# directory or absolute; default nsegjax) and PYTHON (default .venv/bin/python inside it): set
# both up on every worker first, e.g. with `gcloud compute tpus tpu-vm ssh $TPU --worker=all
# --command='git clone ... nsegjax && cd nsegjax && python3.11 -m venv .venv && ...'`.
# NSEGJAX_DRY_RUN=1 prints the gcloud command instead of running it.
#
# WORKDIR and data.data_dir must be on storage every worker sees (Filestore / NFS, or a gcsfuse
# mount): every worker writes its part of each checkpoint, and the dataset is built once, under
# a file lock. NSEGJAX_MULTIHOST=1 makes every worker call jax.distributed.initialize(), which
# finds the slice's workers from the TPU metadata. train.batch_size and eval.batch_size must be
# multiples of the slice's chip count. Running the same command again resumes from WORKDIR.
set -euo pipefail

: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
: "${WORKDIR:?set WORKDIR to a directory every worker sees}"
CONFIG=${CONFIG:-configs/default.py}
REMOTE_REPO=${REMOTE_REPO:-nsegjax}
PYTHON=${PYTHON:-.venv/bin/python}

# Every argument quoted for the workers' shell.
train=$(printf '%q ' "$PYTHON" -m nsegjax.main "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
remote="cd $(printf '%q' "$REMOTE_REPO") && NSEGJAX_MULTIHOST=1 $train"
command=(gcloud compute tpus tpu-vm ssh "$TPU" "--zone=$ZONE" --worker=all
         "--command=$remote")
if [[ -n "${PROJECT:-}" ]]; then
  command+=("--project=$PROJECT")
fi
if [[ -n "${NSEGJAX_DRY_RUN:-}" ]]; then
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
exec "${command[@]}"
