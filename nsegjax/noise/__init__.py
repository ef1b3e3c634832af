"""Label-noise and weak-label simulators (METHODS.md §2), found by name in `PROTOCOLS`.

A protocol is a `NoiseProtocol`: a per-sample JAX `corrupt` function plus the host-side pieces the
generator needs (parameter checking, the choice of the noisy subset, the noise-log description).
`nsegjax.noise.generate` runs any registered protocol over a dataset, so a new simulator (pixel
flips, ellipses, radius / edge, ADELE, polygons, boxes and scribbles, raters) only has to register
one entry here.

Protocols:
- 'none': identity, every sample clean. Accepts no parameters.
- 'abn': α/β dilate / erode / affine (§2.3); parameters and defaults in `abn.DEFAULT_PARAMS`.
"""
import dataclasses
import math
import zlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import numpy as np

from nsegjax.errors import ConfigError
from nsegjax.noise import abn
from nsegjax.registry import Registry

# corrupt(key, mask (H, W), resolved params) -> (noisy mask, log of JAX scalars / arrays).
CorruptFn = Callable[[jax.Array, jax.Array, Mapping[str, Any]], tuple[jax.Array, dict]]
# select_noisy(seed, num_samples, resolved params) -> bool [num_samples]: is sample n corrupted.
SelectFn = Callable[[int, int, Mapping[str, Any]], np.ndarray]
# resolve_params(params, max_label) -> params with defaults filled in; raises ConfigError.
ResolveFn = Callable[[Mapping[str, Any], int], dict[str, Any]]
# describe(one sample's log as numpy, resolved params) -> (type, params, per-class entries).
DescribeFn = Callable[[Mapping[str, np.ndarray], Mapping[str, Any]],
                      tuple[str, dict[str, Any], list[dict[str, Any]]]]


@dataclasses.dataclass(frozen=True)
class NoiseProtocol:
  """One registered simulator.

  Attributes:
    name: registry name; also the protocol id in the random streams (`protocol_id`).
    version: bump when the output for the same (params, seed, n) changes; it is logged and keys
      the cache.
    corrupt: per-sample JAX function, jit- and vmap-compatible in (key, mask); the params are
      static Python values.
    select_noisy: the dataset-level choice of the corrupted samples.
    resolve_params: fills in defaults and validates; unknown keys raise ConfigError.
    describe: the noise-log 'type' / 'params' / per-class entries of a corrupted sample.
    default_params: every accepted key with its default (read-only).
  """
  name: str
  version: int
  corrupt: CorruptFn
  select_noisy: SelectFn
  resolve_params: ResolveFn
  describe: DescribeFn
  default_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def id(self) -> int:
    return protocol_id(self.name)


PROTOCOLS: Registry[NoiseProtocol] = Registry('noise protocol')


def protocol_id(name: str) -> int:
  """A stable 31-bit integer for a protocol name, used to seed its random streams."""
  return zlib.crc32(name.encode('utf-8')) & 0x7FFFFFFF


def dataset_rng(seed: int, name: str, *extra: int) -> np.random.Generator:
  """The dataset-level stream of a protocol, from (seed, protocol id[, class, ...])."""
  return np.random.default_rng(np.random.SeedSequence([seed, protocol_id(name), *extra]))


def alpha_subset(seed: int, num_samples: int, alpha: float, name: str) -> np.ndarray:
  """Shuffles the indices with the dataset stream and marks the first ⌊α·N⌋ (METHODS §2.3)."""
  # The tolerance keeps decimal α exact: floor(0.29 * 100) must be 29, not 28.
  count = min(math.floor(alpha * num_samples + 1e-9), num_samples)
  order = dataset_rng(seed, name).permutation(num_samples)
  selected = np.zeros(num_samples, dtype=bool)
  selected[order[:count]] = True
  return selected


def _register(protocol: NoiseProtocol) -> NoiseProtocol:
  return PROTOCOLS.register(protocol.name)(protocol)


# ---------------------------------------------------------------------------------------------
# 'none'
# ---------------------------------------------------------------------------------------------


def _none_resolve(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  del max_label
  if params:
    raise ConfigError(f'noise protocol \'none\' takes no parameters, got '
                      f'{", ".join(map(repr, sorted(params)))}')
  return {}


_register(NoiseProtocol(
    name='none',
    version=1,
    corrupt=lambda key, mask, params: (mask, {}),
    select_noisy=lambda seed, num_samples, params: np.zeros(num_samples, dtype=bool),
    resolve_params=_none_resolve,
    describe=lambda log, params: ('clean', {}, []),
))

# ---------------------------------------------------------------------------------------------
# 'abn'
# ---------------------------------------------------------------------------------------------

_register(NoiseProtocol(
    name='abn',
    version=1,
    corrupt=lambda key, mask, params: abn.corrupt(key, mask, **abn.corrupt_kwargs(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], 'abn'),
    resolve_params=abn.resolve_params,
    describe=abn.describe,
    default_params=MappingProxyType(abn.DEFAULT_PARAMS),
))
