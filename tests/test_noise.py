"""Tests for nsegjax.noise (METHODS.md §2.0 contract, §2.3 α/β dilate / erode / affine).

The reference behaviour of gaozhitong/SP_guided_Noisy_Label_Seg `data_process/noise_generation.py`
is re-implemented here independently with NumPy / SciPy loops (`reference_*`), and the JAX code is
compared against it exactly. Compilations are the slow part on CPU, so the jitted functions are
shared between tests through `_jitted`.
"""
import functools
import hashlib
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from nsegjax.errors import ConfigError, DataError
from nsegjax.noise import PROTOCOLS, NoiseProtocol, abn, alpha_subset, generate, protocol_id

# ---------------------------------------------------------------------------------------------
# Independent reference (loops as in the SP-guided code)
# ---------------------------------------------------------------------------------------------


def reference_dilate(label, beta):
  """`dilate_mask` of the reference; returns the label unchanged where the reference crashes."""
  label = label.astype(bool)
  full = label.size
  size = label.sum()
  target = size + int(size * beta)
  noisy, last = label.copy(), None
  while noisy.sum() < target and noisy.sum() != full:
    last = noisy.copy()
    noisy = ndimage.binary_dilation(noisy, iterations=1)
  if last is None:
    return label
  if noisy.sum() == full or abs(int(last.sum()) - target) < abs(int(noisy.sum()) - target):
    return last
  return noisy


def reference_erode(label, beta):
  """`erode_mask` of the reference; returns the label unchanged where the reference crashes."""
  label = label.astype(bool)
  size = label.sum()
  target = size - int(size * beta)
  noisy, last = label.copy(), None
  while noisy.sum() > target and noisy.sum() != 0:
    last = noisy.copy()
    noisy = ndimage.binary_erosion(noisy, iterations=1)
  if last is None:
    return label
  if noisy.sum() == 0 or abs(int(last.sum()) - target) < abs(int(noisy.sum()) - target):
    return last
  return noisy


def reference_translate(rotated, step, direction, shift_mode):
  """Zero-fill shift; shift_mode='code' is the reference's translate_label, which pads by
  |offset| on the leading side for negative offsets too."""
  off_r, off_c = step * direction[0], step * direction[1]
  if shift_mode == 'code':
    off_r, off_c = abs(off_r), abs(off_c)
  height, width = rotated.shape
  out = np.zeros_like(rotated)
  src = rotated[max(0, -off_r):height - max(0, off_r), max(0, -off_c):width - max(0, off_c)]
  out[max(0, off_r):max(0, off_r) + src.shape[0], max(0, off_c):max(0, off_c) + src.shape[1]] = src
  return out


def reference_bisect(label, rotated, beta, direction, shift_mode, max_step=100, max_count=20):
  """The reference's step bisection; returns (mask, step) of the last evaluation."""
  left, right, count = 0, max_step, 0
  noisy, middle = None, None
  while left < right:
    count += 1
    if count > max_count:
      break
    middle = (left + right) // 2
    noisy = reference_translate(rotated, middle, direction, shift_mode)
    noise = 1.0 * np.logical_xor(noisy, label).sum() / label.sum()
    if noise > beta:
      right = middle - 1
    elif noise < beta:
      left = middle + 1
    else:
      break
  return noisy, middle


def reference_affine(mask, angle, direction_id, beta, shift_mode):
  """Rotation by the JAX code (tested separately), then the reference's translation search."""
  fg = jnp.asarray(mask, bool)
  rotated = np.asarray(abn.rotate_mask(fg, jnp.float32(angle), abn.rotation_center(fg,
                                                                                'centroid')))
  offset = abn.DIRECTIONS['code7'][int(direction_id)]
  return reference_bisect(mask > 0, rotated, beta, offset, shift_mode)


def random_ellipses(rng, count, size, max_shapes=1):
  """Binary (or, with several shapes, still binary union) ellipse masks [count, size, size]."""
  yy, xx = np.mgrid[:size, :size]
  out = np.zeros((count, size, size), np.uint8)
  for i in range(count):
    for _ in range(rng.integers(1, max_shapes + 1)):
      cy, cx = rng.uniform(0.25, 0.75, 2) * size
      a, b = rng.uniform(0.08, 0.25, 2) * size
      t = rng.uniform(0, np.pi)
      u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
      v = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
      out[i] |= ((u / a) ** 2 + (v / b) ** 2 < 1).astype(np.uint8)
  return out


def keys(seed, count):
  return jax.vmap(lambda i: generate.sample_key(seed, 'abn', i))(jnp.arange(count))


@functools.cache
def _jitted(batched=True, **static):
  """jit(vmap(corrupt)) or jit(corrupt), one compilation per static setting for the module."""
  fn = functools.partial(abn.corrupt, **static)
  return jax.jit(jax.vmap(fn) if batched else fn)


def corrupt_batch(key_batch, masks, **static):
  static.setdefault('beta', 0.5)
  out, log = _jitted(True, **static)(key_batch, jnp.asarray(masks))
  return np.asarray(out), jax.tree.map(np.asarray, log)


BATCH = 24  # one batch shape per image size, so each setting compiles once
DILATE_ONLY = (1.0, 0.0, 0.0)

# ---------------------------------------------------------------------------------------------
# Morphology
# ---------------------------------------------------------------------------------------------


def test_single_dilation_and_erosion_steps_equal_scipy():
  rng = np.random.default_rng(0)
  masks = [rng.random((23, 31)) < p for p in (0.02, 0.3, 0.6, 0.95)]
  masks += [np.ones((23, 31), bool), np.zeros((23, 31), bool), random_ellipses(rng, 1, 40)[0] > 0]
  dilate = jax.jit(abn.dilate_cross)
  erode = jax.jit(abn.erode_cross)
  for mask in masks:
    for k in (1, 2, 5):
      np.testing.assert_array_equal(dilate(mask, k), ndimage.binary_dilation(mask, iterations=k))
      np.testing.assert_array_equal(erode(mask, k), ndimage.binary_erosion(mask, iterations=k))


def test_city_block_distance_equals_scipy_taxicab():
  rng = np.random.default_rng(1)
  seeds = rng.random((17, 29)) < 0.05
  expected = ndimage.distance_transform_cdt(~seeds, metric='taxicab')
  np.testing.assert_array_equal(abn.city_block_distance(jnp.asarray(seeds)), expected)


@pytest.mark.parametrize('beta', [0.5, 0.7, 0.3])
def test_dilate_and_erode_to_target_equal_reference_loops(beta):
  rng = np.random.default_rng(2)
  masks = list(random_ellipses(rng, 6, 48, max_shapes=3)) + [
      (rng.random((48, 48)) < 0.4).astype(np.uint8),  # ragged: many 1-step changes
      np.pad(np.ones((46, 48), np.uint8), ((1, 1), (0, 0))),  # dilation fills the image
      np.eye(48, dtype=np.uint8),  # erosion empties at once
  ]
  dilate, erode = jax.jit(abn.dilate_to_target), jax.jit(abn.erode_to_target)
  for mask in masks:
    size = int(mask.sum())
    fg = jnp.asarray(mask, bool)
    got, _ = dilate(fg, size + int(size * beta))
    np.testing.assert_array_equal(got, reference_dilate(mask, beta))
    got, _ = erode(fg, size - int(size * beta))
    np.testing.assert_array_equal(got, reference_erode(mask, beta))


@pytest.mark.parametrize('beta', [0.5, 0.7, 0.3, 0.123456789])
def test_beta_tables_reproduce_float64_decisions(beta):
  dilate_target, erode_target, below, at_most = abn._beta_tables(beta, 3000)
  for n in range(1, 3001, 7):
    assert dilate_target[n] == n + int(n * beta) and erode_target[n] == n - int(n * beta)
    for a in range(max(0, int(n * beta) - 3), int(n * beta) + 4):
      noise = 1.0 * a / n
      assert (noise < beta) == (a < below[n]) and (noise > beta) == (a >= at_most[n]), (n, a)


@pytest.fixture(scope='module')
def corrupted64():
  """24 blob masks 64×64 under the default settings (β = 0.5): all three types occur."""
  rng = np.random.default_rng(3)
  masks = random_ellipses(rng, BATCH, 64, max_shapes=2)
  out, log = corrupt_batch(keys(0, BATCH), masks)
  return masks, out, log


def test_corrupt_equals_reference_for_every_type(corrupted64):
  masks, out, log = corrupted64
  assert set(log['type'].tolist()) == {0, 1, 2}
  for mask, noisy, type_id, angle, direction, step in zip(
      masks, out, log['type'], log['angle'], log['direction'], log['step']):
    if type_id == abn.DILATE:
      expected = reference_dilate(mask, 0.5)
    elif type_id == abn.ERODE:
      expected = reference_erode(mask, 0.5)
    else:
      expected, expected_step = reference_affine(mask, angle, direction, 0.5, 'signed')
      assert step == expected_step
    np.testing.assert_array_equal(noisy, expected.astype(np.uint8))
  assert np.abs(log['angle']).max() <= 30.0
  assert ((log['step'] == -1) == (log['type'] != abn.AFFINE)).all()


# ---------------------------------------------------------------------------------------------
# Affine
# ---------------------------------------------------------------------------------------------


def test_rotation_by_90_degrees_about_image_center_is_rot90():
  rng = np.random.default_rng(4)
  for size in (15, 16):
    mask = jnp.asarray(rng.random((size, size)) < 0.3)
    center = abn.rotation_center(mask, 'image')
    np.testing.assert_array_equal(abn.rotate_mask(mask, jnp.float32(90.0), center),
                                  np.rot90(np.asarray(mask)))


def test_nearest_rotation_about_image_center_matches_scipy_up_to_ties():
  rng = np.random.default_rng(5)
  mask = random_ellipses(rng, 1, 64)[0]
  center = abn.rotation_center(jnp.asarray(mask, bool), 'image')
  for angle in (-27.3, 12.0):
    got = np.asarray(abn.rotate_mask(jnp.asarray(mask, bool), jnp.float32(angle), center))
    expected = ndimage.rotate(mask, angle, order=0, reshape=False) > 0
    assert (got != expected).mean() < 0.01


def test_affine_with_reference_shift_mode_equals_reference():
  rng = np.random.default_rng(6)
  masks = random_ellipses(rng, BATCH, 64, max_shapes=2)
  out, log = corrupt_batch(keys(1, BATCH), masks, shift_mode='code')
  affine = np.flatnonzero(log['type'] == abn.AFFINE)
  assert len(affine) > 3
  for i in affine:
    expected, expected_step = reference_affine(masks[i], log['angle'][i], log['direction'][i],
                                               0.5, 'code')
    assert log['step'][i] == expected_step
    np.testing.assert_array_equal(out[i], expected.astype(np.uint8))


def test_direction_lists():
  assert len(set(abn.DIRECTIONS['code7'])) == 7
  assert len(set(abn.DIRECTIONS['all8'])) == 8
  assert abn.DIRECTIONS['code7'][5] == (-1, 1) and abn.DIRECTIONS['all8'][5] == (-1, -1)


# ---------------------------------------------------------------------------------------------
# Achieved noise
# ---------------------------------------------------------------------------------------------


def check_rho_fg_near_beta(log, beta):
  """Dilate / erode land within about one morphology step of β; affine follows the reference's
  bisection, which returns the last evaluated step rather than the closest one."""
  deviation = np.abs(log['rho_fg'] - beta)
  morph = log['type'] != abn.AFFINE
  assert deviation[morph].max() < 0.2 and np.median(deviation[morph]) < 0.05, log
  assert deviation.max() < 0.4 and np.median(deviation[~morph]) < 0.1, log


def test_achieved_rho_fg_is_close_to_beta_64(corrupted64):
  check_rho_fg_near_beta(corrupted64[2], 0.5)


def test_achieved_rho_fg_is_close_to_beta_128():
  rng = np.random.default_rng(7)
  masks = random_ellipses(rng, BATCH, 128)
  _, log = corrupt_batch(keys(2, BATCH), masks)
  check_rho_fg_near_beta(log, 0.5)


def test_log_metrics_agree_with_host_recomputation(corrupted64):
  masks, out, log = corrupted64
  metrics = generate.label_noise_metrics(masks, out, num_classes=2)
  np.testing.assert_allclose(log['rho_fg'], metrics['rho_fg'][:, 0], rtol=1e-5)
  np.testing.assert_allclose(log['dice'], metrics['dice'][:, 0], rtol=1e-5)
  np.testing.assert_allclose(log['rho_pix'], metrics['rho_pix'], rtol=1e-5)
  np.testing.assert_allclose(log['rho_fg_all'], log['rho_fg'], rtol=1e-6)


def test_dice_on_labelled_pixels_by_hand():
  # A scribble-like weak label: 255 = unlabelled. Clean: 4 foreground pixels of 8 valid ones
  # (the last pixel is ignore in the clean mask too).
  clean = np.array([[[1, 1, 1, 1, 0, 0, 0, 0, 255]]], np.uint8)
  noisy = np.array([[[1, 255, 255, 1, 0, 255, 1, 255, 255]]], np.uint8)
  metrics = generate.label_noise_metrics(clean, noisy, num_classes=2)
  # Labelled in both: positions 0, 3, 4, 6 → clean fg {0, 3}, noisy fg {0, 3, 6}.
  assert metrics['known_fraction'][0] == pytest.approx(4 / 8)
  assert metrics['dice_known'][0] == pytest.approx(2 * 2 / (2 + 3))
  # The plain Dice counts the unlabelled clean foreground as missed: 2·2 / (4 + 3).
  assert metrics['dice_all'][0] == pytest.approx(4 / 7)
  dense = generate.label_noise_metrics(clean, clean, num_classes=2)
  assert dense['known_fraction'][0] == 1.0 and dense['dice_known'][0] == 1.0


# ---------------------------------------------------------------------------------------------
# Determinism, batching, special pixels
# ---------------------------------------------------------------------------------------------


def test_sample_key_is_a_fold_in_chain():
  a = generate.sample_key(3, 'abn', 5)
  b = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), protocol_id('abn')), 5)
  np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
  assert not np.array_equal(jax.random.key_data(a),
                            jax.random.key_data(generate.sample_key(3, 'abn', 6)))


def test_vmapped_equals_looped(corrupted64):
  masks, out, log = corrupted64
  key_batch = keys(0, BATCH)
  single = _jitted(False, beta=0.5)
  for i in range(0, BATCH, 3):
    mask = masks[i]
    one, one_log = single(key_batch[i], jnp.asarray(mask))
    np.testing.assert_array_equal(one, out[i])
    chex.assert_trees_all_close(jax.tree.map(np.asarray, one_log),
                                jax.tree.map(lambda v: v[i], log))


def test_ignore_pixels_and_empty_masks_are_kept():
  rng = np.random.default_rng(10)
  masks = random_ellipses(rng, BATCH, 64)
  masks[:, :, 20:24] = 255  # an ignore band through the blobs
  masks[3] = np.where(masks[3] == 255, 255, 0)  # no foreground at all
  masks[4] = 0
  out, log = corrupt_batch(keys(5, BATCH), masks)
  np.testing.assert_array_equal(out == 255, masks == 255)
  np.testing.assert_array_equal(out[3:5], masks[3:5])
  assert np.flatnonzero(log['empty']).tolist() == [3, 4]
  assert np.isnan(log['rho_fg'][3]) and log['dice'][3] == 1.0
  assert set(np.unique(out)) == {0, 1, 255}


def test_multiclass_classes_are_corrupted_independently_and_painted_ascending():
  masks = np.zeros((2, 40, 40), np.uint8)
  masks[:, 8:20, 8:20] = 1
  masks[:, 20:30, 10:25] = 2  # touching class 1: the dilations overlap
  masks[:, 5:9, 30:34] = 3
  masks[1, 0:3, :] = 255
  beta = 0.5
  for order in ('ascending', 'descending'):
    out, log = corrupt_batch(keys(6, 2), masks, type_probs=DILATE_ONLY, beta=beta, num_classes=4,
                             paint_order=order)
    chex.assert_shape(log['rho_fg'], (2, 3))
    assert (log['type'] == abn.DILATE).all()
    for mask, noisy in zip(masks, out):
      valid = mask != 255
      expected = np.zeros_like(mask)
      classes = (1, 2, 3) if order == 'ascending' else (3, 2, 1)
      for c in classes:
        expected[reference_dilate((mask == c) & valid, beta)] = c
      expected[~valid] = 255
      np.testing.assert_array_equal(noisy, expected)
    lower, upper = (1, 2) if order == 'ascending' else (2, 1)
    assert ((masks == lower) & (out == upper)).any()  # the grown masks do overlap


def test_type_per_class_draws_differ_between_classes():
  masks = np.zeros((8, 32, 32), np.uint8)
  masks[:, 4:12, 4:12] = 1
  masks[:, 18:28, 18:28] = 2
  _, log = corrupt_batch(keys(7, 8), masks, num_classes=3, type_per='class')
  assert (log['type'][:, 0] != log['type'][:, 1]).any()
  assert (log['angle'][:, 0] != log['angle'][:, 1]).all()


# ---------------------------------------------------------------------------------------------
# Registry and subset
# ---------------------------------------------------------------------------------------------


def test_registry_entries():
  assert {'none', 'abn'} <= set(PROTOCOLS.names())
  entry = PROTOCOLS.get('abn')
  assert isinstance(entry, NoiseProtocol)
  assert set(entry.default_params) >= {'alpha', 'beta', 'directions', 'center', 'type_probs'}
  with pytest.raises(ConfigError, match='abn'):
    PROTOCOLS.get('abm')


@pytest.mark.parametrize('alpha,count', [(0.0, 0), (0.3, 30), (0.29, 29), (0.5, 50), (1.0, 100)])
def test_alpha_subset_size_and_determinism(alpha, count):
  chosen = alpha_subset(0, 100, alpha, 'abn')
  assert chosen.dtype == np.bool_ and chosen.sum() == count
  np.testing.assert_array_equal(chosen, PROTOCOLS.get('abn').select_noisy(0, 100,
                                                                          {'alpha': alpha}))
  expected = np.random.default_rng(np.random.SeedSequence([0, protocol_id('abn')])).permutation(
      100)[:count]
  assert set(np.flatnonzero(chosen)) == set(expected.tolist())
  if 0 < count < 100:
    assert not np.array_equal(chosen, alpha_subset(1, 100, alpha, 'abn'))


@pytest.mark.parametrize('params,match', [
    ({'beta': 0.0}, r'\(0, 1\]'),
    ({'beta': 1.5}, r'\(0, 1\]'),
    ({'alpha': -0.1}, r'\[0, 1\]'),
    ({'alpha': 1.2}, r'\[0, 1\]'),
    ({'gamma': 1}, 'valid keys'),
    ({'directions': 'all7'}, 'code7, all8'),
    ({'center': 'middle'}, 'centroid, image'),
    ({'type_probs': (0.5, 0.5)}, 'type_probs'),
    ({'num_classes': 1}, 'num_classes'),
])
def test_bad_params_raise_config_error(params, match):
  masks = np.zeros((2, 8, 8), np.uint8)
  with pytest.raises(ConfigError, match=match):
    generate.apply_noise(masks, np.arange(2), 'abn', params, seed=0)


def test_bad_protocol_and_inputs():
  masks = np.zeros((2, 8, 8), np.uint8)
  with pytest.raises(ConfigError, match='none'):
    generate.apply_noise(masks, np.arange(2), 'flipz', {}, seed=0)
  with pytest.raises(ConfigError, match='no parameters'):
    generate.apply_noise(masks, np.arange(2), 'none', {'alpha': 1.0}, seed=0)
  with pytest.raises(DataError, match='num_samples'):
    generate.apply_noise(masks, np.array([0, 5]), 'none', {}, seed=0)
  with pytest.raises(DataError, match='unique'):
    generate.apply_noise(masks, np.array([1, 1]), 'none', {}, seed=0)


# ---------------------------------------------------------------------------------------------
# Dataset generation, log and cache
# ---------------------------------------------------------------------------------------------

PARAMS = {'alpha': 0.7, 'beta': 0.5, 'directions': 'code7', 'center': 'centroid',
          'type_probs': (1 / 3, 1 / 3, 1 / 3)}


@pytest.fixture(scope='module')
def dataset():
  rng = np.random.default_rng(11)
  masks = random_ellipses(rng, 10, 48)
  masks[7] = 0
  return masks


@pytest.fixture(scope='module')
def generated(dataset):
  return generate.apply_noise(dataset, np.arange(10), 'abn', PARAMS, seed=3, chunk=4)


def test_apply_noise_records(dataset, generated):
  noisy, records = generated
  assert noisy.dtype == np.uint8 and noisy.shape == dataset.shape
  assert [r['sample_id'] for r in records] == list(range(10))
  expected_noisy = alpha_subset(3, 10, 0.7, 'abn')
  assert [r['is_noisy'] for r in records] == expected_noisy.tolist()
  json.loads(json.dumps(records, allow_nan=False))
  for r, clean, out in zip(records, dataset, noisy):
    assert r['sha1'] == hashlib.sha1(out.tobytes()).hexdigest()
    assert r['protocol'] == 'abn' and r['seed'] == 3 and r['protocol_version'] == 1
    if not r['is_noisy']:
      np.testing.assert_array_equal(out, clean)
      assert r['type'] == 'clean' and r['rho_pix'] == 0.0
    elif not clean.any():
      assert r['type'] == 'empty' and r['rho_fg'] is None
      np.testing.assert_array_equal(out, clean)
    else:
      assert r['type'] in abn.TYPE_NAMES
      assert r['rho_pix'] == pytest.approx(np.mean(out != clean))
      want = {'affine': {'angle', 'direction', 'step'}, 'dilate': {'iterations'},
              'erode': {'iterations'}}[r['type']]
      assert want <= set(r['params'])
  summary = generate.summarize_noise_log(records)
  assert summary['fraction_noisy'] == pytest.approx(0.7)
  assert summary['num_samples'] == 10


def test_apply_noise_is_independent_of_order_chunking_and_repeats(dataset, generated):
  noisy, records = generated
  again, again_records = generate.apply_noise(dataset, np.arange(10), 'abn', PARAMS, seed=3,
                                              chunk=4)
  np.testing.assert_array_equal(again, noisy)
  assert again_records == records
  perm = np.random.default_rng(0).permutation(10)[:6]
  part, part_records = generate.apply_noise(dataset[perm], perm, 'abn', PARAMS, seed=3, chunk=4,
                                            num_samples=10)
  np.testing.assert_array_equal(part, noisy[perm])
  assert part_records == [records[i] for i in perm]
  other, _ = generate.apply_noise(dataset, np.arange(10), 'abn', PARAMS, seed=4, chunk=4)
  assert not np.array_equal(other, noisy)


def test_different_indices_give_different_noise(dataset):
  # The same clean mask under several sample ids gets independent corruptions.
  masks = np.repeat(dataset[:1], 10, axis=0)
  _, records = generate.apply_noise(masks, np.arange(10), 'abn', PARAMS, seed=0, chunk=4)
  noisy = [r for r in records if r['is_noisy']]
  assert len({r['sha1'] for r in noisy}) > 1
  assert len({(r['type'], json.dumps(r['params'])) for r in noisy}) > 1


def test_none_protocol_is_identity(dataset):
  noisy, records = generate.apply_noise(dataset, np.arange(10), 'none', None, seed=0)
  np.testing.assert_array_equal(noisy, dataset)
  assert not any(r['is_noisy'] for r in records)
  assert all(r['dice'] == 1.0 for r in records)


def test_cache_round_trip(tmp_path, dataset, generated, monkeypatch):
  noisy, records = generated
  first = generate.cached_apply_noise(tmp_path, 'toy', dataset, np.arange(10), 'abn', PARAMS,
                                      seed=3, chunk=4)
  np.testing.assert_array_equal(first[0], noisy)
  assert first[1] == json.loads(json.dumps(records))
  (npz,) = tmp_path.glob('toy.*.npz')
  (log,) = tmp_path.glob('toy.*.jsonl')
  assert generate.read_noise_log(log) == first[1]

  def fail(*args, **kwargs):
    raise AssertionError('the cache was not used')

  monkeypatch.setattr(generate, 'apply_noise', fail)
  second = generate.cached_apply_noise(tmp_path, 'toy', dataset, np.arange(10), 'abn', PARAMS,
                                       seed=3, chunk=4)
  np.testing.assert_array_equal(second[0], noisy)
  assert second[1] == first[1]
  monkeypatch.undo()

  # A damaged cache is regenerated bit-identically.
  log.write_text(log.read_text().replace(records[0]['sha1'], '0' * 40))
  third = generate.cached_apply_noise(tmp_path, 'toy', dataset, np.arange(10), 'abn', PARAMS,
                                      seed=3, chunk=4)
  np.testing.assert_array_equal(third[0], noisy)
  assert third[1] == first[1]
  with np.load(npz, allow_pickle=False) as data:
    np.testing.assert_array_equal(data['noisy'], noisy)

  other_key = generate.cache_key(dataset, np.arange(10), 'abn', dict(PARAMS, beta=0.7), 3)
  assert other_key != generate.cache_key(dataset, np.arange(10), 'abn', PARAMS, 3)


def test_summarize_handles_nulls():
  records = [
      {'is_noisy': True, 'type': 'dilate', 'rho_pix': 0.1, 'rho_fg': 0.5, 'dice': 0.8},
      {'is_noisy': True, 'type': 'empty', 'rho_pix': 0.0, 'rho_fg': None, 'dice': 1.0},
      {'is_noisy': False, 'type': 'clean', 'rho_pix': 0.0, 'rho_fg': 0.0, 'dice': 1.0},
  ]
  summary = generate.summarize_noise_log(records)
  assert summary['fraction_noisy'] == pytest.approx(2 / 3)
  assert summary['mean_rho_fg_noisy'] == pytest.approx(0.5)
  assert summary['mean_dice'] == pytest.approx(2.8 / 3)
  assert summary['type_counts'] == {'clean': 1, 'dilate': 1, 'empty': 1}
  assert math.isclose(summary['mean_rho_pix'], 0.1 / 3)


# ---------------------------------------------------------------------------------------------
# Fast paths
# ---------------------------------------------------------------------------------------------


def test_count_true_equals_sum():
  rng = np.random.default_rng(12)
  masks = rng.random((3, 2, 17, 40)) < 0.4
  np.testing.assert_array_equal(abn.count_true(jnp.asarray(masks)), masks.sum(axis=(-2, -1)))


@pytest.mark.parametrize('params', [PARAMS, dict(PARAMS, type_per='class', num_classes=3)])
def test_grouped_corrupt_selected_equals_generator_path(dataset, params):
  masks = dataset.copy()
  if params.get('num_classes') == 3:
    masks[:, :, 24:] *= 2
  _, resolved = generate.resolve('abn', params, masks)
  entry = PROTOCOLS.get('abn')
  expected, expected_logs = generate._corrupt_selected(entry, resolved, 3, masks, np.arange(10),
                                                       4)
  got, logs = abn.corrupt_selected(resolved, 3, masks, np.arange(10), chunk=4)
  np.testing.assert_array_equal(got, expected)
  chex.assert_trees_all_close(logs, expected_logs)
