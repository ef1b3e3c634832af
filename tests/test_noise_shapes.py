"""Tests for the shape-based simulators: flips (§2.1), ellipse (§2.2), polygon / mstfal (§2.7),
box / coarse_polygon (§2.8), the geometry utilities they share (components, contours,
Douglas–Peucker, polygon fill) and the scribbles' packed skeleton.

Geometry is checked against SciPy / NumPy references; the protocols against the §2.0 contract
(determinism through `apply_noise`, vmap = loop, ignore pixels, empty masks) and against their
achieved-noise targets. Images are small so that the compilations stay cheap on CPU.
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from nsegjax.errors import ConfigError
from nsegjax.noise import (PROTOCOLS, ellipse, flips, generate, geometry, morphology, polygon,
                           scribble, weak_shapes)

# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


def ellipse_mask(shape, center, axes, angle=0.0):
  rows, cols = np.mgrid[:shape[0], :shape[1]]
  d_row, d_col = rows - center[0], cols - center[1]
  along = d_row * np.cos(angle) + d_col * np.sin(angle)
  across = -d_row * np.sin(angle) + d_col * np.cos(angle)
  return (along / axes[0]) ** 2 + (across / axes[1]) ** 2 <= 1


def multiclass_masks(count=8, size=48):
  """Three foreground classes (two blobs of class 1), an ignore band, and one empty mask."""
  rng = np.random.default_rng(0)
  masks = np.zeros((count, size, size), np.uint8)
  for i in range(count):
    for label, (row, col) in ((1, (12, 12)), (1, (34, 12)), (2, (14, 34)), (3, (34, 34))):
      jitter = rng.uniform(-2, 2, 2)
      axes = rng.uniform(4, 8, 2)
      masks[i][ellipse_mask((size, size), (row + jitter[0], col + jitter[1]), axes,
                            rng.uniform(0, np.pi))] = label
  masks[:, :, 22:24] = 255
  masks[-1] = np.where(masks[-1] == 255, 255, 0)
  return masks


MASKS = multiclass_masks()

# (protocol, params) pairs run through the generic contract tests; alpha = 1 so that every
# sample is corrupted.
CASES = {
    'flip': {'num_classes': 4},
    'flip_block': {'num_classes': 4, 'kind': 'asymmetric', 'granularity': 'block', 'block': 4},
    'ellipse': {'alpha': 1.0},
    'polygon': {'alpha': 1.0},
    'mstfal': {'alpha': 1.0, 'reference_size': 512},
    'box': {},
    'coarse_polygon': {},
}


def protocol_of(case):
  return 'flip' if case.startswith('flip') else case


@functools.cache
def generated(case):
  return generate.apply_noise(MASKS, np.arange(len(MASKS)), protocol_of(case), CASES[case],
                              seed=5, chunk=len(MASKS))


def dice(a, b):
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('connectivity', [4, 8])
def test_components_equal_scipy_label_up_to_relabelling(connectivity):
  rng = np.random.default_rng(1)
  fg = ndimage.binary_opening(rng.random((40, 52)) < 0.5) | np.eye(40, 52, dtype=bool)
  structure = np.ones((3, 3)) if connectivity == 8 else None
  expected, count = ndimage.label(fg, structure=structure)
  comps = jax.jit(geometry.label_components, static_argnums=(1, 2))(jnp.asarray(fg),
                                                                      connectivity, 256)
  ids = np.asarray(comps.ids)
  assert int(comps.count) == count and int(comps.valid.sum()) == count
  assert (ids[~fg] == -1).all() and (ids[fg] >= 0).all()
  pairs = set(zip(ids[fg].tolist(), expected[fg].tolist()))
  assert len(pairs) == count  # a bijection between the two labellings
  areas = np.bincount(ids[fg], minlength=count)
  assert (np.diff(areas) <= 0).all()  # slots sorted by decreasing area


def test_component_cap_keeps_the_largest():
  fg = np.zeros((30, 30), bool)
  fg[2:4, 2:4] = True  # 4 px
  fg[10:20, 10:20] = True  # 100 px
  fg[25, 25] = True  # 1 px
  comps = geometry.label_components(jnp.asarray(fg), 8, 2)
  ids = np.asarray(comps.ids)
  assert int(comps.count) == 3 and comps.valid.tolist() == [True, True]
  assert (ids[10:20, 10:20] == 0).all() and (ids[2:4, 2:4] == 1).all() and ids[25, 25] == -1


def test_moments_equal_numpy():
  rng = np.random.default_rng(2)
  fg = np.zeros((50, 60), bool)
  fg |= ellipse_mask(fg.shape, (15, 20), (10, 4), 0.6)
  fg |= ellipse_mask(fg.shape, (38, 45), (6, 9), 2.0)
  comps = jax.jit(geometry.label_components, static_argnums=(1, 2))(jnp.asarray(fg), 8, 4)
  moments = jax.jit(geometry.component_moments, static_argnums=1)(comps.ids, 4)
  ids = np.asarray(comps.ids)
  for k in range(2):
    rows, cols = np.nonzero(ids == k)
    points = np.stack([rows, cols], 1).astype(float)
    assert moments.area[k] == len(rows)
    np.testing.assert_allclose(moments.centroid[k], points.mean(0), rtol=1e-5)
    np.testing.assert_allclose(moments.covariance[k], np.cov(points.T, bias=True), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_array_equal(moments.bbox_min[k], points.min(0))
    np.testing.assert_array_equal(moments.bbox_max[k], points.max(0))
  assert moments.area[2] == 0
  del rng


def brute_force_winding(point, vertices):
  """Non-zero winding rule, one pixel and one edge at a time."""
  row, col = point
  winding = 0
  for i in range(len(vertices)):
    (r0, c0), (r1, c1) = vertices[i], vertices[(i + 1) % len(vertices)]
    side = (c1 - c0) * (row - r0) - (col - c0) * (r1 - r0)
    if r0 <= row < r1 and side > 0:
      winding += 1
    elif r1 <= row < r0 and side < 0:
      winding -= 1
  return winding != 0


def test_fill_polygon_equals_brute_force_point_in_polygon():
  rng = np.random.default_rng(3)
  shape = (20, 24)
  fill = jax.jit(geometry.fill_polygon, static_argnums=0)
  for count in (3, 5, 9):
    vertices = rng.uniform(-2, 24, (12, 2)) + 0.123  # off-grid: no pixel centre on an edge
    got = np.asarray(fill(shape, jnp.asarray(vertices, jnp.float32), count))
    expected = np.array([[brute_force_winding((r, c), vertices[:count]) for c in range(shape[1])]
                         for r in range(shape[0])])
    np.testing.assert_array_equal(got, expected)


def segment_meets_square(start, end, centre):
  """Does the segment meet the closed pixel square centre ± 1/2 (Liang–Barsky clipping)?"""
  low, high = 0.0, 1.0
  for axis in (0, 1):
    delta = end[axis] - start[axis]
    near, far = centre[axis] - 0.5 - start[axis], centre[axis] + 0.5 - start[axis]
    if delta == 0:
      if near > 0 or far < 0:
        return False
      continue
    t0, t1 = sorted((near / delta, far / delta))
    low, high = max(low, t0), min(high, t1)
  return low <= high


def supercover(vertices, shape):
  """Pixels whose closed square meets one of the polygon's edges."""
  edges = list(zip(vertices, np.roll(vertices, -1, 0)))
  return np.array([[any(segment_meets_square(a, b, (r, c)) for a, b in edges)
                    for c in range(shape[1])] for r in range(shape[0])])


def test_fill_polygons_union_boundary_and_sorted_path():
  rng = np.random.default_rng(8)
  shape = (18, 22)
  fill = jax.jit(geometry.fill_polygons, static_argnums=(0, 4))
  for num_vertices in (6, 20):  # 20 > 16 edges: the sort-based ordering of crossings
    vertices = rng.uniform(-1, 22, (3, num_vertices, 2)) + 0.123
    counts = np.array([num_vertices, 5, 4])
    valid = np.array([True, True, False])
    got = np.asarray(fill(shape, jnp.asarray(vertices, jnp.float32), jnp.asarray(counts),
                          jnp.asarray(valid), False))
    expected = np.zeros(shape, bool)
    for k in (0, 1):
      expected |= np.array([[brute_force_winding((r, c), vertices[k, :counts[k]])
                             for c in range(shape[1])] for r in range(shape[0])])
    np.testing.assert_array_equal(got, expected)
    outlined = np.asarray(fill(shape, jnp.asarray(vertices, jnp.float32), jnp.asarray(counts),
                               jnp.asarray(valid), True))
    cover = supercover(vertices[0, :counts[0]], shape) | supercover(vertices[1, :5], shape)
    assert (outlined >= got).all() and (outlined <= (got | cover)).all()
    # Every pixel containing a vertex is filled.
    for k in (0, 1):
      for r, c in np.floor(vertices[k, :counts[k]] + 0.5).astype(int):
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
          assert outlined[r, c]


def test_fill_polygon_outline_of_a_segment_and_a_point():
  line = geometry.fill_polygon((6, 8), jnp.array([[1.0, 1.0], [1.0, 5.0], [0.0, 0.0]]), 2, True)
  expected = np.zeros((6, 8), bool)
  expected[1, 1:6] = True
  np.testing.assert_array_equal(line, expected)
  point = geometry.fill_polygon((6, 8), jnp.array([[3.0, 4.0]] * 3), 1, True)
  np.testing.assert_array_equal(np.argwhere(np.asarray(point)), [[3, 4]])


def test_fill_ellipse_of_covariance_matches_elliptical_mask():
  fg = ellipse_mask((64, 64), (30.3, 33.1), (20, 9), 0.4)

  @jax.jit
  def fit(fg):
    comps = geometry.label_components(fg, 8, 2)
    moments = geometry.component_moments(comps.ids, 2)
    semi_axes, angle = geometry.covariance_ellipse(moments.covariance)
    filled = geometry.fill_ellipse(fg.shape, moments.centroid[0], semi_axes[0], angle[0])
    return semi_axes[0], filled

  semi_axes, filled = fit(jnp.asarray(fg))
  np.testing.assert_allclose(semi_axes, [20, 9], rtol=0.03)
  assert dice(filled, fg) > 0.98


@pytest.mark.parametrize('radius', [1.0, 2.5, 4.0, 7.3])
def test_disk_morphology_equals_scipy(radius):
  rng = np.random.default_rng(4)
  fg = ndimage.binary_opening(rng.random((37, 45)) < 0.55)
  footprint = geometry.disk_footprint(radius)
  dilate = jax.jit(geometry.dilate_disk, static_argnums=2)
  erode = jax.jit(geometry.erode_disk, static_argnums=2)
  np.testing.assert_array_equal(dilate(fg, radius, 8),
                                ndimage.binary_dilation(fg, structure=footprint))
  np.testing.assert_array_equal(erode(fg, radius, 8),
                                ndimage.binary_erosion(fg, structure=footprint))


def test_squared_distance_equals_scipy_edt_within_reach():
  rng = np.random.default_rng(5)
  seeds = rng.random((33, 41)) < 0.02
  got = np.asarray(geometry.squared_distance(jnp.asarray(seeds), 10))
  expected = ndimage.distance_transform_edt(~seeds) ** 2
  near = expected <= 100
  np.testing.assert_allclose(got[near], expected[near])
  assert (got[~near] > 100).all()


# Contours: references written from the published algorithms, pixel by pixel in NumPy.

# Suzuki & Abe (1985) outer border following, the algorithm behind cv2.findContours, with its
# neighbour order: counter-clockwise as displayed, from east.
_CCW = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def suzuki_outer_contour(component):
  """The outer border of a one-component bool mask as (row, col) pixels, from its raster-first
  pixel, in the order cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_NONE) returns it."""
  padded = np.pad(component, 1)
  first = tuple(int(v) for v in np.argwhere(padded)[0])

  def search(centre, towards, step):  # the first pixel around `centre` after `towards`
    k = _CCW.index((towards[0] - centre[0], towards[1] - centre[1]))
    for t in range(1, 9):
      d_row, d_col = _CCW[(k + step * t) % 8]
      if padded[centre[0] + d_row, centre[1] + d_col]:
        return centre[0] + d_row, centre[1] + d_col
    return None

  # Clockwise from the west neighbour (step -1); Suzuki's search includes the start itself.
  west = (first[0], first[1] - 1)
  found = search(first, west, -1) if padded[first[0], first[1] - 1] == 0 else None
  if found is None:
    return [(first[0] - 1, first[1] - 1)]
  previous, current, points = found, first, []
  while True:
    points.append((current[0] - 1, current[1] - 1))
    following = search(current, previous, 1)
    if following == first and current == found:
      return points
    previous, current = current, following


@functools.partial(jax.jit, static_argnums=(1, 2))
def _traced(fg, max_length, max_components):
  comps = geometry.label_components(fg, 8, max_components)
  return comps, geometry.trace_outer_contours(comps.ids, comps.start, comps.valid, max_length)


def traced(fg, max_length=None, max_components=16):
  """(components, contours) of a bool mask."""
  return _traced(jnp.asarray(fg), max_length, max_components)


def random_shapes(seed, count, shape=(24, 28)):
  """Random masks of one shape (one compilation), every third one smoothed."""
  rng = np.random.default_rng(seed)
  for trial in range(count):
    fg = rng.random(shape) < rng.uniform(0.3, 0.7)
    yield ndimage.binary_opening(fg) if trial % 3 == 0 else fg


def test_contours_equal_suzuki_border_following():
  checked = 0
  for fg in random_shapes(0, 25):
    comps, contours = traced(fg, max_length=4 * fg.size)
    ids = np.asarray(comps.ids)
    for k in np.flatnonzero(np.asarray(comps.valid)):
      offset, length = int(contours.offset[k]), int(contours.length[k])
      got = np.asarray(contours.points[offset:offset + length]).tolist()
      assert got == [list(p) for p in suzuki_outer_contour(ids == k)]
      assert (np.asarray(contours.slot[offset:offset + length]) == k).all()
      checked += 1
    used = int(np.asarray(contours.length).sum())
    assert (np.asarray(contours.slot[used:]) == -1).all()
  assert checked > 100


def test_contour_of_a_rectangle_and_a_single_pixel():
  fg = np.zeros((8, 10), bool)
  fg[1:4, 2:5] = True
  fg[6, 8] = True
  _, contours = traced(fg)
  assert np.asarray(contours.length[:2]).tolist() == [8, 1]
  np.testing.assert_array_equal(contours.points[:8], [[1, 2], [2, 2], [3, 2], [3, 3], [3, 4],
                                                      [2, 4], [1, 4], [1, 3]])
  np.testing.assert_array_equal(contours.points[8], [6, 8])
  np.testing.assert_allclose(geometry.contour_perimeters(contours)[:2], [8.0, 0.0])


def test_contour_too_long_for_the_buffer_is_left_untraced():
  fg = np.zeros((30, 30), bool)
  fg[2:22, 2:22] = True  # contour of 76 points
  fg[25:28, 25:28] = True  # contour of 8 points
  _, contours = traced(fg, max_length=40)
  assert np.asarray(contours.length[:2]).tolist() == [0, 8]
  np.testing.assert_array_equal(contours.points[:8], suzuki_outer_contour(fg & (
      np.arange(30)[:, None] >= 24)))
  # In a protocol the untraced component stays as it is, and the log says so.
  mask = fg.astype(np.uint8)
  noisy, log = geometry.replace_components(
      jax.random.key(0), jnp.asarray(mask),
      lambda key, ids, moments, selected, contours: (jnp.zeros(ids.shape, bool), {}),
      num_classes=2, trace_contours=True, max_contour_length=40)
  noisy = np.asarray(noisy)
  np.testing.assert_array_equal(noisy[:24], mask[:24])
  assert not noisy[24:].any()
  assert int(log['untraced']) == 1 and int(log['replaced']) == 1


def polyline_perimeter(points):
  return float(np.sum(np.hypot(*(np.roll(points, -1, 0) - points).T)))


def test_resampled_points_are_equally_spaced_on_the_contour():
  fg = ellipse_mask((48, 48), (22.4, 25.3), (15, 9), 0.5)
  _, contours = traced(fg)
  length = int(contours.length[0])
  ring = np.asarray(contours.points[:length], float)
  perimeter = polyline_perimeter(ring)
  np.testing.assert_allclose(geometry.contour_perimeters(contours)[0], perimeter, rtol=1e-5)
  count, start = 7, 0.3
  fractions = np.mod(start + np.arange(count) / count, 1.0)
  fractions = jnp.asarray(np.tile(fractions, (16, 1)), jnp.float32)
  points = np.asarray(geometry.resample_contours(contours, fractions)[0])
  # Walk the reference polyline to each target arc length.
  steps = np.hypot(*(np.roll(ring, -1, 0) - ring).T)
  arc = np.concatenate([[0.0], np.cumsum(steps)])
  for point, fraction in zip(points, np.asarray(fractions[0])):
    target = fraction * perimeter
    i = min(np.searchsorted(arc, target, side='right') - 1, length - 1)
    expected = ring[i] + (target - arc[i]) / steps[i] * (ring[(i + 1) % length] - ring[i])
    np.testing.assert_allclose(point, expected, atol=1e-3)


def recursive_douglas_peucker(points, epsilon):
  """Plain recursive DP on a closed contour, split first at the pair cv2.approxPolyDP finds
  (three farthest-point rounds from point 0, ties to the first point after the current one)."""
  count = len(points)
  points = points.astype(np.float32)

  def farthest(i):
    order = (np.arange(count) - i) % count
    distance = ((points - points[i]) ** 2).sum(1)
    return int(np.lexsort((order, -distance))[0])

  previous, current = 0, 0
  for _ in range(3):
    previous, current = current, farthest(current)
  kept = {previous, current}

  def chain(a, b):  # points strictly between a and b going forwards, cyclically
    inner = [(a + t) % count for t in range(1, (b - a) % count or count)]
    if not inner:
      return
    chord = points[b] - points[a]
    chord_length = np.float32(np.sqrt(np.float32(chord @ chord)))
    distances = []
    for i in inner:
      offset = points[i] - points[a]
      if chord_length > 0:
        distances.append(np.float32(abs(chord[0] * offset[1] - chord[1] * offset[0])) /
                         chord_length)
      else:
        distances.append(np.float32(np.sqrt(np.float32(offset @ offset))))
    best = int(np.argmax(distances))
    if distances[best] > epsilon:
      kept.add(inner[best])
      chain(a, inner[best])
      chain(inner[best], b)

  if previous != current:
    chain(previous, current)
    chain(current, previous)
  return sorted(kept)


def test_douglas_peucker_equals_recursive_version_when_the_budget_does_not_bind():
  dp = jax.jit(geometry.douglas_peucker, static_argnums=(2, 3))
  rng = np.random.default_rng(7)
  checked = 0
  for _ in range(8):
    fg = ndimage.gaussian_filter(rng.standard_normal((36, 36)), 2.0) > 0.05  # a few blobs
    _, contours = traced(fg, max_length=4 * fg.size)
    epsilon = rng.uniform(0.3, 4.0, 16).astype(np.float32)
    kept, counts = dp(contours, jnp.asarray(epsilon), 1, 256)
    kept = np.asarray(kept)
    for k in np.flatnonzero(np.asarray(contours.length) > 0):
      offset, length = int(contours.offset[k]), int(contours.length[k])
      expected = recursive_douglas_peucker(np.asarray(contours.points[offset:offset + length]),
                                           epsilon[k])
      assert np.flatnonzero(kept[offset:offset + length]).tolist() == expected
      assert int(counts[k]) == len(expected)
      checked += 1
  assert checked > 15


def test_douglas_peucker_budget_clamps_the_vertex_count():
  fg = ellipse_mask((64, 64), (31.2, 30.7), (24, 15), 0.3)
  fg[31:34, 3:60] = True  # a spike: many significant vertices
  _, contours = traced(fg)
  for epsilon, low, high in ((0.2, 4, 12), (100.0, 4, 12), (100.0, 6, 9)):
    kept, counts = geometry.douglas_peucker(contours, jnp.full(16, epsilon), low, high)
    assert int(np.asarray(kept).sum()) == int(counts[0])
    assert int(counts[0]) == (high if epsilon < 1 else low)
    # With the budget binding at 12, the vertices are a subset of the unbounded result.
    unbounded, _ = geometry.douglas_peucker(contours, jnp.full(16, epsilon), 1, 400)
    if epsilon < 1:
      assert not (np.asarray(kept) & ~np.asarray(unbounded)).any()
  vertices = geometry.gather_vertices(contours, kept, 9)
  length = int(contours.length[0])
  chosen = np.asarray(contours.points[:length])[np.asarray(kept[:length])]
  np.testing.assert_array_equal(vertices[0, :int(counts[0])], chosen)


def test_affine_warp_identity_and_shift():
  fg = jnp.asarray(ellipse_mask((32, 32), (12, 14), (5, 7)))
  center = jnp.array([15.5, 15.5])
  same = geometry.affine_warp(fg, 0.0, 1.0, jnp.zeros(2), center)
  np.testing.assert_array_equal(same, fg)
  moved = geometry.affine_warp(fg, 0.0, 1.0, jnp.array([3.0, -2.0]), center)
  np.testing.assert_array_equal(moved, np.roll(np.roll(np.asarray(fg), 3, 0), -2, 1))


# ---------------------------------------------------------------------------------------------
# The §2.0 contract, for every protocol
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('case', list(CASES))
def test_deterministic_shapes_dtypes_ignore_and_records(case):
  noisy, records = generated(case)
  assert noisy.dtype == np.uint8 and noisy.shape == MASKS.shape
  np.testing.assert_array_equal(noisy == 255, MASKS == 255)
  assert set(np.unique(noisy)) <= {0, 1, 2, 3, 255}
  again, again_records = generate.apply_noise(MASKS, np.arange(len(MASKS)), protocol_of(case),
                                              CASES[case], seed=5, chunk=len(MASKS))
  np.testing.assert_array_equal(again, noisy)
  assert again_records == records
  json.loads(json.dumps(records, allow_nan=False))
  assert all(r['is_noisy'] for r in records)
  assert records[-1]['type'] == 'empty' or case.startswith('flip')
  if not case.startswith('flip'):
    np.testing.assert_array_equal(noisy[-1], MASKS[-1])
  assert all(len(r['classes']) == 3 for r in records)
  assert not np.array_equal(noisy[:-1], MASKS[:-1])


@pytest.mark.parametrize('case', [c for c in CASES if c not in ('ellipse', 'flip_block')])
def test_different_indices_give_different_noise(case):
  masks = np.repeat(MASKS[:1], 4, axis=0)
  noisy, _ = generate.apply_noise(masks, np.arange(4), protocol_of(case), CASES[case], seed=5,
                                  chunk=len(MASKS))
  assert len({n.tobytes() for n in noisy}) > 1
  # The sample's noise depends on its index only, not on its position in the batch.
  part, _ = generate.apply_noise(masks[:2], np.array([3, 1]), protocol_of(case), CASES[case],
                                 seed=5, chunk=len(MASKS), num_samples=4)
  np.testing.assert_array_equal(part, noisy[[3, 1]])


@pytest.mark.parametrize('case', list(CASES))
def test_vmapped_equals_looped(case):
  entry = PROTOCOLS.get(protocol_of(case))
  _, params = generate.resolve(entry.name, CASES[case], MASKS)
  noisy, _ = generated(case)
  single = jax.jit(lambda key, mask: entry.corrupt(key, mask, params))
  base = jax.random.fold_in(jax.random.key(5), entry.id)
  for i in (0, 3):
    out, log = single(jax.random.fold_in(base, i), jnp.asarray(MASKS[i]))
    np.testing.assert_array_equal(out, noisy[i])
    assert set(log) >= {'status', 'rho_pix'}


def test_ellipse_is_deterministic_across_indices():
  noisy, _ = generated('ellipse')
  np.testing.assert_array_equal(noisy[0][MASKS[0] == 255], 255)
  # Same mask, different index: the ellipse fit has no randomness.
  again, _ = generate.apply_noise(MASKS[:1], np.array([3]), 'ellipse', {}, seed=9, chunk=8,
                                  num_samples=4)
  np.testing.assert_array_equal(again[0], noisy[0])


# ---------------------------------------------------------------------------------------------
# Flips (§2.1)
# ---------------------------------------------------------------------------------------------


def histogram_map(histogram, size=256, seed=0):
  """A size×size label map whose class frequencies are exactly the rounded histogram."""
  counts = np.round(np.asarray(histogram) * size * size).astype(int)
  counts[0] += size * size - counts.sum()
  labels = np.repeat(np.arange(len(histogram)), counts).astype(np.uint8)
  return np.random.default_rng(seed).permutation(labels).reshape(size, size)


def achieved_transitions(clean, noisy, num_classes):
  table = np.zeros((num_classes, num_classes))
  np.add.at(table, (clean.ravel(), noisy.ravel()), 1)
  return table / table.sum(axis=1, keepdims=True)


@pytest.mark.parametrize('params', [
    {'kind': 'symmetric', 'rate': 0.3},
    {'kind': 'asymmetric', 'matrix': ((0.6, 0.3, 0.1), (0.0, 0.8, 0.2), (0.25, 0.25, 0.5))},
])
def test_flip_transition_frequencies_match_the_matrix(params):
  clean = histogram_map([0.4, 0.3, 0.3], size=256)
  resolved = flips.resolve_params(params, 2)
  noisy, _ = jax.jit(functools.partial(flips.corrupt, **flips.corrupt_kwargs(resolved)))(
      jax.random.key(0), jnp.asarray(clean))
  expected = flips.transition_matrix(resolved['kind'], resolved['rate'], resolved['matrix'], 3)
  np.testing.assert_allclose(achieved_transitions(clean, np.asarray(noisy), 3), expected,
                             atol=0.01)


@pytest.mark.parametrize('kind,target', [
    ('symmetric', [0.451, 0.196, 0.174, 0.179]),
    ('asymmetric', [0.452, 0.194, 0.170, 0.184]),
])
def test_flip_reproduces_jcas_endovis_histograms(kind, target):
  clean = histogram_map([0.840, 0.089, 0.020, 0.051])
  noisy, records = generate.apply_noise(clean[None], np.arange(1), 'flip', {'kind': kind},
                                        seed=0)
  histogram = np.bincount(noisy.ravel(), minlength=4) / noisy.size
  np.testing.assert_allclose(histogram, target, atol=0.01)
  assert records[0]['type'] == 'flip' and records[0]['params']['kind'] == kind


def test_flip_blocks_share_one_draw():
  clean = np.zeros((32, 32), np.uint8)
  noisy, _ = flips.corrupt(jax.random.key(1), jnp.asarray(clean), granularity='block', block=8,
                           rate=0.5, num_classes=3)
  tiles = np.asarray(noisy).reshape(4, 8, 4, 8)
  assert (tiles == tiles[:, :1, :, :1]).all()
  assert len(np.unique(tiles)) > 1


@pytest.mark.parametrize('params,match', [
    ({'kind': 'asymmetric'}, 'explicit matrix'),  # K = 3 here
    ({'kind': 'symmetric', 'matrix': np.eye(3).tolist()}, 'asymmetric'),
    ({'kind': 'asymmetric', 'rate': 0.2, 'matrix': np.eye(3).tolist()}, 'either rate or'),
    ({'kind': 'asymmetric', 'matrix': [[1, 0], [0, 1]]}, '3×3'),
    ({'kind': 'asymmetric', 'matrix': [[0.5, 0.6, 0], [0, 1, 0], [0, 0, 1]]}, 'row-stochastic'),
    ({'rate': 1.5}, 'rate'),
    ({'granularity': 'tile'}, 'pixel, block'),
    ({'flips': 1}, 'valid keys'),
])
def test_flip_bad_params(params, match):
  with pytest.raises(ConfigError, match=match):
    flips.resolve_params(params, 2)


# ---------------------------------------------------------------------------------------------
# Ellipse (§2.2)
# ---------------------------------------------------------------------------------------------


def test_ellipse_of_elliptical_components_is_nearly_identical():
  clean = np.zeros((2, 64, 64), np.uint8)
  clean[:, ellipse_mask((64, 64), (20, 22), (12, 6), 0.7)] = 1
  clean[:, ellipse_mask((64, 64), (46, 44), (9, 14), 1.9)] = 2
  clean[1, 60, 2:5] = 1  # 3 px < min_area: unchanged
  noisy, log = jax.jit(jax.vmap(functools.partial(ellipse.corrupt, num_classes=3)))(
      jax.random.split(jax.random.key(0), 2), jnp.asarray(clean))
  noisy = np.asarray(noisy)
  for c in (1, 2):
    assert dice(noisy[0] == c, clean[0] == c) > 0.95
  np.testing.assert_array_equal(noisy[1, 60, 2:5], 1)
  assert log['small'][1].tolist() == [1, 0] and log['replaced'][1].tolist() == [1, 1]


def test_ellipse_replaces_a_rectangle_and_paints_ascending():
  clean = np.zeros((48, 48), np.uint8)
  clean[10:30, 10:20] = 1
  clean[22:40, 18:40] = 2  # the ellipses overlap: class 2 wins
  noisy, log = jax.jit(functools.partial(ellipse.corrupt, num_classes=3))(jax.random.key(0),
                                                                         jnp.asarray(clean))
  noisy = np.asarray(noisy)
  semi_axes, angle = geometry.covariance_ellipse(
      jnp.asarray(np.cov(np.argwhere(clean == 1).T, bias=True), jnp.float32))
  expected = geometry.fill_ellipse(clean.shape, jnp.asarray(np.argwhere(clean == 1).mean(0),
                                                            jnp.float32), semi_axes, angle)
  np.testing.assert_array_equal(noisy == 1, np.asarray(expected) & (noisy != 2))
  assert int(log['status']) == 0
  assert ((clean == 1) & (noisy == 2)).any()


# ---------------------------------------------------------------------------------------------
# Polygon and MS-TFAL (§2.7)
# ---------------------------------------------------------------------------------------------


def test_polygon_dice_is_in_a_sensible_band_and_vertices_in_range():
  noisy, records = generated('polygon')
  dices = [c['dice'] for r in records[:-1] for c in r['classes']]
  assert 0.4 < min(dices) and max(dices) < 0.995 and 0.6 < np.median(dices) < 0.95
  for r in records[:-1]:
    for entry in r['classes']:
      assert all(4 <= v <= 8 for v in entry['params']['vertices'])
  assert records[0]['classes'][0]['params']['replaced'] == 2  # two blobs of class 1
  del noisy


def test_polygon_without_jitter_approximates_a_convex_component():
  clean = ellipse_mask((64, 64), (30, 32), (20, 14), 0.3).astype(np.uint8)
  corrupt = jax.jit(polygon.corrupt_polygon, static_argnames=('jitter', 'min_vertices',
                                                              'max_vertices'))
  noisy, log = corrupt(jax.random.key(3), jnp.asarray(clean), jitter=0.0, min_vertices=8,
                       max_vertices=8)
  assert 0.85 < dice(noisy, clean) < 1.0 and int(log['vertices'][0]) == 8
  noisy, _ = corrupt(jax.random.key(3), jnp.asarray(clean), jitter=0.0, min_vertices=64,
                     max_vertices=64)
  assert dice(noisy, clean) > 0.97  # vertices on the contour, outline filled as cv2.fillPoly


def test_polygon_vertices_stay_within_the_jittered_bounding_box():
  clean = np.zeros((96, 96), np.uint8)
  clean[ellipse_mask((96, 96), (40, 50), (22, 12), 0.8)] = 1
  clean[80:90, 5:30] = 1
  corrupt = jax.jit(jax.vmap(functools.partial(polygon.corrupt_polygon, jitter=0.2)))
  noisy, log = corrupt(jax.random.split(jax.random.key(4), 16),
                       jnp.asarray(np.repeat(clean[None], 16, 0)))
  labels, _ = ndimage.label(clean, np.ones((3, 3)))
  boxes = ndimage.find_objects(labels)
  allowed = np.zeros(clean.shape, bool)
  for box in boxes:  # each side may move by 0.2 × the side, plus the outline's half pixel
    low = [max(0, int(np.floor(b.start - 0.2 * (b.stop - b.start) - 0.5))) for b in box]
    high = [int(np.ceil(b.stop - 1 + 0.2 * (b.stop - b.start) + 0.5)) + 1 for b in box]
    allowed[low[0]:high[0], low[1]:high[1]] = True
  noisy = np.asarray(noisy)
  assert not (noisy.astype(bool) & ~allowed).any()
  counts = np.asarray(log['vertices'])[:, :2]
  assert ((counts >= 4) & (counts <= 8)).all() and len(np.unique(counts)) > 1
  assert len({n.tobytes() for n in noisy}) == 16


def test_mstfal_types_follow_their_definitions():
  clean = np.zeros((24, 40, 40), np.uint8)
  clean[:, ellipse_mask((40, 40), (18, 20), (10, 7), 0.4)] = 1
  fn = jax.jit(jax.vmap(functools.partial(polygon.corrupt_mstfal, reference_size=160)))
  noisy, log = fn(jax.random.split(jax.random.key(0), 24), jnp.asarray(clean))
  noisy = np.asarray(noisy)
  assert set(log['type'].tolist()) == {0, 1, 2, 3}
  radius_scale = 40 / 160
  radii = np.asarray(log['radius']) / radius_scale
  assert ((radii >= 40) & (radii <= 50) & (radii == np.round(radii))).all()
  for i, type_id in enumerate(log['type'].tolist()):
    footprint = geometry.disk_footprint(float(log['radius'][i]))
    if type_id == polygon.DILATE:
      np.testing.assert_array_equal(noisy[i], ndimage.binary_dilation(clean[i], footprint))
    elif type_id == polygon.ERODE:
      np.testing.assert_array_equal(noisy[i], ndimage.binary_erosion(clean[i], footprint))
  assert np.abs(log['angle']).max() <= 30 and (np.abs(log['scale'] - 1) <= 0.2).all()
  assert (np.abs(log['translate']) <= 0.2 * 40).all()


def test_mstfal_grouped_corrupt_selected_equals_generator_path():
  masks = np.concatenate([MASKS, MASKS[:4]])
  params = {'alpha': 1.0, 'reference_size': 512}
  _, resolved = generate.resolve('mstfal', params, masks)
  indices = np.arange(len(masks))
  expected, expected_logs = generate._corrupt_selected(  # pylint: disable=protected-access
      polygon.MSTFAL_PROTOCOL, resolved, 3, masks, indices, 4)
  got, logs = polygon.mstfal_selected(resolved, 3, masks, indices, chunk=4)
  np.testing.assert_array_equal(got, expected)
  assert {int(log['type']) for log in logs} == {0, 1, 2, 3}
  for log, expected_log in zip(logs, expected_logs):
    assert log.keys() == expected_log.keys()
    for name in log:
      np.testing.assert_array_equal(log[name], expected_log[name])


def test_mstfal_default_alpha_is_half():
  chosen = PROTOCOLS.get('mstfal').select_noisy(0, 10, polygon.resolve_mstfal({}, 1))
  assert chosen.sum() == 5


@pytest.mark.parametrize('name,params,match', [
    ('mstfal', {'type_probs': (0.5, 0.5)}, 'type_probs'),
    ('mstfal', {'min_radius': 50, 'max_radius': 40}, 'max_radius'),
    ('polygon', {'ref_length': 'diag'}, 'bbox, sqrt_area'),
    ('polygon', {'min_vertices': 2}, 'min_vertices'),
    ('box', {'jitter': -0.1}, 'jitter'),
    ('coarse_polygon', {'min_epsilon': 0.0}, 'min_epsilon'),
    ('ellipse', {'scale': 0}, 'scale'),
    ('ellipse', {'connectivity': 6}, 'connectivity'),
    ('ellipse', {'sigma': 1}, 'valid keys'),
])
def test_shape_protocols_bad_params(name, params, match):
  with pytest.raises(ConfigError, match=match):
    generate.apply_noise(MASKS[:1], np.arange(1), name, params, seed=0)


# ---------------------------------------------------------------------------------------------
# Weak labels (§2.8)
# ---------------------------------------------------------------------------------------------


def test_box_without_jitter_is_the_bounding_box_of_each_component():
  noisy, log = jax.jit(functools.partial(weak_shapes.corrupt_box, jitter=0.0, num_classes=4))(
      jax.random.key(0), jnp.asarray(MASKS[0]))
  noisy = np.asarray(noisy)
  valid = MASKS[0] != 255
  for c in (1, 2, 3):
    expected = np.zeros_like(valid)
    labels, count = ndimage.label(MASKS[0] == c, structure=np.ones((3, 3)))
    for box in ndimage.find_objects(labels):
      expected[box] = True
    # Higher classes are painted over lower ones; ignore pixels stay 255.
    higher = np.isin(noisy, [k for k in range(c + 1, 4)])
    np.testing.assert_array_equal((noisy == c), expected & valid & ~higher)
    assert ((MASKS[0] == c) <= (expected & valid)).all()
  assert int(log['status']) == 0


def test_box_jitter_moves_sides_by_at_most_the_fraction():
  low = jnp.array([[10, 20]])
  high = jnp.array([[29, 59]])  # sides 20 and 40
  for seed in range(5):
    new_low, new_high = weak_shapes.jittered_boxes(jax.random.key(seed), low, high, 0.05,
                                                   (64, 64))
    assert (np.abs(np.asarray(new_low - low)) <= np.array([1, 2])).all()
    assert (np.abs(np.asarray(new_high - high)) <= np.array([1, 2])).all()


def test_coarse_polygon_dice_and_vertex_counts():
  _, records = generated('coarse_polygon')
  dices = [c['dice'] for r in records[:-1] for c in r['classes']]
  assert 0.75 < min(dices) and np.median(dices) > 0.85 and max(dices) < 1.0
  for r in records[:-1]:
    for entry in r['classes']:
      assert 4 <= entry['params']['vertices'] <= 12
      assert 0.01 * entry['params']['perimeter'] - 1e-4 <= entry['params']['epsilon_px']
      assert entry['params']['epsilon_px'] <= 0.03 * entry['params']['perimeter'] + 1e-4
  assert records[-1]['type'] == 'empty'


def test_coarse_polygon_is_the_filled_douglas_peucker_polygon():
  clean = np.zeros((64, 64), np.uint8)
  clean[ellipse_mask((64, 64), (30, 28), (22, 13), 0.6)] = 2
  clean[40:44, 2:60] = 2  # a long bar across: a non-convex component
  noisy, log = jax.jit(functools.partial(weak_shapes.corrupt_coarse_polygon, num_classes=3))(
      jax.random.key(1), jnp.asarray(clean))
  noisy = np.asarray(noisy)
  assert set(np.unique(noisy)) <= {0, 2}
  assert 4 <= int(log['vertices'][1]) <= 12 and int(log['replaced'][1]) == 1
  # Rebuild it from the NumPy references: contour, recursive DP with the logged ε, fill.
  contour = np.array(suzuki_outer_contour(clean == 2))
  perimeter = polyline_perimeter(contour.astype(float))
  np.testing.assert_allclose(float(log['perimeter'][1]), perimeter, rtol=1e-5)
  vertices = contour[recursive_douglas_peucker(contour, np.float32(log['epsilon_px'][1]))]
  assert len(vertices) == int(log['vertices'][1])
  inside = np.array([[brute_force_winding((r, c), vertices.astype(float)) for c in range(64)]
                     for r in range(64)])
  assert (noisy == 2)[inside].all()
  assert ((noisy == 2) <= (inside | supercover(vertices.astype(float), (64, 64)))).all()
  assert dice(noisy == 2, clean == 2) > 0.9


def test_kvasir_like_blobs_achieve_the_expected_weak_label_quality():
  rng = np.random.default_rng(11)
  masks = np.zeros((8, 128, 128), np.uint8)
  for mask in masks:
    smooth = ndimage.gaussian_filter(rng.standard_normal((128, 128)), 12)
    mask[smooth > np.quantile(smooth, rng.uniform(0.8, 0.92))] = 1
  _, coarse = generate.apply_noise(masks, np.arange(8), 'coarse_polygon', {}, seed=0)
  _, poly = generate.apply_noise(masks, np.arange(8), 'polygon', {'alpha': 1.0}, seed=0)
  coarse_dice = [r['dice'] for r in coarse]
  poly_dice = [r['dice'] for r in poly]
  # DP with ε of 1–3 % of the perimeter and ≤ 12 vertices hugs a blob; 4–8 vertices jittered by
  # up to 20 % of the box side lose much more.
  assert min(coarse_dice) > 0.85 and np.median(coarse_dice) > 0.9
  assert 0.5 < np.median(poly_dice) < 0.93 and max(poly_dice) < 0.98
  assert np.median(poly_dice) < np.median(coarse_dice)


def test_packed_skeleton_equals_zhang_suen():
  rng = np.random.default_rng(12)
  masks = [ellipse_mask((40, 70), (20, 30), (15, 25), 0.4), rng.random((37, 45)) < 0.6,
           ndimage.binary_opening(rng.random((33, 64)) < 0.55), np.ones((5, 33), bool),
           np.zeros((9, 9), bool)]
  skeleton = jax.jit(scribble.skeletonize_packed)
  for mask in masks:
    np.testing.assert_array_equal(skeleton(jnp.asarray(mask)),
                                  morphology.skeletonize(jnp.asarray(mask)))


def test_weak_label_logs_dice():
  noisy, records = generated('box')
  metrics = generate.label_noise_metrics(MASKS, noisy, 4)
  for r, d in zip(records, metrics['dice_all']):
    assert r['dice'] == pytest.approx(d)
  assert records[0]['type'] == 'box' and records[0]['params'] == {'jitter': 0.05}
