"""Start-of-run checks: every bad value fails here, naming the key and the valid choices."""
import numpy as np

from nsegjax import data, methods, models, noise
from nsegjax.errors import ConfigError

_CHOICES = {
    'eval.val_labels': ('noisy', 'clean'),
    'eval.empty': ('standard', 'present_only', 'nan'),
    'eval.hd95_mode': ('concat', 'max_of_directed'),
    'eval.agg': ('per_image', 'global'),
    'eval.empty_surface': ('nan', 'diagonal'),
    'train.nonfinite': ('stop', 'skip'),
}


def _get(config, dotted: str):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


def validate(config):
  methods.METHODS.get(config.method)
  models.MODELS.get(config.model.name)
  data.DATASETS.get(config.data.name)
  noise.PROTOCOLS.get(config.noise.name)
  for key, choices in _CHOICES.items():
    if _get(config, key) not in choices:
      raise ConfigError(f'{key}={_get(config, key)!r} is invalid; valid choices: '
                        f'{", ".join(choices)}')
  for key in ('train.batch_size', 'eval.batch_size', 'train.log_every', 'train.eval_every_epochs'):
    if _get(config, key) <= 0:
      raise ConfigError(f'{key} must be positive, got {_get(config, key)}')
  for key in ('train.num_steps', 'train.num_epochs', 'train.lr', 'train.warmup_steps',
              'train.checkpoint_every_steps', 'data.image_size'):
    if _get(config, key) < 0:
      raise ConfigError(f'{key} must be non-negative, got {_get(config, key)}')
  if config.train.num_steps == 0 and config.train.num_epochs == 0:
    raise ConfigError('set train.num_steps or train.num_epochs to a positive value')
  if not 0.0 < config.data.augment.min_scale <= 1.0:
    raise ConfigError(f'data.augment.min_scale must be in (0, 1], got '
                      f'{config.data.augment.min_scale}')
  # Binary labels stand in for the dataset's, which are not read yet; keys and ranges are checked.
  protocol = noise.PROTOCOLS.get(config.noise.name)
  resolved = protocol.resolve_params(dict(config.noise.params), 1)
  if protocol.from_dataset is not None:
    # Protocols that read raters: the dataset must store some, and a zero-sample dry run checks
    # the params' rater names against them before anything is built.
    names = data.require_raters(config.data, f'noise protocol {protocol.name!r}')
    protocol.from_dataset({name: np.zeros((0, 1, 1), np.uint8) for name in names}, resolved)
