"""Pixel-wise class flips (JCAS, METHODS.md §2.1), as pure JAX on one sample.

Every valid pixel's label is redrawn from the row of its clean class in a row-stochastic
transition matrix T (row = clean, column = noisy). With `granularity='block'` one uniform draw
is shared by each `block`×`block` tile, so pixels of the same clean class in a tile flip
together (coherent, blob-like flips); `block=1` is the i.i.d. pixel case.

- symmetric, rate ρ: keep with 1 - ρ, else uniform over the other K - 1 classes.
- asymmetric: an explicit `matrix`, or for K = 4 the default table of §2.1 with its
  off-diagonal pattern scaled to the rate (the table itself at ρ = 0.5).

`rate` and `matrix` are exclusive: an explicit matrix is used verbatim. The rate is therefore
`None` in the defaults and means 0.5 when no matrix is given.
"""
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nsegjax.errors import ConfigError
from nsegjax.noise import geometry
from nsegjax.noise.base import NoiseProtocol, alpha_subset, register

NAME = 'flip'
IGNORE = 255
KINDS = ('symmetric', 'asymmetric')
GRANULARITIES = ('pixel', 'block')
DEFAULT_RATE = 0.5

# §2.1 asymmetric table for the 4-class EndoVis parts layout (bg, shaft, wrist, clasper) at ρ = 0.5.
ENDOVIS_PARTS_MATRIX = (
    (0.5, 1 / 6, 1 / 6, 1 / 6),
    (0.2, 0.5, 0.2, 0.1),
    (0.1, 0.2, 0.5, 0.2),
    (0.2, 0.1, 0.2, 0.5),
)

DEFAULT_PARAMS: dict[str, Any] = {
    'alpha': 1.0,  # fraction of images corrupted; JCAS corrupts every training image
    'kind': 'symmetric',  # symmetric | asymmetric
    'rate': None,  # flip rate ρ; None = 0.5 unless `matrix` is given (then it must stay None)
    'matrix': None,  # explicit K×K row-stochastic matrix (row = clean, column = noisy)
    'granularity': 'pixel',  # pixel | block
    'block': 1,  # tile side for granularity='block'
    'num_classes': None,  # None: inferred from the clean masks (largest label + 1, at least 2)
}


def transition_matrix(kind: str, rate: float | None, matrix: Sequence[Sequence[float]] | None,
                      num_classes: int) -> np.ndarray:
  """The K×K float64 row-stochastic flip matrix of resolved params."""
  if matrix is not None:
    return np.asarray(matrix, np.float64)
  rate = DEFAULT_RATE if rate is None else rate
  eye = np.eye(num_classes)
  if kind == 'symmetric':
    return (1 - rate) * eye + rate / (num_classes - 1) * (1 - eye)
  off_diagonal = np.asarray(ENDOVIS_PARTS_MATRIX) * (1 - eye)
  off_diagonal /= off_diagonal.sum(axis=1, keepdims=True)
  return (1 - rate) * eye + rate * off_diagonal


def _uniforms(key: jax.Array, shape: tuple[int, int], block: int) -> jax.Array:
  """One U[0, 1) per pixel, shared within block×block tiles."""
  height, width = shape
  tiles = jax.random.uniform(key, (-(-height // block), -(-width // block)), jnp.float32)
  return jnp.repeat(jnp.repeat(tiles, block, axis=0), block, axis=1)[:height, :width]


def corrupt(key: jax.Array, mask: jax.Array, *, kind: str = 'symmetric',
            rate: float | None = None, matrix: Sequence[Sequence[float]] | None = None,
            granularity: str = 'pixel', block: int = 1, num_classes: int = 2
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Flips the classes of one label map.

  Args:
    key: per-sample PRNG key.
    mask: (H, W) integer class map, 255 = ignore (never modified). With `num_classes=2` every
      label in [1, 254] is class 1 and the output uses {0, 1, 255}.
    kind, rate, matrix: the transition matrix (see `transition_matrix`); static.
    granularity: 'pixel' (i.i.d.) or 'block' (one draw per block×block tile).
    block: tile side for 'block'.
    num_classes: K, including background.

  Returns:
    (noisy mask with the dtype of `mask`, log) with 'status' (0 = ok, 1 = no valid pixel),
    'rho_pix' (changed / valid pixels) and per-class 'dice' ((K-1,) or a scalar when binary).
  """
  if mask.ndim != 2:
    raise ConfigError(f'flip.corrupt expects one (H, W) mask, got shape {mask.shape}')
  table = transition_matrix(kind, rate, matrix, num_classes)
  # Column K-1 is left out so that a u just below 1 (or a rounding shortfall) lands in K-1.
  cumulative = jnp.asarray(np.cumsum(table, axis=1)[:, :-1], jnp.float32)
  valid = mask != IGNORE
  clean = jnp.where(valid, jnp.minimum(mask.astype(jnp.int32), num_classes - 1), 0)
  if num_classes == 2:
    clean = (clean >= 1).astype(jnp.int32)
  tile = block if granularity == 'block' else 1
  u = _uniforms(key, mask.shape, tile)
  noisy_class = jnp.sum(u[..., None] >= cumulative[clean], axis=-1, dtype=jnp.int32)
  noisy = jnp.where(valid, noisy_class, IGNORE).astype(mask.dtype)

  num_valid = jnp.sum(valid, dtype=jnp.int32)
  clean_fg = geometry.class_masks(jnp.where(valid, clean, IGNORE).astype(mask.dtype),
                                  num_classes)
  noisy_fg = geometry.class_masks(noisy, num_classes)
  class_dice = geometry.dice(clean_fg, noisy_fg)
  log = {
      'status': jnp.where(num_valid > 0, 0, 1).astype(jnp.int32),
      'rho_pix': geometry.safe_ratio(jnp.sum((noisy_class != clean) & valid), num_valid,
                                     jnp.nan),
      'dice': class_dice[0] if num_classes == 2 else class_dice,
  }
  return noisy, log


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


def _check_matrix(matrix: Any, num_classes: int) -> tuple[tuple[float, ...], ...]:
  try:
    table = np.asarray(matrix, np.float64)
  except (TypeError, ValueError):
    raise ConfigError(f'{NAME}: matrix must be a K×K table of numbers, got {matrix!r}') from None
  if table.shape != (num_classes, num_classes):
    raise ConfigError(f'{NAME}: matrix must be {num_classes}×{num_classes} (num_classes), got '
                      f'shape {table.shape}')
  if (not np.isfinite(table).all() or (table < 0).any() or
      not np.allclose(table.sum(axis=1), 1.0, atol=1e-6)):
    raise ConfigError(f'{NAME}: matrix must be row-stochastic (non-negative rows summing to 1, '
                      f'row = clean, column = noisy)')
  return tuple(tuple(float(v) for v in row) for row in table)


def resolve_params(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """Defaults filled in and every value checked.

  Raises:
    ConfigError: an unknown key, an out-of-range value, a matrix together with a rate or with
      kind='symmetric', or kind='asymmetric' without a matrix for K ≠ 4.
  """
  resolved = geometry.resolve_common(NAME, params, DEFAULT_PARAMS, max_label)
  kind = geometry.as_choice(NAME, 'kind', resolved['kind'], KINDS)
  geometry.as_choice(NAME, 'granularity', resolved['granularity'], GRANULARITIES)
  resolved['block'] = geometry.as_int(NAME, 'block', resolved['block'], 1)
  num_classes = resolved['num_classes']

  if resolved['matrix'] is not None:
    if kind == 'symmetric':
      raise ConfigError(f'{NAME}: a matrix needs kind=\'asymmetric\'; symmetric flips are set '
                        f'by the rate alone')
    if resolved['rate'] is not None:
      raise ConfigError(f'{NAME}: give either rate or matrix, not both (an explicit matrix is '
                        f'used verbatim)')
    resolved['matrix'] = _check_matrix(resolved['matrix'], num_classes)
    return resolved
  if resolved['rate'] is None:
    resolved['rate'] = DEFAULT_RATE
  resolved['rate'] = geometry.as_number(NAME, 'rate', resolved['rate'], 0.0, 1.0)
  if kind == 'asymmetric' and num_classes != len(ENDOVIS_PARTS_MATRIX):
    raise ConfigError(f'{NAME}: asymmetric flips with num_classes={num_classes} need an explicit '
                      f'matrix (the default table is for 4 classes)')
  return resolved


def corrupt_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
  return {name: value for name, value in params.items() if name != 'alpha'}


def describe(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
             ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  """('flip', the flip settings, one 'flip' entry per foreground class); 'empty' if no valid
  pixel."""
  if int(log['status']) != 0:
    return 'empty', {}, []
  sample_params = {'kind': params['kind'], 'granularity': params['granularity'],
                   'block': params['block']}
  if params['matrix'] is None:
    sample_params['rate'] = params['rate']
  else:
    sample_params['matrix'] = [list(row) for row in params['matrix']]
  num_fg = params['num_classes'] - 1
  return 'flip', sample_params, [{'type': 'flip', 'params': {}} for _ in range(num_fg)]


PROTOCOL = register(NoiseProtocol(
    name=NAME,
    version=1,
    corrupt=lambda key, mask, params: corrupt(key, mask, **corrupt_kwargs(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], NAME),
    resolve_params=resolve_params,
    describe=describe,
    default_params=MappingProxyType(DEFAULT_PARAMS),
))
