"""Pure-JAX binary morphology shared by the noise protocols (METHODS.md §2.4, §2.5, §2.8).

Every function works on one (H, W) mask, is jit- and vmap-compatible, and takes its radii and
iteration counts as traced integers where that is cheap, so one compiled program serves every
drawn radius:

- Euclidean disks: a squared distance transform computed with two separable passes of
  min_d (value[i + d] + d²) over a static window |d| ≤ W, then thresholded at r². Restricting
  the window is exact for every threshold r ≤ W: a seed within distance r is within r along
  each axis. The same passes on seeds valued -r_c² give the union of disks of per-seed radii
  (a power distance), which is how edge noise paints hundreds of disks without a loop.
- 3×3 squares, k iterations: the square of side 2k+1 is separable, so two exact 1-D distance
  transforms (running minima) thresholded at k.
- Resizing by a traced scale: interpolation matrices (nearest / linear / Keys cubic, half-pixel
  centres as `jax.image.scale_and_translate`) applied as two matmuls onto a static canvas.
- Skeleton: Zhang–Suen thinning with a 256-entry lookup table per sub-iteration, in a
  `lax.while_loop` that stops when nothing changes.
- Bit-packed masks (32 columns per uint32 word): 3×3-cross steps, disk dilation / erosion
  (segments of per-row half-widths), translations by a traced shift and population counts, for
  the protocols whose cost on CPU is memory traffic (abn, radius, adele, mstfal's disks).

A lesson from profiling on CPU that shapes several functions here: XLA fuses an elementwise
producer into every consumer, so an expensive expression (an unrolled OR of shifted copies, a
gather's index arithmetic) consumed by several fusions, or unpacked bit by bit, is recomputed for
each. Results of such expressions are produced by a loop or packed once.
"""
import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

INT16_MAX = np.iinfo(np.int16).max

# ------------------------------------------------------------------------------------------------
# Bit-packed masks
# ------------------------------------------------------------------------------------------------
#
# XLA on CPU is bound by memory traffic and by the number of full-size passes, not by arithmetic:
# a bool mask costs a byte per pixel and every count or distance map an int16 / int32 array. With
# 32 columns per uint32 word a 256×256 mask is 8 KiB, one 3×3-cross step is a handful of word
# operations and a count is a population count, so iterative morphology and repeated counting
# are cheaper than one int16 distance transform.

WORD_BITS = 32
ALL_BITS = np.uint32(0xFFFFFFFF)
# 4 bool bytes read as one little-endian uint32 hold bits 0, 8, 16, 24; the product with this
# constant moves them to bits 24..27, and every other partial product lands on a distinct bit
# below 24 or past 31, so nothing carries into the nibble.
_NIBBLE_MAGIC = np.uint32((1 << 24) | (1 << 17) | (1 << 10) | (1 << 3))


def packed_width(width: int) -> int:
  """Words per packed row of `width` columns."""
  return -(-width // WORD_BITS)


def valid_bits(width: int) -> np.ndarray:
  """uint32 (packed_width,): the bits of each word that are image columns."""
  words = np.full(packed_width(width), ALL_BITS, np.uint32)
  tail = width - (len(words) - 1) * WORD_BITS
  if tail < WORD_BITS:
    words[-1] = np.uint32((1 << tail) - 1)
  return words


def pack_bits(mask: jax.Array) -> jax.Array:
  """(..., H, W) bool → (..., H, ⌈W/32⌉) uint32: bit b of word k is column 32k + b, 0 past W.

  One multiply per 4 pixels and a sum of 8 nibbles per word; measured ~2× cheaper on CPU than
  summing 32 shifted bits.
  """
  *lead, height, width = mask.shape
  words = packed_width(width)
  bytes_ = mask.astype(jnp.uint8)
  if words * WORD_BITS != width:
    bytes_ = jnp.pad(bytes_, [(0, 0)] * len(lead) + [(0, 0), (0, words * WORD_BITS - width)])
  quads = lax.bitcast_convert_type(bytes_.reshape(*lead, height, words, 8, 4), jnp.uint32)
  nibbles = (quads * _NIBBLE_MAGIC) >> 24
  shifts = 4 * jnp.arange(8, dtype=jnp.uint32)
  return jnp.sum(nibbles << shifts, axis=-1, dtype=jnp.uint32)  # distinct bits: sum == or


def unpack_bits(packed: jax.Array, width: int) -> jax.Array:
  """Inverse of `pack_bits`: (..., H, ⌈W/32⌉) uint32 → (..., H, W) bool."""
  bits = (packed[..., None] >> jnp.arange(WORD_BITS, dtype=jnp.uint32)) & 1
  return bits.reshape(*packed.shape[:-1], -1)[..., :width].astype(bool)


def popcount(packed: jax.Array) -> jax.Array:
  """int32 number of set bits over the trailing two axes."""
  return jnp.sum(lax.population_count(packed), axis=(-2, -1), dtype=jnp.int32)


# Bit j of these words is set where bit j of the bit index is: popcount(x & _INDEX_BITS[j])
# counts the set bits whose index has bit j, so Σ_j 2^j · popcount gives Σ of set bit indices.
_INDEX_BITS = tuple(np.uint32(sum(1 << b for b in range(WORD_BITS) if b >> j & 1))
                    for j in range(WORD_BITS.bit_length() - 1))


def packed_moments(packed: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """int32 (area, Σ row, Σ column) over the set pixels of a packed (H, ⌈W/32⌉) mask.

  Exact while H·W·max(H, W) < 2**31.
  """
  height, words = packed.shape[-2:]
  counts = lax.population_count(packed).astype(jnp.int32)
  row_counts = jnp.sum(counts, axis=-1)
  area = jnp.sum(row_counts, axis=-1)
  row_moment = jnp.sum(row_counts * jnp.arange(height, dtype=jnp.int32), axis=-1)
  word_starts = WORD_BITS * jnp.arange(words, dtype=jnp.int32)
  col_moment = jnp.sum(counts * word_starts, axis=(-2, -1))
  for j, index_bits in enumerate(_INDEX_BITS):
    col_moment += (1 << j) * popcount(packed & index_bits)
  return area, row_moment, col_moment


def _fill_word(fill: bool | jax.Array) -> jax.Array:
  return jnp.where(fill, ALL_BITS, np.uint32(0)).astype(jnp.uint32)


def shift_words_right(packed: jax.Array, fill: bool | jax.Array = False) -> jax.Array:
  """Columns moved one to the right, (c - 1 → c); column 0 gets `fill`."""
  before = jnp.concatenate(
      [jnp.broadcast_to(_fill_word(fill), packed.shape[:-1] + (1,)), packed[..., :-1]], axis=-1)
  return (packed << 1) | (before >> (WORD_BITS - 1))


def shift_words_left(packed: jax.Array, fill: bool | jax.Array = False) -> jax.Array:
  """Columns moved one to the left, (c + 1 → c); the last word's top bit gets `fill`.

  With a width that is not a multiple of 32, column W - 1 takes bit W of its word, so callers
  keep the bits past W at `fill` (see `dilate_cross_packed`).
  """
  after = jnp.concatenate(
      [packed[..., 1:], jnp.broadcast_to(_fill_word(fill), packed.shape[:-1] + (1,))], axis=-1)
  return (packed >> 1) | (after << (WORD_BITS - 1))


def dilate_cross_packed(packed: jax.Array, width: int, fill: bool | jax.Array = False
                        ) -> jax.Array:
  """One 3×3-cross dilation of a packed (H, ⌈W/32⌉) mask; the outside of the image is `fill`.

  Bits past column W act as the outside too: the input's must already be `fill` (as
  `pack_bits` leaves them 0, and `~packed` 1), and the output's are kept at `fill`. With
  fill = True this is the complement of one `binary_erosion` (border 0) of the complement, which
  lets one program serve dilation and erosion with a traced choice.
  """
  fill_word = _fill_word(fill)
  fill_row = jnp.broadcast_to(fill_word, packed.shape[:-2] + (1, packed.shape[-1]))
  above = jnp.concatenate([fill_row, packed[..., :-1, :]], axis=-2)
  below = jnp.concatenate([packed[..., 1:, :], fill_row], axis=-2)
  grown = (packed | above | below | shift_words_right(packed, fill) |
           shift_words_left(packed, fill))
  keep = jnp.where(fill, ALL_BITS, jnp.asarray(valid_bits(width)))
  return grown & keep


def translate_packed(padded: jax.Array, shift_row: jax.Array, shift_col: jax.Array,
                     pad_row: int, pad_words: int, shape: tuple[int, int]) -> jax.Array:
  """out[r, c] = mask[r - shift_row, c - shift_col], zero fill, from a zero-padded packed mask.

  Args:
    padded: `jnp.pad(pack_bits(mask), ((pad_row, pad_row), (pad_words, pad_words)))`.
    shift_row, shift_col: traced integers with |shift_row| ≤ pad_row and
      -32·pad_words ≤ shift_col < 32·pad_words (`translation_pads` sizes the pads).
    pad_row, pad_words: static pads of `padded`.
    shape: (H, W) of the mask.

  Returns:
    (H, ⌈W/32⌉) uint32, bits past W cleared. One dynamic slice of H × (words + 1) words and a
    funnel shift: no per-pixel gather, even under vmap.
  """
  height, width = shape
  words = packed_width(width)
  word_shift = jnp.floor_divide(shift_col, WORD_BITS)
  bit_shift = (shift_col - WORD_BITS * word_shift).astype(jnp.uint32)
  window = lax.dynamic_slice(padded, (pad_row - shift_row, pad_words - word_shift - 1),
                             (height, words + 1))
  high, low = window[:, 1:], window[:, :-1]
  # A shift by 32 or more is not defined the same way everywhere; select the r = 0 case instead.
  carried = jnp.where(bit_shift == 0, np.uint32(0), low >> (WORD_BITS - bit_shift))
  return ((high << bit_shift) | carried) & jnp.asarray(valid_bits(width))


def translation_pads(max_shift_row: int, max_shift_col: int) -> tuple[int, int]:
  """(pad_row, pad_words) for `translate_packed` with |shifts| up to the given bounds."""
  return max_shift_row, max_shift_col // WORD_BITS + 1


def shift_rows_packed(packed: jax.Array, offset: int) -> jax.Array:
  """out[i] = packed[i + offset] along the row axis (-2), static offset, zero outside."""
  height = packed.shape[-2]
  if offset == 0:
    return packed
  if abs(offset) >= height:
    return jnp.zeros_like(packed)
  zeros = jnp.zeros(packed.shape[:-2] + (abs(offset), packed.shape[-1]), packed.dtype)
  if offset > 0:
    return jnp.concatenate([packed[..., offset:, :], zeros], axis=-2)
  return jnp.concatenate([zeros, packed[..., :height + offset, :]], axis=-2)


def disk_half_widths(radius: int | float | jax.Array, max_radius: int) -> jax.Array:
  """int32 (max_radius + 1,): entry d is the largest w ≥ 0 with w² + d² ≤ radius², -1 if none.

  The disk {w² + d² ≤ r²} row by row. An integer radius compares integers; a float radius
  compares float32 squares, as `geometry.dilate_disk` compares its distances.
  """
  offsets = np.arange(max_radius + 1)
  squares = offsets[:, None] ** 2 + offsets[None, :] ** 2  # [d, w]
  radius = jnp.asarray(radius)
  if jnp.issubdtype(radius.dtype, jnp.integer):
    inside = jnp.asarray(squares, jnp.int32) <= jnp.square(radius.astype(jnp.int32))
  else:
    inside = jnp.asarray(squares, jnp.float32) <= jnp.square(radius.astype(jnp.float32))
  return jnp.sum(inside, axis=1, dtype=jnp.int32) - 1  # w² + d² grows with w: a prefix


def dilate_disk_packed(packed: jax.Array, radius: int | float | jax.Array, max_radius: int,
                       width: int) -> jax.Array:
  """Binary dilation of a packed (H, ⌈W/32⌉) mask by the disk {w² + d² ≤ radius²}, zero outside.

  `radius` may be traced but must be ≤ `max_radius` (static). The disk is the union over row
  offsets d of horizontal segments of half-width w(d) (`disk_half_widths`): the row dilations
  by w = 0..max_radius are max_radius + 1 cheap packed steps, and the result ORs the one of
  width w(d) shifted by ±d rows. An order of magnitude less work on CPU than a windowed squared
  distance transform of the same mask.
  """
  height = packed.shape[-2]
  valid = jnp.asarray(valid_bits(width))
  half_widths = disk_half_widths(radius, max_radius)

  def widen(rows, _):
    return (rows | shift_words_right(rows) | shift_words_left(rows)) & valid, rows

  _, by_width = lax.scan(widen, packed, None, length=max_radius + 1)  # [w] = dilation by w
  used = jnp.where(half_widths >= 0, ALL_BITS, np.uint32(0)).astype(jnp.uint32)
  slabs = jnp.take(by_width, jnp.maximum(half_widths, 0), axis=0) & used[:, None, None]
  padded = jnp.pad(slabs, ((0, 0), (max_radius, max_radius), (0, 0)))

  def add_offset(offset, out):
    slab = lax.dynamic_index_in_dim(padded, offset, 0, keepdims=False)
    return (out | lax.dynamic_slice_in_dim(slab, max_radius + offset, height, 0) |
            lax.dynamic_slice_in_dim(slab, max_radius - offset, height, 0))

  # A loop, not 2·max_radius unrolled shifts: XLA fuses an unrolled OR into every consumer of
  # the result (each unpacked bit, each count), recomputing it ~15× per word.
  return lax.fori_loop(1, max_radius + 1, add_offset, slabs[0])


def disk_interior_packed(shape: tuple[int, int], radius: int | float | jax.Array,
                         max_radius: int) -> jax.Array:
  """Packed mask of the pixels whose disk of `radius` lies inside the image: the pixels that
  `binary_erosion(border_value=0)` can keep (the disk's reach along an axis is ⌊r⌋)."""
  height, width = shape
  reach = disk_half_widths(radius, max_radius)[0]
  rows, cols = jnp.arange(height), jnp.arange(width)
  rows_ok = (rows >= reach) & (rows <= height - 1 - reach)
  cols_ok = pack_bits(((cols >= reach) & (cols <= width - 1 - reach))[None])[0]
  return jnp.where(rows_ok[:, None], cols_ok[None, :], np.uint32(0)).astype(jnp.uint32)


def erode_disk_packed(packed: jax.Array, radius: int | float | jax.Array, max_radius: int,
                      width: int) -> jax.Array:
  """Binary erosion by the disk (`dilate_disk_packed`), the outside counting as background
  (scipy's `border_value=0`): the complement's dilation, cleared near the image border."""
  valid = jnp.asarray(valid_bits(width))
  grown = dilate_disk_packed(~packed & valid, radius, max_radius, width)
  interior = disk_interior_packed((packed.shape[-2], width), radius, max_radius)
  return packed & ~grown & interior


# ------------------------------------------------------------------------------------------------
# Separable min-plus passes
# ------------------------------------------------------------------------------------------------


def _windowed_min_plus_square(values: jax.Array, window: int, axis: int,
                              weight: int = 1) -> jax.Array:
  """out[i] = min_{|d| ≤ window} values[i + d] + weight·d² along `axis`; outside is skipped.

  The window is unrolled into static slices, which XLA fuses into one loop over the array.
  """
  size = values.shape[axis]
  window = min(window, size - 1)
  far = jnp.iinfo(values.dtype).max - weight * window * window
  pad = [(0, 0)] * values.ndim
  pad[axis] = (window, window)
  padded = jnp.pad(values, pad, constant_values=far)
  out = values
  for d in range(-window, window + 1):
    if d == 0:
      continue
    shifted = lax.slice_in_dim(padded, window + d, window + d + size, axis=axis)
    out = jnp.minimum(out, shifted + values.dtype.type(weight * d * d))
  return out


def _distance_dtype(largest: int):
  return jnp.int16 if largest < INT16_MAX else jnp.int32


def _window(shape: tuple[int, int], max_distance: int | None) -> int:
  full = max(shape) - 1
  return full if max_distance is None else min(int(max_distance), full)


def squared_distance_transform(seeds: jax.Array, max_distance: int | None = None) -> jax.Array:
  """Squared Euclidean distance of every pixel to the nearest True pixel of `seeds`.

  Exact wherever the distance is ≤ `max_distance` (static; None: the whole image), larger
  than max_distance² elsewhere, including when there is no seed at all.

  Returns:
    int16 or int32 (H, W), the smallest type that cannot overflow.
  """
  window = _window(seeds.shape, max_distance)
  none = 2 * window * window + 1  # more than any distance the window can see
  dtype = _distance_dtype(none + 2 * window * window)
  values = jnp.where(seeds, 0, none).astype(dtype)
  rows = _windowed_min_plus_square(values, window, axis=0)
  return jnp.minimum(_windowed_min_plus_square(rows, window, axis=1), none)


def dilate_disk(mask: jax.Array, radius: int | jax.Array,
                max_radius: int | None = None) -> jax.Array:
  """Binary dilation with the disk {dx² + dy² ≤ r²}; `radius` may be traced but ≤ max_radius."""
  distance = squared_distance_transform(mask.astype(bool), max_radius)
  return distance <= jnp.square(jnp.asarray(radius, jnp.int32)).astype(distance.dtype)


def erode_disk(mask: jax.Array, radius: int | jax.Array,
               max_radius: int | None = None) -> jax.Array:
  """Binary erosion with the disk of `radius`; the outside counts as background (scipy's
  `binary_erosion(border_value=0)`)."""
  # The nearest outside point always lies on the one-pixel ring around the image.
  padded = jnp.pad(mask.astype(bool), 1, constant_values=False)
  distance = squared_distance_transform(~padded, max_radius)[1:-1, 1:-1]
  return distance > jnp.square(jnp.asarray(radius, jnp.int32)).astype(distance.dtype)


def paint_disks(radius: jax.Array, color: jax.Array, max_radius: int
                ) -> tuple[jax.Array, jax.Array]:
  """Union of filled disks of per-centre radii, and the colour each covered pixel receives.

  Args:
    radius: int (H, W); every pixel with radius ≥ 0 is the centre of a disk of that radius
      (≤ max_radius); negative entries are not centres.
    color: bool (H, W), the colour each centre paints.
    max_radius: static bound on the radii.

  Returns:
    (covered, painted colour). Where disks overlap the pixel takes the colour of the disk with
    the smallest power |x - c|² - r_c², i.e. the one that contains it most deeply; exact ties go
    to False. This replaces sequential painting in a random order, which has no loop-free form.
  """
  window = _window(radius.shape, max_radius)
  # Packed as 2·power + colour, so one min gives the winning power and its colour together.
  dtype = _distance_dtype(2 * (1 + 2 * window * window) + 1)
  radius = radius.astype(jnp.int32)
  power = jnp.where(radius >= 0, -radius * radius, 1)
  packed = (2 * power + color.astype(jnp.int32)).astype(dtype)
  rows = _windowed_min_plus_square(packed, window, axis=0, weight=2)
  packed = _windowed_min_plus_square(rows, window, axis=1, weight=2)
  return packed <= 1, (packed & 1).astype(bool)


# ------------------------------------------------------------------------------------------------
# 3×3 squares and crosses
# ------------------------------------------------------------------------------------------------


def line_distance(seeds: jax.Array, axis: int) -> jax.Array:
  """Exact 1-D distance to the nearest seed along `axis` (capped at the axis length)."""
  moved = jnp.moveaxis(seeds, axis, 0)
  size = moved.shape[0]
  values = jnp.where(moved, 0, size).astype(_distance_dtype(2 * size + 1))

  def running_min(carry, row):
    carry = jnp.minimum(row, carry + 1)
    return carry, carry

  # lax.scan over rows measured faster on CPU than lax.cummin (see abn.city_block_distance).
  _, forward = lax.scan(running_min, values[0], values)
  _, backward = lax.scan(running_min, values[-1], values, reverse=True)
  return jnp.moveaxis(jnp.minimum(jnp.minimum(forward, backward), size), 0, axis)


def dilate_square(mask: jax.Array, iterations: int | jax.Array = 1) -> jax.Array:
  """`scipy.ndimage.binary_dilation(mask, np.ones((3, 3)), iterations=k)`, k ≥ 0 (traced)."""
  k = jnp.asarray(iterations, jnp.int32)
  columns = line_distance(mask.astype(bool), 0) <= k
  return line_distance(columns, 1) <= k


def erode_square(mask: jax.Array, iterations: int | jax.Array = 1) -> jax.Array:
  """`scipy.ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=k)` (border 0), k ≥ 0."""
  padded = jnp.pad(mask.astype(bool), 1, constant_values=False)
  return ~dilate_square(~padded, iterations)[1:-1, 1:-1]


def _shift(mask: jax.Array, d_row: int, d_col: int, fill: bool) -> jax.Array:
  """out[i, j] = mask[i + d_row, j + d_col], `fill` outside."""
  height, width = mask.shape
  padded = jnp.pad(mask, 1, constant_values=fill)
  return padded[1 + d_row:1 + d_row + height, 1 + d_col:1 + d_col + width]


def boundary(mask: jax.Array) -> jax.Array:
  """Inner boundary M ∧ ¬erode(M) with the 3×3 cross: a closed 8-connected one-pixel contour.

  The image border is not an edge (the erosion treats the outside as foreground): an organ cut
  by the field of view has no contour there.
  """
  mask = mask.astype(bool)
  interior = mask
  for d_row, d_col in ((-1, 0), (1, 0), (0, -1), (0, 1)):
    interior = interior & _shift(mask, d_row, d_col, True)
  return mask & ~interior


def thicken(mask: jax.Array, width: jax.Array) -> jax.Array:
  """Draws a one-pixel curve `width` ∈ {1, 2, 3} pixels wide (traced): width 2 adds the right,
  lower and lower-right neighbours, width 3 the full 3×3 neighbourhood."""
  mask = mask.astype(bool)
  out = mask
  for d_row in (-1, 0, 1):
    for d_col in (-1, 0, 1):
      if d_row == d_col == 0:
        continue
      needed = 2 if d_row <= 0 and d_col <= 0 else 3
      out = out | (_shift(mask, d_row, d_col, False) & (width >= needed))
  return out


# ------------------------------------------------------------------------------------------------
# Resizing by a traced scale
# ------------------------------------------------------------------------------------------------

RESIZE_METHODS = ('nearest', 'linear', 'cubic')


def _keys_cubic(x: jax.Array) -> jax.Array:
  """Keys cubic kernel, A = -0.5 (as `jax.image` 'cubic')."""
  out = ((1.5 * x - 2.5) * x) * x + 1.0
  out = jnp.where(x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, out)
  return jnp.where(x >= 2.0, 0.0, out)


def resize_weights(out_size: int, in_size: int, scale: jax.Array, translation: jax.Array,
                   method: str) -> jax.Array:
  """(out_size, in_size) interpolation matrix of the map out + 0.5 = (in + 0.5)·scale + t.

  The convention of `jax.image.scale_and_translate` without antialiasing: weights of inputs
  outside the image are dropped and the rest renormalised, and outputs whose centre falls
  outside the input image are 0. 'nearest' takes the input pixel that
  contains the output centre, and 0 outside the image.
  """
  scale = jnp.asarray(scale, jnp.float32)
  translation = jnp.asarray(translation, jnp.float32)
  centres = (jnp.arange(out_size, dtype=jnp.float32) + 0.5 - translation) / scale
  inputs = jnp.arange(in_size, dtype=jnp.float32)
  if method == 'nearest':
    return (jnp.floor(centres)[:, None] == inputs[None, :]).astype(jnp.float32)
  distance = jnp.abs(centres[:, None] - 0.5 - inputs[None, :])
  if method == 'linear':
    weights = jnp.maximum(0.0, 1.0 - distance)
  elif method == 'cubic':
    weights = _keys_cubic(distance)
  else:
    raise ValueError(f'unknown resize method {method!r}; valid: {", ".join(RESIZE_METHODS)}')
  total = weights.sum(axis=1, keepdims=True)
  usable = jnp.abs(total) > 1000.0 * np.finfo(np.float32).eps
  inside = ((centres >= 0.0) & (centres <= in_size))[:, None]
  return jnp.where(usable & inside, weights / jnp.where(usable, total, 1.0), 0.0)


def resize(image: jax.Array, out_shape: tuple[int, int], scale: jax.Array,
           translation: jax.Array, method: str) -> jax.Array:
  """Resamples a 2-D image onto a static `out_shape` canvas: out = R_row · image · R_colᵀ.

  Args:
    image: (H, W), any numeric dtype (a binary mask is resampled as 0. / 1.).
    out_shape: static (rows, columns) of the canvas.
    scale: scalar or (row, column) pair, may be traced.
    translation: scalar or (row, column) pair in output pixels, may be traced.
    method: 'nearest' | 'linear' | 'cubic'.

  Returns:
    float32 (rows, columns).
  """
  scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (2,))
  translation = jnp.broadcast_to(jnp.asarray(translation, jnp.float32), (2,))
  rows = resize_weights(out_shape[0], image.shape[0], scale[0], translation[0], method)
  cols = resize_weights(out_shape[1], image.shape[1], scale[1], translation[1], method)
  image = image.astype(jnp.float32)
  return jnp.matmul(jnp.matmul(rows, image, precision='highest'), cols.T, precision='highest')


# ------------------------------------------------------------------------------------------------
# Skeleton (Zhang–Suen thinning)
# ------------------------------------------------------------------------------------------------

# Neighbours P2..P9 clockwise from north, as (row, column) offsets; bit k-2 of the code is P_k.
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _zhang_suen_tables() -> np.ndarray:
  """(2, 256) bool: may a foreground pixel with this neighbour code go in sub-iteration 1 / 2."""
  tables = np.zeros((2, 256), bool)
  for code in range(256):
    p = [(code >> k) & 1 for k in range(8)]  # p[0] = P2 … p[7] = P9
    count = sum(p)
    transitions = sum(p[k] == 0 and p[(k + 1) % 8] == 1 for k in range(8))
    p2, p3, p4, p5, p6, p7, p8, p9 = p
    del p3, p5, p7, p9
    base = 2 <= count <= 6 and transitions == 1
    tables[0, code] = base and p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
    tables[1, code] = base and p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
  return tables


_ZS_TABLES = _zhang_suen_tables()


def _neighbour_code(mask: jax.Array) -> jax.Array:
  code = jnp.zeros(mask.shape, jnp.int32)
  for bit, (d_row, d_col) in enumerate(_NEIGHBOURS):
    code = code | (_shift(mask, d_row, d_col, False).astype(jnp.int32) << bit)
  return code


def skeletonize(mask: jax.Array, max_iterations: int | None = None) -> jax.Array:
  """Zhang–Suen (1984) thinning to a one-pixel-wide, connectivity-preserving skeleton.

  Iterates until no pixel changes (or `max_iterations` full iterations; default H + W, more
  than any mask needs). Under `vmap` the loop runs until every mask of the batch is done.
  """
  tables = jnp.asarray(_ZS_TABLES)
  limit = sum(mask.shape) if max_iterations is None else int(max_iterations)

  def sub_iteration(current, table):
    deletable = jnp.take(table, _neighbour_code(current)) & current
    return current & ~deletable

  def body(state):
    current, _, count = state
    thinned = sub_iteration(sub_iteration(current, tables[0]), tables[1])
    return thinned, jnp.any(thinned != current), count + 1

  def cond(state):
    _, changed, count = state
    return changed & (count < limit)

  mask = mask.astype(bool)
  skeleton, _, _ = lax.while_loop(cond, body, (mask, jnp.any(mask), jnp.int32(0)))
  return skeleton
