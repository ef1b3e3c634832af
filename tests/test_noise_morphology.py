"""Tests for nsegjax.noise.morphology and the radius / adele / scribble protocols (METHODS §2.4,
§2.5, §2.8). References are SciPy / NumPy; images are small so the file runs in well under a
minute on two CPU cores."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from launch import scipy_noise_reference
from nsegjax.errors import ConfigError
from nsegjax.noise import adele, generate, morphology, radius, scribble

SIZE = 64


def disk(r):
  y, x = np.mgrid[-r:r + 1, -r:r + 1]
  return x * x + y * y <= r * r


def random_masks(seed, count=3, shape=(23, 31)):
  rng = np.random.default_rng(seed)
  return [rng.random(shape) < p for p in (0.02, 0.3, 0.7)][:count]


def ellipse(shape, cy, cx, a, b):
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  return ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1


def zhang_suen_reference(mask):
  """Plain NumPy Zhang–Suen thinning (1984), one sub-iteration at a time."""
  img = np.pad(mask.astype(np.uint8), 1)
  changed = True
  while changed:
    changed = False
    for step in (0, 1):
      p2, p3, p4 = img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:]
      p5, p6, p7 = img[2:, 2:], img[2:, 1:-1], img[2:, :-2]
      p8, p9 = img[1:-1, :-2], img[:-2, :-2]
      ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
      count = sum(p.astype(int) for p in ring[:8])
      transitions = sum(((a == 0) & (b == 1)).astype(int) for a, b in zip(ring[:-1], ring[1:]))
      if step == 0:
        side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
      else:
        side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
      delete = (img[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
      if delete.any():
        changed = True
        img[1:-1, 1:-1][delete] = 0
  return img[1:-1, 1:-1].astype(bool)


# ---------------------------------------------------------------------------------------------
# Morphology vs SciPy
# ---------------------------------------------------------------------------------------------


def test_squared_distance_transform_equals_scipy_edt():
  transform = jax.jit(morphology.squared_distance_transform, static_argnums=1)
  for seeds in random_masks(0):
    expected = np.round(ndimage.distance_transform_edt(~seeds) ** 2)
    np.testing.assert_array_equal(transform(jnp.asarray(seeds), None), expected)
    windowed = np.asarray(transform(jnp.asarray(seeds), 4))
    near = expected <= 16
    np.testing.assert_array_equal(windowed[near], expected[near])
    assert (windowed[~near] > 16).all()


def test_disk_and_square_morphology_equal_scipy():
  dilate_disk = jax.jit(morphology.dilate_disk, static_argnums=2)
  erode_disk = jax.jit(morphology.erode_disk, static_argnums=2)
  dilate_square, erode_square = jax.jit(morphology.dilate_square), jax.jit(morphology.erode_square)
  square = np.ones((3, 3), bool)
  for mask in random_masks(1) + [ellipse((30, 30), 14, 15, 9, 12)]:
    for r in (1, 3, 6):  # a traced radius: one compilation for all
      np.testing.assert_array_equal(dilate_disk(mask, r, 6), ndimage.binary_dilation(mask, disk(r)))
      np.testing.assert_array_equal(erode_disk(mask, r, 6), ndimage.binary_erosion(mask, disk(r)))
    for k in (1, 2, 4):
      np.testing.assert_array_equal(dilate_square(mask, k),
                                    ndimage.binary_dilation(mask, square, iterations=k))
      np.testing.assert_array_equal(erode_square(mask, k),
                                    ndimage.binary_erosion(mask, square, iterations=k))
    np.testing.assert_array_equal(morphology.boundary(mask),
                                  mask & ~ndimage.binary_erosion(mask, border_value=1))


def test_paint_disks_union_and_deepest_colour():
  rng = np.random.default_rng(2)
  centres = rng.random((25, 27)) < 0.03
  radii = np.where(centres, rng.integers(1, 6, centres.shape), -1)
  colour = rng.random(centres.shape) < 0.5
  covered, painted = morphology.paint_disks(jnp.asarray(radii), jnp.asarray(colour), 5)
  yy, xx = np.mgrid[:25, :27]
  best = np.full(centres.shape, np.inf)
  expected = np.zeros(centres.shape, bool)
  for (y, x) in np.argwhere(centres):
    power = (yy - y) ** 2 + (xx - x) ** 2 - radii[y, x] ** 2
    better = (power < best) | ((power == best) & ~colour[y, x])
    expected = np.where(better, colour[y, x], expected)
    best = np.minimum(best, power)
  np.testing.assert_array_equal(covered, best <= 0)
  np.testing.assert_array_equal(np.asarray(painted)[best <= 0], expected[best <= 0])


# ---------------------------------------------------------------------------------------------
# Bit-packed masks
# ---------------------------------------------------------------------------------------------


def _packed_roundtrip(mask):
  return morphology.pack_bits(jnp.asarray(mask)), mask.shape[-1]


@pytest.mark.parametrize('width', [31, 32, 45, 64])
def test_pack_bits_matches_numpy_packbits_and_counts(width):
  rng = np.random.default_rng(10)
  masks = rng.random((3, 7, width)) < 0.4
  packed = np.asarray(morphology.pack_bits(jnp.asarray(masks)))
  padded = np.pad(masks, ((0, 0), (0, 0), (0, packed.shape[-1] * 32 - width)))
  expected = np.packbits(padded, axis=-1, bitorder='little').view('<u4')
  np.testing.assert_array_equal(packed, expected)
  np.testing.assert_array_equal(morphology.unpack_bits(jnp.asarray(packed), width), masks)
  np.testing.assert_array_equal(morphology.popcount(jnp.asarray(packed)), masks.sum(axis=(1, 2)))
  area, rows, cols = morphology.packed_moments(jnp.asarray(packed[0]))
  r, c = np.nonzero(masks[0])
  assert (int(area), int(rows), int(cols)) == (len(r), r.sum(), c.sum())


@pytest.mark.parametrize('shape', [(23, 31), (40, 70)])
def test_packed_disks_cross_and_translation_equal_scipy(shape):
  dilate = jax.jit(morphology.dilate_disk_packed, static_argnums=(2, 3))
  erode = jax.jit(morphology.erode_disk_packed, static_argnums=(2, 3))
  step = jax.jit(morphology.dilate_cross_packed, static_argnums=1)
  masks = random_masks(11, shape=shape) + [np.ones(shape, bool), np.zeros(shape, bool)]
  for mask in masks:
    packed, width = _packed_roundtrip(mask)
    unpack = lambda bits: np.asarray(morphology.unpack_bits(bits, width))
    for r in (0, 1, 3, 7, 30):  # 30: past the image, and every radius one compilation
      footprint = disk(r) if r else np.ones((1, 1), bool)
      np.testing.assert_array_equal(unpack(dilate(packed, r, 30, width)),
                                    ndimage.binary_dilation(mask, footprint))
      np.testing.assert_array_equal(unpack(erode(packed, r, 30, width)),
                                    ndimage.binary_erosion(mask, footprint))
    for r in (2.5, 3.75):  # a float radius compares float32 squares (mstfal's disks)
      footprint = disk(int(r)) | (np.add.outer(*[np.arange(-int(r), int(r) + 1) ** 2] * 2) <=
                                  np.float32(r) ** 2)
      np.testing.assert_array_equal(unpack(dilate(packed, np.float32(r), 4, width)),
                                    ndimage.binary_dilation(mask, footprint))
    np.testing.assert_array_equal(unpack(step(packed, width, False)),
                                  ndimage.binary_dilation(mask))
    # With the outside as foreground (bits past W included), the complement's dilation is the
    # erosion's complement.
    np.testing.assert_array_equal(~unpack(step(~packed, width, True)),
                                  ndimage.binary_erosion(mask))
  rng = np.random.default_rng(12)
  mask = masks[1]
  pad_row, pad_words = morphology.translation_pads(shape[0], shape[1])
  padded = jnp.pad(morphology.pack_bits(jnp.asarray(mask)),
                   ((pad_row, pad_row), (pad_words, pad_words)))
  translate = jax.jit(morphology.translate_packed, static_argnums=(3, 4, 5))
  for shift_row, shift_col in [(0, 0), (3, -shape[1]), (-shape[0], 5), (1, shape[1] - 1)] + [
      tuple(rng.integers(-s, s + 1) for s in shape) for _ in range(6)]:
    expected = np.zeros_like(mask)
    src = mask[max(0, -shift_row):shape[0] - max(0, shift_row),
               max(0, -shift_col):shape[1] - max(0, shift_col)]
    expected[max(0, shift_row):max(0, shift_row) + src.shape[0],
             max(0, shift_col):max(0, shift_col) + src.shape[1]] = src
    moved = translate(padded, shift_row, shift_col, pad_row, pad_words, shape)
    np.testing.assert_array_equal(morphology.unpack_bits(moved, shape[1]), expected)


def test_adele_fast_resize_and_square_equal_the_matrix_and_distance_forms():
  rng = np.random.default_rng(13)
  mask = jnp.asarray(ellipse((SIZE, SIZE), 30, 34, 14, 9))
  for scale, shift in [(0.6, (12.0, 7.0)), (1.7, (-20.0, -31.0)), (0.33, (40.0, 41.0))]:
    expected = morphology.resize(mask, (48, 48), scale, jnp.asarray(shift), 'nearest') > 0.5
    np.testing.assert_array_equal(
        adele._resize_nearest(mask, 48, jnp.float32(scale), jnp.asarray(shift)), expected)  # pylint: disable=protected-access
  square = jax.jit(adele._dilate_square, static_argnums=2)  # pylint: disable=protected-access
  for small in (rng.random((34, 40)) < 0.1, np.pad(np.ones((6, 6), bool), 14)):
    for k in (0, 1, 3):
      np.testing.assert_array_equal(square(small, k, 3), morphology.dilate_square(small, k))


def test_radius_grouped_corrupt_selected_equals_generator_path():
  masks = blob_dataset(12, seed=4)
  masks[5] = 0
  _, resolved = generate.resolve('radius', RADIUS_PARAMS, masks)
  entry = radius.PROTOCOL
  expected, expected_logs = generate._corrupt_selected(entry, resolved, 3, masks,  # pylint: disable=protected-access
                                                       np.arange(12), 4)
  got, logs = radius.corrupt_selected(resolved, 3, masks, np.arange(12), chunk=4)
  np.testing.assert_array_equal(got, expected)
  assert {int(log['type']) for log in logs} == {radius.DILATE, radius.ERODE, radius.EDGE}
  for log, expected_log in zip(logs, expected_logs):
    assert log.keys() == expected_log.keys()
    for name in log:
      np.testing.assert_array_equal(log[name], expected_log[name])


@pytest.mark.parametrize('method', ['linear', 'cubic'])
def test_resize_matches_jax_scale_and_translate(method):
  image = jnp.asarray(np.random.default_rng(3).random((20, 24)), jnp.float32)
  for scale, shift in ((2.3, 1.7), (0.6, -0.4)):
    ours = jax.jit(morphology.resize, static_argnums=(1, 4))(image, (30, 17), scale, shift, method)
    theirs = jax.image.scale_and_translate(image, (30, 17), (0, 1), jnp.array([scale, scale]),
                                           jnp.array([shift, shift]), method, antialias=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_nearest_resize_matches_jax_resize():
  image = jnp.asarray(np.random.default_rng(4).random((20, 24)), jnp.float32)
  for shape in ((40, 48), (10, 12), (33, 29)):
    ours = morphology.resize(image, shape, jnp.array([shape[0] / 20, shape[1] / 24]), 0.0,
                             'nearest')
    np.testing.assert_array_equal(ours, jax.image.resize(image, shape, 'nearest'))


def test_skeleton_equals_zhang_suen_reference():
  masks = [ellipse((40, 40), 20, 20, 12, 17), ellipse((40, 40), 18, 22, 6, 15) | (
      np.random.default_rng(5).random((40, 40)) < 0.1)]
  skeletonize = jax.jit(morphology.skeletonize)
  for mask in masks:
    np.testing.assert_array_equal(skeletonize(mask), zhang_suen_reference(mask))


# ---------------------------------------------------------------------------------------------
# Protocol helpers
# ---------------------------------------------------------------------------------------------


def blob_dataset(count=6, seed=0):
  rng = np.random.default_rng(seed)
  masks = np.zeros((count, SIZE, SIZE), np.uint8)
  for i in range(count):
    masks[i] = ellipse((SIZE, SIZE), *rng.uniform(26, 38, 2), *rng.uniform(8, 16, 2))
  return masks


def multiclass_dataset():
  masks = np.zeros((4, SIZE, SIZE), np.uint8)
  masks[:, 8:28, 8:30] = 1
  masks[:, 36:56, 30:56] = 2
  masks[:, 0:2, :] = 255
  masks[:, 30:33, 5:60] = 255
  return masks


@functools.cache
def _batched(module, **static):
  return jax.jit(jax.vmap(functools.partial(module.corrupt, **static)))


def _keys(name, count, seed=0):
  return jax.vmap(lambda i: generate.sample_key(seed, name, i))(jnp.arange(count))


RADIUS_PARAMS = {'alpha': 1.0, 'structure': 'custom', 'r_min': 3, 'r_max': 5,
                 'scale_radii': False}
PROTOCOL_CASES = [('radius', RADIUS_PARAMS), ('adele', {'canvas': 64}), ('scribble', {})]


@pytest.mark.parametrize('name,params', PROTOCOL_CASES)
def test_apply_noise_is_deterministic_per_index(name, params):
  masks = np.repeat(blob_dataset(1), 6, axis=0)
  first, records = generate.apply_noise(masks, np.arange(6), name, params, seed=3, chunk=6)
  again, again_records = generate.apply_noise(masks, np.arange(6), name, params, seed=3, chunk=6)
  np.testing.assert_array_equal(first, again)
  assert records == again_records
  assert first.dtype == np.uint8 and first.shape == masks.shape
  # The same clean mask under different sample ids gets different noise.
  assert len({r['sha1'] for r in records}) > 1
  assert all(r['protocol'] == name and r['is_noisy'] for r in records)


@pytest.mark.parametrize('name,params', PROTOCOL_CASES)
def test_vmapped_equals_looped_and_ignore_kept(name, params):
  module = {'radius': radius, 'adele': adele, 'scribble': scribble}[name]
  masks = multiclass_dataset()
  resolved = module.PROTOCOL.resolve_params(params, 2)
  static = module.corrupt_kwargs(resolved)
  keys = _keys(name, len(masks))
  out, log = _batched(module, **{k: v for k, v in static.items()})(keys, jnp.asarray(masks))
  out = np.asarray(out)
  one, _ = jax.jit(functools.partial(module.corrupt, **static))(keys[1], jnp.asarray(masks[1]))
  np.testing.assert_array_equal(one, out[1])
  assert (out[masks == 255] == 255).all()
  if name != 'scribble':  # scribbles mark everything else unknown too
    np.testing.assert_array_equal(out == 255, masks == 255)
  assert set(np.unique(out)) <= {0, 1, 2, 255}
  for value in log.values():
    assert value.shape[0] == len(masks)


def test_bad_params_raise_config_error():
  masks = blob_dataset(2)
  cases = [('radius', {'structure': 'liver'}), ('radius', {'r_min': 3}),
           ('radius', {'structure': 'custom', 'r_min': 5, 'r_max': 3}),
           ('radius', {'edge_detector': 'sobel'}), ('radius', {'gamma': 1}),
           ('adele', {'modes': ('sideways',)}), ('adele', {'thresh': 1.5}),
           ('scribble', {'width': (1, 5)}), ('scribble', {'keep': (0.9, 0.5)})]
  for name, params in cases:
    with pytest.raises(ConfigError, match=name):
      generate.apply_noise(masks, np.arange(2), name, params, seed=0)


# ---------------------------------------------------------------------------------------------
# radius
# ---------------------------------------------------------------------------------------------


def test_radius_dilation_and_erosion_of_a_disk_change_its_radius():
  centre, big = SIZE // 2, 14
  masks = np.repeat(ellipse((SIZE, SIZE), centre, centre, big + 0.5, big + 0.5)[None], 8,
                    axis=0).astype(np.uint8)
  static = radius.corrupt_kwargs(radius.resolve_params(
      {**RADIUS_PARAMS, 'type_probs': (0.5, 0.5, 0.0)}, 1))
  out, log = _batched(radius, **static)(_keys('radius', 8), jnp.asarray(masks))
  out, log = np.asarray(out), jax.tree.map(np.asarray, log)
  assert set(log['type']) == {radius.DILATE, radius.ERODE}
  clean = masks[0].astype(bool)
  for noisy, kind, r in zip(out, log['type'], log['radius']):
    assert 3 <= r <= 5
    expected = (ndimage.binary_dilation(clean, disk(r)) if kind == radius.DILATE else
                ndimage.binary_erosion(clean, disk(r)))
    np.testing.assert_array_equal(noisy.astype(bool), expected)
    grown = np.sqrt(noisy.sum() / np.pi) - np.sqrt(clean.sum() / np.pi)
    assert abs(grown - (r if kind == radius.DILATE else -r)) < 1.0


@pytest.mark.parametrize('detector', ['canny', 'boundary'])
def test_radius_edge_noise_stays_near_the_edge_and_logs_disks(detector):
  masks = blob_dataset(6)
  static = radius.corrupt_kwargs(radius.resolve_params(
      {**RADIUS_PARAMS, 'type_probs': (0.0, 0.0, 1.0), 'edge_detector': detector}, 1))
  out, log = _batched(radius, **static)(_keys('radius', 6), jnp.asarray(masks))
  out, log = np.asarray(out), jax.tree.map(np.asarray, log)
  for clean, noisy, disks in zip(masks.astype(bool), out.astype(bool), log['num_disks']):
    if detector == 'canny':
      edges = scipy_noise_reference.canny(clean)
    else:
      edges = clean & ~ndimage.binary_erosion(clean, border_value=1)
    assert 0.3 * edges.sum() < disks < 0.7 * edges.sum()
    near_edge = ndimage.binary_dilation(edges, disk(4))  # disks have radius < r_max = 5
    assert not ((clean != noisy) & ~near_edge).any()
    assert (clean != noisy).any()


def test_radius_radii_scale_and_structure_subsets_are_independent():
  low, high = radius.scaled_radii((20,), (30,), (512, 512), True, 256)
  assert (low[0], high[0]) == (40, 60)
  lung = radius.resolve_params({'structure': 'lung', 'alpha': 0.5}, 1)
  heart = radius.resolve_params({'structure': 'heart', 'alpha': 0.5}, 1)
  assert heart['r_min'] == (14,) and heart['r_max'] == (20,)
  chosen_lung = radius.select_noisy(0, 40, lung)
  assert chosen_lung.sum() == 20
  assert not np.array_equal(chosen_lung, radius.select_noisy(0, 40, heart))
  np.testing.assert_array_equal(chosen_lung, radius.select_noisy(0, 40, lung))


def test_radius_multiclass_and_empty_mask():
  masks = multiclass_dataset()
  masks[3] = np.where(masks[3] == 255, 255, 0)
  params = {'alpha': 1.0, 'structure': ('heart', 'clavicle'), 'scale_radii': True}
  noisy, records = generate.apply_noise(masks, np.arange(4), 'radius', params, seed=1, chunk=4)
  assert (noisy[masks == 255] == 255).all()
  assert set(np.unique(noisy)) <= {0, 1, 2, 255}
  assert [c['params']['structure'] for c in records[0]['classes']] == ['heart', 'clavicle']
  assert records[3]['type'] == 'empty'
  np.testing.assert_array_equal(noisy[3], masks[3])
  assert any(r['rho_fg'] > 0 for r in records[:3])


# ---------------------------------------------------------------------------------------------
# adele
# ---------------------------------------------------------------------------------------------


def test_adele_under_shrinks_and_over_grows():
  masks = blob_dataset(8)
  masks[7] = 0
  for mode, sign in (('under', -1), ('over', 1)):
    noisy, records = generate.apply_noise(masks, np.arange(8), 'adele',
                                          {'modes': (mode,), 'canvas': 64}, seed=0, chunk=8)
    for clean, out, record in zip(masks[:7], noisy[:7], records[:7]):
      assert record['type'] == mode and record['params']['status'] == 'ok'
      assert np.sign(int(out.sum()) - int(clean.sum())) == sign
      if mode == 'under':
        assert not (out.astype(bool) & ~clean.astype(bool)).any()
      else:
        assert not (clean.astype(bool) & ~out.astype(bool)).any()
      assert record['params']['iterations'] in (2, 3, 4)
    assert records[7]['type'] == 'empty'
    np.testing.assert_array_equal(noisy[7], masks[7])


def test_adele_over_adds_only_on_background_multiclass():
  masks = multiclass_dataset()
  params = {'modes': ('over',), 'per': 'class', 'canvas': 96}
  noisy, records = generate.apply_noise(masks, np.arange(4), 'adele', params, seed=0, chunk=4)
  changed = noisy != masks
  assert (masks[changed] == 0).all()  # only background pixels were relabelled
  assert changed.any() and (noisy[masks == 255] == 255).all()
  assert all(c['type'] == 'over' for r in records for c in r['classes'])


def test_adele_clipped_class_is_left_unchanged():
  mask = np.zeros((1, SIZE, SIZE), np.uint8)
  mask[0, 2:62, 30:33] = 1  # a long thin bar: its resized bounding box outgrows the canvas
  noisy, records = generate.apply_noise(mask, np.arange(1), 'adele', {'canvas': 32}, seed=0)
  assert records[0]['type'] == 'clipped'
  np.testing.assert_array_equal(noisy, mask)


# ---------------------------------------------------------------------------------------------
# scribble
# ---------------------------------------------------------------------------------------------


def test_scribbles_are_contained_in_their_clean_regions():
  masks = np.concatenate([blob_dataset(4), multiclass_dataset()])
  masks[3] = 0
  noisy, records = generate.apply_noise(masks, np.arange(len(masks)), 'scribble', None,
                                        seed=2, chunk=8)
  for clean, out, record in zip(masks, noisy, records):
    known = out != 255
    np.testing.assert_array_equal(out[known], clean[known])  # every scribble label is correct
    if not (clean[clean != 255] > 0).any():
      assert record['type'] == 'empty'
      np.testing.assert_array_equal(out, clean)
      continue
    assert record['type'] == 'scribble'
    assert (out == 0).any() and record['params']['bg_precision'] == 1.0
    for entry in record['classes']:
      if entry['params']['pixels']:
        assert entry['params']['precision'] == 1.0
    # The foreground scribble lies inside the mask eroded by 3 px, widened by at most 1 px.
    for c in range(1, clean.max(initial=0, where=clean != 255) + 1):
      inner = ndimage.binary_dilation(ndimage.binary_erosion(clean == c, disk(3)), np.ones((3, 3)))
      assert not ((out == c) & ~inner).any()
      assert 0.3 * (clean == c).sum() > (out == c).sum() > 0
    # The background scribble lies in the ring 5–15 px outside, widened by at most 1 px.
    distance = ndimage.distance_transform_edt((clean == 0) | (clean == 255))
    bg = out == 0
    assert (distance[bg] >= 4).all() and (distance[bg] <= 16).all()
