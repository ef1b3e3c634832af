"""Plain per-image SciPy / NumPy references of the noise protocols, for benchmarks and tests.

Each reference re-implements the source's loops one image at a time (no JAX), so that
`launch.bench_noise` can time the JAX protocol against the straightforward implementation and the
tests can check the two agree. `REFERENCES` maps a protocol name to
`reference(mask, record, params) -> noisy mask`, where `record` is that sample's noise-log record
from `generate.apply_noise`: the random draws (type, angle, direction) are taken from it, so the
reference does the same operation on the same mask. Add a protocol by adding one entry.
"""
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

# reference(mask uint8 [H, W], noise-log record of the sample, resolved params) -> noisy uint8 [H, W]
Reference = Callable[[np.ndarray, Mapping[str, Any], Mapping[str, Any]], np.ndarray]

_ABN_TYPES = ('dilate', 'erode', 'affine')
_ABN_DIRECTIONS = {
    'code7': ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, 1), (0, -1), (1, -1)),
    'all8': ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)),
}


def abn_dilate(label: np.ndarray, beta: float) -> np.ndarray:
  """The SP-guided `dilate_mask` loop; the label unchanged where the reference would crash."""
  label = label.astype(bool)
  full = label.size
  target = label.sum() + int(label.sum() * beta)
  noisy, last = label, None
  while noisy.sum() < target and noisy.sum() != full:
    last = noisy
    noisy = ndimage.binary_dilation(noisy, iterations=1)
  if last is None:
    return label
  if noisy.sum() == full or abs(int(last.sum()) - target) < abs(int(noisy.sum()) - target):
    return last
  return noisy


def abn_erode(label: np.ndarray, beta: float) -> np.ndarray:
  """The SP-guided `erode_mask` loop; the label unchanged where the reference would crash."""
  label = label.astype(bool)
  target = label.sum() - int(label.sum() * beta)
  noisy, last = label, None
  while noisy.sum() > target and noisy.sum() != 0:
    last = noisy
    noisy = ndimage.binary_erosion(noisy, iterations=1)
  if last is None:
    return label
  if noisy.sum() == 0 or abs(int(last.sum()) - target) < abs(int(noisy.sum()) - target):
    return last
  return noisy


def translate(mask: np.ndarray, shift_row: int, shift_col: int) -> np.ndarray:
  """out[r, c] = mask[r - shift_row, c - shift_col], zero fill."""
  height, width = mask.shape
  out = np.zeros_like(mask)
  if abs(shift_row) >= height or abs(shift_col) >= width:
    return out
  src = mask[max(0, -shift_row):height - max(0, shift_row),
             max(0, -shift_col):width - max(0, shift_col)]
  out[max(0, shift_row):max(0, shift_row) + src.shape[0],
      max(0, shift_col):max(0, shift_col) + src.shape[1]] = src
  return out


def abn_affine(label: np.ndarray, angle: float, direction: tuple[int, int], beta: float,
               max_step: int = 100, max_iters: int = 20) -> np.ndarray:
  """Rotation with scipy.ndimage (nearest, about the image centre), then the reference's step
  bisection; returns the last evaluated translation, as the reference does.

  The rotation resamples differently from the JAX protocol's centroid rotation (METHODS §2.3
  default), so only the cost, not the pixels, is comparable for this type.
  """
  label = label.astype(bool)
  rotated = ndimage.rotate(label.astype(np.uint8), angle, order=0, reshape=False) > 0
  size = max(int(label.sum()), 1)
  left, right, count = 0, max_step, 0
  noisy = rotated
  while left < right and count < max_iters:
    count += 1
    middle = (left + right) // 2
    noisy = translate(rotated, middle * direction[0], middle * direction[1])
    noise = np.logical_xor(noisy, label).sum() / size
    if noise > beta:
      right = middle - 1
    elif noise < beta:
      left = middle + 1
    else:
      break
  return noisy


def abn_reference(mask: np.ndarray, record: Mapping[str, Any], params: Mapping[str, Any]
                  ) -> np.ndarray:
  """The 'abn' corruption of a binary mask with the draws logged by the JAX protocol.

  Binary masks only (every label in [1, 254] is foreground; 255 stays 255). The type, angle and
  direction come from the sample's noise-log record; clean and empty samples are unchanged.
  """
  if record['type'] not in _ABN_TYPES:
    return mask.copy()
  valid = mask != 255
  fg = (mask >= 1) & valid
  beta = float(params['beta'])
  if record['type'] == 'dilate':
    noisy = abn_dilate(fg, beta)
  elif record['type'] == 'erode':
    noisy = abn_erode(fg, beta)
  else:
    direction = _ABN_DIRECTIONS[params['directions']][record['params']['direction_id']]
    noisy = abn_affine(fg, record['params']['angle'], direction, beta, params['max_step'],
                       params['max_iters'])
  return np.where(valid, noisy, 255).astype(np.uint8)


REFERENCES: dict[str, Reference] = {
    'abn': abn_reference,
}
