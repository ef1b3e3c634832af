"""A bad config fails at start, before any data is read, naming the key and the valid values."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import default, des as des_config, oocytes_rater, sweep_cell
from nsegjax import config_checks, noise, sharding
from nsegjax.errors import ConfigError
from nsegjax.noise import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(module=default, **overrides):
  config = module.get_config()
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def _error(config, num_devices=4) -> str:
  with pytest.raises(ConfigError) as error:
    config_checks.validate(config, num_devices=num_devices)
  message = str(error.value)
  assert '\n' not in message
  return message


def test_the_shipped_configs_pass():
  for module in (default, des_config, oocytes_rater):
    config_checks.validate(module.get_config(), num_devices=4)


@pytest.mark.parametrize('name', noise.simulated_protocols())
def test_a_protocol_in_the_config_argument_brings_its_defaults(name):
  config = default.get_config(f'synthetic,{name}')
  assert config.noise.name == name
  assert dict(config.noise.params) == dict(noise.PROTOCOLS.get(name).default_params)
  config_checks.validate(config, num_devices=4)


def test_an_unknown_protocol_in_the_config_argument_lists_the_choices():
  with pytest.raises(ValueError, match="unknown noise protocol 'bogus'.*valid choices: abn"):
    default.get_config('synthetic,bogus')


@pytest.mark.parametrize('overrides,message', [
    ({'method': 'nope'}, "unknown method 'nope'; valid choices: adele, ce_noisy, clean, coteach"),
    ({'model.name': 'vit'}, "unknown model 'vit'; valid choices: resnet, unet"),
    ({'data.name': 'mnist'}, "unknown dataset 'mnist'; valid choices: folder, jsrt, kvasir_seg"),
    ({'noise.name': 'gauss'}, "unknown noise protocol 'gauss'; valid choices: abn, adele, box"),
    ({'train.optimizer': 'adamw'}, "unknown train.optimizer 'adamw'; valid choices: adam, sgd"),
    ({'train.lr_schedule': 'step'},
     "unknown train.lr_schedule 'step'; valid choices: constant, cosine, poly"),
    ({'model.dtype': 'float16'}, "unknown model.dtype 'float16'; valid choices: float32, bfloat16"),
    ({'model.upsample': 'bilinear'},
     "unknown model.upsample 'bilinear'; valid choices: matmul, conv_transpose"),
    ({'eval.val_labels': 'gold'}, "unknown eval.val_labels 'gold'; valid choices: noisy, clean"),
    ({'eval.hd95_mode': 'mean'},
     "unknown eval.hd95_mode 'mean'; valid choices: concat, max_of_directed"),
    ({'train.batch_size': 0}, 'train.batch_size must be positive, got 0'),
    ({'train.batch_size': -8}, 'train.batch_size must be positive, got -8'),
    ({'eval.batch_size': 0}, 'eval.batch_size must be positive, got 0'),
    ({'train.log_every': 0}, 'train.log_every must be positive, got 0'),
    ({'train.num_steps': -1}, 'train.num_steps must be non-negative, got -1'),
    ({'train.num_epochs': -2}, 'train.num_epochs must be non-negative, got -2'),
    ({'train.warmup_steps': -1}, 'train.warmup_steps must be non-negative, got -1'),
    ({'train.checkpoint_every_steps': -5},
     'train.checkpoint_every_steps must be non-negative, got -5'),
    ({'train.lr': -0.1}, 'train.lr must be non-negative, got -0.1'),
    ({'train.weight_decay': -1e-4}, 'train.weight_decay must be non-negative'),
    ({'train.num_steps': 0, 'train.num_epochs': 0},
     'set train.num_steps or train.num_epochs to a positive value'),
    ({'train.momentum': 1.5}, r'train.momentum must be in \[0, 1\], got 1.5'),
    ({'train.final_lr_fraction': -0.1}, r'train.final_lr_fraction must be in \[0, 1\], got -0.1'),
    ({'model.dropout': 1.0}, r'model.dropout must be in \[0, 1\), got 1.0'),
    ({'data.image_size': -1}, 'data.image_size must be non-negative, got -1'),
    ({'data.augment.min_scale': 0.0}, r'data.augment.min_scale must be in \(0, 1\], got 0.0'),
    ({'seed': -1}, r'seed must be an integer in \[0, 2\*\*32\), got -1'),
    ({'noise.seed': 2**32}, r'noise.seed must be an integer in \[0, 2\*\*32\), got 4294967296'),
    ({'model.weights': '/nonexistent/unet.npz'},
     'model.weights: file /nonexistent/unet.npz does not exist'),
    ({'train.batch_size': 6},
     'train.batch_size=6 is not divisible by the 4 devices; use a multiple of 4'),
    ({'eval.batch_size': 10}, 'eval.batch_size=10 is not divisible by the 4 devices'),
])
def test_bad_values_fail_naming_the_key(overrides, message):
  got = _error(_config(**overrides))
  assert re.match(message, got), got


def test_batch_split_is_checked_only_with_a_device_count():
  config = _config(**{'train.batch_size': 6, 'eval.batch_size': 6})
  config_checks.validate(config)  # e.g. a sweep checking configs away from the devices
  config_checks.check_batch_sizes(config, 3)
  with pytest.raises(ConfigError, match='not divisible by the 4 devices'):
    config_checks.check_batch_sizes(config, 4)


def test_the_method_block_is_checked_at_start():
  config = _config(des_config, **{'des.mask_rule': 'coin'})
  assert _error(config).startswith("unknown des.mask_rule 'coin'; valid choices: ")
  assert 'des.ema must be in [0, 1], got 1.5' in _error(_config(des_config, **{'des.ema': 1.5}))


def test_check_choices_names_the_block_and_the_choices():
  config = _config()
  config_checks.check_choices(config.eval, 'eval', {'agg': ('per_image', 'global')})
  config.eval.agg = 'mean'
  with pytest.raises(ConfigError, match="^unknown eval.agg 'mean'; valid choices: "
                                        'per_image, global$'):
    config_checks.check_choices(config.eval, 'eval', {'agg': ('per_image', 'global')})


# ------------------------------------------------------------------------------------------------
# noise.params: every protocol's keys and ranges, named as config keys
# ------------------------------------------------------------------------------------------------


def _noise_error(name: str, params: dict, module=default) -> str:
  config = module.get_config()
  config.noise.name = name
  config.noise.params = params
  return _error(config)


@pytest.mark.parametrize('name,params,message', [
    ('abn', {'alpha': 1.5}, r'noise.params.alpha: alpha must be in \[0, 1\], got 1.5'),
    ('abn', {'alpha': -0.1}, r'noise.params.alpha: alpha must be in \[0, 1\], got -0.1'),
    ('abn', {'beta': 0.0}, r'noise.params.beta: beta must be in \(0, 1\], got 0.0'),
    ('abn', {'beta': 1.5}, r'noise.params.beta: beta must be in \(0, 1\], got 1.5'),
    ('abn', {'type_probs': (0.5, 0.6, 0.1)}, 'noise.params.type_probs: type_probs must be 3 non'),
    ('abn', {'directions': 'all4'}, "noise.params.directions: unknown directions 'all4'; valid "
                                    'choices: code7, all8'),
    ('flip', {'rate': 1.5}, r'noise.params.rate: rate must be in \[0.0, 1.0\], got 1.5'),
    ('flip', {'rate': -0.5}, r'noise.params.rate: rate must be in \[0.0, 1.0\], got -0.5'),
    ('radius', {'edge_fraction': 1.5},
     r'noise.params.edge_fraction: edge_fraction must be in \[0, 1\], got 1.5'),
    ('adele', {'thresh': 1.0}, r'noise.params.thresh: thresh must be in \(0, 1\), got 1.0'),
    ('polygon', {'jitter': 1.5}, r'noise.params.jitter: jitter must be in \[0.0, 1.0\]'),
    ('mstfal', {'max_translate': 1.5}, r'noise.params.max_translate: max_translate must be in '
                                       r'\[0.0, 1.0\]'),
    ('mstfal', {'max_rescale': 1.0}, r'noise.params.max_rescale: max_rescale must be in '
                                     r'\[0.0, 0.99\]'),
    ('box', {'jitter': -0.1}, r'noise.params.jitter: jitter must be in \[0.0, 1.0\]'),
    ('coarse_polygon', {'min_epsilon': 0.6},
     r'noise.params.min_epsilon: min_epsilon must be in \[0.0, 0.5\], got 0.6'),
    ('scribble', {'keep': (0.5, 1.5)},
     r'noise.params.keep: keep must be a pair \(min, max\) of numbers in \(0, 1\]'),
    ('ellipse', {'connectivity': 6}, 'noise.params.connectivity: connectivity must be 4 or 8'),
    ('none', {'alpha': 0.3}, "unknown noise.params.alpha for noise protocol 'none'; valid keys: "
                             r'none \(it takes no parameters\)'),
])
def test_bad_noise_params_name_the_config_key(name, params, message):
  got = _noise_error(name, params)
  assert re.match(message, got), got
  if not got.startswith('unknown'):
    assert got.endswith(f"(noise protocol '{name}')")


@pytest.mark.parametrize('name', noise.PROTOCOLS.names())
def test_every_protocol_refuses_unknown_keys_listing_its_own(name):
  valid = list(noise.PROTOCOLS.get(name).default_params)
  module = oocytes_rater if name == 'rater' else default
  got = _noise_error(name, {'gamma': 1}, module)
  assert got.startswith(f"unknown noise.params.gamma for noise protocol '{name}'; valid keys: ")
  assert got.endswith(', '.join(valid) or 'none (it takes no parameters)')


def _unit_interval_keys():
  """(protocol, key) of every float parameter whose default lies in [0, 1]: rates, fractions."""
  return [(name, key) for name in noise.PROTOCOLS.names()
          for key, value in noise.PROTOCOLS.get(name).default_params.items()
          if isinstance(value, float) and 0.0 <= value <= 1.0]


@pytest.mark.parametrize('name,key', _unit_interval_keys())
def test_every_ratio_parameter_refuses_a_negative_value(name, key):
  module = oocytes_rater if name == 'rater' else default
  params = {'train': 'hs', key: -0.5} if name == 'rater' else {key: -0.5}
  assert _noise_error(name, params, module).startswith(f'noise.params.{key}: ')


@pytest.mark.parametrize('name', [n for n in noise.PROTOCOLS.names()
                                  if 'alpha' in noise.PROTOCOLS.get(n).default_params])
@pytest.mark.parametrize('alpha', [1.01, -0.01])
def test_every_protocol_keeps_alpha_in_the_unit_interval(name, alpha):
  got = _noise_error(name, {'alpha': alpha})
  assert got.startswith(f'noise.params.alpha: alpha must be in [0') and '1' in got, got


def test_rater_params_are_checked_against_the_dataset_at_start():
  config = oocytes_rater.get_config('hs')
  config.noise.params.train = 'xx'
  assert _error(config) == ("noise.params.train: params.train='xx' is not a rater of this "
                            "dataset; valid choices: ar, hs, sg (noise protocol 'rater')")


# ------------------------------------------------------------------------------------------------
# The command line: exit code 2 and one line, before any data is read
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('config,flag,message', [
    ('default.py', '--config.noise.params.alpha=1.5',
     "error: noise.params.alpha: alpha must be in [0, 1], got 1.5 (noise protocol 'abn')"),
    ('default.py', '--config.noise.params.alpah=0.5',
     'error: unknown config key noise.params.alpah (--config.noise.params.alpah=0.5); did you '
     'mean "alpha" instead of "alpah"?'),
    ('default.py', '--config.train.batch_size=6',
     'error: train.batch_size=6 is not divisible by the 4 devices; use a multiple of 4'),
    # A protocol named in the config argument brings its keys, None defaults included.
    ('default.py:synthetic,flip', '--config.noise.params.rate=1.5',
     "error: noise.params.rate: rate must be in [0.0, 1.0], got 1.5 (noise protocol 'flip')"),
    ('hqpm.py:synthetic,box', '--config.noise.params.jitter=-1.0',
     "error: noise.params.jitter: jitter must be in [0.0, 1.0], got -1.0 (noise protocol 'box')"),
])
def test_cli_fails_at_start_with_one_line(tmp_path, config, flag, message):
  data_dir = tmp_path / 'tfds'
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='4')
  out = subprocess.run([sys.executable, '-m', 'nsegjax.main', f'--config=configs/{config}',
                        f'--workdir={tmp_path / "run"}', f'--config.data.data_dir={data_dir}',
                        flag], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.strip() == message, out.stderr[-2000:]
  assert not data_dir.exists()  # nothing was built


def test_a_key_error_inside_training_is_not_called_a_config_error(tmp_path):
  # A subprocess: absl's FLAGS are process-global, and other test modules define required flags.
  script = ('import sys\n'
            'from nsegjax import main, train\n'
            'def broken(config, workdir):\n'
            '  raise KeyError("a bug, not an override")\n'
            'train.train_and_evaluate = broken\n'
            'sys.argv[1:] = ["--config=configs/default.py", sys.argv[1],\n'
            '                "--config.train.batch_size=4"]\n'
            'main.run()\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', script, f'--workdir={tmp_path}'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "KeyError: 'a bug, not an override'" in out.stderr, out.stderr[-2000:]
  assert 'unknown config key' not in out.stderr


# ------------------------------------------------------------------------------------------------
# Multi-host initialisation from the environment
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_initialize(monkeypatch):
  calls = []
  for key in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
              'NSEGJAX_MULTIHOST'):
    monkeypatch.delenv(key, raising=False)
  monkeypatch.setattr(sharding.jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(sharding.jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  return calls


def test_no_multihost_environment_starts_nothing(fake_initialize, monkeypatch):
  assert not sharding.maybe_initialize_distributed()
  monkeypatch.setenv('NSEGJAX_MULTIHOST', '0')
  assert not sharding.maybe_initialize_distributed()
  assert not fake_initialize


def test_multihost_environment_reaches_jax(fake_initialize, monkeypatch):
  monkeypatch.setenv('NSEGJAX_MULTIHOST', '1')  # SLURM / TPU pod: JAX detects the rest
  assert sharding.maybe_initialize_distributed()
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '127.0.0.1:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', '1')
  assert sharding.maybe_initialize_distributed()
  assert fake_initialize == [{}, {'num_processes': 2, 'process_id': 1}]


def test_bad_multihost_environment_fails_in_one_line(fake_initialize, monkeypatch):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '127.0.0.1:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', 'two')
  with pytest.raises(ConfigError, match=r"^\$JAX_NUM_PROCESSES must be an integer, got 'two'$"):
    sharding.maybe_initialize_distributed()

  def refuse(**kwargs):
    raise ValueError('Number of processes must be defined.')

  monkeypatch.delenv('JAX_NUM_PROCESSES')
  monkeypatch.setattr(sharding.jax.distributed, 'initialize', refuse)
  with pytest.raises(ConfigError, match=r'Number of processes must be defined.*JAX_NUM_PROCESSES'):
    sharding.maybe_initialize_distributed()


# ------------------------------------------------------------------------------------------------
# Files the library is pointed at are data, never code
# ------------------------------------------------------------------------------------------------


class _Marker:
  """Unpickling it leaves a file behind."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, 'w'))


def test_a_sweep_cell_cannot_name_code_outside_configs(tmp_path):
  marker = tmp_path / 'ran'
  evil = tmp_path / 'evil.py'
  evil.write_text(f'open({str(marker)!r}, "w").close()\ndef get_config():\n  return None\n')
  for config_file in (str(evil), os.path.relpath(evil, REPO), 'configs/../launch/bench.py'):
    cell = tmp_path / 'cell.json'
    cell.write_text('{"config_file": %s, "dataset": "synthetic", "noise": {"name": "none"}, '
                    '"overrides": {}}' % repr(config_file).replace("'", '"'))
    with pytest.raises(ValueError, match='is not a .py file in .*configs'):
      sweep_cell.get_config(str(cell))
  assert not marker.exists()
  assert sweep_cell.resolve_config_file('configs/default.py').endswith('configs/default.py')


def test_a_pickled_noise_cache_is_regenerated_never_unpickled(tmp_path):
  masks = np.zeros((2, 8, 8), np.uint8)
  masks[:, 2:6, 2:6] = 1
  noisy, _ = generate.cached_apply_noise(tmp_path, 'toy', masks, np.arange(2), 'abn',
                                         {'alpha': 1.0}, seed=0)
  [npz] = [p for p in tmp_path.iterdir() if p.suffix == '.npz']
  with np.load(npz) as stored:
    key = stored['cache_key']
  marker = tmp_path / 'unpickled'
  bomb = np.empty(1, dtype=object)
  bomb[0] = _Marker(str(marker))
  with open(npz, 'wb') as f:
    np.savez(f, noisy=bomb, indices=np.arange(2), cache_key=key)
  again, _ = generate.cached_apply_noise(tmp_path, 'toy', masks, np.arange(2), 'abn',
                                         {'alpha': 1.0}, seed=0)
  assert not marker.exists()
  np.testing.assert_array_equal(again, noisy)
