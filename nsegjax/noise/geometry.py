"""Pure-JAX shape utilities shared by the shape-based noise and weak-label simulators.

Every function works on one (H, W) mask with static shapes, so it can be jitted and vmapped over
samples or classes. Coordinates are (row, col) floats with pixel centres at integer positions.

- `label_components`: 4- or 8-connected component labelling with a static cap on the number of
  components kept (the largest ones), by min-label propagation plus pointer jumping.
- `component_moments`: area, centroid, covariance and bounding box of each kept component.
- `fill_ellipse`, `fill_polygon`: filled rasterisation over all pixels (pixel centre inside).
- `radial_contour`: star-shaped contour sampling of a component along rays from its centroid.
- `squared_distance`, `dilate_disk`, `erode_disk`: exact Euclidean-disk morphology.
- `affine_warp`: nearest-neighbour rotation / scale / translation of a binary mask.
- `class_masks`, `paint_classes`, `safe_ratio`, `dice`: the class-map plumbing of METHODS §2.0
  point 4; `replace_components`: the per-component replace-and-paint loop of the shape
  protocols; `resolve_common` and friends: their shared parameter checks.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax.errors import ConfigError

IGNORE = 255

_NEIGHBOURS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
}

# ------------------------------------------------------------------------------------------------
# Class maps
# ------------------------------------------------------------------------------------------------


def class_masks(mask: jax.Array, num_classes: int) -> jax.Array:
  """(num_classes - 1, H, W) bool, one mask per foreground class; 255 is never foreground.

  With `num_classes == 2` every label in [1, 254] is foreground (as in `abn`).
  """
  if num_classes == 2:
    return ((mask >= 1) & (mask != IGNORE))[None]
  classes = jnp.arange(1, num_classes, dtype=mask.dtype)
  return mask[None] == classes[:, None, None]


def paint_classes(masks: jax.Array, valid: jax.Array, dtype) -> jax.Array:
  """Class map from per-class masks painted in ascending order (higher classes win, §2.0.4).

  Pixels outside `valid` are 255 whatever the masks say: ignore pixels are never modified.
  """
  classes = jnp.arange(1, masks.shape[0] + 1, dtype=jnp.int32)[:, None, None]
  painted = jnp.max(jnp.where(masks, classes, 0), axis=0)
  return jnp.where(valid, painted, IGNORE).astype(dtype)


def safe_ratio(num: jax.Array, den: jax.Array, if_zero: float) -> jax.Array:
  """num / den in float32, `if_zero` where den == 0."""
  num, den = jnp.asarray(num, jnp.float32), jnp.asarray(den, jnp.float32)
  return jnp.where(den > 0, num / jnp.maximum(den, 1.0), if_zero)


def dice(clean: jax.Array, noisy: jax.Array) -> jax.Array:
  """Dice of two bool masks over the trailing two axes; 1 when both are empty."""
  count = lambda m: jnp.sum(m, axis=(-2, -1), dtype=jnp.int32)
  return safe_ratio(2 * count(clean & noisy), count(clean) + count(noisy), 1.0)


# ------------------------------------------------------------------------------------------------
# Connected components
# ------------------------------------------------------------------------------------------------


class Components(NamedTuple):
  """Connected components of one binary mask, at most `max_components` of them kept.

  Attributes:
    ids: (H, W) int32, the slot 0..K-1 of the component a pixel belongs to; -1 for background
      and for pixels of components beyond the cap.
    valid: (K,) bool, slot k holds a component.
    count: int32 scalar, the number of components in the mask, kept or not.
  """
  ids: jax.Array
  valid: jax.Array
  count: jax.Array


def _neighbour_min(labels: jax.Array, fg: jax.Array, connectivity: int, sentinel: int
                   ) -> jax.Array:
  height, width = labels.shape
  padded = jnp.pad(labels, 1, constant_values=sentinel)
  smallest = labels
  for d_row, d_col in _NEIGHBOURS[connectivity]:
    smallest = jnp.minimum(smallest,
                           padded[1 + d_row:1 + d_row + height, 1 + d_col:1 + d_col + width])
  return jnp.where(fg, smallest, sentinel)


def _pointer_jump(labels: jax.Array, sentinel: int) -> jax.Array:
  # labels[p] is the flat index of a pixel in p's component, so following it once more stays in
  # the component and can only lower the label: information travels exponentially fast along
  # chains instead of one pixel per sweep.
  table = jnp.append(labels.ravel(), jnp.int32(sentinel))
  return table[labels]


def component_roots(fg: jax.Array, connectivity: int = 8) -> jax.Array:
  """(H, W) int32: each foreground pixel's smallest flat index in its component, H·W elsewhere.

  Alternates a min over the neighbours with two pointer jumps until nothing changes
  (`lax.while_loop`). The fixed point is exact: every pixel of a component ends up with the
  component's smallest flat index.
  """
  if connectivity not in _NEIGHBOURS:
    raise ValueError(f'connectivity must be 4 or 8, got {connectivity}')
  fg = fg.astype(bool)
  sentinel = fg.size
  flat_index = jnp.arange(fg.size, dtype=jnp.int32).reshape(fg.shape)
  start = jnp.where(fg, flat_index, sentinel)

  def sweep(state):
    labels, _ = state
    new = _neighbour_min(labels, fg, connectivity, sentinel)
    new = _pointer_jump(_pointer_jump(new, sentinel), sentinel)
    return new, jnp.any(new != labels)

  labels, _ = lax.while_loop(lambda state: state[1], sweep, (start, jnp.bool_(True)))
  return labels


def label_components(fg: jax.Array, connectivity: int = 8, max_components: int = 16
                     ) -> Components:
  """Labels the connected components of a binary mask and keeps the `max_components` largest.

  Slots are ordered by decreasing area, ties by raster order of the component's first pixel.
  Components beyond the cap get id -1 (callers leave them as they are and log `count`).
  """
  roots = component_roots(fg, connectivity)
  size = fg.size
  areas = jnp.zeros(size + 1, jnp.int32).at[roots.ravel()].add(1)[:size]
  count = jnp.sum(areas > 0, dtype=jnp.int32)
  kept_areas, kept_roots = lax.top_k(areas, min(max_components, size))
  valid = kept_areas > 0
  slots = jnp.arange(kept_roots.shape[0], dtype=jnp.int32)
  # Non-root flat indices never occur as a label, so writing invalid slots there is harmless.
  slot_of_root = jnp.full(size + 1, -1, jnp.int32).at[kept_roots].set(jnp.where(valid, slots, -1))
  ids = slot_of_root[roots]
  if kept_roots.shape[0] < max_components:
    pad = max_components - kept_roots.shape[0]
    valid = jnp.pad(valid, (0, pad))
  return Components(ids=ids, valid=valid, count=count)


# ------------------------------------------------------------------------------------------------
# Moments
# ------------------------------------------------------------------------------------------------


class Moments(NamedTuple):
  """Per-component pixel statistics, shape (K,) or (K, 2) / (K, 2, 2).

  Attributes:
    area: pixel count (0 for an empty slot).
    centroid: (row, col) mean of the pixel centres.
    covariance: population covariance of the pixel centres (divided by the area).
    bbox_min, bbox_max: inclusive (row, col) bounds; (0, 0) for an empty slot.
  """
  area: jax.Array
  centroid: jax.Array
  covariance: jax.Array
  bbox_min: jax.Array
  bbox_max: jax.Array


def component_moments(ids: jax.Array, num_slots: int) -> Moments:
  """Moments of every slot of an id map from `label_components` (-1 = no component)."""
  rows, cols = jnp.indices(ids.shape)
  segments = jnp.where(ids >= 0, ids, num_slots).ravel()
  num_segments = num_slots + 1

  def total(values):
    return jax.ops.segment_sum(values.ravel(), segments, num_segments)[:num_slots]

  area = total(jnp.ones(ids.shape, jnp.int32))
  denominator = jnp.maximum(area, 1).astype(jnp.float32)
  rows_f, cols_f = rows.astype(jnp.float32), cols.astype(jnp.float32)
  centroid = jnp.stack([total(rows_f), total(cols_f)], axis=-1) / denominator[:, None]
  # Two passes: centring before squaring keeps float32 exact enough on large images.
  padded_centroid = jnp.concatenate([centroid, jnp.zeros((1, 2), jnp.float32)])
  d_row = rows_f - padded_centroid[segments.reshape(ids.shape), 0]
  d_col = cols_f - padded_centroid[segments.reshape(ids.shape), 1]
  var_row = total(d_row * d_row) / denominator
  var_col = total(d_col * d_col) / denominator
  cov = total(d_row * d_col) / denominator
  covariance = jnp.stack([jnp.stack([var_row, cov], -1), jnp.stack([cov, var_col], -1)], -2)

  row_min = jax.ops.segment_min(rows.ravel(), segments, num_segments)[:num_slots]
  col_min = jax.ops.segment_min(cols.ravel(), segments, num_segments)[:num_slots]
  row_max = jax.ops.segment_max(rows.ravel(), segments, num_segments)[:num_slots]
  col_max = jax.ops.segment_max(cols.ravel(), segments, num_segments)[:num_slots]
  present = area > 0
  bbox_min = jnp.where(present[:, None], jnp.stack([row_min, col_min], -1), 0)
  bbox_max = jnp.where(present[:, None], jnp.stack([row_max, col_max], -1), 0)
  return Moments(area, centroid, covariance, bbox_min.astype(jnp.int32),
                 bbox_max.astype(jnp.int32))


def covariance_ellipse(covariance: jax.Array, scale: float = 1.0
                       ) -> tuple[jax.Array, jax.Array]:
  """Semi-axes (major, minor) = scale·2√λ and the major axis angle of a 2×2 covariance.

  The angle is measured from the row axis towards the column axis, in radians. A filled
  ellipse with semi-axes a, b has variances a²/4 and b²/4 along its axes, hence the factor 2.
  Each eigenvalue gets +1/12, the variance of a unit pixel square, so a one-pixel-wide
  component still yields a non-degenerate ellipse covering its pixel centres.
  """
  var_row, var_col = covariance[..., 0, 0], covariance[..., 1, 1]
  cov = covariance[..., 0, 1]
  mean = (var_row + var_col) / 2
  spread = jnp.sqrt(((var_row - var_col) / 2) ** 2 + cov ** 2)
  major = jnp.maximum(mean + spread, 0.0) + 1 / 12
  minor = jnp.maximum(mean - spread, 0.0) + 1 / 12
  angle = 0.5 * jnp.arctan2(2 * cov, var_row - var_col)
  semi_axes = jnp.stack([2 * scale * jnp.sqrt(major), 2 * scale * jnp.sqrt(minor)], -1)
  return semi_axes, angle


# ------------------------------------------------------------------------------------------------
# Rasterisation
# ------------------------------------------------------------------------------------------------


def _pixel_grid(shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  rows, cols = jnp.indices(shape, dtype=jnp.float32)
  return rows, cols


def fill_ellipse(shape: tuple[int, int], center: jax.Array, semi_axes: jax.Array,
                 angle: jax.Array) -> jax.Array:
  """(H, W) bool: pixel centres inside the ellipse (boundary included).

  Args:
    shape: (H, W).
    center: (row, col).
    semi_axes: (a, b), a along the direction `angle` (radians from the row axis towards the
      column axis), b perpendicular to it.
    angle: orientation of the first axis.
  """
  rows, cols = _pixel_grid(shape)
  d_row, d_col = rows - center[0], cols - center[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  along = d_row * cos + d_col * sin
  across = -d_row * sin + d_col * cos
  a = jnp.maximum(semi_axes[0], 1e-6)
  b = jnp.maximum(semi_axes[1], 1e-6)
  return (along / a) ** 2 + (across / b) ** 2 <= 1.0


def fill_polygon(shape: tuple[int, int], vertices: jax.Array, count: jax.Array | int
                 ) -> jax.Array:
  """(H, W) bool: pixel centres with a non-zero winding number about the polygon.

  Args:
    shape: (H, W).
    vertices: (V, 2) (row, col) vertices; only the first `count` are used, in order, closed.
    count: number of valid vertices (traced or static), 3 ≤ count ≤ V for a non-empty polygon.

  Non-zero winding (rather than even-odd) fills self-intersecting jittered polygons without
  holes, as `cv2.fillPoly` does. Pixel centres exactly on an edge follow the half-open
  convention of the crossing test (rows in [r0, r1)).
  """
  num = vertices.shape[0]
  order = jnp.arange(num)
  following = jnp.where(order + 1 < count, order + 1, 0)
  edge_valid = order < count
  start, end = vertices, vertices[following]
  rows, cols = _pixel_grid(shape)
  rows, cols = rows[..., None], cols[..., None]
  r0, c0, r1, c1 = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
  # > 0: the pixel lies left of the edge when walking from start to end in (col, row) axes.
  side = (c1 - c0) * (rows - r0) - (cols - c0) * (r1 - r0)
  upward = (r0 <= rows) & (r1 > rows) & (side > 0)
  downward = (r1 <= rows) & (r0 > rows) & (side < 0)
  winding = jnp.sum(jnp.where(edge_valid, upward.astype(jnp.int32) - downward.astype(jnp.int32),
                              0), axis=-1)
  return winding != 0


def fill_boxes(shape: tuple[int, int], lows: jax.Array, highs: jax.Array, valid: jax.Array
               ) -> jax.Array:
  """(H, W) bool union of inclusive integer rectangles [low, high] (rows, cols) where valid."""
  rows, cols = jnp.indices(shape)
  rows, cols = rows[..., None], cols[..., None]
  inside = ((rows >= lows[:, 0]) & (rows <= highs[:, 0]) & (cols >= lows[:, 1]) &
            (cols <= highs[:, 1]) & valid)
  return jnp.any(inside, axis=-1)


# ------------------------------------------------------------------------------------------------
# Contour sampling
# ------------------------------------------------------------------------------------------------


def radial_contour(ids: jax.Array, slot: jax.Array | int, center: jax.Array, angles: jax.Array,
                   step: float = 0.5) -> jax.Array:
  """Boundary radius of component `slot` along rays from `center` at the given angles.

  For each angle (radians from the row axis towards the column axis) the ray is marched in
  `step`-pixel steps up to the image diagonal; the result is the distance of the farthest
  sample that falls on a pixel of the component, plus half a pixel so that the vertex sits on
  the outer edge of that pixel rather than on its centre. A ray that meets no pixel of the
  component gives 0 (a vertex at the centre).

  Why not "equally spaced by arc length on the contour" (METHODS §2.7): tracing a contour is a
  sequential, data-dependent walk with a variable-length output, which neither jits to a fixed
  shape nor vmaps efficiently. Rays from the centroid give a fixed-shape, fully parallel
  star-shaped approximation: exact for convex and star-shaped components, while concavities
  hidden from the centroid are bridged (the outermost crossing wins).
  """
  height, width = ids.shape
  max_radius = math.hypot(height, width)
  distances = jnp.arange(0.0, max_radius, step, dtype=jnp.float32)
  d_row = jnp.cos(angles)[:, None] * distances
  d_col = jnp.sin(angles)[:, None] * distances
  rows = jnp.floor(center[0] + d_row + 0.5).astype(jnp.int32)
  cols = jnp.floor(center[1] + d_col + 0.5).astype(jnp.int32)
  inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
  hits = inside & (ids[jnp.clip(rows, 0, height - 1), jnp.clip(cols, 0, width - 1)] == slot)
  farthest = jnp.max(jnp.where(hits, distances, -1.0), axis=-1)
  return jnp.where(farthest >= 0, farthest + 0.5, 0.0)


def polygon_from_radii(center: jax.Array, angles: jax.Array, radii: jax.Array) -> jax.Array:
  """(V, 2) (row, col) vertices at `radii` along `angles` from `center`."""
  return jnp.stack([center[0] + radii * jnp.cos(angles), center[1] + radii * jnp.sin(angles)],
                   axis=-1)


def ray_angles(start: jax.Array, count: jax.Array | int, max_count: int) -> jax.Array:
  """(max_count,) angles start + 2πj/count; entries j ≥ count repeat the last valid one."""
  j = jnp.minimum(jnp.arange(max_count), count - 1).astype(jnp.float32)
  return start + 2 * jnp.pi * j / jnp.asarray(count, jnp.float32)


# ------------------------------------------------------------------------------------------------
# Euclidean-disk morphology
# ------------------------------------------------------------------------------------------------


def _distance_along_rows(seeds: jax.Array) -> jax.Array:
  """|col - nearest seed col| within each row, exactly; width + height where a row has none."""
  height, width = seeds.shape
  far = height + width

  def running(carry, column):
    carry = jnp.where(column, 0, carry + 1)
    return carry, carry

  start = jnp.full((height,), far, jnp.int32)
  _, forward = lax.scan(running, start, seeds.T)
  _, backward = lax.scan(running, start, seeds.T, reverse=True)
  return jnp.minimum(jnp.minimum(forward, backward).T, far)


def squared_distance(seeds: jax.Array, max_distance: int) -> jax.Array:
  """Squared Euclidean distance of every pixel to the nearest True pixel of `seeds`.

  Exact wherever the true distance is ≤ `max_distance` (a static int); elsewhere the value is
  only guaranteed to exceed max_distance². First the exact distance along each row, then a min
  over the row offsets |dy| ≤ max_distance of dy² + row_distance² (the nearest seed of a pixel
  within distance D lies at most D rows away, so the truncation loses nothing below D).
  """
  height, width = seeds.shape
  row_distance = _distance_along_rows(seeds.astype(bool))
  squared = row_distance.astype(jnp.int32) ** 2
  far = (height + width) ** 2 + 1
  reach = min(int(max_distance), height - 1)
  padded = jnp.pad(squared, ((reach, reach), (0, 0)), constant_values=far)
  best = squared
  for d_row in range(-reach, reach + 1):
    if d_row:
      best = jnp.minimum(best, padded[reach + d_row:reach + d_row + height] + d_row * d_row)
  return jnp.minimum(best, far)


def dilate_disk(fg: jax.Array, radius: jax.Array | float, max_radius: int) -> jax.Array:
  """Binary dilation by the Euclidean disk {d : |d|² ≤ radius²}, radius ≤ max_radius (static)."""
  return squared_distance(fg, max_radius) <= jnp.asarray(radius, jnp.float32) ** 2


def erode_disk(fg: jax.Array, radius: jax.Array | float, max_radius: int) -> jax.Array:
  """Binary erosion by the same disk; pixels outside the image count as background."""
  padded = jnp.pad(~fg.astype(bool), 1, constant_values=True)
  distance = squared_distance(padded, max_radius + 1)[1:-1, 1:-1]
  return fg.astype(bool) & (distance > jnp.asarray(radius, jnp.float32) ** 2)


def disk_footprint(radius: float) -> np.ndarray:
  """The NumPy disk footprint of the same radius (for SciPy / OpenCV comparisons)."""
  reach = int(math.floor(radius))
  offsets = np.arange(-reach, reach + 1)
  return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2


# ------------------------------------------------------------------------------------------------
# Affine warp
# ------------------------------------------------------------------------------------------------


def affine_warp(fg: jax.Array, angle_deg: jax.Array, scale: jax.Array, shift: jax.Array,
                center: jax.Array) -> jax.Array:
  """Rotates by `angle_deg` (counter-clockwise as displayed), scales by `scale` about `center`
  and then translates by `shift` (rows, cols); nearest-neighbour, zero outside the image."""
  height, width = fg.shape
  rows, cols = _pixel_grid(fg.shape)
  theta = jnp.deg2rad(angle_deg)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  # Inverse map: undo the shift, then rotate back by -θ and divide by the scale.
  d_row = rows - shift[0] - center[0]
  d_col = cols - shift[1] - center[1]
  src_row = (cos * d_row + sin * d_col) / scale + center[0]
  src_col = (cos * d_col - sin * d_row) / scale + center[1]
  src_row = jnp.floor(src_row + 0.5).astype(jnp.int32)
  src_col = jnp.floor(src_col + 0.5).astype(jnp.int32)
  inside = (src_row >= 0) & (src_row < height) & (src_col >= 0) & (src_col < width)
  values = fg[jnp.clip(src_row, 0, height - 1), jnp.clip(src_col, 0, width - 1)]
  return values & inside


# ------------------------------------------------------------------------------------------------
# Per-component replacement (ellipse, polygon, box, coarse polygon)
# ------------------------------------------------------------------------------------------------

# Sample-level status codes of the component-replacing protocols; `describe` prints the name.
STATUS_NAMES = ('ok', 'empty', 'too_small')
STATUS_OK, STATUS_EMPTY, STATUS_TOO_SMALL = 0, 1, 2


def replace_components(key: jax.Array, mask: jax.Array, replace, *, num_classes: int,
                       connectivity: int = 8, max_components: int = 16, min_area: int = 1
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Replaces every connected component of every foreground class by a shape, then paints.

  Args:
    key: per-sample PRNG key; class c gets fold_in(key, c), passed on to `replace`.
    mask: (H, W) class map, 255 = ignore (never modified).
    replace: replace(class_key, ids, moments, selected) -> ((H, W) bool union of the shapes of
      the selected slots, dict of per-class log arrays). `ids` and `moments` come from
      `label_components` / `component_moments`; `selected` (K,) marks the slots to replace.
    num_classes: K including background (2: every label in [1, 254] is foreground).
    connectivity: 4 or 8.
    max_components: static cap per class; larger-numbered (smaller) components stay unchanged.
    min_area: components with fewer pixels stay unchanged.

  Returns:
    (noisy mask, log). Per-class entries, (C-1,) or scalars when binary: 'components' (all
    components of the class), 'replaced', 'small' (kept: under min_area), 'dropped' (kept:
    beyond the cap), 'dice', plus whatever `replace` logs. Sample-level: 'status' (index into
    `STATUS_NAMES`), 'rho_pix', 'dice_all'.
  """
  clean_fg = class_masks(mask, num_classes)
  valid = mask != IGNORE
  num_fg = clean_fg.shape[0]

  def one_class(class_key, fg):
    components = label_components(fg, connectivity, max_components)
    moments = component_moments(components.ids, max_components)
    selected = components.valid & (moments.area >= min_area)
    shapes, extra = replace(class_key, components.ids, moments, selected)
    replaced_pixels = (components.ids >= 0) & selected[jnp.maximum(components.ids, 0)]
    counts = {
        'components': components.count,
        'replaced': jnp.sum(selected, dtype=jnp.int32),
        'small': jnp.sum(components.valid & ~selected, dtype=jnp.int32),
        'dropped': jnp.maximum(components.count - max_components, 0),
    }
    return (fg & ~replaced_pixels) | shapes, {**counts, **extra}

  class_keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(1, num_fg + 1))
  new_fg, per_class = jax.vmap(one_class)(class_keys, clean_fg)
  painted = paint_classes(new_fg, valid, mask.dtype)
  any_fg = jnp.any(clean_fg)
  nothing_replaced = jnp.sum(per_class['replaced']) == 0
  status = jnp.where(~any_fg, STATUS_EMPTY, jnp.where(nothing_replaced, STATUS_TOO_SMALL,
                                                      STATUS_OK)).astype(jnp.int32)
  # Nothing replaced means nothing to paint: return the input bit for bit (binary masks with
  # labels other than 1 would otherwise be renormalised to {0, 1, 255}).
  noisy = jnp.where(nothing_replaced, mask, painted)
  final_fg = class_masks(noisy, num_classes)
  per_class['dice'] = dice(clean_fg, final_fg)
  if num_fg == 1:
    per_class = {name: value[0] for name, value in per_class.items()}
  log = dict(per_class)
  log['status'] = status
  log['rho_pix'] = safe_ratio(jnp.sum((noisy != mask) & valid), jnp.sum(valid), jnp.nan)
  log['dice_all'] = dice(jnp.any(clean_fg, 0), jnp.any(final_fg, 0))
  return noisy, log


def class_entries(log, keys: tuple[str, ...], type_name: str, params: dict
                  ) -> list[dict]:
  """Per-class noise-log entries from a host-side `replace_components` log.

  A class with no component is 'empty'; one whose components were all kept is 'unchanged'.
  `keys` name the per-class log arrays copied into each class's params.
  """
  components = np.atleast_1d(log['components'])
  replaced = np.atleast_1d(log['replaced'])
  entries = []
  for c in range(components.shape[0]):
    counts = {name: int(np.atleast_1d(log[name])[c]) for name in
              ('components', 'replaced', 'small', 'dropped')}
    if components[c] == 0:
      entries.append({'type': 'empty', 'params': {}})
    elif replaced[c] == 0:
      entries.append({'type': 'unchanged', 'params': counts})
    else:
      extra = {name: np.atleast_1d(log[name])[c].tolist() for name in keys}
      entries.append({'type': type_name, 'params': {**params, **counts, **extra}})
  return entries


# ------------------------------------------------------------------------------------------------
# Parameter checks shared by the protocols of this package
# ------------------------------------------------------------------------------------------------


def check_keys(protocol: str, params, defaults) -> None:
  """Raises ConfigError naming the valid keys if `params` has an unknown one."""
  unknown = sorted(set(params) - set(defaults))
  if unknown:
    raise ConfigError(f'{protocol}: unknown parameter(s) {", ".join(map(repr, unknown))}; '
                      f'valid keys: {", ".join(defaults)}')


def as_number(protocol: str, name: str, value, low: float | None = None,
              high: float | None = None) -> float:
  """`value` as a float in [low, high]; ConfigError otherwise."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ConfigError(f'{protocol}: {name} must be a number, got {value!r}')
  value = float(value)
  if (low is not None and value < low) or (high is not None and value > high) or \
      not math.isfinite(value):
    raise ConfigError(f'{protocol}: {name} must be in [{low}, {high}], got {value}')
  return value


def as_int(protocol: str, name: str, value, low: int, high: int | None = None) -> int:
  """`value` as an int in [low, high]; ConfigError otherwise."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ConfigError(f'{protocol}: {name} must be an integer, got {value!r}')
  if value < low or (high is not None and value > high):
    bound = f'[{low}, {high}]' if high is not None else f'>= {low}'
    raise ConfigError(f'{protocol}: {name} must be {bound}, got {value}')
  return int(value)


def as_choice(protocol: str, name: str, value, choices) -> str:
  if value not in choices:
    raise ConfigError(f'{protocol}: unknown {name} {value!r}; valid choices: '
                      f'{", ".join(choices)}')
  return value


def resolve_num_classes(protocol: str, value, max_label: int) -> int:
  """K from the params (None: largest label + 1, at least 2), checked against the masks."""
  if value is None:
    value = max(int(max_label) + 1, 2)
  num_classes = as_int(protocol, 'num_classes', value, 2, IGNORE)
  if num_classes > 2 and max_label >= num_classes:
    raise ConfigError(f'{protocol}: num_classes={num_classes} but the masks contain label '
                      f'{max_label}')
  return num_classes


def resolve_common(protocol: str, params, defaults, max_label: int) -> dict:
  """Unknown keys, alpha in [0, 1], num_classes, connectivity, max_components, min_area."""
  check_keys(protocol, params, defaults)
  resolved = {**defaults, **params}
  resolved['alpha'] = as_number(protocol, 'alpha', resolved['alpha'], 0.0, 1.0)
  resolved['num_classes'] = resolve_num_classes(protocol, resolved['num_classes'], max_label)
  if 'connectivity' in resolved and resolved['connectivity'] not in (4, 8):
    raise ConfigError(f'{protocol}: connectivity must be 4 or 8, got '
                      f'{resolved["connectivity"]!r}')
  if 'max_components' in resolved:
    resolved['max_components'] = as_int(protocol, 'max_components',
                                         resolved['max_components'], 1, 1024)
  if 'min_area' in resolved:
    resolved['min_area'] = as_int(protocol, 'min_area', resolved['min_area'], 1)
  return resolved
