"""Crash safety: non-finite steps, SIGTERM, SIGKILL at any moment, bitwise determinism.

Every run is a real `nsegjax.main` process on one tiny config (RUN; a few overrides for the
non-finite ones); interrupted and repeated runs must end exactly as one uninterrupted reference
run. The processes share a persistent XLA compilation cache, so only the reference compiles
everything and the others start in seconds. Run as a script, this file is the command line with
a method whose loss turns NaN at one step.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nsegjax import checkpoint as ckpt_lib
from nsegjax import methods, train
from nsegjax.errors import ConfigError
from test_train import REPO, TINY_OVERRIDES, as_cli_flags, read_jsonl, tiny_config

# Two checkpoints per epoch of 6 steps and one metrics record per step.
RUN = {**TINY_OVERRIDES, 'train.num_steps': 24, 'train.log_every': 1,
       'train.checkpoint_every_steps': 2}
TMP_SUFFIX = '.orbax-checkpoint-tmp'


class NanAtStep(methods.CENoisy):
  """ce_noisy whose loss, and so every gradient, is NaN at step `bad_step` (1-based)."""

  def __init__(self, config, bad_step: int):
    super().__init__(config)
    self.bad_step = bad_step

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    loss, aux = super().loss(model, params, batch_stats, method_state, batch, rng, schedule)
    return loss * jnp.where(schedule['step'] + 1 == self.bad_step, jnp.nan, 1.0), aux


def main_with_nan_at_step():
  """`python tests/test_reliability.py BAD_STEP <nsegjax.main flags>`: the CLI on NanAtStep.

  Every state it checkpoints is also written, leaf by leaf, to <workdir>.states/<step>.npz.
  """
  from nsegjax import main  # pylint: disable=g-import-not-at-top
  bad_step = int(sys.argv.pop(1))
  methods.create_method = lambda config: NanAtStep(config, bad_step)
  workdir = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--workdir='))
  os.makedirs(f'{workdir}.states', exist_ok=True)
  save = ckpt_lib.Checkpointer.save

  def save_and_record(self, step, state, *args):
    fields = {f: jax.tree.leaves(jax.device_get(getattr(state, f)))
              for f in ('step', 'params', 'opt_state', 'batch_stats', 'method_state', 'rng')}
    np.savez(os.path.join(f'{workdir}.states', f'{step}.npz'),
             **{f'{f}/{i}': np.asarray(x) for f, leaves in fields.items()
                for i, x in enumerate(leaves)})
    return save(self, step, state, *args)

  ckpt_lib.Checkpointer.save = save_and_record
  main.run()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def cli(tmp_path_factory, data_dir):
  """start(workdir, overrides=None, nan_at_step=0) → the process of RUN + overrides.

  Its output goes to <workdir>.log; with `nan_at_step`, the method is NanAtStep.
  """
  cache = tmp_path_factory.mktemp('xla_cache')  # saves compile time only; the code is the same
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='4', JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1', PYTHONPATH=REPO)

  def start(workdir, overrides=None, nan_at_step=0):
    entry = [__file__, str(nan_at_step)] if nan_at_step else ['-m', 'nsegjax.main']
    flags = as_cli_flags({**RUN, 'data.data_dir': str(data_dir), **(overrides or {})})
    with open(f'{workdir}.log', 'w', encoding='utf-8') as log:
      return subprocess.Popen(
          [sys.executable] + entry + ['--config=configs/default.py', f'--workdir={workdir}'] +
          flags, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  return start


def finish(proc, workdir, timeout=600) -> str:
  """Waits for `proc` to end; its output."""
  proc.wait(timeout=timeout)
  with open(f'{workdir}.log', encoding='utf-8') as f:
    return f.read()


@pytest.fixture(scope='module')
def reference(cli, tmp_path_factory):
  """The uninterrupted run of RUN; the first to compile, it fills the compilation cache."""
  workdir = str(tmp_path_factory.mktemp('reference') / 'run')
  proc = cli(workdir)
  out = finish(proc, workdir)
  assert proc.returncode == 0, out[-3000:]
  return workdir


def checkpoint_dirs(workdir):
  """(complete checkpoint steps, unfinished write directories), both sorted."""
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  return sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if TMP_SUFFIX in n)


def saved_state(workdir, step) -> dict:
  with np.load(os.path.join(f'{workdir}.states', f'{step}.npz')) as arrays:
    return dict(arrays)


def last_logged_step(workdir) -> int:
  path = os.path.join(workdir, 'metrics.jsonl')
  steps = [0]
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          steps.append(json.loads(line)['step'])
        except json.JSONDecodeError:  # a line being written
          pass
  return max(steps)


def wait_until(proc, condition, timeout=300):
  deadline = time.time() + timeout
  while not condition():
    assert proc.poll() is None, 'the run ended before the interruption'
    assert time.time() < deadline, 'timed out waiting for the run'
    time.sleep(0.01)


def kill_during_checkpoint_write(proc, workdir, after_step: int) -> int:
  """SIGKILLs `proc` while it writes the checkpoint of a step > `after_step`; returns that step.

  The process is stopped first and killed only if the unfinished directory is still there, so
  the kill provably lands mid-write (a save that finishes in between is let go and the next
  one caught).
  """
  ckpt_dir = os.path.join(workdir, 'checkpoints')

  def writing():
    names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
    return [int(n.split('.')[0]) for n in names if TMP_SUFFIX in n and int(n.split('.')[0]) >
            after_step]

  deadline = time.time() + 300
  while True:
    assert proc.poll() is None, 'the run ended before a checkpoint write was caught'
    assert time.time() < deadline, 'timed out waiting for a checkpoint write'
    if writing():
      proc.send_signal(signal.SIGSTOP)
      os.waitpid(proc.pid, os.WUNTRACED)
      if steps := writing():
        proc.kill()
        proc.wait()
        return steps[0]
      proc.send_signal(signal.SIGCONT)
    time.sleep(0.002)


def assert_same_outputs(workdir, reference):
  """results.json byte for byte, and every metrics.jsonl record but its timing."""
  with open(os.path.join(workdir, 'results.json'), 'rb') as got, \
       open(os.path.join(reference, 'results.json'), 'rb') as want:
    assert got.read() == want.read()

  def records(run):
    with open(os.path.join(run, 'metrics.jsonl'), encoding='utf-8') as f:
      return [{k: v for k, v in json.loads(line).items() if k != 'images_per_sec'} for line in f]
  assert records(workdir) == records(reference)


def test_unknown_nonfinite_mode_fails_naming_the_choices(data_dir):
  with pytest.raises(ConfigError, match=r'train\.nonfinite.*valid choices: stop, skip'):
    tiny_config(data_dir, **{'train.nonfinite': 'ignore'})


def test_sigterm_handler_sets_a_flag_and_the_previous_one_comes_back():
  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(RuntimeError, match='the loop failed'):
    with train._SigtermFlag() as flag:  # pylint: disable=protected-access
      assert not flag.requested
      signal.raise_signal(signal.SIGTERM)
      assert flag.requested
      raise RuntimeError('the loop failed')
  assert signal.getsignal(signal.SIGTERM) is previous


def copy_with_files_missing(src, dst, seed):
  shutil.copytree(src, dst)
  files = sorted(os.path.join(d, f) for d, _, names in os.walk(dst) for f in names)
  for i in np.random.default_rng(seed).permutation(len(files))[:len(files) // 2]:
    os.remove(files[i])


def test_leftovers_of_killed_saves_and_clean_ups_are_never_restored(tmp_path):
  """A kill mid-save leaves `<step>.orbax-checkpoint-tmp` (here of step 5, a SIGTERM save no
  later save repeats); a kill while Orbax deletes an old step leaves its directory with files
  missing. Neither is restored; both are gone after the next save."""
  directory = str(tmp_path / 'checkpoints')
  data = iter(grain.MapDataset.range(10).to_iter_dataset())
  state = {'w': jnp.arange(4.0)}
  checkpointer = ckpt_lib.Checkpointer(directory)
  checkpointer.save(2, state, data, {'at': 2}, 0.5)
  checkpointer.save(4, dict(state, w=state['w'] + 1), data, {'at': 4}, None)
  checkpointer.close()
  copy_with_files_missing(os.path.join(directory, '4'), os.path.join(directory, f'5{TMP_SUFFIX}'),
                          seed=0)
  copy_with_files_missing(os.path.join(directory, '4'), os.path.join(directory, '3'), seed=1)

  checkpointer = ckpt_lib.Checkpointer(directory, owner=True)
  assert (checkpointer.latest_step(), checkpointer.best_step()) == (4, 2)
  restored, meta = checkpointer.restore(4, state)
  np.testing.assert_array_equal(restored['w'], np.arange(4.0) + 1)
  assert meta == {'at': 4}
  checkpointer.save(6, state, data, {'at': 6}, None)
  checkpointer.close()
  assert sorted(os.listdir(directory)) == ['2', '6']


def test_same_config_and_seed_give_bitwise_identical_runs(tmp_path, cli, reference):
  workdir = str(tmp_path / 'run')
  proc = cli(workdir)
  out = finish(proc, workdir)
  assert proc.returncode == 0, out[-3000:]
  assert_same_outputs(workdir, reference)
  for name in ('config.json', 'noise_log.jsonl'):
    with open(os.path.join(workdir, name), 'rb') as got, \
         open(os.path.join(reference, name), 'rb') as want:
      assert got.read() == want.read(), name


def test_nonfinite_step_stops_the_run_naming_it_with_the_last_good_checkpoint_kept(
    tmp_path, cli, reference):
  del reference  # run first, so initialisation comes compiled from the cache
  workdir = str(tmp_path / 'run')
  # Checked only where the loop syncs anyway (steps 2, 3, 4, 6 here): the error must still
  # name step 5, and step 6's checkpoint, of a state step 5 poisoned, must never be written.
  proc = cli(workdir, {'train.num_steps': 8, 'train.log_every': 3}, nan_at_step=5)
  out = finish(proc, workdir)
  assert proc.returncode == 2, out[-3000:]
  assert out.strip().splitlines()[-1] == (
      'error: non-finite loss, gradient or weights at step 5; training stopped and the last '
      'checkpoint (step 4) is intact (--config.train.nonfinite=skip drops such steps instead)')
  assert checkpoint_dirs(workdir) == ([4], [])
  assert sorted(os.listdir(f'{workdir}.states')) == ['2.npz', '4.npz']
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, 'checkpoints', '4', 'state'))
  assert int(state['step']) == 4
  leaves = jax.tree.leaves({k: state[k] for k in ('params', 'batch_stats', 'opt_state')})
  assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)
  assert [r['step'] for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'))] == [3]


def test_skip_drops_a_nonfinite_step_update_and_counts_it(tmp_path, cli, reference):
  del reference  # run first, so initialisation and evaluation come compiled from the cache
  workdir = str(tmp_path / 'run')
  proc = cli(workdir, {'train.num_steps': 7, 'train.checkpoint_every_steps': 1,
                       'train.nonfinite': 'skip'}, nan_at_step=5)
  out = finish(proc, workdir)
  assert proc.returncode == 0, out[-3000:]
  assert 'step 5: 1 non-finite step(s) skipped so far' in out
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    assert json.load(f)['skipped_steps'] == 1
  records = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [(r['step'], r['skipped_steps']) for r in records] == [
      (1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 1), (7, 1)]
  assert records[4]['loss'] is None  # NaN, written as null
  assert all(np.isfinite(r['loss']) for r in records[:4] + records[5:])
  # Step 5 advanced the step and nothing else: its state is step 4's, so steps 6 and 7 train
  # exactly as in a run without step 5's update.
  before, after, later = (saved_state(workdir, s) for s in (4, 5, 6))
  assert int(after['step/0']) == 5 and before.keys() == after.keys()
  for key in before.keys() - {'step/0'}:
    np.testing.assert_array_equal(after[key], before[key], err_msg=key)
  params = [k for k in after if k.startswith('params/')]
  assert params and any(not np.array_equal(later[k], after[k]) for k in params)
  assert all(np.isfinite(v).all() for v in saved_state(workdir, 7).values())


def test_sigterm_saves_a_checkpoint_exits_143_and_the_resumed_run_ends_identically(
    tmp_path, cli, reference):
  workdir = str(tmp_path / 'run')
  proc = cli(workdir)
  wait_until(proc, lambda: last_logged_step(workdir) >= 5)
  proc.send_signal(signal.SIGTERM)
  out = finish(proc, workdir, timeout=120)
  assert proc.returncode == 143, out[-3000:]
  match = re.fullmatch(r'terminated at step (\d+); checkpoint saved', out.strip().splitlines()[-1])
  assert match, out[-3000:]
  step = int(match[1])
  assert 5 <= step < RUN['train.num_steps']
  assert checkpoint_dirs(workdir)[0][-1] == step
  assert not os.path.exists(os.path.join(workdir, 'results.json'))

  proc = cli(workdir)
  out = finish(proc, workdir)
  assert proc.returncode == 0, out[-3000:]
  assert f'resumed from step {step} of' in out
  assert_same_outputs(workdir, reference)


def test_sigkill_at_any_moment_resumes_from_the_last_complete_checkpoint(
    tmp_path, cli, reference):
  rng = np.random.default_rng(7)
  workdir = str(tmp_path / 'run')
  num_steps = RUN['train.num_steps']

  proc = cli(workdir)
  half_written = kill_during_checkpoint_write(proc, workdir, int(rng.integers(2, 8)))
  complete, unfinished = checkpoint_dirs(workdir)
  assert unfinished == [f'{half_written}{TMP_SUFFIX}'] and max(complete) < half_written
  resume_step = max(complete)

  # Then two kills wherever the run happens to be just after a random step.
  for _ in range(2):
    proc = cli(workdir)
    kill_after = int(rng.integers(resume_step + 1, resume_step + 7))
    assert kill_after < num_steps - 2, 'a kill so late could miss the run'
    wait_until(proc, lambda: last_logged_step(workdir) >= kill_after)
    proc.kill()
    out = finish(proc, workdir)
    assert f'resumed from step {resume_step} of' in out
    resume_step = checkpoint_dirs(workdir)[0][-1]
    assert not os.path.exists(os.path.join(workdir, 'results.json'))

  proc = cli(workdir)
  out = finish(proc, workdir)
  assert proc.returncode == 0, out[-3000:]
  assert f'resumed from step {resume_step} of' in out
  assert checkpoint_dirs(workdir)[1] == []  # the unfinished write is gone
  assert_same_outputs(workdir, reference)


if __name__ == '__main__':
  main_with_nan_at_step()
