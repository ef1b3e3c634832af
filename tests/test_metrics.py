"""Tests for nsegjax.metrics and nsegjax.plots (METHODS.md §5.1, §5.2).

Surface distances are checked against a brute-force reference defined here independently: the
boundary by an explicit neighbour loop and distances by all-pairs Euclidean distances.
"""
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from nsegjax import metrics
from nsegjax.errors import ConfigError
from nsegjax.plots import overlay_figure

# ---------------------------------------------------------------------------------------------
# Brute-force reference
# ---------------------------------------------------------------------------------------------


def reference_boundary(mask):
  """Voxels of the mask with a face neighbour outside the mask or outside the image."""
  mask = np.asarray(mask, dtype=bool)
  points = []
  for idx in zip(*np.nonzero(mask)):
    for axis in range(mask.ndim):
      for step in (-1, 1):
        nb = list(idx)
        nb[axis] += step
        if not 0 <= nb[axis] < mask.shape[axis] or not mask[tuple(nb)]:
          points.append(idx)
          break
      else:
        continue
      break
  return np.asarray(points, dtype=np.float64).reshape(-1, mask.ndim)


def reference_directed(pred, gt, spacing):
  a = reference_boundary(pred) * spacing
  b = reference_boundary(gt) * spacing
  pairwise = np.sqrt(((a[:, None, :] - b[None, :, :])**2).sum(-1))
  return pairwise.min(axis=1), pairwise.min(axis=0)


def reference_hd95_assd(pred, gt, spacing=None, mode='concat'):
  spacing = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
  d_pg, d_gp = reference_directed(pred, gt, spacing)
  if mode == 'concat':
    hd = np.percentile(np.concatenate([d_pg, d_gp]), 95)
  else:
    hd = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
  return hd, 0.5 * (d_pg.mean() + d_gp.mean())


def random_blob(rng, shape, density=0.45, smooth=1.5):
  """A smooth random binary mask: thresholded Gaussian-filtered noise."""
  field = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
  mask = field > np.quantile(field, 1 - density)
  if not mask.any():
    mask[tuple(s // 2 for s in shape)] = True
  return mask


def square(shape, top, left, side):
  mask = np.zeros(shape, dtype=bool)
  mask[top:top + side, left:left + side] = True
  return mask


# ---------------------------------------------------------------------------------------------
# Dice / IoU
# ---------------------------------------------------------------------------------------------


def test_dice_iou_binary_hand_computed():
  target = np.array([[0, 1, 1],
                     [0, 1, 1],
                     [0, 0, 0]])
  pred = np.array([[1, 1, 1],
                   [0, 1, 0],
                   [0, 0, 0]])
  # Class 1: |P| = 4, |G| = 4, |P∩G| = 3. Class 0: |P| = 5, |G| = 5, |P∩G| = 4.
  dice, iou = metrics.dice_iou_per_class(pred, target, num_classes=2)
  np.testing.assert_allclose(dice, [8 / 10, 6 / 8])
  np.testing.assert_allclose(iou, [4 / 6, 3 / 5])


def test_dice_iou_multiclass_hand_computed():
  target = np.array([[0, 1, 2, 2],
                     [0, 1, 2, 3]])
  pred = np.array([[0, 1, 1, 2],
                   [1, 1, 2, 0]])
  # c0: P={00,13}, G={00,10} -> I=1; c1: P={01,02,10,11}, G={01,11} -> I=2;
  # c2: P={03,12}, G={02,03,12} -> I=2; c3: P={}, G={13} -> I=0.
  dice, iou = metrics.dice_iou_per_class(pred, target, num_classes=4)
  np.testing.assert_allclose(dice, [2 / 4, 4 / 6, 4 / 5, 0.0])
  np.testing.assert_allclose(iou, [1 / 3, 2 / 4, 2 / 3, 0.0])


def test_ignore_pixels_are_excluded_from_pred_and_target():
  target = np.array([[1, 1, 255, 255],
                     [0, 0, 0, 255]])
  pred = np.array([[1, 0, 1, 1],
                   [0, 0, 1, 1]])
  # Valid pixels: 00 01 10 11 12. c1: P={00,12}, G={00,01} -> I=1; c0: P={01,10,11}, G={10,11,12}.
  dice, iou = metrics.dice_iou_per_class(pred, target, num_classes=2)
  np.testing.assert_allclose(dice, [4 / 6, 2 / 4])
  np.testing.assert_allclose(iou, [2 / 4, 1 / 3])


@pytest.mark.parametrize('empty, expected_dice', [
    # classes: 0 present in both, 1 absent from both, 2 false positive only (|G| = 0 < |P|).
    ('standard', [2 * 3 / 7, 1.0, 0.0]),
    ('present_only', [2 * 3 / 7, math.nan, math.nan]),
    ('nan', [2 * 3 / 7, math.nan, 0.0]),
])
def test_empty_policies(empty, expected_dice):
  target = np.array([[0, 0], [0, 0]])
  pred = np.array([[0, 0], [0, 2]])
  dice, iou = metrics.dice_iou_per_class(pred, target, num_classes=3, empty=empty)
  np.testing.assert_allclose(dice, expected_dice)
  expected_iou = [3 / 4] + expected_dice[1:]
  np.testing.assert_allclose(iou, expected_iou)


def test_unknown_policy_and_bad_labels_raise():
  with pytest.raises(ConfigError):
    metrics.dice_iou_per_class(np.zeros((2, 2), int), np.zeros((2, 2), int), 2, empty='bogus')
  with pytest.raises(ValueError):
    metrics.dice_iou_per_class(np.full((2, 2), 3), np.zeros((2, 2), int), 2)
  with pytest.raises(ValueError):
    metrics.dice_iou_per_class(np.zeros((2, 3), int), np.zeros((2, 2), int), 2)


# ---------------------------------------------------------------------------------------------
# Surface distances
# ---------------------------------------------------------------------------------------------


def test_surface_is_mask_minus_cross_erosion():
  mask = square((7, 7), 1, 1, 5)
  expected = mask.copy()
  expected[2:5, 2:5] = False
  np.testing.assert_array_equal(metrics.surface(mask), expected)
  # The image edge counts as background, so a full image is all surface on its border.
  full = metrics.surface(np.ones((4, 4), bool))
  assert full.sum() == 12 and not full[1:3, 1:3].any()


def test_squares_offset_by_two_pixels_hand_computed():
  # 10x10 squares, the prediction shifted right by k = 2. Each directed multiset is
  # 16 zeros (shared top/bottom runs), 4 ones and 16 twos: mean 1, pooled 95th percentile 2.
  gt = square((30, 30), 10, 10, 10)
  pred = square((30, 30), 10, 12, 10)
  d_pg, d_gp = metrics.directed_surface_distances(pred, gt)
  for d in (d_pg, d_gp):
    assert sorted(d.tolist()) == [0.0] * 16 + [1.0] * 4 + [2.0] * 16
  assert metrics.hd95(pred, gt) == pytest.approx(2.0)
  assert metrics.assd(pred, gt) == pytest.approx(1.0)


def test_single_pixels_with_spacing_hand_computed():
  gt = np.zeros((5, 9), bool)
  pred = np.zeros((5, 9), bool)
  gt[2, 1] = True
  pred[2, 5] = True  # 4 columns apart
  assert metrics.hd95(pred, gt) == pytest.approx(4.0)
  assert metrics.hd95(pred, gt, spacing=(2.0, 0.5)) == pytest.approx(2.0)
  assert metrics.assd(pred, gt, spacing=(2.0, 0.5)) == pytest.approx(2.0)


def test_identical_masks_have_zero_distance():
  mask = square((12, 12), 2, 3, 6)
  result = metrics.surface_distances(mask, mask)
  assert result == (0.0, 0.0, metrics.SURFACE_OK)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('mode', metrics.HD95_MODES)
def test_hd95_assd_match_brute_force_on_random_blobs(seed, mode):
  rng = np.random.default_rng(seed)
  shape = (24, 28)
  pred = random_blob(rng, shape, density=rng.uniform(0.2, 0.5))
  gt = random_blob(rng, shape, density=rng.uniform(0.2, 0.5))
  spacing = None if seed % 2 == 0 else (0.7, 1.3)
  result = metrics.surface_distances(pred, gt, spacing=spacing, hd95_mode=mode)
  hd, sd = reference_hd95_assd(pred, gt, spacing, mode)
  assert result.status == metrics.SURFACE_OK
  assert result.hd95 == pytest.approx(hd, rel=1e-9, abs=1e-9)
  assert result.assd == pytest.approx(sd, rel=1e-9, abs=1e-9)


def test_hd95_assd_match_brute_force_in_3d_with_spacing():
  rng = np.random.default_rng(7)
  shape = (8, 12, 10)
  pred = random_blob(rng, shape, density=0.3, smooth=1.2)
  gt = random_blob(rng, shape, density=0.35, smooth=1.2)
  spacing = (2.5, 0.8, 0.8)
  hd, sd = reference_hd95_assd(pred, gt, spacing)
  assert metrics.hd95(pred, gt, spacing) == pytest.approx(hd, rel=1e-9)
  assert metrics.assd(pred, gt, spacing) == pytest.approx(sd, rel=1e-9)


def test_small_structures_far_apart_match_brute_force():
  # Exercises the bounding-box crop: two small blobs in opposite corners of a large image.
  pred = np.zeros((64, 64), bool)
  gt = np.zeros((64, 64), bool)
  pred[2:6, 3:5] = True
  gt[50:60, 55:63] = True
  hd, sd = reference_hd95_assd(pred, gt, (1.0, 2.0))
  assert metrics.hd95(pred, gt, (1.0, 2.0)) == pytest.approx(hd)
  assert metrics.assd(pred, gt, (1.0, 2.0)) == pytest.approx(sd)


def test_empty_surface_policies():
  empty = np.zeros((6, 8), bool)
  blob = square((6, 8), 1, 1, 3)
  both = metrics.surface_distances(empty, empty, empty_surface='diagonal')
  assert math.isnan(both.hd95) and math.isnan(both.assd) and both.status == metrics.SURFACE_SKIP
  one = metrics.surface_distances(blob, empty)
  assert math.isnan(one.hd95) and math.isnan(one.assd)
  assert one.status == metrics.SURFACE_ONE_EMPTY
  diag = metrics.surface_distances(empty, blob, spacing=(2.0, 1.0), empty_surface='diagonal')
  assert diag.hd95 == pytest.approx(math.hypot(12.0, 8.0))
  assert diag.assd == pytest.approx(math.hypot(12.0, 8.0))
  assert diag.status == metrics.SURFACE_ONE_EMPTY
  with pytest.raises(ConfigError):
    metrics.hd95(blob, blob, mode='max')


# ---------------------------------------------------------------------------------------------
# Accumulator
# ---------------------------------------------------------------------------------------------


def _toy_batch():
  """Two 3-class images; image 1 lacks class 2 in the target but predicts it once."""
  target = np.zeros((2, 10, 10), np.int64)
  pred = np.zeros((2, 10, 10), np.int64)
  target[0, 2:6, 2:6] = 1
  pred[0, 2:6, 3:7] = 1
  target[0, 7:9, 7:9] = 2
  pred[0, 7:9, 7:9] = 2
  target[1, 1:5, 1:5] = 1
  pred[1, 1:5, 1:5] = 1
  pred[1, 8, 8] = 2
  target[1, 0, :] = 255
  return pred, target


def test_accumulator_per_image_matches_direct_computation():
  pred, target = _toy_batch()
  acc = metrics.SegmentationMetrics(3)
  acc.update(pred[:1], target[:1])
  acc.update(pred[1:], target[1:])
  summary = acc.summary()
  json.dumps(summary, allow_nan=False)

  d0, i0 = metrics.dice_iou_per_class(pred[0], target[0], 3)
  d1, i1 = metrics.dice_iou_per_class(pred[1], target[1], 3)
  per_class_dice = (d0[1:] + d1[1:]) / 2
  assert summary['classes'] == [1, 2]
  assert summary['num_images'] == 2
  np.testing.assert_allclose(summary['per_class']['dice'], per_class_dice)
  np.testing.assert_allclose(summary['per_class']['iou'], (i0[1:] + i1[1:]) / 2)
  assert summary['dice'] == pytest.approx(per_class_dice.mean())
  np.testing.assert_allclose(summary['per_image']['dice'], [d0[1:].mean(), d1[1:].mean()])
  # Class 2 of image 1 is a false positive with an empty reference: one NaN surface value.
  assert summary['surface_nan_count'] == 1
  hd_c1 = [metrics.hd95(pred[n] == 1, target[n] == 1) for n in range(2)]
  hd_c2 = metrics.hd95(pred[0] == 2, target[0] == 2)
  np.testing.assert_allclose(summary['per_class']['hd95'], [np.mean(hd_c1), hd_c2])
  assert summary['hd95'] == pytest.approx((np.mean(hd_c1) + hd_c2) / 2)
  assert summary['per_image']['hd95'][1] == pytest.approx(hd_c1[1])


def test_present_only_skips_absent_classes_and_nan_becomes_none():
  pred, target = _toy_batch()
  summary = metrics.summarize(pred, target, 3, empty='present_only', surface=False)
  json.dumps(summary, allow_nan=False)
  d0, _ = metrics.dice_iou_per_class(pred[0], target[0], 3)
  d1, _ = metrics.dice_iou_per_class(pred[1], target[1], 3)
  # Class 2 is only averaged over image 0, and image 1's mean covers class 1 only.
  np.testing.assert_allclose(summary['per_class']['dice'], [(d0[1] + d1[1]) / 2, d0[2]])
  np.testing.assert_allclose(summary['per_image']['dice'], [d0[1:].mean(), d1[1]])
  assert summary['hd95'] is None and summary['per_class']['assd'] == [None, None]


def test_global_aggregation_sums_counts():
  pred, target = _toy_batch()
  summary = metrics.summarize(pred, target, 3, agg='global', include_bg=True, surface=False)
  total = metrics.sum_counts(metrics.overlap_counts(p, t, 3) for p, t in zip(pred, target))
  inter, psize, gsize = (x.astype(float) for x in total)
  np.testing.assert_allclose(summary['per_class']['dice'], 2 * inter / (psize + gsize))
  np.testing.assert_allclose(summary['per_class']['iou'], inter / (psize + gsize - inter))
  assert summary['classes'] == [0, 1, 2]
  assert len(summary['per_image']['dice']) == 2


def test_diagonal_policy_fills_and_empty_accumulator_is_json_safe():
  pred, target = _toy_batch()
  summary = metrics.summarize(pred, target, 3, empty_surface='diagonal', spacing=(0.5, 0.5))
  assert summary['surface_nan_count'] == 0
  assert summary['surface_one_empty_count'] == 1
  assert summary['per_image']['assd'][1] == pytest.approx(
      (metrics.assd(pred[1] == 1, target[1] == 1, (0.5, 0.5)) + math.hypot(5, 5)) / 2)
  empty_summary = metrics.SegmentationMetrics(3).summary()
  assert empty_summary['num_images'] == 0 and empty_summary['dice'] is None
  json.dumps(empty_summary, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('channels', [1, 3])
def test_overlay_figure_writes_png(tmp_path, channels):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 16, 20, channels), dtype=np.uint8)
  clean = np.zeros((8, 16, 20), np.int64)
  clean[:, 4:12, 5:15] = 1
  noisy = np.roll(clean, 2, axis=2)
  noisy[:, 0, :] = 255
  pred = clean.copy()
  pred[:, 2:4, 2:4] = 2
  path = tmp_path / 'sub' / 'overlay.png'
  assert overlay_figure(images, clean, noisy, pred, str(path), max_rows=3) == str(path)
  data = path.read_bytes()
  assert len(data) > 1000 and data[:8] == b'\x89PNG\r\n\x1a\n'


# ---------------------------------------------------------------------------------------------
# Noise identification (§5.3)
# ---------------------------------------------------------------------------------------------


def test_sample_identification_scores_by_hand():
  is_noisy = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
  flagged = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
  score = np.array([0.9, 0.8, 0.3, 0.7, 0.3, 0.1, 0.2, 0.0])
  got = metrics.sample_identification_scores(flagged, is_noisy, score)
  assert got['accuracy'] == pytest.approx(6 / 8)
  assert got['precision'] == pytest.approx(2 / 3) and got['recall'] == pytest.approx(2 / 3)
  assert got['f1'] == pytest.approx(2 / 3)
  # Pairs (noisy, clean) = 15: noisy 0.9 and 0.8 beat all 5 clean; 0.3 beats 3 and ties 1.
  assert got['auroc'] == pytest.approx((5 + 5 + 3 + 0.5) / 15)
  all_noisy = metrics.sample_identification_scores(flagged, np.ones(8, bool), score)
  assert all(np.isnan(all_noisy[k]) for k in ('accuracy', 'precision', 'recall', 'auroc'))


def test_pixel_identification_scores_by_hand():
  clean = np.array([[[0, 1, 1, 255]], [[0, 0, 1, 1]]], np.uint8)
  noisy = np.array([[[1, 1, 0, 255]], [[0, 0, 1, 1]]], np.uint8)
  detected = np.array([[[1, 1, 0, 1]], [[0, 1, 0, 0]]], bool)
  # Errors: image 0 pixels 0 and 2; detections on valid pixels: (0, 0), (0, 1), (1, 1).
  got = metrics.pixel_identification_scores(detected, clean, noisy)
  assert got['precision'] == pytest.approx(1 / 3) and got['recall'] == pytest.approx(1 / 2)
  assert got['precision_per_image'] == pytest.approx((1 / 2 + 0) / 2)
  assert got['recall_per_image'] == pytest.approx(1 / 2)  # image 1 has no error: left out


def test_revised_label_quality_by_hand():
  clean = np.array([[[1, 1, 1, 1, 0, 0, 0, 0]]], np.uint8)
  noisy = np.array([[[1, 1, 0, 0, 0, 0, 0, 0]]], np.uint8)  # Dice 2·2/(2 + 4) = 2/3
  revised = np.array([[[1, 1, 1, 0, 0, 0, 0, 0]]], np.uint8)  # Dice 2·3/(3 + 4) = 6/7
  got = metrics.revised_label_quality(revised, noisy, clean, 2)
  assert got['dice_before'] == pytest.approx([2 / 3])
  assert got['dice_after'] == pytest.approx([6 / 7])
  assert got['error_reduction'] == pytest.approx([1 - (1 / 7) / (1 / 3)])
  scribble = np.array([[[1, 255, 255, 255, 0, 255, 255, 255]]], np.uint8)
  assert metrics.revised_label_quality(scribble, scribble, clean, 2)['dice_before'] == \
      pytest.approx([2 * 1 / (1 + 4)])
