#!/bin/bash
# One training run over several SLURM nodes: one process per GPU, all of them a single JAX job
# (the batch is split over every GPU of every node; the state is replicated).
#
#   cd <repo> && sbatch launch/slurm_multinode.sh [--config.key=value ...]
#   CONFIG=configs/des.py:kvasir WORKDIR=/shared/runs/des sbatch --nodes=4 launch/slurm_multinode.sh
#
# Environment (all optional): CONFIG (default configs/default.py), WORKDIR (default
# workdirs/<job name>-<job id>; a requeued job keeps its id, so it finds its checkpoints),
# PYTHON (default <repo>/.venv/bin/python), NSEGJAX_DRY_RUN=1 (print the srun command only).
# WORKDIR and data.data_dir must be on storage every node sees: every process writes its part
# of each checkpoint, and the dataset is built once, under a file lock, in data_dir.
# train.batch_size and eval.batch_size must be multiples of the number of GPUs in the job.
#
# NSEGJAX_MULTIHOST=1 makes every process call jax.distributed.initialize(), which reads the
# job from SLURM's variables: SLURM_NTASKS processes, this one SLURM_PROCID, the coordinator on
# the first node of SLURM_STEP_NODELIST (port from the job id, or $JAX_COORDINATOR_PORT), and
# GPU number SLURM_LOCALID of its node. Hence --gpus-per-node, not --gpus-per-task: each task
# must see all of its node's GPUs for JAX to pick its own.
#
# Pre-emption and time limits: --signal sends SIGTERM to every task 300 s before the time limit;
# the trainer saves a checkpoint at the next step boundary and exits 143, and this script then
# requeues the job. --requeue lets SLURM requeue it on pre-emption too. A requeued job runs this
# same script with the same job id, so the same WORKDIR, and resumes from its last checkpoint.
#
#SBATCH --job-name=nsegjax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.log
set -uo pipefail

# sbatch runs a copy of this file from its spool directory: the repository is where it was
# submitted from.
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
CONFIG=${CONFIG:-configs/default.py}
WORKDIR=${WORKDIR:-workdirs/${SLURM_JOB_NAME:-nsegjax}-${SLURM_JOB_ID:-local}}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
EXIT_TERMINATED=143  # nsegjax.main: SIGTERM ended training after a checkpoint

cd "$REPO" || exit 1
command=(srun --export=ALL,NSEGJAX_MULTIHOST=1 "$PYTHON" -m nsegjax.main "--config=$CONFIG"
         "--workdir=$WORKDIR" "$@")
if [[ -n "${NSEGJAX_DRY_RUN:-}" ]]; then
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi

echo "$(date -Is) job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): $WORKDIR"
"${command[@]}"
status=$?
if [[ $status -eq $EXIT_TERMINATED && -n "${SLURM_JOB_ID:-}" ]]; then
  echo "$(date -Is) terminated after a checkpoint; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit $status
