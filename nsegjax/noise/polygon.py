"""Polygon replacement and the MS-TFAL still-image mix (METHODS.md §2.7), as pure JAX.

Source: [code: BeileiCui/MS-TFAL] `generate_noise/noisy_type.py`.

'polygon': every connected component of every foreground class becomes a filled polygon with
n ~ U{min_vertices..max_vertices} vertices equally spaced by arc length on its traced outer
contour, from a random start point, each vertex jittered by U(-jitter, jitter) × the component's
bounding-box side along that axis (`ref_length='bbox'`) or × √area (`'sqrt_area'`), clipped to
the image, then filled. Classes are painted in ascending order.

'mstfal': one corruption type per image, ~ `type_probs` over (dilate, erode, polygon, affine),
applied to every class mask with the same draws (MS-TFAL's "same corruption within a segment";
still images are segments of length 1):
- dilate / erode: exact Euclidean disk of radius r ~ U{min_radius..max_radius} at the reference
  resolution, scaled by min(H, W) / reference_size (METHODS §2.0 point 3);
- polygon: as the 'polygon' protocol;
- affine: rotation θ ~ U(-max_angle, max_angle) degrees and scale s ~ U(1 - max_rescale,
  1 + max_rescale) about the image centre (as torchvision's RandomAffine), then a translation
  t ~ U(-max_translate, max_translate) × (H, W); nearest-neighbour.

The contour is the one `cv2.findContours(..., CHAIN_APPROX_NONE)` returns (Moore-neighbour
tracing, `geometry.trace_outer_contours`; traversed clockwise here, counter-clockwise there),
holes ignored as the reference's `fill_hole`. A component whose contour does not fit the
static contour buffer (4·(H + W) points per class, far more than any blob needs) is left
unchanged and counted in the log ('untraced').

Deviations from the reference, documented:
- The reference takes n contour points at `linspace(0, len - 1, n)` indices from the contour's
  first point (equal index spacing, no random start) and shifts them by integer
  randint(±int(0.2 × side)) of the sampled points' bounding box; here, as METHODS' assumed
  default, the spacing is by arc length from a uniform random start and the real-valued shift
  uses the component's bounding box.
- The polygon is filled like `cv2.fillPoly`: pixels whose centre has a non-zero winding number
  plus every pixel its edges pass through (`geometry.fill_polygons(include_boundary=True)`),
  with real-valued instead of integer vertices.
- The reference draws the affine parameters per component (one RandomAffine call per
  component) and the type per class; here one draw per image is shared by all classes and the
  affine map moves the whole class mask, following METHODS' "same corruption" reading.
- `type_probs` defaults to uniform, as METHODS (the reference also uses 1/4 each).
"""
import functools
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax.errors import ConfigError
from nsegjax.noise import geometry
from nsegjax.noise.base import NoiseProtocol, alpha_subset, register

POLYGON = 'polygon'
MSTFAL = 'mstfal'
REF_LENGTHS = ('bbox', 'sqrt_area')
TYPE_NAMES = ('dilate', 'erode', 'polygon', 'affine')
DILATE, ERODE, POLY, AFFINE = range(4)
MSTFAL_BRANCHES = ('all', 'disk', 'polygon', 'affine')

POLYGON_DEFAULTS: dict[str, Any] = {
    'alpha': 0.5,  # fraction of images corrupted (MS-TFAL: half of the videos are noisy)
    'min_vertices': 4,  # n ~ U{min_vertices..max_vertices} per component
    'max_vertices': 8,
    'jitter': 0.2,  # vertex shift ~ U(-jitter, jitter) × reference length
    'ref_length': 'bbox',  # bbox (per-axis bounding-box side) | sqrt_area
    'min_area': 1,  # components with fewer pixels stay unchanged
    'connectivity': 8,  # 4 | 8
    'max_components': 16,  # per class; the largest are replaced, the rest stay unchanged
    'num_classes': None,  # None: inferred from the clean masks (largest label + 1, at least 2)
}

MSTFAL_DEFAULTS: dict[str, Any] = {
    **POLYGON_DEFAULTS,
    'type_probs': (0.25, 0.25, 0.25, 0.25),  # P(dilate), P(erode), P(polygon), P(affine)
    'min_radius': 40,  # disk radius ~ U{min_radius..max_radius} px at reference_size
    'max_radius': 50,
    'reference_size': 1024,  # shorter image side the radii refer to (EndoVis18: 1280×1024)
    'max_angle': 30.0,  # degrees
    'max_translate': 0.2,  # fraction of the image side
    'max_rescale': 0.2,  # scale ~ U(1 - max_rescale, 1 + max_rescale)
}


# ------------------------------------------------------------------------------------------------
# Polygon replacement
# ------------------------------------------------------------------------------------------------


def _polygons(min_vertices: int, max_vertices: int, jitter: float, ref_length: str):
  """The `replace` callback of `geometry.replace_components` for jittered contour polygons."""

  def replace(key, ids, moments, selected, contours):
    height, width = ids.shape
    num_slots = selected.shape[0]

    def draw(slot_key, low, high, area):
      key_count, key_start, key_jitter = jax.random.split(slot_key, 3)
      count = jax.random.randint(key_count, (), min_vertices, max_vertices + 1)
      start = jax.random.uniform(key_start, (), jnp.float32)
      # Vertex j at arc-length fraction start + j / count; slots past `count` are never drawn.
      fractions = jnp.mod(start + jnp.arange(max_vertices, dtype=jnp.float32) / count, 1.0)
      if ref_length == 'bbox':
        reference = (high - low + 1).astype(jnp.float32)
      else:
        reference = jnp.full((2,), jnp.sqrt(area.astype(jnp.float32)))
      shift = jax.random.uniform(key_jitter, (max_vertices, 2), jnp.float32, -jitter, jitter)
      return count, fractions, shift * reference

    counts, fractions, shifts = jax.vmap(draw)(jax.random.split(key, num_slots),
                                               moments.bbox_min, moments.bbox_max, moments.area)
    vertices = geometry.resample_contours(contours, fractions) + shifts
    vertices = jnp.clip(vertices, 0.0, jnp.array([height - 1, width - 1], jnp.float32))
    union = geometry.fill_polygons(ids.shape, vertices, counts, selected, include_boundary=True)
    return union, {'vertices': jnp.where(selected, counts, 0)}

  return replace


def corrupt_polygon(key: jax.Array, mask: jax.Array, *, min_vertices: int = 4,
                    max_vertices: int = 8, jitter: float = 0.2, ref_length: str = 'bbox',
                    min_area: int = 1, connectivity: int = 8, max_components: int = 16,
                    num_classes: int = 2) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Replaces every component of one label map by a jittered polygon on its contour.

  Args:
    key: per-sample PRNG key.
    mask: (H, W) class map, 255 = ignore (never modified).
    min_vertices, max_vertices, jitter, ref_length, min_area, connectivity, max_components:
      see `POLYGON_DEFAULTS`; static.
    num_classes: K including background.

  Returns:
    (noisy mask, log): the `geometry.replace_components` log (with 'untraced') plus per class
    'vertices' (max_components,), the vertex count of each slot (0 where not replaced).
  """
  if mask.ndim != 2:
    raise ConfigError(f'{POLYGON}.corrupt expects one (H, W) mask, got shape {mask.shape}')
  return geometry.replace_components(
      key, mask, _polygons(min_vertices, max_vertices, float(jitter), ref_length),
      num_classes=num_classes, connectivity=connectivity, max_components=max_components,
      min_area=min_area, trace_contours=True)


# ------------------------------------------------------------------------------------------------
# MS-TFAL mix
# ------------------------------------------------------------------------------------------------


def radius_scale(shape: tuple[int, int], reference_size: int) -> float:
  """Factor from reference-resolution radii to this mask's resolution."""
  return min(shape) / reference_size


def _draw(key: jax.Array, shape: tuple[int, int], type_probs: Sequence[float], min_radius: int,
          max_radius: int, scale: float, max_angle: float, max_translate: float,
          max_rescale: float) -> dict[str, jax.Array]:
  key_type, key_radius, key_angle, key_shift, key_scale = jax.random.split(key, 5)
  height, width = shape
  return {
      'type': jax.random.choice(key_type, len(TYPE_NAMES),
                                p=jnp.asarray(type_probs, jnp.float32)).astype(jnp.int32),
      'radius': jax.random.randint(key_radius, (), min_radius, max_radius + 1
                                   ).astype(jnp.float32) * scale,
      'angle': jax.random.uniform(key_angle, (), jnp.float32, -max_angle, max_angle),
      'translate': jax.random.uniform(key_shift, (2,), jnp.float32, -max_translate,
                                      max_translate) * jnp.array([height, width], jnp.float32),
      'scale': jax.random.uniform(key_scale, (), jnp.float32, 1 - max_rescale, 1 + max_rescale),
  }


def corrupt_mstfal(key: jax.Array, mask: jax.Array, *,
                   type_probs: Sequence[float] = MSTFAL_DEFAULTS['type_probs'],
                   min_radius: int = 40, max_radius: int = 50, reference_size: int = 1024,
                   max_angle: float = 30.0, max_translate: float = 0.2, max_rescale: float = 0.2,
                   min_vertices: int = 4, max_vertices: int = 8, jitter: float = 0.2,
                   ref_length: str = 'bbox', min_area: int = 1, connectivity: int = 8,
                   max_components: int = 16, num_classes: int = 2, branches: str = 'all'
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """One MS-TFAL corruption of one label map (the noisy subset is chosen elsewhere).

  `branches`: 'all', or 'disk' / 'polygon' / 'affine' when the drawn type is known to be
  dilate-or-erode / polygon / affine (`mstfal_selected`): the same output without the other
  types' programs, which under vmap a traced `lax.switch` would all compute.

  Returns:
    (noisy mask, log) with 'type' (index into `TYPE_NAMES`), 'radius' (px at this resolution),
    'angle' (degrees), 'translate' (2,) px, 'scale' (all drawn whatever the type), 'status'
    (0 ok, 1 empty: returned unchanged), per-class 'dice', 'rho_pix'.
  """
  if mask.ndim != 2:
    raise ConfigError(f'{MSTFAL}.corrupt expects one (H, W) mask, got shape {mask.shape}')
  height, width = mask.shape
  scale = radius_scale(mask.shape, reference_size)
  reach = max(1, math.ceil(max_radius * scale))
  key_draw, key_polygon = jax.random.split(key)
  draws = _draw(key_draw, mask.shape, type_probs, min_radius, max_radius, scale, max_angle,
                max_translate, max_rescale)
  clean_fg = geometry.class_masks(mask, num_classes)
  valid = mask != geometry.IGNORE
  center = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)

  def per_class(fn):
    return lambda: geometry.paint_classes(jax.vmap(fn)(clean_fg), valid, mask.dtype)

  def polygon():
    noisy, _ = corrupt_polygon(key_polygon, mask, min_vertices=min_vertices,
                               max_vertices=max_vertices, jitter=jitter, ref_length=ref_length,
                               min_area=min_area, connectivity=connectivity,
                               max_components=max_components, num_classes=num_classes)
    return noisy

  programs = (
      per_class(lambda fg: geometry.dilate_disk(fg, draws['radius'], reach)),
      per_class(lambda fg: geometry.erode_disk(fg, draws['radius'], reach)),
      polygon,
      per_class(lambda fg: geometry.affine_warp(fg, draws['angle'], draws['scale'],
                                                draws['translate'], center)),
  )
  if branches not in MSTFAL_BRANCHES:
    raise ConfigError(f'{MSTFAL}: unknown branches {branches!r}; valid: '
                      f'{", ".join(MSTFAL_BRANCHES)}')
  if branches == 'all':
    noisy = lax.switch(draws['type'], [lambda _, b=b: b() for b in programs], None)
  elif branches == 'disk':
    noisy = lax.switch(draws['type'], [lambda _, b=b: b() for b in programs[:2]], None)
  else:
    noisy = programs[POLY if branches == 'polygon' else AFFINE]()
  empty = ~jnp.any(clean_fg)
  noisy = jnp.where(empty, mask, noisy)
  class_dice = geometry.dice(clean_fg, geometry.class_masks(noisy, num_classes))
  log = dict(draws)
  log['status'] = jnp.where(empty, geometry.STATUS_EMPTY, geometry.STATUS_OK).astype(jnp.int32)
  log['dice'] = class_dice[0] if num_classes == 2 else class_dice
  log['rho_pix'] = geometry.safe_ratio(jnp.sum((noisy != mask) & valid), jnp.sum(valid),
                                       jnp.nan)
  return noisy, log


# ------------------------------------------------------------------------------------------------
# Parameters and logs
# ------------------------------------------------------------------------------------------------


def _resolve_polygon(name: str, params: Mapping[str, Any], defaults: Mapping[str, Any],
                     max_label: int) -> dict[str, Any]:
  resolved = geometry.resolve_common(name, params, defaults, max_label)
  low = geometry.as_int(name, 'min_vertices', resolved['min_vertices'], 3)
  high = geometry.as_int(name, 'max_vertices', resolved['max_vertices'], low, 64)
  resolved['min_vertices'], resolved['max_vertices'] = low, high
  resolved['jitter'] = geometry.as_number(name, 'jitter', resolved['jitter'], 0.0, 1.0)
  geometry.as_choice(name, 'ref_length', resolved['ref_length'], REF_LENGTHS)
  return resolved


def resolve_polygon(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """'polygon' params with defaults; ConfigError on an unknown key or a bad value."""
  return _resolve_polygon(POLYGON, params, POLYGON_DEFAULTS, max_label)


def resolve_mstfal(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """'mstfal' params with defaults; ConfigError on an unknown key or a bad value."""
  resolved = _resolve_polygon(MSTFAL, params, MSTFAL_DEFAULTS, max_label)
  probs = resolved['type_probs']
  if (not isinstance(probs, (tuple, list)) or len(probs) != len(TYPE_NAMES) or
      any(isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0 for p in probs) or
      not math.isclose(sum(probs), 1.0, abs_tol=1e-6)):
    raise ConfigError(f'{MSTFAL}: type_probs must be 4 non-negative numbers summing to 1 '
                      f'({", ".join(TYPE_NAMES)}), got {probs!r}')
  resolved['type_probs'] = tuple(float(p) for p in probs)
  low = geometry.as_int(MSTFAL, 'min_radius', resolved['min_radius'], 0)
  resolved['min_radius'] = low
  resolved['max_radius'] = geometry.as_int(MSTFAL, 'max_radius', resolved['max_radius'], low)
  resolved['reference_size'] = geometry.as_int(MSTFAL, 'reference_size',
                                               resolved['reference_size'], 1)
  resolved['max_angle'] = geometry.as_number(MSTFAL, 'max_angle', resolved['max_angle'], 0.0,
                                             180.0)
  resolved['max_translate'] = geometry.as_number(MSTFAL, 'max_translate',
                                                 resolved['max_translate'], 0.0, 1.0)
  resolved['max_rescale'] = geometry.as_number(MSTFAL, 'max_rescale', resolved['max_rescale'],
                                               0.0, 0.99)
  return resolved


def describe_polygon(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
                     ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  """('polygon' | 'empty' | 'too_small', settings, per-class entries with vertex counts)."""
  settings = {'jitter': params['jitter'], 'ref_length': params['ref_length']}
  if params['num_classes'] == 2:  # binary logs drop the class axis: restore it for 'vertices'
    log = {**log, 'vertices': np.asarray(log['vertices'])[None]}
  classes = geometry.class_entries(log, ('vertices',), POLYGON, settings)
  for entry in classes:
    if 'vertices' in entry['params']:
      entry['params']['vertices'] = [v for v in entry['params']['vertices'] if v > 0]
  status = geometry.STATUS_NAMES[int(log['status'])]
  return (POLYGON if status == 'ok' else status), settings, classes


def describe_mstfal(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
                    ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  """(type name, the draws that type used, the same entry for every class)."""
  if int(log['status']) != geometry.STATUS_OK:
    return 'empty', {}, []
  type_name = TYPE_NAMES[int(log['type'])]
  if type_name in ('dilate', 'erode'):
    type_params = {'radius': float(log['radius'])}
  elif type_name == 'affine':
    type_params = {'angle': float(log['angle']), 'translate': np.asarray(log['translate']).tolist(),
                   'scale': float(log['scale'])}
  else:
    type_params = {'jitter': params['jitter'], 'ref_length': params['ref_length']}
  num_fg = params['num_classes'] - 1
  return type_name, type_params, [{'type': type_name, 'params': dict(type_params)}
                                  for _ in range(num_fg)]


def _without_alpha(params: Mapping[str, Any]) -> dict[str, Any]:
  return {name: value for name, value in params.items() if name != 'alpha'}


# ------------------------------------------------------------------------------------------------
# Batched MS-TFAL grouped by type (the generator's fast path, as `radius.corrupt_selected`)
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _mstfal_type_program(frozen_kwargs: tuple, shape: tuple[int, int]):
  """jit(vmap) of a sample's type, drawn exactly as `corrupt_mstfal` draws it."""
  kwargs = dict(frozen_kwargs)
  scale = radius_scale(shape, kwargs['reference_size'])

  def one(base_key, index):
    key_draw, _ = jax.random.split(jax.random.fold_in(base_key, index))
    return _draw(key_draw, shape, kwargs['type_probs'], kwargs['min_radius'],
                 kwargs['max_radius'], scale, kwargs['max_angle'], kwargs['max_translate'],
                 kwargs['max_rescale'])['type']

  return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def mstfal_selected(params: Mapping[str, Any], seed: int, masks: np.ndarray,
                    indices: np.ndarray, chunk: int = 16
                    ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
  """`corrupt_mstfal` over the given masks, the types drawn first and each group run without
  the other types' programs: bit-identical to the generator's `vmap(corrupt)`, and the disk
  samples no longer pay for contour tracing."""
  from nsegjax.noise import generate  # pylint: disable=g-import-not-at-top  (it imports us)
  masks, indices = np.asarray(masks), np.asarray(indices)
  if len(masks) == 0:
    return masks.copy(), []
  frozen = tuple(sorted(_without_alpha(params).items()))
  with jax.default_device(jax.devices('cpu')[0]):
    base_key = jax.random.fold_in(jax.random.key(seed), MSTFAL_PROTOCOL.id)
    types = np.asarray(_mstfal_type_program(frozen, masks.shape[1:])(
        base_key, indices.astype(np.uint32)))
    groups = [({'branches': 'disk'}, np.flatnonzero(types <= ERODE), chunk),
              ({'branches': 'polygon'}, np.flatnonzero(types == POLY), chunk),
              ({'branches': 'affine'}, np.flatnonzero(types == AFFINE), chunk)]
    return generate.run_grouped(corrupt_mstfal, frozen, base_key, masks, indices, groups)


POLYGON_PROTOCOL = register(NoiseProtocol(
    name=POLYGON,
    version=2,  # 2: vertices by arc length on the traced contour (1: radial), cv2-style fill
    corrupt=lambda key, mask, params: corrupt_polygon(key, mask, **_without_alpha(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], POLYGON),
    resolve_params=resolve_polygon,
    describe=describe_polygon,
    default_params=MappingProxyType(POLYGON_DEFAULTS),
))

MSTFAL_PROTOCOL = register(NoiseProtocol(
    name=MSTFAL,
    version=2,  # 2: polygons as 'polygon' version 2
    corrupt=lambda key, mask, params: corrupt_mstfal(key, mask, **_without_alpha(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], MSTFAL),
    resolve_params=resolve_mstfal,
    describe=describe_mstfal,
    default_params=MappingProxyType(MSTFAL_DEFAULTS),
    corrupt_selected=mstfal_selected,
))
