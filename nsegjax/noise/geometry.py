"""Pure-JAX shape utilities shared by the shape-based noise and weak-label simulators.

Every function works on one (H, W) mask with static shapes, so it can be jitted and vmapped over
samples or classes. Coordinates are (row, col) floats with pixel centres at integer positions.

- `label_components`: 4- or 8-connected component labelling with a static cap on the number of
  components kept (the largest ones), by min-label propagation along neighbours and whole
  runs, plus pointer jumping.
- `component_moments`: area, centroid, covariance and bounding box of each kept component.
- `fill_ellipse`: filled rasterisation over all pixels (pixel centre inside); `fill_polygons`,
  `fill_polygon`: the same for polygons by scanline events (optionally with their outline).
- `trace_outer_contours`: Moore-neighbour tracing of each component's outer contour in a
  `lax.while_loop`, into one static buffer; `contour_perimeters`, `resample_contours` (points
  equally spaced by arc length) and `douglas_peucker` (budgeted, greedy) work on its output.
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
from nsegjax.noise import morphology

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
    start: (K,) int32 flat index of each slot's first pixel in raster order (its smallest flat
      index; 0 for an empty slot): where contour tracing starts.
  """
  ids: jax.Array
  valid: jax.Array
  count: jax.Array
  start: jax.Array


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


def _run_min(labels: jax.Array, fg: jax.Array, sentinel: int, axis: int) -> jax.Array:
  """The min of `labels` over each run of consecutive foreground pixels along `axis`.

  A forward and a backward running min that restarts at every background pixel, as two
  `lax.scan`s over the lines; measured about 3× faster on CPU than the same segmented min by
  `lax.associative_scan`.
  """
  values, mask = jnp.moveaxis(labels, axis, 0), jnp.moveaxis(fg, axis, 0)

  def running(carry, line):
    value, inside = line
    carry = jnp.where(inside, jnp.minimum(carry, value), sentinel)
    return carry, carry

  start = jnp.full(values.shape[1:], sentinel, values.dtype)
  _, forward = lax.scan(running, start, (values, mask))
  _, both = lax.scan(running, start, (forward, mask), reverse=True)
  return jnp.moveaxis(both, 0, axis)


def component_roots(fg: jax.Array, connectivity: int = 8) -> jax.Array:
  """(H, W) int32: each foreground pixel's smallest flat index in its component, H·W elsewhere.

  Each sweep takes the min over the neighbours, then the min over every horizontal and then
  every vertical run of foreground pixels (so a label crosses a whole run in one sweep), then
  two pointer jumps; sweeps repeat until nothing changes (`lax.while_loop`). The fixed point is
  exact: every pixel of a component ends up with the component's smallest flat index. The run
  mins cut the sweeps from up to ~80 (a long winding polyp mask under the neighbour min alone)
  to 3 or 4 on Kvasir masks, which matters under vmap, where a batch runs as many sweeps as its
  worst mask.
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
    new = _run_min(_run_min(new, fg, sentinel, 1), fg, sentinel, 0)
    new = _pointer_jump(_pointer_jump(new, sentinel), sentinel)
    return new, jnp.any(new != labels)

  labels, _ = lax.while_loop(lambda state: state[1], sweep, (start, jnp.bool_(True)))
  return labels


def _top_k_2d(values: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """`lax.top_k(values.ravel(), k)` for non-negative (H, W) values: (k,) values, flat indices.

  Equal values come lowest flat index first, as `lax.top_k`. `lax.top_k` over a whole 256×256
  image sorts it, about 6 ms per mask on CPU; here k rounds each take the row with the largest
  row maximum, the first largest entry in it, then blank it (-1) and refresh that row's
  maximum: O(H·W + k·(H + W)), about 10× faster.
  """
  width = values.shape[1]

  def take(i, state):
    values, row_max, kept, where = state
    row = jnp.argmax(row_max)
    col = jnp.argmax(values[row])
    kept = kept.at[i].set(values[row, col])
    where = where.at[i].set(row * width + col)
    values = values.at[row, col].set(-1)
    return values, row_max.at[row].set(jnp.max(values[row])), kept, where

  state = (values, jnp.max(values, axis=1), jnp.zeros(k, values.dtype), jnp.zeros(k, jnp.int32))
  _, _, kept, where = lax.fori_loop(0, k, take, state)
  return kept, where


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
  kept_areas, kept_roots = _top_k_2d(areas.reshape(fg.shape), min(max_components, size))
  valid = kept_areas > 0
  slots = jnp.arange(kept_roots.shape[0], dtype=jnp.int32)
  # Non-root flat indices never occur as a label, so writing invalid slots there is harmless.
  slot_of_root = jnp.full(size + 1, -1, jnp.int32).at[kept_roots].set(jnp.where(valid, slots, -1))
  ids = slot_of_root[roots]
  start = jnp.where(valid, kept_roots, 0).astype(jnp.int32)
  if kept_roots.shape[0] < max_components:
    pad = max_components - kept_roots.shape[0]
    valid = jnp.pad(valid, (0, pad))
    start = jnp.pad(start, (0, pad))
  return Components(ids=ids, valid=valid, count=count, start=start)


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


# Polygons with at most this many edges order their crossings pairwise, larger ones by a sort.
_PAIRWISE_MAX_EDGES = 16


def _edge_endpoints(vertices: jax.Array, counts: jax.Array, valid: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(K, V, 2) start and end points of every polygon edge, and (K, V) which edges exist."""
  num = vertices.shape[-2]
  order = jnp.arange(num)
  counts = jnp.asarray(counts)[..., None]
  following = jnp.where(order + 1 < counts, order + 1, 0)
  end = jnp.take_along_axis(vertices, following[..., None], axis=-2)
  return vertices, end, (order < counts) & valid[..., None]


def _winding_events(start: jax.Array, end: jax.Array, edge_valid: jax.Array, height: int,
                    width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Scanline events of the non-zero-winding interior of each polygon: (K, V, H) row, column
  and ±1 value; summed over columns ≤ c they give 1 where pixel c of that row is inside.

  Pixel (r, c) has winding number -Σ d_e over the edges e that cross row r at x_e ≤ c, with
  d_e = ±1 the edge's vertical direction (a ray cast towards +columns). So the winding number
  only changes at column ceil(x_e). Ordering the crossings of one polygon and row by
  (ceil(x_e), e), the interior indicator changes by [w after e ≠ 0] - [w before e ≠ 0] at
  crossing e; these changes telescope, and summing them over several polygons counts how many
  polygons cover a pixel, so one cumulative sum gives the union.
  """
  rows = jnp.arange(height, dtype=jnp.float32)
  r0, c0 = start[..., 0, None], start[..., 1, None]
  r1, c1 = end[..., 0, None], end[..., 1, None]
  upward = (r0 <= rows) & (rows < r1)
  downward = (r1 <= rows) & (rows < r0)
  direction = (upward.astype(jnp.int32) - downward.astype(jnp.int32)) * edge_valid[..., None]
  rise = jnp.where(r1 == r0, 1.0, r1 - r0)
  crossing = c0 + (c1 - c0) * (rows - r0) / rise
  column = jnp.clip(jnp.ceil(crossing), 0, width).astype(jnp.int32)
  column = jnp.where(direction != 0, column, width)  # (K, V, H)
  num_edges = column.shape[1]
  if num_edges <= _PAIRWISE_MAX_EDGES:
    # The winding number after each crossing from a pairwise comparison of the crossings of one
    # polygon and row, ties broken by edge index: O(V²), but no sort (slow on CPU for short rows).
    edge = jnp.arange(num_edges)
    tie_ok = (edge[:, None] <= edge[None, :])[None, :, :, None]
    col_e, col_j = column[:, :, None, :], column[:, None, :, :]
    before = (col_e < col_j) | ((col_e == col_j) & tie_ok)  # (K, e, j, H)
    after = jnp.sum(jnp.where(before, direction[:, :, None, :], 0), axis=1)  # (K, j, H)
  else:
    # A stable sort by column keeps edge order among ties, then a running sum.
    column, direction = lax.sort((jnp.swapaxes(column, 1, 2), jnp.swapaxes(direction, 1, 2)),
                                 dimension=2, is_stable=True, num_keys=1)
    after = jnp.swapaxes(jnp.cumsum(direction, axis=2), 1, 2)
    column, direction = jnp.swapaxes(column, 1, 2), jnp.swapaxes(direction, 1, 2)
  ahead = after - direction
  value = (after != 0).astype(jnp.int32) - (ahead != 0).astype(jnp.int32)
  row_index = jnp.broadcast_to(jnp.arange(height, dtype=jnp.int32), column.shape)
  return row_index, column, value


def _boundary_events(start: jax.Array, end: jax.Array, edge_valid: jax.Array, height: int,
                     width: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Scanline events of the pixels each edge passes through: ((K, V, H) row, first column,
  one past the last column, whether the edge meets that row's band).

  The part of an edge inside the band [r - 1/2, r + 1/2] of row r spans columns [lo, hi]; it
  crosses the pixels round(lo) … round(hi) of that row (pixel c spans [c - 1/2, c + 1/2)).
  """
  rows = jnp.arange(height, dtype=jnp.float32)
  r0, c0 = start[..., 0, None], start[..., 1, None]
  r1, c1 = end[..., 0, None], end[..., 1, None]
  meets = (jnp.minimum(r0, r1) <= rows + 0.5) & (jnp.maximum(r0, r1) >= rows - 0.5)
  meets = meets & edge_valid[..., None]
  flat = r1 == r0
  rise = jnp.where(flat, 1.0, r1 - r0)
  t_a = jnp.clip((rows - 0.5 - r0) / rise, 0.0, 1.0)
  t_b = jnp.clip((rows + 0.5 - r0) / rise, 0.0, 1.0)
  x_a = jnp.where(flat, c0, c0 + t_a * (c1 - c0))
  x_b = jnp.where(flat, c1, c0 + t_b * (c1 - c0))
  low = jnp.floor(jnp.minimum(x_a, x_b) + 0.5)
  high = jnp.floor(jnp.maximum(x_a, x_b) + 0.5) + 1
  low = jnp.clip(low, 0, width).astype(jnp.int32)
  high = jnp.clip(high, 0, width).astype(jnp.int32)
  row_index = jnp.broadcast_to(jnp.arange(height, dtype=jnp.int32), low.shape)
  return row_index, low, high, meets


def fill_polygons(shape: tuple[int, int], vertices: jax.Array, counts: jax.Array,
                  valid: jax.Array, include_boundary: bool = False) -> jax.Array:
  """(H, W) bool union of K filled polygons (each by the non-zero winding rule).

  Args:
    shape: (H, W).
    vertices: (K, V, 2) (row, col) vertices; polygon k uses its first `counts[k]`, closed.
    counts: (K,) number of valid vertices per polygon (traced).
    valid: (K,) bool, which polygons to draw.
    include_boundary: also fill every pixel the polygon's edges pass through, as
      `cv2.fillPoly` does (it rasterises the outline too). Then a polygon with one or two
      vertices is a pixel or a line instead of nothing. Close to, not bit-identical with,
      OpenCV: its outline is a thinner 8-connected line, so about 5% of the pixels differ on
      random star-shaped integer polygons (without the outline about 12% would).

  A scanline formulation: per polygon, edge and row a few events (the columns where the inside
  indicator switches on or off), scattered into one (H, W + 1) array and summed along the rows:
  O(V²·H) per polygon plus O(H·W) once, instead of testing every pixel against every edge.
  The polygons are drawn one at a time in a `lax.while_loop` that stops after the last valid
  one, so the usual one or two components of a class do not pay for all K slots (under vmap,
  a batch pays for its mask with the most).
  """
  height, width = shape
  start, end, edge_valid = _edge_endpoints(vertices.astype(jnp.float32), counts, valid)
  last = jnp.max(jnp.where(valid, jnp.arange(valid.shape[0]), -1))

  def draw(state):
    k, events = state
    one = (start[k][None], end[k][None], edge_valid[k][None], height, width)
    row_index, column, value = _winding_events(*one)
    events = events.at[row_index, column].add(value)
    if include_boundary:
      row_index, low, high, meets = _boundary_events(*one)
      events = events.at[row_index, low].add(meets.astype(jnp.int32))
      events = events.at[row_index, high].add(-meets.astype(jnp.int32))
    return k + 1, events

  events = jnp.zeros((height, width + 1), jnp.int32)
  _, events = lax.while_loop(lambda state: state[0] <= last, draw, (jnp.int32(0), events))
  return jnp.cumsum(events, axis=1)[:, :width] > 0


def fill_polygon(shape: tuple[int, int], vertices: jax.Array, count: jax.Array | int,
                 include_boundary: bool = False) -> jax.Array:
  """(H, W) bool: pixel centres with a non-zero winding number about one polygon.

  Args:
    shape: (H, W).
    vertices: (V, 2) (row, col) vertices; only the first `count` are used, in order, closed.
    count: number of valid vertices (traced or static), 3 ≤ count ≤ V for a non-empty polygon.
    include_boundary: also fill the pixels the edges pass through (see `fill_polygons`).

  Non-zero winding (rather than even-odd) fills self-intersecting jittered polygons without
  holes, as `cv2.fillPoly` does. Pixel centres exactly on an edge follow the half-open
  convention of the crossing test (rows in [r0, r1), columns left of the crossing).
  """
  return fill_polygons(shape, vertices[None], jnp.asarray(count)[None], jnp.ones(1, bool),
                       include_boundary)


def fill_boxes(shape: tuple[int, int], lows: jax.Array, highs: jax.Array, valid: jax.Array
               ) -> jax.Array:
  """(H, W) bool union of inclusive integer rectangles [low, high] (rows, cols) where valid."""
  rows, cols = jnp.indices(shape)
  rows, cols = rows[..., None], cols[..., None]
  inside = ((rows >= lows[:, 0]) & (rows <= highs[:, 0]) & (cols >= lows[:, 1]) &
            (cols <= highs[:, 1]) & valid)
  return jnp.any(inside, axis=-1)


# ------------------------------------------------------------------------------------------------
# Contours
# ------------------------------------------------------------------------------------------------

# The Moore neighbourhood in clockwise order as displayed (rows grow downwards), from east.
_RING = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
_WEST = 4
# After a step to ring direction d, the background pixel examined just before it (ring
# direction d - 1 around the old pixel) lies in direction _BACK[d] from the new pixel.
_BACK = (6, 6, 0, 0, 2, 2, 4, 4)


def contour_budget(shape: tuple[int, int]) -> int:
  """Default static number of contour points stored per class mask: 4·(H + W).

  A convex component's 8-connected outer contour has fewer than 2·(H + W) points, so this
  holds every contour of typical masks with room to spare; see `trace_outer_contours` for what
  happens to components that do not fit.
  """
  return 4 * (shape[0] + shape[1])


class Contours(NamedTuple):
  """The outer contours of the slots of one id map, stored one after the other.

  Attributes:
    points: (L, 2) int32 (row, col) contour pixels; slot k's closed contour is
      points[offset[k]:offset[k] + length[k]], counter-clockwise as displayed (rows grow
      downwards), starting at the slot's first pixel in raster order: the sequence
      `cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_NONE)` returns. Rows past the last contour
      are 0.
    slot: (L,) int32, the slot each row belongs to; -1 for unused rows.
    offset: (K,) int32 first row of each slot's contour.
    length: (K,) int32 number of contour points; 0 for a slot that was not traced.
  """
  points: jax.Array
  slot: jax.Array
  offset: jax.Array
  length: jax.Array

  @property
  def traced(self) -> jax.Array:
    return self.length > 0


def trace_outer_contours(ids: jax.Array, starts: jax.Array, selected: jax.Array,
                         max_length: int | None = None) -> Contours:
  """Moore-neighbour tracing of the outer contour of every selected slot of an id map.

  Args:
    ids: (H, W) int32 slot map from `label_components` (-1 = background).
    starts: (K,) int32 flat index of each slot's first pixel in raster order
      (`Components.start`); its west neighbour is never in the slot, so tracing starts there.
    selected: (K,) bool, the slots to trace.
    max_length: static number of points stored for all slots together (default
      `contour_budget`).

  Returns:
    `Contours`. The walk keeps the component on its right: from each pixel it scans the 8
    neighbours clockwise, starting just after the background pixel it came from, and steps to
    the first pixel of the slot. It stops when it is back at the start pixel and about to
    repeat its first step (the stopping rule of Suzuki & Abe 1985, as in `cv2.findContours`),
    so one-pixel-wide parts are walked on both sides and a pixel can appear more than once.
    The walk is then stored in reverse from the start pixel, which gives exactly the point
    sequence of `cv2.findContours` (checked against OpenCV on random masks). Holes are
    ignored. An isolated pixel is a contour of length 1.

  Slots are traced one after another in a `lax.while_loop`, one contour step per iteration,
  so the cost is the total contour length, and a vmapped batch runs as long as its longest
  mask. Fallback: a slot whose contour does not fit in the points left (L minus the contours
  before it) is not traced (length 0, its partial walk is dropped) and callers keep the
  component as it is; later, smaller slots still get their turn.
  """
  height, width = ids.shape
  num_slots = selected.shape[0]
  cap = contour_budget(ids.shape) if max_length is None else int(max_length)
  stride = width + 2
  padded = jnp.pad(ids, 1, constant_values=-1).ravel()
  ring = jnp.array([d_row * stride + d_col for d_row, d_col in _RING], jnp.int32)
  back = jnp.array(_BACK, jnp.int32)
  start_at = (starts // width + 1) * stride + starts % width + 1  # flat index in `padded`
  slots = jnp.arange(num_slots, dtype=jnp.int32)
  # The selected slot after k (num_slots: none), and the first one.
  later = jnp.concatenate([jnp.where(selected, slots, num_slots)[1:],
                           jnp.array([num_slots], jnp.int32)])
  following = lax.cummin(later, reverse=True)
  first = jnp.min(jnp.where(selected, slots, num_slots))

  def body(state):
    slot, step, here, came_from, second, count, offset, length, points = state
    current = jnp.minimum(slot, num_slots - 1)
    origin = start_at[current]
    here = jnp.where(step == 0, origin, here)
    came_from = jnp.where(step == 0, _WEST, came_from)
    directions = (came_from + 1 + jnp.arange(8, dtype=jnp.int32)) % 8
    hits = padded[here + ring[directions]] == current
    direction = directions[jnp.argmax(hits)]
    there = here + ring[direction]
    closing = ~jnp.any(hits) | ((step > 0) & (here == origin) & (there == second))
    write = (step == 0) | ~closing
    fits = count < cap
    point = jnp.stack([here // stride - 1, here % stride - 1])
    points = lax.dynamic_update_slice(points, point[None],
                                      (jnp.where(write & fits, count, cap), 0))
    count = count + write.astype(jnp.int32)
    overflow = write & ~fits
    finished = closing | overflow
    is_current = slots == current
    length = jnp.where(is_current & finished,
                       jnp.where(overflow, 0, count - offset[current]), length)
    count = jnp.where(overflow, offset[current], count)  # drop the partial walk
    upcoming = following[current]
    offset = jnp.where(finished & (slots == upcoming), count, offset)
    second = jnp.where(step == 0, there, second)
    slot = jnp.where(finished, upcoming, slot)
    step = jnp.where(finished, 0, step + 1)
    return slot, step, there, back[direction], second, count, offset, length, points

  zero = jnp.int32(0)
  offset = jnp.where(slots == first, 0, jnp.zeros(num_slots, jnp.int32))
  state = (first, zero, zero, zero, zero, zero, offset, jnp.zeros(num_slots, jnp.int32),
           jnp.zeros((cap + 1, 2), jnp.int32))
  state = lax.while_loop(lambda s: s[0] < num_slots, body, state)
  _, _, _, _, _, count, offset, length, points = state
  rows = jnp.arange(cap, dtype=jnp.int32)
  owned = (rows[:, None] >= offset) & (rows[:, None] < offset + length)
  slot = jnp.where(jnp.any(owned, axis=1), jnp.argmax(owned, axis=1), -1).astype(jnp.int32)
  # Walked clockwise; stored counter-clockwise from the same first point, as cv2 returns it,
  # so that "first along the contour" (tie-breaks in `douglas_peucker`) means the same.
  first_row = offset[jnp.maximum(slot, 0)]
  size = jnp.maximum(length[jnp.maximum(slot, 0)], 1)
  source = first_row + jnp.mod(first_row - rows, size)
  points = jnp.where((slot >= 0)[:, None], points[jnp.where(slot >= 0, source, cap)], 0)
  del count
  return Contours(points=points, slot=slot, offset=offset, length=length)


def _successors(contours: Contours) -> tuple[jax.Array, jax.Array]:
  """Index of each point's successor on its closed contour, and the step length to it."""
  rows = jnp.arange(contours.slot.shape[0], dtype=jnp.int32)
  slot = jnp.maximum(contours.slot, 0)
  start = contours.offset[slot]
  successor = jnp.where(rows + 1 < start + contours.length[slot], rows + 1, start)
  delta = (contours.points[successor] - contours.points).astype(jnp.float32)
  step = jnp.sqrt(jnp.sum(delta * delta, axis=-1))
  return successor, jnp.where(contours.slot >= 0, step, 0.0)


def contour_perimeters(contours: Contours) -> jax.Array:
  """(K,) closed polygonal length of each contour (steps of 1 and √2), as `cv2.arcLength`."""
  _, step = _successors(contours)
  arc = jnp.concatenate([jnp.zeros(1, jnp.float32), jnp.cumsum(step)])
  return arc[contours.offset + contours.length] - arc[contours.offset]


def resample_contours(contours: Contours, fractions: jax.Array) -> jax.Array:
  """(K, V, 2) float points at the given fractions of each closed contour's arc length.

  Args:
    contours: from `trace_outer_contours`.
    fractions: (K, V) in [0, 1); 0 is the contour's first point, arc length runs along the
      traced (clockwise) order and points between two contour pixels are interpolated.

  A slot that was not traced gives points at (0, 0); callers must not use them.
  """
  successor, step = _successors(contours)
  arc = jnp.concatenate([jnp.zeros(1, jnp.float32), jnp.cumsum(step)])  # arc[i]: start of i
  first = contours.offset
  last = first + jnp.maximum(contours.length, 1) - 1
  perimeter = arc[first + contours.length] - arc[first]
  target = arc[first][:, None] + fractions * perimeter[:, None]
  index = jnp.searchsorted(arc, target, side='right') - 1
  index = jnp.clip(index, first[:, None], last[:, None])
  along = (target - arc[index]) / jnp.where(step[index] > 0, step[index], 1.0)
  start = contours.points[index].astype(jnp.float32)
  end = contours.points[successor[index]].astype(jnp.float32)
  return start + jnp.clip(along, 0.0, 1.0)[..., None] * (end - start)


def _first_argmax_per_slot(values: jax.Array, order: jax.Array, slot: jax.Array,
                           num_slots: int) -> tuple[jax.Array, jax.Array]:
  """Per slot, the largest value (-inf / INT_MIN without points) and the row holding it; ties
  go to the smallest `order`."""
  segments = jnp.where(slot >= 0, slot, num_slots)
  best = jax.ops.segment_max(values, segments, num_slots + 1)[:num_slots]
  is_best = (slot >= 0) & (values == best[jnp.maximum(slot, 0)])
  first = jax.ops.segment_min(jnp.where(is_best, order, jnp.iinfo(jnp.int32).max), segments,
                              num_slots + 1)[:num_slots]
  rows = jnp.arange(values.shape[0], dtype=jnp.int32)
  hit = is_best & (order == first[jnp.maximum(slot, 0)])
  where = jax.ops.segment_min(jnp.where(hit, rows, values.shape[0]), segments,
                              num_slots + 1)[:num_slots]
  return best, where


# `cv2.approxPolyDP(closed=True)` looks for its first split pair by this many farthest-point
# rounds from the contour's first point.
_DP_INIT_ROUNDS = 3


def douglas_peucker(contours: Contours, epsilon: jax.Array, min_vertices: int,
                    max_vertices: int) -> tuple[jax.Array, jax.Array]:
  """Douglas–Peucker simplification of every closed contour, with a vertex budget.

  Args:
    contours: from `trace_outer_contours`.
    epsilon: (K,) tolerance per slot, in pixels.
    min_vertices, max_vertices: static bounds on the vertex count (when the contour has enough
      points).

  Returns:
    ((L,) bool, the contour points kept as vertices; (K,) int32 vertex count per slot).

  The closed contour is first split in two at a pair of far-apart points, found as
  `cv2.approxPolyDP(closed=True)` does: three rounds of "the point farthest from the current
  one", starting from the contour's first point; the last two points visited are the pair.
  Then, instead of recursing, the split is greedy: each of `max_vertices - 2` rounds adds, per
  slot, the point farthest from the chord of the polygon edge it lies on, if that distance
  exceeds ε and the slot has fewer than `max_vertices` vertices, or whatever the distance while
  it has fewer than `min_vertices`. Each round is a few vectorised passes over the L points.
  Splitting one edge never changes the other edges' farthest points, so when the budget does
  not bind this keeps exactly the vertices of recursive Douglas–Peucker (and of
  `cv2.approxPolyDP`); when it does, the vertices kept are the most significant splits. Ties
  go to the first point along the contour after the first vertex of the pair, as OpenCV's
  strict `>` scans (and `np.argmax` in a recursive version). Distances are to the chord's line
  (to its start when the chord has zero length).
  """
  num_slots = epsilon.shape[0]
  num_rows = contours.slot.shape[0]
  rows = jnp.arange(num_rows, dtype=jnp.int32)
  on_contour = contours.slot >= 0
  slot = jnp.maximum(contours.slot, 0)
  start = contours.offset[slot]
  size = jnp.maximum(contours.length[slot], 1)
  end = start + contours.length[slot]
  points = contours.points

  def cyclic(origin):  # position of each point along its contour, counted from `origin`
    return jnp.mod(rows - origin[slot], size)

  # Farthest-point rounds (integer squared distances: exact ties).
  current = contours.offset
  previous = current
  for _ in range(_DP_INIT_ROUNDS):
    delta = points - points[current[slot]]
    distance = jnp.where(on_contour, jnp.sum(delta * delta, axis=-1), -1)
    _, farthest = _first_argmax_per_slot(distance, cyclic(current), contours.slot, num_slots)
    previous, current = current, jnp.where(contours.length > 0, farthest, contours.offset)
  anchor = previous
  kept = on_contour & ((rows == previous[slot]) | (rows == current[slot]))
  count = jnp.where(contours.length > 0, 1 + (previous != current).astype(jnp.int32), 0)
  order = cyclic(anchor)  # consistent with the order along every chord's chain
  points = points.astype(jnp.float32)

  def split(_, state):
    kept, count = state
    before = lax.cummax(jnp.where(kept, rows, -1))
    after = lax.cummin(jnp.where(kept, rows, num_rows), reverse=True)
    # Wrap around: before the slot's first vertex comes its last, after its last its first.
    last = before[jnp.maximum(end - 1, 0)]
    first = after[start]
    before = jnp.where(before >= start, before, last)
    after = jnp.where(after < end, after, first)
    a, b = points[jnp.clip(before, 0, num_rows - 1)], points[jnp.clip(after, 0, num_rows - 1)]
    chord = b - a
    offset = points - a
    cross = jnp.abs(chord[:, 0] * offset[:, 1] - chord[:, 1] * offset[:, 0])
    chord_length = jnp.sqrt(jnp.sum(chord * chord, axis=-1))
    distance = jnp.where(chord_length > 0, cross / jnp.where(chord_length > 0, chord_length, 1.0),
                         jnp.sqrt(jnp.sum(offset * offset, axis=-1)))
    distance = jnp.where(on_contour & ~kept, distance, -1.0)
    best, where = _first_argmax_per_slot(distance, order, contours.slot, num_slots)
    take = (best >= 0) & (((best > epsilon) & (count < max_vertices)) | (count < min_vertices))
    kept = kept | (take[slot] & (rows == where[slot]) & on_contour)
    return kept, count + take.astype(jnp.int32)

  kept, count = lax.fori_loop(0, max(max_vertices - 2, 0), split, (kept, count))
  return kept, count


def gather_vertices(contours: Contours, kept: jax.Array, max_vertices: int) -> jax.Array:
  """(K, max_vertices, 2) float: each slot's kept contour points, in contour order."""
  num_slots = contours.offset.shape[0]
  rank = jnp.cumsum(kept.astype(jnp.int32)) - 1
  slot = jnp.maximum(contours.slot, 0)
  before_slot = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(kept.astype(jnp.int32))])
  rank = rank - before_slot[contours.offset[slot]]
  target_slot = jnp.where(kept & (contours.slot >= 0), slot, num_slots)  # dropped below
  vertices = jnp.zeros((num_slots, max_vertices, 2), jnp.float32)
  return vertices.at[target_slot, rank].set(contours.points.astype(jnp.float32), mode='drop')


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
  """Binary dilation by the Euclidean disk {d : |d|² ≤ radius²}, radius ≤ max_radius (static).

  On bit-packed rows (`morphology.dilate_disk_packed`, float32 squares as before): the same
  pixels as thresholding `squared_distance`, at a fraction of its cost on CPU.
  """
  width = fg.shape[-1]
  packed = morphology.pack_bits(fg.astype(bool))
  grown = morphology.dilate_disk_packed(packed, jnp.asarray(radius, jnp.float32), max_radius,
                                        width)
  return morphology.unpack_bits(grown, width)


def erode_disk(fg: jax.Array, radius: jax.Array | float, max_radius: int) -> jax.Array:
  """Binary erosion by the same disk; pixels outside the image count as background."""
  width = fg.shape[-1]
  packed = morphology.pack_bits(fg.astype(bool))
  shrunk = morphology.erode_disk_packed(packed, jnp.asarray(radius, jnp.float32), max_radius,
                                        width)
  return morphology.unpack_bits(shrunk, width)


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
                       connectivity: int = 8, max_components: int = 16, min_area: int = 1,
                       trace_contours: bool = False, max_contour_length: int | None = None
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Replaces every connected component of every foreground class by a shape, then paints.

  Args:
    key: per-sample PRNG key; class c gets fold_in(key, c), passed on to `replace`.
    mask: (H, W) class map, 255 = ignore (never modified).
    replace: replace(class_key, ids, moments, selected[, contours]) -> ((H, W) bool union of
      the shapes of the selected slots, dict of per-class log arrays). `ids` and `moments` come
      from `label_components` / `component_moments`; `selected` (K,) marks the slots to
      replace; `contours` (only with `trace_contours`) from `trace_outer_contours`.
    num_classes: K including background (2: every label in [1, 254] is foreground).
    connectivity: 4 or 8.
    max_components: static cap per class; larger-numbered (smaller) components stay unchanged.
    min_area: components with fewer pixels stay unchanged.
    trace_contours: trace the outer contour of every selected slot and pass it to `replace`.
      A slot whose contour does not fit in `max_contour_length` (static; default
      `contour_budget`) is deselected: that component stays unchanged.
    max_contour_length: see `trace_contours`.

  Returns:
    (noisy mask, log). Per-class entries, (C-1,) or scalars when binary: 'components' (all
    components of the class), 'replaced', 'small' (kept: under min_area), 'dropped' (kept:
    beyond the cap), with `trace_contours` also 'untraced' (kept: contour too long), 'dice',
    plus whatever `replace` logs. Sample-level: 'status' (index into `STATUS_NAMES`),
    'rho_pix', 'dice_all'.
  """
  clean_fg = class_masks(mask, num_classes)
  valid = mask != IGNORE
  num_fg = clean_fg.shape[0]

  def one_class(class_key, fg):
    components = label_components(fg, connectivity, max_components)
    moments = component_moments(components.ids, max_components)
    large = components.valid & (moments.area >= min_area)
    selected = large
    extra_counts = {}
    if trace_contours:
      contours = trace_outer_contours(components.ids, components.start, large,
                                      max_contour_length)
      selected = large & contours.traced
      extra_counts['untraced'] = jnp.sum(large & ~selected, dtype=jnp.int32)
      shapes, extra = replace(class_key, components.ids, moments, selected, contours)
    else:
      shapes, extra = replace(class_key, components.ids, moments, selected)
    replaced_pixels = (components.ids >= 0) & selected[jnp.maximum(components.ids, 0)]
    counts = {
        'components': components.count,
        'replaced': jnp.sum(selected, dtype=jnp.int32),
        'small': jnp.sum(components.valid & ~large, dtype=jnp.int32),
        'dropped': jnp.maximum(components.count - max_components, 0),
        **extra_counts,
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
              ('components', 'replaced', 'small', 'dropped', 'untraced') if name in log}
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
