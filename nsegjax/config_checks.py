"""Start-of-run checks: every bad value fails here, naming the key and the valid choices.

`validate` runs before any data is read or built, so a typo costs seconds, not a dataset build.
"""
import ast
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nsegjax.errors import ConfigError

_CHOICES = {
    'eval.val_labels': ('noisy', 'clean'),
    'eval.empty': ('standard', 'present_only', 'nan'),
    'eval.hd95_mode': ('concat', 'max_of_directed'),
    'eval.agg': ('per_image', 'global'),
    'eval.empty_surface': ('nan', 'diagonal'),
    'train.nonfinite': ('stop', 'skip'),
}
_POSITIVE = ('train.batch_size', 'eval.batch_size', 'train.log_every', 'train.eval_every_epochs')
_NON_NEGATIVE = ('train.num_steps', 'train.num_epochs', 'train.lr', 'train.warmup_steps',
                 'train.checkpoint_every_steps', 'train.weight_decay', 'train.grad_clip',
                 'data.image_size', 'data.num_workers', 'data.train_limit', 'eval.num_overlays')
_UNIT_INTERVAL = ('train.momentum', 'train.final_lr_fraction')


def _get(config, dotted: str):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


def check_choices(cfg, prefix: str, choices: Mapping[str, Sequence[Any]]) -> None:
  """Raises ConfigError for the first `cfg[key]` outside `choices[key]`, naming both.

  Args:
    cfg: a config block (e.g. `config.des`).
    prefix: the block's dotted name in messages (e.g. 'des').
    choices: key -> its valid values; every key must be in `cfg`.
  """
  for key, valid in choices.items():
    if cfg[key] not in valid:
      raise ConfigError(f'unknown {prefix}.{key} {cfg[key]!r}; valid choices: '
                        f'{", ".join(map(str, valid))}')


def check_batch_sizes(config, num_devices: int) -> None:
  """Both batch sizes split evenly over the devices of the 'data' mesh axis."""
  for key in ('train.batch_size', 'eval.batch_size'):
    size = _get(config, key)
    if size % num_devices:
      raise ConfigError(f'{key}={size} is not divisible by the {num_devices} devices; use a '
                        f'multiple of {num_devices}')


def validate(config, num_devices: int | None = None) -> None:
  """Checks names, ranges and the method's own block; `num_devices` adds the batch split.

  Raises:
    ConfigError: the first bad value; the message names its key and the valid choices or range.
  """
  # Imported here: the method modules import this one for `check_choices`.
  from nsegjax import data, methods, models, optim  # pylint: disable=g-import-not-at-top
  from nsegjax.models import unet  # pylint: disable=g-import-not-at-top

  methods.METHODS.get(config.method)
  models.MODELS.get(config.model.name)
  data.DATASETS.get(config.data.name)
  for key, choices in _CHOICES.items():
    prefix, leaf = key.rsplit('.', 1)
    check_choices(_get(config, prefix), prefix, {leaf: choices})
  check_choices(config.train, 'train', {'optimizer': optim.OPTIMIZERS,
                                        'lr_schedule': optim.SCHEDULES})
  model_choices = {'dtype': tuple(models.DTYPES), 'upsample': unet.UPSAMPLE_CHOICES}
  check_choices(config.model, 'model',
                {key: valid for key, valid in model_choices.items() if key in config.model})
  for key in _POSITIVE:
    if _get(config, key) <= 0:
      raise ConfigError(f'{key} must be positive, got {_get(config, key)}')
  for key in _NON_NEGATIVE:
    if _get(config, key) < 0:
      raise ConfigError(f'{key} must be non-negative, got {_get(config, key)}')
  for key in _UNIT_INTERVAL:
    if not 0.0 <= _get(config, key) <= 1.0:
      raise ConfigError(f'{key} must be in [0, 1], got {_get(config, key)}')
  dropout = config.model.get('dropout', 0.0)
  if not 0.0 <= dropout < 1.0:
    raise ConfigError(f'model.dropout must be in [0, 1), got {dropout}')
  for key in ('seed', 'noise.seed'):
    seed = _get(config, key)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
      raise ConfigError(f'{key} must be an integer in [0, 2**32), got {seed!r}')
  if config.train.num_steps == 0 and config.train.num_epochs == 0:
    raise ConfigError('set train.num_steps or train.num_epochs to a positive value')
  if not 0.0 < config.data.augment.min_scale <= 1.0:
    raise ConfigError(f'data.augment.min_scale must be in (0, 1], got '
                      f'{config.data.augment.min_scale}')
  weights = config.model.get('weights', '')
  if weights and not os.path.isfile(weights):
    raise ConfigError(f'model.weights: file {weights} does not exist')
  if num_devices is not None:
    check_batch_sizes(config, num_devices)
  _check_noise(config)
  # The method's own block (choices, ranges) and the model's keys: both constructors are cheap
  # and read no data; two classes stand in for the dataset's.
  methods.create_method(config)
  models.create_model(config.model, 2)


def _check_noise(config) -> None:
  """noise.params against the protocol; every failure names `noise.params.<key>`."""
  from nsegjax import data, noise  # pylint: disable=g-import-not-at-top

  protocol = noise.PROTOCOLS.get(config.noise.name)
  params = dict(config.noise.params)
  valid = list(protocol.default_params)
  unknown = sorted(set(params) - set(valid))
  if unknown:
    raise ConfigError(f'unknown noise.params.{unknown[0]} for noise protocol {protocol.name!r}; '
                      f'valid keys: {", ".join(valid) or "none (it takes no parameters)"}')
  names = None
  if protocol.from_dataset is not None:
    # Protocols that read raters need a dataset that stores some (read from its config).
    names = data.require_raters(config.data, f'noise protocol {protocol.name!r}')
  try:
    # Binary labels stand in for the dataset's, which are not read yet.
    resolved = protocol.resolve_params(params, 1)
    if names is not None:
      # A zero-sample dry run checks the params' rater names against the dataset's.
      protocol.from_dataset({name: np.zeros((0, 1, 1), np.uint8) for name in names}, resolved)
  except ConfigError as e:
    raise ConfigError(_name_noise_param(str(e), protocol.name, valid)) from None


def _name_noise_param(message: str, protocol: str, keys: Sequence[str]) -> str:
  """A protocol's own message ('abn: alpha must be in [0, 1], got 1.5'), led by the config key.

  The protocols word their messages for direct callers; the key is the first parameter name the
  message mentions.
  """
  text = message.removeprefix(f'{protocol}: ')
  key = next((word for word in re.findall(r'[A-Za-z_]\w*', text) if word in keys), None)
  where = f'noise.params.{key}' if key else 'noise.params'
  return f'{where}: {text} (noise protocol {protocol!r})'


def unknown_key_message(error: BaseException, argv: Sequence[str]) -> str:
  """One line for a `--config.<path>=...` override naming no key of the config file.

  ml_collections raises KeyError("'<key>'\\nDid you mean ...") for the last path element only;
  the flag in `argv` gives the full path. Other errors come back as their text.
  """
  text = str(error.args[0]) if error.args else str(error)
  if len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':
    try:  # an AttributeError wrapping the KeyError's repr
      text = str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
      pass
  missing, _, hint = text.partition('\n')
  missing = missing.strip('\'"')
  for arg in argv:
    path = arg.split('=', 1)[0].removeprefix('--')
    if path.startswith('config.') and missing in path.split('.')[1:]:
      hint = f'; {hint[0].lower()}{hint[1:]}' if hint else ''
      return f'unknown config key {path.removeprefix("config.")} ({arg}){hint}'
  return text
