"""Segmentation networks, found by name: `create_model(config.model, num_classes)`."""
import jax.numpy as jnp

from nsegjax.errors import ConfigError
from nsegjax.models.resnet import DilatedResNet
from nsegjax.models.unet import UNet
from nsegjax.models.weights import load_npz_weights, save_npz_weights
from nsegjax.registry import Registry

MODELS = Registry('model')
MODELS.register('unet')(UNet)
MODELS.register('resnet')(DilatedResNet)

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def create_model(model_cfg, num_classes: int):
  """Builds the Linen module named by `model_cfg.name` from the config's other keys."""
  kwargs = dict(model_cfg)
  cls = MODELS.get(kwargs.pop('name'))
  dtype = kwargs.pop('dtype', 'float32')
  kwargs.pop('weights', None)  # a file for Method.load_weights, not a module attribute
  if 'upsample' not in cls.__dataclass_fields__:  # the default config's U-Net-only choice
    kwargs.pop('upsample', None)
  if dtype not in DTYPES:
    raise ConfigError(f'unknown model.dtype {dtype!r}; valid choices: {", ".join(DTYPES)}')
  try:
    return cls(num_classes=num_classes, dtype=DTYPES[dtype], **kwargs)
  except TypeError as e:
    raise ConfigError(f'model {model_cfg.name!r}: {e}') from None
