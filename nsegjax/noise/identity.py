"""'none': the identity protocol, every sample clean (clean-label runs and sanity checks)."""
from collections.abc import Mapping
from typing import Any

import numpy as np

from nsegjax.errors import ConfigError
from nsegjax.noise.base import NoiseProtocol, register


def _resolve(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  del max_label
  if params:
    raise ConfigError(f'noise protocol \'none\' takes no parameters, got '
                      f'{", ".join(map(repr, sorted(params)))}')
  return {}


PROTOCOL = register(NoiseProtocol(
    name='none',
    version=1,
    corrupt=lambda key, mask, params: (mask, {}),
    select_noisy=lambda seed, num_samples, params: np.zeros(num_samples, dtype=bool),
    resolve_params=_resolve,
    describe=lambda log, params: ('clean', {}, []),
))
