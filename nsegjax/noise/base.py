"""The protocol record, the registry and the shared random streams of every noise simulator."""
import dataclasses
import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

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
  # Optional faster host-side batch path with `apply_noise`'s chunked contract:
  # (params, seed, masks, indices, chunk) -> (noisy masks, per-sample logs); bit-identical.
  corrupt_selected: Callable[..., tuple[np.ndarray, list]] | None = None

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


def register(protocol: NoiseProtocol) -> NoiseProtocol:
  """Adds a protocol to `PROTOCOLS`; each protocol module calls this once at import."""
  return PROTOCOLS.register(protocol.name)(protocol)
