"""Plain per-image SciPy / NumPy references of the noise protocols, for benchmarks and tests.

Each reference re-implements the source's operation one image at a time (no JAX), so that
`launch.bench_noise` can time the JAX protocol against the straightforward implementation and the
tests can check the two agree. `REFERENCES` maps a protocol name to
`reference(mask, record, params, **draws) -> noisy mask`, where `record` is that sample's
noise-log record from `generate.apply_noise`: the random draws (type, radius, angle, direction,
mode, k, ...) are taken from it, so the reference does the same operation on the same mask.

Draws that do not fit in a record (the per-pixel fields of radius edge noise) come from
`DRAWS[name](masks, records, params, seed)`, one dict of keyword arguments per mask; it
recomputes them with the protocol's own JAX random streams, outside any timed loop (the
SciPy loop is then timed without drawing random numbers, which only favours it).

References and what "the same" means:
- 'abn': the SP-guided dilate / erode loops (`binary_dilation` / `binary_erosion`, 3×3 cross,
  until the β target) equal the JAX output exactly; the affine type rotates with
  `ndimage.rotate` about the image centre and only its cost is comparable.
- 'radius': `binary_dilation` / `binary_erosion` with the disk of the logged radius, and edge
  noise as a loop over the chosen edge pixels (Canny, vectorised NumPy, or the inner boundary)
  painting the drawn disks (the deepest disk wins, as `morphology.paint_disks`): exact.
- 'adele': nearest resize by indexing, `binary_erosion` / `binary_dilation` with the 3×3 square,
  the cubic resize back as float64 products of the same interpolation matrices: exact except
  where the resized value is within `ADELE_TOLERANCE` of the threshold (the JAX side sums in
  float32).
- 'mstfal': the dilate / erode types only (`binary_dilation` / `binary_erosion` with
  `geometry.disk_footprint` of the logged radius): exact. Samples of its polygon and affine
  types are returned unchanged; the benchmark draws only the two morphology types.

Add a protocol by adding one entry to `REFERENCES` (and to `DRAWS` if it needs fields).
"""
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

# reference(mask uint8 [H, W], noise-log record of the sample, resolved params, **draws)
#   -> noisy uint8 [H, W]
Reference = Callable[..., np.ndarray]
# draws(masks [N, H, W], records, resolved params, seed) -> one kwargs dict per mask
Draws = Callable[[np.ndarray, Sequence[Mapping[str, Any]], Mapping[str, Any], int],
                 list[dict[str, Any]]]

IGNORE = 255
CROSS = ndimage.generate_binary_structure(2, 1)
SQUARE = np.ones((3, 3), bool)

_ABN_TYPES = ('dilate', 'erode', 'affine')
_ABN_DIRECTIONS = {
    'code7': ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, 1), (0, -1), (1, -1)),
    'all8': ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)),
}


def _binary_foreground(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(foreground, valid) of a binary label map: every label in [1, 254] is foreground."""
  valid = mask != IGNORE
  return (mask >= 1) & valid, valid


def disk(radius: float) -> np.ndarray:
  """The footprint {(dy, dx): dy² + dx² ≤ r²}, as `geometry.disk_footprint`."""
  reach = int(np.floor(radius))
  offsets = np.arange(-reach, reach + 1)
  return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2


# ------------------------------------------------------------------------------------------------
# abn (METHODS §2.3)
# ------------------------------------------------------------------------------------------------


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
  fg, valid = _binary_foreground(mask)
  beta = float(params['beta'])
  if record['type'] == 'dilate':
    noisy = abn_dilate(fg, beta)
  elif record['type'] == 'erode':
    noisy = abn_erode(fg, beta)
  else:
    direction = _ABN_DIRECTIONS[params['directions']][record['params']['direction_id']]
    noisy = abn_affine(fg, record['params']['angle'], direction, beta, params['max_step'],
                       params['max_iters'])
  return np.where(valid, noisy, IGNORE).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# radius + edge noise (METHODS §2.4)
# ------------------------------------------------------------------------------------------------


def boundary(fg: np.ndarray) -> np.ndarray:
  """Inner boundary: foreground pixels with a background 4-neighbour; the image border is not
  an edge (the erosion treats the outside as foreground), as `morphology.boundary`."""
  return fg & ~ndimage.binary_erosion(fg, CROSS, border_value=1)


def canny(fg: np.ndarray, low: int = 64, high: int = 200) -> np.ndarray:
  """`cv2.Canny(255·fg, low, high)` (L1 magnitude, 3×3 Sobel with a replicated border), as
  OpenCV's per-pixel rules vectorised over the image: quantised non-maximum suppression, then
  the weak pixels 8-connected to a strong one (`ndimage.label`)."""
  image = np.where(fg, 255, 0).astype(np.int64)
  d_row = ndimage.sobel(image, axis=0, mode='nearest')
  d_col = ndimage.sobel(image, axis=1, mode='nearest')
  magnitude = np.abs(d_row) + np.abs(d_col)
  height, width = fg.shape
  padded = np.pad(magnitude, 1)
  at = lambda dr, dc: padded[1 + dr:1 + dr + height, 1 + dc:1 + dc + width]
  x, y = np.abs(d_col), np.abs(d_row) << 15
  tan22 = x * int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
  horizontal = (magnitude > at(0, -1)) & (magnitude >= at(0, 1))
  vertical = (magnitude > at(-1, 0)) & (magnitude >= at(1, 0))
  diagonal = np.where((d_col ^ d_row) >= 0, (magnitude > at(-1, -1)) & (magnitude > at(1, 1)),
                      (magnitude > at(-1, 1)) & (magnitude > at(1, -1)))
  local_max = np.where(y < tan22, horizontal, np.where(y > tan22 + (x << 16), vertical, diagonal))
  weak, strong = local_max & (magnitude > low), local_max & (magnitude > high)
  labels, count = ndimage.label(weak, structure=SQUARE)
  connected = np.zeros(count + 1, bool)
  connected[labels[strong]] = True
  connected[0] = False
  return connected[labels]


def paint_disks(fg: np.ndarray, centres: np.ndarray, radii: np.ndarray, colours: np.ndarray
                ) -> np.ndarray:
  """Paints a filled disk of radii[c] and colours[c] on every centre c, one at a time.

  Where disks overlap the pixel takes the colour of the disk containing it most deeply
  (smallest |x - c|² - r²), background on an exact tie: each disk writes 2·power + colour into
  a running minimum over its bounding box.
  """
  height, width = fg.shape
  best = np.full(fg.shape, np.iinfo(np.int32).max, np.int64)
  for row, col in zip(*np.nonzero(centres)):
    radius = int(radii[row, col])
    top, bottom = max(row - radius, 0), min(row + radius + 1, height)
    left, right = max(col - radius, 0), min(col + radius + 1, width)
    d_row = np.arange(top, bottom)[:, None] - row
    d_col = np.arange(left, right)[None, :] - col
    power = d_row ** 2 + d_col ** 2 - radius ** 2
    window = best[top:bottom, left:right]
    np.minimum(window, 2 * power + int(colours[row, col]), out=window)
  covered = best <= 1
  return np.where(covered, (best & 1).astype(bool), fg)


def radius_reference(mask: np.ndarray, record: Mapping[str, Any], params: Mapping[str, Any],
                     centre: np.ndarray | None = None, disk_radius: np.ndarray | None = None,
                     colour: np.ndarray | None = None) -> np.ndarray:
  """The 'radius' corruption of a binary mask: disk dilation / erosion by the logged radius, or
  edge noise with the protocol's per-pixel draws (`radius_draws`; needed for edge samples).

  Edge pixels are the Canny edges (`canny`) or the inner boundary, as `edge_detector` says.
  """
  kind = record['type']
  if kind not in ('dilate', 'erode', 'edge'):
    return mask.copy()
  fg, valid = _binary_foreground(mask)
  if kind == 'dilate':
    noisy = ndimage.binary_dilation(fg, disk(record['params']['radius']))
  elif kind == 'erode':
    noisy = ndimage.binary_erosion(fg, disk(record['params']['radius']))
  else:
    if centre is None:
      raise ValueError('radius reference: edge samples need the drawn fields (radius_draws)')
    edges = canny(fg) if params['edge_detector'] == 'canny' else boundary(fg)
    noisy = paint_disks(fg, edges & centre, disk_radius, colour)
  return np.where(valid, noisy, IGNORE).astype(np.uint8)


def radius_draws(masks: np.ndarray, records: Sequence[Mapping[str, Any]],
                 params: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
  """The edge-noise fields (centre, disk_radius, colour) of each binary edge sample, from the
  protocol's own random stream; {} for the other samples."""
  import jax  # pylint: disable=g-import-not-at-top  (only to replay the protocol's stream)
  from nsegjax.noise import generate, radius  # pylint: disable=g-import-not-at-top

  shape = masks.shape[1:]
  r_low, r_high = radius.scaled_radii(params['r_min'], params['r_max'], shape,
                                      params['scale_radii'], params['reference_size'])

  def fields(key):
    class_key = radius._class_keys(key, params['structure'], params['r_min'],  # pylint: disable=protected-access
                                   params['r_max'])[0]
    draws = radius._draw(class_key, shape, r_low[0], r_high[0], params['type_probs'],  # pylint: disable=protected-access
                         params['edge_fraction'])
    return draws['centre'], draws['disk_radius'], draws['colour']

  edge = [i for i, record in enumerate(records) if record['type'] == 'edge']
  out: list[dict[str, Any]] = [{} for _ in records]
  if not edge:
    return out
  with jax.default_device(jax.devices('cpu')[0]):
    keys = jax.vmap(lambda i: generate.sample_key(seed, radius.NAME, i))(
        np.asarray([records[i]['sample_id'] for i in edge], np.uint32))
    centre, disk_radius, colour = jax.device_get(jax.jit(jax.vmap(fields))(keys))
  for j, i in enumerate(edge):
    out[i] = {'centre': centre[j], 'disk_radius': disk_radius[j], 'colour': colour[j]}
  return out


# ------------------------------------------------------------------------------------------------
# ADELE under / over segmentation (METHODS §2.5)
# ------------------------------------------------------------------------------------------------

# The JAX protocol resizes back in float32 (two matmuls), this reference in float64: outputs may
# differ only where the resized value is this close to the threshold.
ADELE_TOLERANCE = 1e-4


def _keys_cubic(x: np.ndarray) -> np.ndarray:
  out = ((1.5 * x - 2.5) * x) * x + 1.0
  out = np.where(x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, out)
  return np.where(x >= 2.0, 0.0, out)


def resize_weights(out_size: int, in_size: int, scale: float, translation: float,
                   method: str) -> np.ndarray:
  """The interpolation matrix of `morphology.resize_weights` (half-pixel centres, renormalised
  over the inputs inside the image, outputs centred outside it are 0), in float32."""
  f32 = np.float32
  centres = (np.arange(out_size, dtype=f32) + f32(0.5) - f32(translation)) / f32(scale)
  inputs = np.arange(in_size, dtype=f32)
  if method == 'nearest':
    return (np.floor(centres)[:, None] == inputs[None, :]).astype(f32)
  weights = _keys_cubic(np.abs(centres[:, None] - f32(0.5) - inputs[None, :])).astype(f32)
  total = weights.sum(axis=1, keepdims=True)
  usable = np.abs(total) > 1000.0 * np.finfo(f32).eps
  inside = ((centres >= 0.0) & (centres <= in_size))[:, None]
  return np.where(usable & inside, weights / np.where(usable, total, f32(1)), f32(0))


def _nearest_source(out_size: int, scale: np.float32, translation: np.float32) -> np.ndarray:
  """Source pixel of each output pixel under nearest resizing (the one-hot rows of
  `resize_weights(..., 'nearest')`)."""
  f32 = np.float32
  return np.floor((np.arange(out_size, dtype=f32) + f32(0.5) - f32(translation)) / scale)


def _nearest(out_size: int, in_size: int, scale: np.float32, translation: np.float32
             ) -> np.ndarray:
  return np.clip(_nearest_source(out_size, scale, translation), 0, in_size - 1).astype(int)


def _nearest_inside(out_size: int, in_size: int, scale: np.float32, translation: np.float32
                    ) -> np.ndarray:
  source = _nearest_source(out_size, scale, translation)
  return (source >= 0) & (source < in_size)


def _bounds(any_along: np.ndarray) -> tuple[int, int]:
  index = np.flatnonzero(any_along)
  return int(index[0]), int(index[-1]) + 1


def adele_values(fg: np.ndarray, over: bool, iterations: int, scale: float,
                 params: Mapping[str, Any]) -> np.ndarray:
  """float64 values of one class after resize → k erosions / dilations → cubic resize back,
  on the protocol's canvas (see `adele.corrupt_binary`); threshold them at params['thresh']."""
  f32 = np.float32
  canvas = int(params['canvas'])
  scale = f32(scale)
  (row_lo, row_hi), (col_lo, col_hi) = _bounds(fg.any(axis=1)), _bounds(fg.any(axis=0))
  low = np.array([row_lo, col_lo], f32) * scale
  high = np.array([row_hi, col_hi], f32) * scale
  shift = np.round(f32(canvas / 2) - (low + high) / f32(2))
  small = fg[np.ix_(*(_nearest(canvas, size, scale, offset)
                      for size, offset in zip(fg.shape, shift)))]
  small &= np.outer(*(_nearest_inside(canvas, size, scale, offset)
                      for size, offset in zip(fg.shape, shift)))
  if iterations == 0:
    morphed = small
  elif over:
    morphed = ndimage.binary_dilation(small, SQUARE, iterations=iterations)
  else:
    morphed = ndimage.binary_erosion(small, SQUARE, iterations=iterations)
  back_rows = resize_weights(fg.shape[0], canvas, f32(1) / scale, -shift[0] / scale, 'cubic')
  back_cols = resize_weights(fg.shape[1], canvas, f32(1) / scale, -shift[1] / scale, 'cubic')
  return back_rows.astype(np.float64) @ morphed @ back_cols.T.astype(np.float64)


def _adele_classes(record: Mapping[str, Any], num_fg: int) -> list[Mapping[str, Any]]:
  if num_fg == 1:
    return [{'type': record['type'], 'params': record['params']}]
  return record['classes']


def adele_reference(mask: np.ndarray, record: Mapping[str, Any], params: Mapping[str, Any]
                    ) -> np.ndarray:
  """The 'adele' corruption with the mode, k and scale logged per class (binary or several
  classes); empty and clipped classes are unchanged."""
  num_fg = params['num_classes'] - 1
  valid = mask != IGNORE
  removed = np.zeros(mask.shape, bool)
  added = []
  for c, entry in enumerate(_adele_classes(record, num_fg), start=1):
    if entry['type'] not in ('under', 'over'):
      continue
    clean = ((mask >= 1) & valid) if num_fg == 1 else mask == c
    over = entry['type'] == 'over'
    values = adele_values(clean, over, entry['params']['iterations'], entry['params']['scale'],
                          params)
    back = values > params['thresh']
    if over:
      added.append((c, back & (mask == 0)))
    else:
      removed |= clean & ~back
  noisy = np.where(removed, 0, mask)
  order = added if params['paint_order'] == 'ascending' else added[::-1]
  for c, pixels in order:  # later classes overwrite earlier ones
    noisy = np.where(pixels, c, noisy)
  return noisy.astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# MS-TFAL disk dilation / erosion (METHODS §2.7)
# ------------------------------------------------------------------------------------------------


def mstfal_reference(mask: np.ndarray, record: Mapping[str, Any], params: Mapping[str, Any]
                     ) -> np.ndarray:
  """The 'mstfal' dilate / erode types: every class mask dilated / eroded by the disk of the
  logged radius, painted in ascending class order; other types and empty samples unchanged."""
  if record['type'] not in ('dilate', 'erode'):
    return mask.copy()
  num_fg = params['num_classes'] - 1
  valid = mask != IGNORE
  footprint = disk(float(record['params']['radius']))
  op = ndimage.binary_dilation if record['type'] == 'dilate' else ndimage.binary_erosion
  noisy = np.zeros(mask.shape, np.uint8)
  for c in range(1, num_fg + 1):
    clean = ((mask >= 1) & valid) if num_fg == 1 else mask == c
    noisy[op(clean, footprint)] = c
  return np.where(valid, noisy, IGNORE).astype(np.uint8)


REFERENCES: dict[str, Reference] = {
    'abn': abn_reference,
    'radius': radius_reference,
    'adele': adele_reference,
    'mstfal': mstfal_reference,
}

DRAWS: dict[str, Draws] = {
    'radius': radius_draws,
}

# Parameters under which a reference covers every sample the benchmark draws.
BENCH_PARAMS: dict[str, dict[str, Any]] = {
    'mstfal': {'type_probs': (0.5, 0.5, 0.0, 0.0)},  # its polygon / affine types have none
}
