"""Dense weak labels: boxes and coarse polygons (METHODS.md §2.8), as pure JAX on one sample.

No generator is published; every rule is (assumed default). Every training label is weak by
default (`alpha=1`). Classes are painted in ascending order; ignore pixels are kept.

'box': each connected component becomes its filled bounding rectangle; each of the four sides
moves outwards by U(-jitter, jitter) × the rectangle's side length along that axis (negative =
inwards), rounded to whole pixels, clipped to the image and never past the opposite side.

'coarse_polygon': each connected component becomes its outer contour simplified by
Douglas–Peucker, filled, as the usual `cv2.findContours` → `cv2.approxPolyDP` →
`cv2.fillPoly` recipe:
- the outer contour is traced pixel by pixel (`geometry.trace_outer_contours`, the contour
  `cv2.findContours(CHAIN_APPROX_NONE)` returns); holes are ignored, so they are filled;
- ε ~ U(min_epsilon, max_epsilon) × the contour's perimeter (its polygonal length, as
  `cv2.arcLength(contour, closed=True)`), drawn per component;
- Douglas–Peucker as `cv2.approxPolyDP(closed=True)` (split at the first contour point and
  the point farthest from it, then recursively at the farthest point while it is more than ε
  from the chord), computed greedily with a vertex budget (`geometry.douglas_peucker`): the
  vertex count is clamped to [min_vertices, max_vertices] = [4, 12] by stopping at 12 splits
  or splitting on below ε until there are 4. A contour with fewer than 4 points (a component
  of one to three pixels) keeps all its points;
- filled like `cv2.fillPoly`: non-zero winding plus every pixel the edges pass through.
A component whose contour does not fit the static contour buffer (4·(H + W) points per class)
is left unchanged and counted in the log ('untraced'). The perimeter and ε (px) of each
class's largest component are logged.
"""
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nsegjax.errors import ConfigError
from nsegjax.noise import geometry
from nsegjax.noise.base import NoiseProtocol, alpha_subset, register

BOX = 'box'
COARSE_POLYGON = 'coarse_polygon'

BOX_DEFAULTS: dict[str, Any] = {
    'alpha': 1.0,  # every training label is weak
    'jitter': 0.05,  # each side moves by U(-jitter, jitter) × its length
    'min_area': 1,  # components with fewer pixels stay unchanged
    'connectivity': 8,  # 4 | 8
    'max_components': 16,  # per class; the largest are boxed, the rest stay unchanged
    'num_classes': None,  # None: inferred from the clean masks (largest label + 1, at least 2)
}

COARSE_POLYGON_DEFAULTS: dict[str, Any] = {
    'alpha': 1.0,  # every training label is weak
    'min_epsilon': 0.01,  # ε ~ U(min_epsilon, max_epsilon) × perimeter
    'max_epsilon': 0.03,
    'min_vertices': 4,  # vertex count clamped to [min_vertices, max_vertices]
    'max_vertices': 12,
    'min_area': 1,
    'connectivity': 8,
    'max_components': 16,
    'num_classes': None,
}


# ------------------------------------------------------------------------------------------------
# Boxes
# ------------------------------------------------------------------------------------------------


def jittered_boxes(key: jax.Array, low: jax.Array, high: jax.Array, jitter: float,
                   shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """Inclusive (K, 2) box bounds with every side moved by U(-jitter, jitter) × the side length.

  Positive draws grow the box. Rounded to whole pixels, clipped to the image; a side never
  crosses the opposite one, so a box keeps at least one pixel.
  """
  length = (high - low + 1).astype(jnp.float32)
  key_low, key_high = jax.random.split(key)
  grow_low = jax.random.uniform(key_low, low.shape, jnp.float32, -jitter, jitter) * length
  grow_high = jax.random.uniform(key_high, high.shape, jnp.float32, -jitter, jitter) * length
  limit = jnp.array(shape, jnp.int32) - 1
  new_low = jnp.clip(jnp.round(low - grow_low).astype(jnp.int32), 0, high)
  new_high = jnp.clip(jnp.round(high + grow_high).astype(jnp.int32), new_low, limit)
  return new_low, new_high


def _boxes(jitter: float):

  def replace(key, ids, moments, selected):
    low, high = jittered_boxes(key, moments.bbox_min, moments.bbox_max, jitter, ids.shape)
    union = geometry.fill_boxes(ids.shape, low, high, selected)
    # The largest component's box, inclusive (row, col) corners.
    return union, {'box': jnp.concatenate([low[0], high[0]])}

  return replace


def corrupt_box(key: jax.Array, mask: jax.Array, *, jitter: float = 0.05, min_area: int = 1,
                connectivity: int = 8, max_components: int = 16, num_classes: int = 2
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Box weak label of one label map.

  Returns:
    (weak mask, log): the `geometry.replace_components` log (status 'empty' when there is no
    foreground: the mask is returned unchanged; per-class Dice(ỹ, y)) plus per class 'box',
    the jittered box of the largest component as (row0, col0, row1, col1), inclusive.
  """
  if mask.ndim != 2:
    raise ConfigError(f'{BOX}.corrupt expects one (H, W) mask, got shape {mask.shape}')
  return geometry.replace_components(key, mask, _boxes(float(jitter)), num_classes=num_classes,
                                     connectivity=connectivity, max_components=max_components,
                                     min_area=min_area)


# ------------------------------------------------------------------------------------------------
# Coarse polygons
# ------------------------------------------------------------------------------------------------


def _coarse_polygons(min_epsilon: float, max_epsilon: float, min_vertices: int,
                     max_vertices: int):
  """The `replace` callback of `geometry.replace_components` for Douglas–Peucker polygons."""

  def replace(key, ids, moments, selected, contours):
    del moments
    num_slots = selected.shape[0]
    fractions = jax.random.uniform(key, (num_slots,), jnp.float32, min_epsilon, max_epsilon)
    perimeter = geometry.contour_perimeters(contours)
    epsilon = fractions * perimeter
    kept, counts = geometry.douglas_peucker(contours, epsilon, min_vertices, max_vertices)
    vertices = geometry.gather_vertices(contours, kept, max_vertices)
    union = geometry.fill_polygons(ids.shape, vertices, counts, selected, include_boundary=True)
    # The largest component's figures (slot 0); the describe step keeps them per class.
    return union, {'vertices': jnp.where(selected, counts, 0)[0], 'epsilon_px': epsilon[0],
                   'perimeter': perimeter[0]}

  return replace


def corrupt_coarse_polygon(key: jax.Array, mask: jax.Array, *, min_epsilon: float = 0.01,
                           max_epsilon: float = 0.03, min_vertices: int = 4,
                           max_vertices: int = 12, min_area: int = 1, connectivity: int = 8,
                           max_components: int = 16, num_classes: int = 2
                           ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Coarse-polygon weak label of one label map.

  Returns:
    (weak mask, log): the `geometry.replace_components` log (with 'untraced') plus, for the
    largest component of each class, 'vertices', 'epsilon_px' and 'perimeter' (px).
  """
  if mask.ndim != 2:
    raise ConfigError(f'{COARSE_POLYGON}.corrupt expects one (H, W) mask, got shape '
                      f'{mask.shape}')
  return geometry.replace_components(
      key, mask, _coarse_polygons(float(min_epsilon), float(max_epsilon), min_vertices,
                                  max_vertices),
      num_classes=num_classes, connectivity=connectivity, max_components=max_components,
      min_area=min_area, trace_contours=True)


# ------------------------------------------------------------------------------------------------
# Parameters and logs
# ------------------------------------------------------------------------------------------------


def resolve_box(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """'box' params with defaults; ConfigError on an unknown key or a bad value."""
  resolved = geometry.resolve_common(BOX, params, BOX_DEFAULTS, max_label)
  resolved['jitter'] = geometry.as_number(BOX, 'jitter', resolved['jitter'], 0.0, 1.0)
  return resolved


def resolve_coarse_polygon(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """'coarse_polygon' params with defaults; ConfigError on an unknown key or a bad value."""
  name = COARSE_POLYGON
  resolved = geometry.resolve_common(name, params, COARSE_POLYGON_DEFAULTS, max_label)
  low = geometry.as_number(name, 'min_epsilon', resolved['min_epsilon'], 0.0, 0.5)
  high = geometry.as_number(name, 'max_epsilon', resolved['max_epsilon'], low, 0.5)
  if low <= 0:
    raise ConfigError(f'{name}: min_epsilon must be > 0, got {low}')
  resolved['min_epsilon'], resolved['max_epsilon'] = low, high
  low = geometry.as_int(name, 'min_vertices', resolved['min_vertices'], 3)
  resolved['min_vertices'] = low
  resolved['max_vertices'] = geometry.as_int(name, 'max_vertices', resolved['max_vertices'],
                                             low, 64)
  return resolved


def _describe(name: str, keys: tuple[str, ...], settings_of):

  def describe(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
               ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    settings = settings_of(params)
    classes = geometry.class_entries(log, keys, name, settings)
    status = geometry.STATUS_NAMES[int(log['status'])]
    return (name if status == 'ok' else status), settings, classes

  return describe


def _without_alpha(params: Mapping[str, Any]) -> dict[str, Any]:
  return {name: value for name, value in params.items() if name != 'alpha'}


BOX_PROTOCOL = register(NoiseProtocol(
    name=BOX,
    version=1,
    corrupt=lambda key, mask, params: corrupt_box(key, mask, **_without_alpha(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], BOX),
    resolve_params=resolve_box,
    describe=_describe(BOX, ('box',), lambda params: {'jitter': params['jitter']}),
    default_params=MappingProxyType(BOX_DEFAULTS),
))

COARSE_POLYGON_PROTOCOL = register(NoiseProtocol(
    name=COARSE_POLYGON,
    version=2,  # 2: Douglas–Peucker on the traced contour (1: radial n-gon), cv2-style fill
    corrupt=lambda key, mask, params: corrupt_coarse_polygon(key, mask,
                                                             **_without_alpha(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'],
                                                                COARSE_POLYGON),
    resolve_params=resolve_coarse_polygon,
    describe=_describe(COARSE_POLYGON, ('vertices', 'epsilon_px', 'perimeter'),
                       lambda params: {'epsilon': [params['min_epsilon'],
                                                   params['max_epsilon']]}),
    default_params=MappingProxyType(COARSE_POLYGON_DEFAULTS),
))
