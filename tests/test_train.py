"""End-to-end runs of the generic loop on a tiny synthetic set: outputs, sharding, config errors.

Killed, terminated and resumed runs: tests/test_reliability.py."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from nsegjax import config_checks, train
from nsegjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_OVERRIDES = {
    'data.variant': 'tiny', 'data.image_size': 0, 'data.num_workers': 1,
    'model.depth': 2, 'model.base_width': 4,
    'train.batch_size': 4, 'train.num_steps': 12, 'train.log_every': 2,
    'train.warmup_steps': 2, 'eval.batch_size': 4, 'eval.num_overlays': 2,
}


def tiny_config(data_dir, **overrides):
  config = default.get_config()
  for key, value in {**TINY_OVERRIDES, 'data.data_dir': str(data_dir), **overrides}.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  config_checks.validate(config)
  return config


def as_cli_flags(config_overrides):
  return [f'--config.{k}={v}' for k, v in config_overrides.items()]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def read_jsonl(path, split='train'):
  with open(path, encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def test_end_to_end_run_writes_every_output(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(tiny_config(data_dir), workdir)
  on_disk = json.load(open(os.path.join(workdir, 'results.json'), encoding='utf-8'))
  assert on_disk['test'] == json.loads(json.dumps(results['test']))
  for key in ('dice', 'iou', 'hd95', 'assd'):
    assert key in on_disk['test']
  assert 0.0 <= on_disk['test']['dice'] <= 1.0
  assert on_disk['method'] == 'ce_noisy' and on_disk['noise']['name'] == 'abn'
  assert on_disk['dataset'] == 'synthetic_lesion/tiny'
  records = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [r['step'] for r in records] == list(range(2, 13, 2))
  assert all(np.isfinite(r['loss']) and r['images_per_sec'] > 0 and 'lr' in r for r in records)
  validation = read_jsonl(os.path.join(workdir, 'metrics.jsonl'), 'validation')
  assert [r['step'] for r in validation] == [6, 12]  # one evaluation per epoch of 24/4 steps
  # Orbax keeps the latest checkpoint and the best by validation Dice, nothing else.
  best = max(reversed(on_disk['validation_history']), key=lambda h: h[1])[0]  # ties: latest
  assert on_disk['test_best_val']['step'] == best
  kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  assert kept == sorted({best, 12})
  assert os.path.getsize(os.path.join(workdir, 'overlays.png')) > 1000
  assert any(f.startswith('events') for f in os.listdir(os.path.join(workdir, 'tensorboard')))
  with open(os.path.join(workdir, 'noise_log.jsonl'), encoding='utf-8') as f:
    log = [json.loads(line) for line in f]
  assert len(log) == 24 and sum(r['is_noisy'] for r in log) == int(0.7 * 24)


def test_four_devices_give_the_loss_trajectory_of_one(tmp_path, data_dir):
  assert jax.device_count() == 4, 'conftest sets JAX_NUM_CPU_DEVICES=4'
  losses = {}
  for n in (1, 4):
    workdir = str(tmp_path / f'dev{n}')
    train.train_and_evaluate(tiny_config(data_dir, **{'train.num_steps': 6, 'train.log_every': 1}),
                             workdir, devices=jax.devices()[:n])
    losses[n] = [r['loss'] for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'))]
  assert len(losses[1]) == 6
  np.testing.assert_allclose(losses[4], losses[1], rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize('key,value,message', [
    ('method', 'nope', 'valid choices: adele, ce_noisy, clean, coteach'),
    ('noise.name', 'nope', 'valid choices: abn'),
    ('data.name', 'nope', 'valid choices:'),
    ('eval.val_labels', 'gold', 'valid choices: noisy, clean'),
    ('train.batch_size', 0, 'train.batch_size must be positive'),
])
def test_bad_config_values_fail_naming_the_choices(data_dir, key, value, message):
  with pytest.raises(ConfigError, match=message):
    tiny_config(data_dir, **{key: value})


def test_cli_prints_one_line_errors(tmp_path):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1')
  # An empty data_dir: a dataset already built elsewhere must not satisfy the missing manual_dir.
  base = [sys.executable, '-m', 'nsegjax.main', '--config=configs/default.py',
          f'--workdir={tmp_path}', f'--config.data.data_dir={tmp_path / "tfds"}']
  for extra, message in [(['--config.method=nope'], 'unknown method'),
                         (['--config.no_such_key=1'], 'no_such_key'),
                         (['--config.data.name=kvasir_seg', '--config.data.manual_dir=/nonexistent'],
                          '/nonexistent')]:
    out = subprocess.run(base + extra, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
    assert message in lines[-1] and 'Traceback' not in out.stderr, out.stderr[-1500:]


def test_new_schedule_values_do_not_recompile_the_step():
  from nsegjax import methods, models, sharding  # pylint: disable=g-import-not-at-top
  from nsegjax.data.pipeline import random_batch  # pylint: disable=g-import-not-at-top

  class CountingMethod(methods.CENoisy):
    traces = 0

    def loss(self, *args):
      CountingMethod.traces += 1  # runs only while jax traces the step
      return super().loss(*args)

  config = default.get_config()
  config.model.depth, config.model.base_width = 2, 4
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    model = models.create_model(config.model, 2)
    method = CountingMethod(config)
    tx, _ = method.make_optimizer(10, 3)
    batch = sharding.shard_batch(random_batch(np.random.default_rng(0), 4, 16, 1, 2), mesh)
    state = train.create_train_state(jax.random.PRNGKey(0), model, method, tx, batch, mesh)
    step = train.make_train_step(model, method, tx, mesh)
    for i in range(4):
      state, _ = step(state, batch, train.make_schedule(i, 3, 10))
  assert CountingMethod.traces == 1
  assert int(state.step) == 4


def test_code_version_is_this_checkout():
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(train.__file__),
                        capture_output=True, text=True, check=True).stdout.strip()
  version = train.code_version()
  assert version['commit'] == head and isinstance(version['dirty'], bool)


def test_train_limit_keeps_the_first_examples_with_their_noisy_labels(data_dir):
  full = train.prepare_data(tiny_config(data_dir))
  kept = train.prepare_data(tiny_config(data_dir, **{'data.train_limit': 5}))
  assert len(kept.train) == 5 and len(full.train) > 5
  for i in (0, 4, -1):
    np.testing.assert_array_equal(kept.train[i]['image'], full.train[i % 5]['image'])
    assert kept.train[i]['index'] == full.train[i % 5]['index']
  np.testing.assert_array_equal(kept.train_noisy, full.train_noisy[:5])
  assert kept.noise_records == full.noise_records[:5]
  assert len(kept.validation) == len(full.validation) and len(kept.test) == len(full.test)
  with pytest.raises(IndexError):
    kept.train[5]  # pylint: disable=pointless-statement
  with pytest.raises(ConfigError, match=r'data.train_limit=999 exceeds the \d+ training examples'):
    train.prepare_data(tiny_config(data_dir, **{'data.train_limit': 999}))
