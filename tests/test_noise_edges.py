"""Tests for nsegjax.noise.edges (Canny edges of binary masks, METHODS §2.4 edge detector).

Neither OpenCV nor scikit-image is a dependency, so both presets are checked against plain
NumPy re-implementations written pixel by pixel from the libraries' published rules, with the
hysteresis done the libraries' way (connected components, `scipy.ndimage.label`) rather than by
bounded propagation. (The 'opencv' preset was also compared with OpenCV 5.0's cv2.Canny by hand:
identical on random and Kvasir masks.)
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from launch import scipy_noise_reference
from nsegjax.noise import edges

# ---------------------------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------------------------


def sobel_reference(image):
  """scipy.ndimage.sobel along rows and columns (mode 'reflect' = replicate for 3×3)."""
  image = np.asarray(image)
  return ndimage.sobel(image, axis=0, mode='nearest'), ndimage.sobel(image, axis=1, mode='nearest')


def hysteresis_reference(strong, weak):
  labels, count = ndimage.label(weak, structure=np.ones((3, 3)))
  good = np.zeros(count + 1, bool)
  good[np.unique(labels[strong])] = True
  good[0] = False
  return good[labels]


def opencv_canny_reference(mask, low=64, high=200):
  """cv2.Canny(255·mask, low, high) with L1 magnitudes, per pixel as in OpenCV's loop."""
  image = np.where(mask, 255, 0).astype(np.int64)
  d_row, d_col = sobel_reference(image)
  magnitude = np.abs(d_row) + np.abs(d_col)
  height, width = mask.shape
  padded = np.pad(magnitude, 1)
  tan22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
  local_max = np.zeros(mask.shape, bool)
  for r in range(height):
    for c in range(width):
      m = magnitude[r, c]
      mag = lambda dr, dc: padded[r + 1 + dr, c + 1 + dc]  # pylint: disable=cell-var-from-loop
      xs, ys = int(d_col[r, c]), int(d_row[r, c])
      x, y = abs(xs), abs(ys) << 15
      tg22x = x * tan22
      if y < tg22x:
        keep = m > mag(0, -1) and m >= mag(0, 1)
      elif y > tg22x + (x << 16):
        keep = m > mag(-1, 0) and m >= mag(1, 0)
      else:
        s = -1 if (xs ^ ys) < 0 else 1
        keep = m > mag(-1, -s) and m > mag(1, s)
      local_max[r, c] = keep
  weak = local_max & (magnitude > math.floor(low))
  strong = local_max & (magnitude > math.floor(high))
  return hysteresis_reference(strong, weak)


def skimage_canny_reference(mask, sigma=1.0, low=0.1, high=0.2):
  """skimage.feature.canny(mask, sigma) rules: bleed-over Gaussian, Sobel, interpolated
  non-maximum suppression off the image border, ≥ thresholds, connected hysteresis.

  Returns (edges, ties): `ties` marks the pixels whose suppression test is an exact tie in real
  arithmetic (common on binary masks), which float32 and float64 may decide differently.
  """
  image = mask.astype(np.float64)
  if sigma > 0:
    truncate = int(4 * sigma + 0.5) / sigma
    blur = lambda x: ndimage.gaussian_filter(x, sigma, mode='constant', cval=0.0,
                                             truncate=truncate)
    image = blur(image) / (blur(np.ones_like(image)) + np.finfo(np.float32).eps)
  d_row, d_col = sobel_reference(image)
  magnitude = np.hypot(d_row, d_col)
  height, width = mask.shape
  local_max = np.zeros(mask.shape, bool)
  ties = np.zeros(mask.shape, bool)
  for r in range(1, height - 1):
    for c in range(1, width - 1):
      gi, gj, m = d_row[r, c], d_col[r, c], magnitude[r, c]
      same = (gi >= 0 and gj >= 0) or (gi <= 0 and gj <= 0)
      if abs(gi) >= abs(gj):
        w = abs(gj) / abs(gi) if gi else 0.0
        axis = (1, 0)
      else:
        w = abs(gi) / abs(gj)
        axis = (0, 1) if same else (0, -1)
      diag = (1, 1) if same else (1, -1)
      mag = lambda dr, dc: magnitude[r + dr, c + dc]  # pylint: disable=cell-var-from-loop
      forward = mag(*diag) * w + mag(*axis) * (1 - w)
      backward = mag(-diag[0], -diag[1]) * w + mag(-axis[0], -axis[1]) * (1 - w)
      local_max[r, c] = forward <= m and backward <= m
      ties[r, c] = min(abs(forward - m), abs(backward - m)) <= 1e-5 * max(m, 1.0)
  return (hysteresis_reference(local_max & (magnitude >= high), local_max & (magnitude >= low)),
          ties)


def random_masks(seed, count=6):
  rng = np.random.default_rng(seed)
  masks = []
  for i in range(count):
    shape = (int(rng.integers(12, 36)), int(rng.integers(12, 36)))
    mask = rng.random(shape) < rng.uniform(0.3, 0.7)
    if i % 2:
      mask = ndimage.binary_opening(mask)
    masks.append(mask)
  rows, cols = np.mgrid[:40, :48]
  masks.append(((rows - 19.3) / 13) ** 2 + ((cols - 25.1) / 17) ** 2 <= 1)  # an ellipse
  masks.append(np.pad(np.ones((10, 12), bool), ((0, 8), (5, 0))))  # touches the border
  return masks


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_sobel_equals_scipy():
  image = np.random.default_rng(0).random((13, 17)).astype(np.float32)
  d_row, d_col = jax.jit(edges.sobel)(jnp.asarray(image))
  expected_row, expected_col = sobel_reference(image)
  np.testing.assert_allclose(d_row, expected_row, atol=1e-5)
  np.testing.assert_allclose(d_col, expected_col, atol=1e-5)


@pytest.mark.parametrize('low,high', [(64, 200), (300, 900)])
def test_opencv_preset_equals_reference(low, high):
  # (300, 900): magnitudes 510 / 765 are weak and 1020 strong, so hysteresis matters.
  fn = jax.jit(lambda m: edges.canny_edges(m, low_threshold=low, high_threshold=high))
  for mask in random_masks(1):
    np.testing.assert_array_equal(fn(jnp.asarray(mask)), opencv_canny_reference(mask, low, high))


def test_vectorised_benchmark_reference_equals_per_pixel_reference():
  # launch.scipy_noise_reference.canny (the radius benchmark's SciPy side) against the loop.
  for mask in random_masks(3):
    np.testing.assert_array_equal(scipy_noise_reference.canny(mask),
                                  opencv_canny_reference(mask))


@pytest.mark.parametrize('sigma', [1.0, 0.0])
def test_skimage_preset_equals_reference(sigma):
  fn = jax.jit(lambda m: edges.canny_edges(m, preset='skimage', sigma=sigma))
  for mask in random_masks(2, count=4):
    got = np.asarray(fn(jnp.asarray(mask)))
    expected, ties = skimage_canny_reference(mask, sigma)
    # float32 here, float64 there: exact ties may go either way, nothing else may differ.
    np.testing.assert_array_equal(got[~ties], expected[~ties])


def test_opencv_edges_of_a_rectangle_are_a_thin_closed_curve():
  mask = np.zeros((20, 24), bool)
  mask[5:15, 6:18] = True
  edge = np.asarray(edges.canny_edges(jnp.asarray(mask)))
  # Along the sides, the pixel above / left of each boundary crossing: outside on the top and
  # left sides, inside on the bottom and right ones; corners are cut diagonally.
  assert edge[4, 8:16].all() and edge[14, 8:16].all()
  assert edge[7:13, 5].all() and edge[7:13, 17].all()
  assert edge.sum() == 8 + 8 + 6 + 6 + 4 * 3
  band = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
  assert not (edge & ~band).any()
  _, count = ndimage.label(edge, structure=np.ones((3, 3)))
  assert count == 1
  # The image border is not an edge (replicated border).
  full = np.ones((10, 10), bool)
  assert not np.asarray(edges.canny_edges(jnp.asarray(full))).any()


def test_bounded_hysteresis_drops_only_far_weak_pixels():
  strong = np.zeros((1, 12), bool)
  strong[0, 0] = True
  weak = np.ones((1, 12), bool)
  full = edges.hysteresis(jnp.asarray(strong), jnp.asarray(weak), 100)
  short = edges.hysteresis(jnp.asarray(strong), jnp.asarray(weak), 5)
  assert np.asarray(full).all()
  np.testing.assert_array_equal(short[0], np.arange(12) <= 5)


def test_vmapped_equals_looped_and_empty_mask():
  masks = np.zeros((3, 24, 24), bool)
  masks[0, 4:12, 5:20] = True
  masks[1, 10:22, 2:9] = True
  batched = jax.jit(jax.vmap(edges.canny_edges))(jnp.asarray(masks))
  for mask, out in zip(masks, batched):
    np.testing.assert_array_equal(out, edges.canny_edges(jnp.asarray(mask)))
  assert not np.asarray(batched[2]).any()


def test_bad_arguments():
  with pytest.raises(ValueError, match='preset'):
    edges.canny_edges(jnp.zeros((4, 4), bool), preset='matlab')
  with pytest.raises(ValueError, match='sigma'):
    edges.canny_edges(jnp.zeros((4, 4), bool), sigma=1.0)
