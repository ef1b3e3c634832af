"""Multi-host: two processes on loopback train as one job; the cluster launchers run the CLI.

Two processes with two CPU devices each train as one 4-device job through the CLI; the job dies
right after a checkpoint, is started again and resumes, and must end where a single-process
4-device run of the same config ends.
"""
import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES = 2
TIMEOUT_S = 300  # per job; the whole test takes ~1-2 min on 2 cores
_DIED = 3

OVERRIDES = {
    'data.variant': 'tiny', 'data.image_size': 0, 'data.num_workers': 1,
    'model.depth': 2, 'model.base_width': 4,
    'train.batch_size': 4, 'train.num_steps': 4, 'train.log_every': 1, 'train.warmup_steps': 2,
    'train.checkpoint_every_steps': 2, 'eval.batch_size': 4, 'eval.num_overlays': 0,
}

# The CLI, except that every process exits the moment checkpoint `step` is saved: as abrupt as a
# lost node (no atexit hooks, no Orbax or distributed shutdown).
_DIE_AFTER_CHECKPOINT = """
import os, sys, time
import jax
from nsegjax import checkpoint, main
save = checkpoint.Checkpointer.save
def save_then_die(self, step, *args, **kwargs):
  save(self, step, *args, **kwargs)
  if step == {step}:
    if jax.process_index() == 0:
      time.sleep(2)  # it hosts the coordination service: the others would abort on its loss
    os._exit({code})
checkpoint.Checkpointer.save = save_then_die
sys.argv[0] = 'nsegjax.main'
main.run()
"""


def _losses(workdir) -> list[tuple[int, float]]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [(r['step'], r['loss']) for r in map(json.loads, f) if r['split'] == 'train']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_job(command: list[str], num_processes: int) -> list[tuple[int, str]]:
  """Runs one job of `num_processes` processes (4 CPU devices in all); (exit code, output) each.

  One failing process stops the job at once: the others would wait for it up to JAX's
  initialisation or heartbeat timeout.
  """
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES=str(4 // num_processes),
             # XLA's unoptimised CPU code compiles the U-Net's init in seconds instead of ~45 s
             # on 2 cores; every job here, the reference too, runs the same code.
             XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} --xla_backend_optimization_level=0')
  for key in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
              'NSEGJAX_MULTIHOST'):
    env.pop(key, None)
  if num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{_free_port()}',
               JAX_NUM_PROCESSES=str(num_processes))
  # Files, not pipes: a process must never block on a full pipe nobody reads yet.
  logs = [tempfile.TemporaryFile(mode='w+') for _ in range(num_processes)]
  procs = [subprocess.Popen(command, cwd=REPO, env=dict(env, JAX_PROCESS_ID=str(index)),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
           for index, log in enumerate(logs)]
  deadline = time.time() + TIMEOUT_S
  try:
    while any(p.poll() is None for p in procs):
      if time.time() > deadline or any(p.poll() not in (None, 0, _DIED) for p in procs):
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  results = []
  for proc, log in zip(procs, logs):
    code = proc.wait()
    log.seek(0)
    results.append((code, log.read()))
    log.close()
  return results


def _describe(results) -> str:
  return '\n'.join(f'--- process {i}: exit {code}\n{out[-3000:]}'
                   for i, (code, out) in enumerate(results))


def _cli(workdir: str, data_dir: str) -> list[str]:
  return (['--config=configs/default.py', f'--workdir={workdir}',
           f'--config.data.data_dir={data_dir}'] +
          [f'--config.{key}={value}' for key, value in OVERRIDES.items()])


def _results(workdir: str) -> dict:
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    return json.load(f)


def test_two_processes_train_resume_and_match_one_process(tmp_path):
  # A fresh data_dir: both processes build the dataset and its noise cache at once.
  data_dir, workdir = str(tmp_path / 'tfds'), str(tmp_path / 'multihost')
  flags = _cli(workdir, data_dir)
  die = [sys.executable, '-c', _DIE_AFTER_CHECKPOINT.format(step=2, code=_DIED)] + flags
  died = _run_job(die, NUM_PROCESSES)
  assert [code for code, _ in died] == [_DIED] * NUM_PROCESSES, _describe(died)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))

  resumed = _run_job([sys.executable, '-m', 'nsegjax.main'] + flags, NUM_PROCESSES)
  assert [code for code, _ in resumed] == [0] * NUM_PROCESSES, _describe(resumed)
  assert all('resumed from step 2 ' in out for _, out in resumed), _describe(resumed)
  # Progress lines and files come from process 0 only: each step is logged once.
  assert 'step 3/4' in resumed[0][1] and 'step 3/4' not in resumed[1][1], _describe(resumed)
  losses = _losses(workdir)
  assert [step for step, _ in losses] == [1, 2, 3, 4]
  # Each process checkpointed its own position in the data stream.
  data_state = os.listdir(os.path.join(workdir, 'checkpoints', '4', 'data'))
  assert sorted(f for f in data_state if f.startswith('process_')) == [
      f'process_{i}-of-{NUM_PROCESSES}.json' for i in range(NUM_PROCESSES)]

  reference = str(tmp_path / 'one_process')
  single = _run_job([sys.executable, '-m', 'nsegjax.main'] + _cli(reference, data_dir), 1)
  assert single[0][0] == 0, _describe(single)
  # Not bit-identical: gloo sums the two processes' gradients in another order than XLA's
  # in-process all-reduce, and the last-bit differences carry over to later steps.
  np.testing.assert_allclose(losses, _losses(reference), rtol=1e-5)
  got, want = _results(workdir), _results(reference)
  assert got['steps'] == want['steps'] == 4
  for key in ('dice', 'iou', 'hd95', 'assd'):
    assert got['test'][key] == pytest.approx(want['test'][key], rel=1e-4), key


# ------------------------------------------------------------------------------------------------
# Cluster launchers: valid bash that runs the real CLI with real flags
# ------------------------------------------------------------------------------------------------


def _dry_run(script: str, env: dict, *args: str) -> str:
  path = os.path.join(REPO, 'launch', script)
  subprocess.run(['bash', '-n', path], check=True, timeout=30)
  out = subprocess.run(['bash', path, *args], env=dict(os.environ, NSEGJAX_DRY_RUN='1', **env),
                       cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
  return out.stdout


def _check_cli(argv: list[str]) -> list[str]:
  """The arguments after `python -m nsegjax.main`, each a flag the CLI and its config know."""
  start = argv.index('-m')
  assert argv[start + 1] == 'nsegjax.main', argv
  args = argv[start + 2:]
  flags = dict(arg.split('=', 1) for arg in args)
  assert len(flags) == len(args) and all(a.startswith('--') for a in flags), args
  assert {f for f in flags if not f.startswith('--config.')} == {'--config', '--workdir'}
  from nsegjax import main  # pylint: disable=g-import-not-at-top
  assert {'config', 'workdir'} <= set(main.FLAGS)
  path, _, arg = flags['--config'].partition(':')
  spec = importlib.util.spec_from_file_location('launched_config', os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for flag in flags:
    if flag.startswith('--config.'):
      node = config
      for part in flag.removeprefix('--config.').split('.'):
        assert part in node, f'{flag}: no such config key'
        node = node[part]
  return args


def test_slurm_launcher_runs_the_cli_on_every_task_and_requeues():
  out = _dry_run('slurm_multinode.sh', {'CONFIG': 'configs/des.py:kvasir'},
                 '--config.train.batch_size=64', '--config.des.mc_passes=4')
  argv = shlex.split(out)
  assert argv[:2] == ['srun', '--export=ALL,NSEGJAX_MULTIHOST=1'], argv
  args = _check_cli(argv)
  assert args[-2:] == ['--config.train.batch_size=64', '--config.des.mc_passes=4']
  with open(os.path.join(REPO, 'launch', 'slurm_multinode.sh'), encoding='utf-8') as f:
    script = f.read()
  header = re.findall(r'^#SBATCH (\S+)', script, flags=re.M)
  assert '--requeue' in header and any(h.startswith('--signal=TERM@') for h in header)
  # It requeues on the exit code the CLI gives after saving on SIGTERM.
  from nsegjax import main  # pylint: disable=g-import-not-at-top
  assert f'EXIT_TERMINATED={main.EXIT_TERMINATED}' in script
  assert 'scontrol requeue "$SLURM_JOB_ID"' in script


def test_tpu_pod_launcher_runs_the_cli_on_every_worker():
  env = {'TPU': 'pod', 'ZONE': 'us-central2-b', 'WORKDIR': '/mnt/shared/run one'}
  argv = shlex.split(_dry_run('tpu_pod.sh', env, '--config.seed=3'))
  assert argv[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod'], argv
  assert '--worker=all' in argv and '--zone=us-central2-b' in argv
  [remote] = [a.removeprefix('--command=') for a in argv if a.startswith('--command=')]
  cd, rest = remote.split(' && ', 1)
  assert cd == 'cd nsegjax'
  remote_argv = shlex.split(rest)
  assert remote_argv[0] == 'NSEGJAX_MULTIHOST=1'
  args = _check_cli(remote_argv)
  assert '--workdir=/mnt/shared/run one' in args and args[-1] == '--config.seed=3'
