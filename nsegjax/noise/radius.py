"""Radius + edge-noise label noise (METHODS.md §2.4, PNL / Confident Learning on JSRT).

Source: [code: 502463708/Confident_Learning_for_Noisy-labeled_Medical_Image_Segmentation]. A
corrupted label gets one perturbation, each with probability 1/3 by default: dilation or erosion
with a Euclidean disk of radius r ~ U{r_min..r_max} (inclusive), or edge noise, where a random
`edge_fraction` of the edge pixels become centres of filled disks of radius ~ U{1..r_max-1},
each painted foreground or background with probability 0.5.

Dilation and erosion run on bit-packed rows (`morphology.dilate_disk_packed`: the disk as
horizontal segments of per-row half-widths, erosion as the complement's dilation cleared near the
border), exactly `binary_dilation` / `binary_erosion` with the disk footprint. Edge noise paints
its disks with two separable min-plus passes over a window of the largest radius
(`morphology.paint_disks`). Under vmap a traced type computes both programs, and edge noise
(three random fields of the image's size and the power transform) costs ~10× the packed disk, so
`corrupt_selected` draws the types first and runs each group without the other's program.

Choices made here (METHODS leaves them open or they have no cheap exact form):
- Edge pixels are the Canny edges of the mask (`edge_detector='canny'`, METHODS' assumed
  default): `edges.canny_edges` with the reference's `cv2.Canny(255·mask, 64, 200)` rules, a
  one-pixel closed curve straddling the boundary. `'boundary'` (the inner boundary, all inside
  the mask) is the cheaper alternative. Each edge pixel is a centre independently with
  probability `edge_fraction`, so the fraction is exact only in expectation.
- Where edge disks overlap, a pixel takes the colour of the disk containing it most deeply
  (smallest |x - c|² - r²), instead of the last disk of a random painting order.
- Subset: with binary masks (METHODS §0: each JSRT structure is its own binary task) the ⌊α·N⌋
  corrupted samples are drawn from a stream seeded by (seed, protocol id, structure), so lungs,
  heart and clavicles get independent subsets under one seed. With several classes in one mask,
  `corrupt` cannot know the sample index, so the subset is drawn per sample and every class of a
  chosen sample is corrupted (with its own draws).
"""
import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nsegjax.errors import ConfigError
from nsegjax.noise import edges, morphology
from nsegjax.noise.abn import _foreground_stack, _paint
from nsegjax.noise.base import achieved_noise_log
from nsegjax.noise.base import is_int as _is_int, is_number as _is_number
from nsegjax.noise.base import NoiseProtocol, dataset_rng, register

NAME = 'radius'
TYPE_NAMES = ('dilate', 'erode', 'edge')
DILATE, ERODE, EDGE = 0, 1, 2
IGNORE = 255

# (r_min, r_max) in pixels at the reference size 256×256.
STRUCTURE_RADII = {'lung': (20, 30), 'heart': (14, 20), 'clavicle': (5, 10)}
STRUCTURES = (*STRUCTURE_RADII, 'custom')
EDGE_DETECTORS = ('canny', 'boundary')
PAINT_ORDERS = ('ascending', 'descending')
BRANCHES = ('all', 'disk', 'edge')
EDGE_CHUNK = 8  # most edge-noise samples per compiled call in `corrupt_selected`

DEFAULT_PARAMS: dict[str, Any] = {
    'alpha': 0.3,  # fraction of corrupted samples, drawn per structure
    'structure': 'lung',  # lung | heart | clavicle | custom, or one name per foreground class
    'r_min': None,  # None: from the structure; required (int or one per class) with 'custom'
    'r_max': None,
    'type_probs': (1 / 3, 1 / 3, 1 / 3),  # P(dilate), P(erode), P(edge)
    'edge_fraction': 0.5,  # probability that an edge pixel becomes a disk centre
    'edge_detector': 'canny',  # METHODS `edge.detector`: canny (cv2.Canny rules) | boundary
    'scale_radii': True,  # radii scale with sqrt(H·W) / reference_size
    'reference_size': 256,
    'num_classes': None,  # None: inferred from the clean masks (largest label + 1, at least 2)
    'paint_order': 'ascending',  # ascending | descending: which class wins where masks overlap
}


# ------------------------------------------------------------------------------------------------
# Radii
# ------------------------------------------------------------------------------------------------


def scaled_radii(r_min: Sequence[int], r_max: Sequence[int], shape: tuple[int, int],
                 scale_radii: bool, reference_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-class (r_min, r_max) in pixels of this image: scaled by side / reference side, ≥ 1."""
  factor = math.sqrt(shape[0] * shape[1]) / reference_size if scale_radii else 1.0
  low = np.maximum(1, np.round(np.asarray(r_min) * factor)).astype(np.int32)
  high = np.maximum(low, np.round(np.asarray(r_max) * factor)).astype(np.int32)
  return low, high


# ------------------------------------------------------------------------------------------------
# One binary mask
# ------------------------------------------------------------------------------------------------


def _draw(key: jax.Array, shape: tuple[int, int], r_low: jax.Array, r_high: jax.Array,
          type_probs: Sequence[float], edge_fraction: float) -> dict[str, jax.Array]:
  """Every random choice of one class: type, r, and the edge centres / radii / colours."""
  k_type, k_radius, k_centre, k_disk, k_colour = jax.random.split(key, 5)
  disk_high = jnp.maximum(r_high, 2)  # U{1..r_max-1}; a single choice when r_max = 1
  return {
      'type': jax.random.choice(k_type, len(TYPE_NAMES),
                                p=jnp.asarray(type_probs, jnp.float32)).astype(jnp.int32),
      'radius': jax.random.randint(k_radius, (), r_low, r_high + 1, jnp.int32),
      'centre': jax.random.uniform(k_centre, shape) < edge_fraction,
      'disk_radius': jax.random.randint(k_disk, shape, 1, disk_high, jnp.int32),
      'colour': jax.random.bernoulli(k_colour, 0.5, shape),
  }


def _disk_morphology(fg: jax.Array, kind: jax.Array, radius: jax.Array, max_radius: int
                     ) -> jax.Array:
  """Dilation or erosion (by `kind`, traced) with the disk of `radius`; packed bits out.

  Erosion (outside = background, as painting background disks on the background and on the
  ring outside the image) is the complement's dilation cleared near the border, so one packed
  dilation serves both kinds.
  """
  width = fg.shape[-1]
  packed = morphology.pack_bits(fg)
  erode = kind == ERODE
  seeds = jnp.where(erode, ~packed & jnp.asarray(morphology.valid_bits(width)), packed)
  grown = morphology.dilate_disk_packed(seeds, radius, max_radius, width)
  interior = morphology.disk_interior_packed(fg.shape, radius, max_radius)
  return jnp.where(erode, packed & ~grown & interior, grown)


def edge_pixels(fg: jax.Array, detector: str) -> jax.Array:
  """bool (H, W) edge pixels of a binary mask: Canny ('canny') or the inner boundary."""
  if detector == 'canny':
    return edges.canny_edges(fg)
  return morphology.boundary(fg)


def _edge_noise(fg: jax.Array, draws: Mapping[str, jax.Array], max_radius: int, detector: str
                ) -> tuple[jax.Array, jax.Array]:
  """Disks of the drawn radii and colours on the chosen edge pixels.

  Returns (packed bits, number of disks). Packing is the only consumer of the power transform,
  so XLA computes it once instead of fusing it into each consumer of a bool result.
  """
  centres = edge_pixels(fg, detector) & draws['centre']
  # Edge disks have radius < r_max, so a window of max_radius - 1 sees every one that covers
  # a pixel (a disk farther than its radius along an axis cannot contain it).
  window = max(max_radius - 1, 1)
  covered, painted = morphology.paint_disks(jnp.where(centres, draws['disk_radius'], -1),
                                            draws['colour'], window)
  return (morphology.pack_bits(jnp.where(covered, painted, fg)),
          jnp.sum(centres, dtype=jnp.int32))


def corrupt_binary(fg: jax.Array, draws: Mapping[str, jax.Array], max_radius: int,
                   branches: str = 'all', edge_detector: str = DEFAULT_PARAMS['edge_detector']
                   ) -> tuple[jax.Array, jax.Array]:
  """Applies the drawn perturbation to one binary mask. Returns (mask, number of edge disks).

  `branches`: 'all', or 'disk' / 'edge' when the drawn type is known to be dilate-or-erode /
  edge (see `corrupt_selected`); under vmap every branch of a traced choice is computed, and
  the edge branch (three random fields of the image's size and a windowed power transform)
  costs ~10× the packed disk morphology.
  """
  kind = draws['type']
  zero = jnp.int32(0)
  if branches == 'disk':
    noisy, num_disks = _disk_morphology(fg, kind, draws['radius'], max_radius), zero
  elif branches == 'edge':
    noisy, num_disks = _edge_noise(fg, draws, max_radius, edge_detector)
  else:
    edged, count = _edge_noise(fg, draws, max_radius, edge_detector)
    is_edge = kind == EDGE
    noisy = jnp.where(is_edge, edged, _disk_morphology(fg, kind, draws['radius'], max_radius))
    num_disks = jnp.where(is_edge, count, zero)
  empty = ~jnp.any(fg)
  noisy = morphology.unpack_bits(noisy, fg.shape[-1])
  return jnp.where(empty, fg, noisy), jnp.where(empty, 0, num_disks)


# ------------------------------------------------------------------------------------------------
# One sample
# ------------------------------------------------------------------------------------------------


def structure_salt(structure: Sequence[str], r_min: Sequence[int], r_max: Sequence[int]) -> int:
  """A stable integer naming the structure(s), mixed into the random streams.

  Custom structures are named by their radii, so two custom tasks under one seed differ.
  """
  names = [name if name != 'custom' else f'custom:{lo}-{hi}'
           for name, lo, hi in zip(structure, r_min, r_max)]
  return zlib.crc32(','.join(names).encode('utf-8')) & 0x7FFFFFFF


def _class_keys(key: jax.Array, structure: Sequence[str], r_min: Sequence[int],
                r_max: Sequence[int]) -> jax.Array:
  """The per-class draw keys of a sample: salted by the structure(s), folded by class id."""
  key = jax.random.fold_in(key, structure_salt(structure, r_min, r_max))
  return jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(1, len(structure) + 1))


def corrupt(key: jax.Array, mask: jax.Array, *,
            structure: Sequence[str] = ('lung',), r_min: Sequence[int] = (20,),
            r_max: Sequence[int] = (30,),
            type_probs: Sequence[float] = DEFAULT_PARAMS['type_probs'],
            edge_fraction: float = DEFAULT_PARAMS['edge_fraction'],
            edge_detector: str = DEFAULT_PARAMS['edge_detector'],
            scale_radii: bool = DEFAULT_PARAMS['scale_radii'],
            reference_size: int = DEFAULT_PARAMS['reference_size'],
            num_classes: int = 2,
            paint_order: str = DEFAULT_PARAMS['paint_order'],
            branches: str = 'all',
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Applies one radius / edge perturbation to every foreground class of one label map.

  Args:
    key: per-sample PRNG key.
    mask: (H, W) integer class map; 255 = ignore, never modified. With `num_classes=2` every
      label in [1, 254] is foreground and the output uses {0, 1, 255}.
    structure: one structure name per foreground class (only used to salt the key).
    r_min, r_max: inclusive radius bounds per foreground class, at `reference_size`.
    type_probs: probabilities of dilate, erode, edge.
    edge_fraction: probability that an edge pixel becomes a disk centre.
    edge_detector: 'canny' (`edges.canny_edges`, OpenCV's rules) or 'boundary' (inner boundary).
    scale_radii: scale the radii by sqrt(H·W) / reference_size.
    reference_size: side the radii are given for.
    num_classes: C including background.
    paint_order: 'ascending' | 'descending' overwrite order where class masks overlap.
    branches: 'all', or 'disk' / 'edge' when every class is known to get a dilate-or-erode / an
      edge type (see `corrupt_selected`): the same output, without the other program.

  Returns:
    (noisy mask with the dtype of `mask`, log). Per-class entries (scalars when binary, else
    shape (C-1,)): 'type' (index into `TYPE_NAMES`), 'radius' (drawn r; unused by edge noise),
    'r_max' (the scaled bound; edge disks are < r_max), 'num_disks' (edge disks painted),
    'empty', 'rho_fg' (NaN if empty), 'dice'. Sample-level: 'rho_pix', 'rho_fg_all', 'dice_all'.
  """
  if edge_detector not in EDGE_DETECTORS:
    raise ConfigError(f'radius: unknown edge_detector {edge_detector!r}; valid: '
                      f'{", ".join(EDGE_DETECTORS)}')
  if branches not in BRANCHES:
    raise ConfigError(f'radius: unknown branches {branches!r}; valid: {", ".join(BRANCHES)}')
  if mask.ndim != 2:
    raise ConfigError(f'radius.corrupt expects one (H, W) mask, got shape {mask.shape}')
  clean_fg = _foreground_stack(mask, num_classes)
  num_fg = clean_fg.shape[0]
  if not len(structure) == len(r_min) == len(r_max) == num_fg:
    raise ConfigError(f'radius: need one structure / r_min / r_max per foreground class '
                      f'({num_fg}), got {len(structure)} / {len(r_min)} / {len(r_max)}')
  r_low, r_high = scaled_radii(r_min, r_max, mask.shape, scale_radii, reference_size)
  max_radius = int(r_high.max())

  draws = jax.vmap(lambda k, lo, hi: _draw(k, mask.shape, lo, hi, type_probs, edge_fraction))(
      _class_keys(key, structure, r_min, r_max), jnp.asarray(r_low), jnp.asarray(r_high))
  noisy_fg, num_disks = jax.vmap(
      lambda fg, d: corrupt_binary(fg, d, max_radius, branches, edge_detector))(clean_fg, draws)

  valid = mask != IGNORE
  noisy = jnp.where(valid, _paint(noisy_fg, paint_order), IGNORE).astype(mask.dtype)
  final_fg = noisy[None] == jnp.arange(1, num_fg + 1, dtype=noisy.dtype)[:, None, None]
  per_class = {
      'type': draws['type'],
      'radius': draws['radius'],
      'r_max': jnp.asarray(r_high),
      'num_disks': num_disks,
  }
  return noisy, achieved_noise_log(mask, noisy, valid, clean_fg, final_fg, per_class)


# ------------------------------------------------------------------------------------------------
# Parameters, subset and log
# ------------------------------------------------------------------------------------------------


def _fail(message: str) -> None:
  raise ConfigError(f'{NAME}: {message}')


def _per_class(name: str, value: Any, num_fg: int) -> tuple:
  values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * num_fg
  if len(values) != num_fg:
    _fail(f'{name} needs one value or one per foreground class ({num_fg}), got {value!r}')
  return values


def _resolve_radii(structures: tuple, r_min: Any, r_max: Any, num_fg: int
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
  r_min = _per_class('r_min', r_min, num_fg)
  r_max = _per_class('r_max', r_max, num_fg)
  lows, highs = [], []
  for name, low, high in zip(structures, r_min, r_max):
    if name == 'custom':
      if low is None or high is None:
        _fail("structure 'custom' needs r_min and r_max")
    else:
      preset = STRUCTURE_RADII[name]
      if (low is not None and low != preset[0]) or (high is not None and high != preset[1]):
        _fail(f'structure {name!r} fixes r_min={preset[0]}, r_max={preset[1]}; use structure '
              f"'custom' for other radii")
      low, high = preset
    if not (_is_int(low) and _is_int(high)) or not 1 <= low <= high:
      _fail(f'radii must be integers with 1 <= r_min <= r_max, got r_min={low!r}, r_max={high!r}')
    lows.append(int(low))
    highs.append(int(high))
  return tuple(lows), tuple(highs)


def resolve_params(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """Defaults filled in and every value checked; per-class values become tuples.

  Raises:
    ConfigError: an unknown key or an out-of-range value; the message names the valid ones.
  """
  unknown = sorted(set(params) - set(DEFAULT_PARAMS))
  if unknown:
    _fail(f'unknown parameter(s) {", ".join(map(repr, unknown))}; valid keys: '
          f'{", ".join(DEFAULT_PARAMS)}')
  resolved = {**DEFAULT_PARAMS, **params}
  if not _is_number(resolved['alpha']) or not 0.0 <= resolved['alpha'] <= 1.0:
    _fail(f'alpha must be in [0, 1], got {resolved["alpha"]!r}')
  resolved['alpha'] = float(resolved['alpha'])
  num_classes = resolved['num_classes']
  if num_classes is None:
    num_classes = max(int(max_label) + 1, 2)
  if not _is_int(num_classes) or not 2 <= num_classes <= IGNORE:
    _fail(f'num_classes must be an integer in [2, 255], got {num_classes!r}')
  if num_classes > 2 and max_label >= num_classes:
    _fail(f'num_classes={num_classes} but the masks contain label {max_label}')
  resolved['num_classes'] = int(num_classes)
  num_fg = num_classes - 1

  structures = _per_class('structure', resolved['structure'], num_fg)
  for name in structures:
    if name not in STRUCTURES:
      _fail(f'unknown structure {name!r}; valid: {", ".join(STRUCTURES)}')
  resolved['structure'] = structures
  resolved['r_min'], resolved['r_max'] = _resolve_radii(structures, resolved['r_min'],
                                                        resolved['r_max'], num_fg)
  probs = resolved['type_probs']
  if (not isinstance(probs, (tuple, list)) or len(probs) != len(TYPE_NAMES) or
      any(not _is_number(p) or p < 0 for p in probs) or
      not math.isclose(sum(probs), 1.0, abs_tol=1e-6)):
    _fail(f'type_probs must be 3 non-negative numbers summing to 1 (dilate, erode, edge), got '
          f'{probs!r}')
  resolved['type_probs'] = tuple(float(p) for p in probs)
  fraction = resolved['edge_fraction']
  if not _is_number(fraction) or not 0.0 <= fraction <= 1.0:
    _fail(f'edge_fraction must be in [0, 1], got {fraction!r}')
  resolved['edge_fraction'] = float(fraction)
  if resolved['edge_detector'] not in EDGE_DETECTORS:
    _fail(f'unknown edge_detector {resolved["edge_detector"]!r}; valid: '
          f'{", ".join(EDGE_DETECTORS)}')
  if not isinstance(resolved['scale_radii'], bool):
    _fail(f'scale_radii must be true or false, got {resolved["scale_radii"]!r}')
  if not _is_int(resolved['reference_size']) or resolved['reference_size'] < 1:
    _fail(f'reference_size must be a positive integer, got {resolved["reference_size"]!r}')
  if resolved['paint_order'] not in PAINT_ORDERS:
    _fail(f'unknown paint_order {resolved["paint_order"]!r}; valid: {", ".join(PAINT_ORDERS)}')
  return resolved


def select_noisy(seed: int, num_samples: int, params: Mapping[str, Any]) -> np.ndarray:
  """The first ⌊α·N⌋ of a permutation seeded by (seed, protocol id, structure salt)."""
  count = min(math.floor(params['alpha'] * num_samples + 1e-9), num_samples)
  salt = structure_salt(params['structure'], params['r_min'], params['r_max'])
  order = dataset_rng(seed, NAME, salt).permutation(num_samples)
  selected = np.zeros(num_samples, dtype=bool)
  selected[order[:count]] = True
  return selected


def corrupt_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
  return {name: value for name, value in params.items() if name != 'alpha'}


def describe(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
             ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  """(type, params, per-class entries) of one corrupted sample; 'empty' for an empty class."""
  per_class = {name: np.atleast_1d(log[name])
               for name in ('type', 'radius', 'r_max', 'num_disks', 'empty', 'rho_fg')}
  classes = []
  for c in range(per_class['type'].shape[0]):
    base = {'structure': params['structure'][c], 'r_max': int(per_class['r_max'][c])}
    if per_class['empty'][c]:
      classes.append({'type': 'empty', 'params': {**base, 'status': 'empty mask, unchanged'}})
      continue
    type_name = TYPE_NAMES[int(per_class['type'][c])]
    class_params = dict(base)
    if type_name == 'edge':
      class_params.update(num_disks=int(per_class['num_disks'][c]),
                          edge_fraction=params['edge_fraction'],
                          edge_detector=params['edge_detector'])
    else:
      class_params['radius'] = int(per_class['radius'][c])
    class_params['rho_fg'] = float(per_class['rho_fg'][c])
    classes.append({'type': type_name, 'params': class_params})
  types = {entry['type'] for entry in classes} - {'empty'}
  if not types:
    return 'empty', {'status': 'empty mask, unchanged'}, classes
  if len(classes) == 1:
    return classes[0]['type'], dict(classes[0]['params']), classes
  return (types.pop() if len(types) == 1 else 'mixed'), {'structure': list(params['structure'])}, \
      classes


# ------------------------------------------------------------------------------------------------
# Batched generation grouped by type (an optional fast path for the generator)
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _type_program(frozen_kwargs: tuple, shape: tuple[int, int]):
  """jit(vmap) of a binary sample's type draw, exactly as `corrupt` draws it (XLA drops the
  random fields, which the type does not use)."""
  kwargs = dict(frozen_kwargs)
  r_low, r_high = scaled_radii(kwargs['r_min'], kwargs['r_max'], shape, kwargs['scale_radii'],
                               kwargs['reference_size'])

  def one(base_key, index):
    class_key = _class_keys(jax.random.fold_in(base_key, index), kwargs['structure'],
                            kwargs['r_min'], kwargs['r_max'])[0]
    return _draw(class_key, shape, r_low[0], r_high[0], kwargs['type_probs'],
                 kwargs['edge_fraction'])['type']

  return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def corrupt_selected(params: Mapping[str, Any], seed: int, masks: np.ndarray,
                     indices: np.ndarray, chunk: int = 16
                     ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
  """`corrupt` over the given masks, grouped by perturbation type: a faster, bit-identical
  equivalent of the generator's `vmap(corrupt)` over chunks (`abn.corrupt_selected`'s pattern).

  The type is a pure function of the sample key, so it is drawn first and the dilate / erode
  samples run without the edge branch's random fields and power transform. With several
  classes each class draws its own type, and the ungrouped program is used.

  Args:
    params: resolved 'radius' params (`resolve_params`).
    seed: the noise seed (keys as `nsegjax.noise.generate.sample_key`).
    masks: uint8 [N, H, W] masks of the corrupted samples.
    indices: [N] their sample ids.
    chunk: samples per compiled call (at most `EDGE_CHUNK` for edge-noise samples).

  Returns:
    (noisy uint8 [N, H, W], one host-side log dict per mask, in order).
  """
  from nsegjax.noise import generate  # pylint: disable=g-import-not-at-top  (it imports us)
  masks, indices = np.asarray(masks), np.asarray(indices)
  if len(masks) == 0:
    return masks.copy(), []
  frozen = tuple(sorted(corrupt_kwargs(params).items()))
  with jax.default_device(jax.devices('cpu')[0]):
    base_key = jax.random.fold_in(jax.random.key(seed), PROTOCOL.id)
    if params['num_classes'] > 2:
      groups = [({'branches': 'all'}, np.arange(len(masks)), chunk)]
    else:
      types = np.asarray(_type_program(frozen, masks.shape[1:])(base_key,
                                                               indices.astype(np.uint32)))
      # Edge samples run in chunks of at most EDGE_CHUNK: their three (chunk, H, W) random
      # fields and int16 power maps outgrow the caches (measured ~1.6× faster per mask than 16).
      groups = [({'branches': 'disk'}, np.flatnonzero(types != EDGE), chunk),
                ({'branches': 'edge'}, np.flatnonzero(types == EDGE), min(chunk, EDGE_CHUNK))]
    return generate.run_grouped(corrupt, frozen, base_key, masks, indices, groups)


PROTOCOL = register(NoiseProtocol(
    name=NAME,
    version=1,
    corrupt=lambda key, mask, params: corrupt(key, mask, **corrupt_kwargs(params)),
    select_noisy=select_noisy,
    resolve_params=resolve_params,
    describe=describe,
    default_params=MappingProxyType(DEFAULT_PARAMS),
    corrupt_selected=corrupt_selected,
))
