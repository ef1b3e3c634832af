"""α/β dilate / erode / affine label noise (METHODS.md §2.3), as pure JAX on one sample.

Source: [code: gaozhitong/SP_guided_Noisy_Label_Seg] `data_process/noise_generation.py`. An image
in the α subset gets one corruption, dilate / erode / affine (uniform by default), whose strength
is set so that the changed fraction of the foreground, ρ_fg = (FP+FN)/|fg₀|, is close to β.

`corrupt` is jit- and vmap-compatible. Everything that changes the program (β, the type
probabilities, the option strings, the number of classes) is a static Python value; the key and
the mask are traced. Under `vmap` the corruption types are all computed and selected, so
`corrupt_selected` (the generator's fast path) draws the types first and runs dilate / erode and
affine samples as separate programs.

How the reference's loops run fast and stay exact:
- Masks are bit-packed, 32 columns per uint32 word (`morphology.pack_bits`). XLA on CPU is bound
  by memory traffic, and a packed 256×256 mask is 8 KiB: one 3×3-cross dilation or erosion step
  is a handful of word operations and the size after it a population count.
- So the dilate / erode loop runs as the reference's, one step and one count at a time, until the
  size reaches the target (or the image fills / empties), keeping the closer of the last two
  iterates. Erosion (outside = background) is the complement's dilation with the outside as
  foreground, so one packed program serves both types.
- The affine bisection evaluates each translation as one dynamic slice of the padded packed
  rotation, a funnel shift and a population count (`packed_step_translator`).
- The reference compares float64 quantities (`int(|fg₀|·β)`, `noisy/|fg₀|` against β). JAX runs
  in float32, so those comparisons are precomputed on the host in float64 as integer tables
  indexed by |fg₀|; the traced code only compares integers and matches the reference bit for bit.
- The achieved-noise counts come from packed masks too (`base.achieved_noise_log`).

Deliberate differences from the reference, each behind a knob:
- `center='centroid'`, `interp='nearest'` (METHODS assumed default). The reference rotates about
  the image centre with bilinear interpolation cast to uint8 (`center='image'`,
  `interp='bilinear_floor'`).
- `shift_mode='signed'` translates by (step·dr, step·dc) as METHODS describes. The reference's
  `translate_label` pads on the side of |offset| for negative offsets too, so every shift it makes
  points down / right; `shift_mode='code'` reproduces that.
- Where the reference would crash (a dilate / erode whose loop never runs because int(|fg₀|·β) = 0
  or the mask already fills the image, or an empty mask), the mask is returned unchanged.
"""
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax.errors import ConfigError
from nsegjax.noise import morphology
from nsegjax.noise.base import (NoiseProtocol, achieved_noise_log, alpha_subset,
                                register)
from nsegjax.noise.base import count_true  # pylint: disable=unused-import  (abn.count_true API)

TYPE_NAMES = ('dilate', 'erode', 'affine')
DILATE, ERODE, AFFINE = 0, 1, 2
IGNORE = 255

# (row, column) unit offsets in the reference's order. The reference lists (-1, 1) twice, so only
# 7 directions are distinct ("code7"); "all8" puts (-1, -1) in the second slot.
DIRECTIONS = {
    'code7': ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, 1), (0, -1), (1, -1)),
    'all8': ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)),
}
CENTERS = ('centroid', 'image')
INTERPS = ('nearest', 'bilinear_floor')
SHIFT_MODES = ('signed', 'code')
TYPE_PER = ('image', 'class')
PAINT_ORDERS = ('ascending', 'descending')
BRANCHES = ('all', 'morph', 'affine')

# Accepted keys of the 'abn' protocol and their defaults (headline setting "a3b5").
DEFAULT_PARAMS: dict[str, Any] = {
    'alpha': 0.3,  # fraction of images corrupted; used by the subset choice, not by `corrupt`
    'beta': 0.5,  # target (FP+FN)/|fg₀| per corrupted class mask
    'type_probs': (1 / 3, 1 / 3, 1 / 3),  # P(dilate), P(erode), P(affine)
    'max_angle': 30.0,  # rotation angle ~ U(-max_angle, max_angle) degrees
    'max_step': 100,  # translation step searched in [0, max_step] px
    'max_iters': 20,  # bisection evaluations at most
    'directions': 'code7',  # code7 | all8
    'center': 'centroid',  # centroid | image
    'interp': 'nearest',  # nearest | bilinear_floor
    'shift_mode': 'signed',  # signed | code
    'type_per': 'image',  # image | class: one type (and angle, direction) per image or per class
    'paint_order': 'ascending',  # ascending | descending: which class wins where masks overlap
    'num_classes': None,  # None: inferred from the clean masks (largest label + 1, at least 2)
}


# ------------------------------------------------------------------------------------------------
# Exact 3×3-cross morphology: a fixed count through the L1 distance transform, the reference's
# loop to a size target on bit-packed masks
# ------------------------------------------------------------------------------------------------


def _min_plus_abs_rows(values: jax.Array) -> jax.Array:
  """out[i] = min_j values[j] + |i - j| along axis 0, exactly, in O(n).

  A forward and a backward running minimum with +1 per row. `lax.scan` over rows measured
  several times faster on CPU than `lax.cummin`, which lowers to a full-width reduce_window.
  """

  def running_min(carry, row):
    carry = jnp.minimum(row, carry + 1)
    return carry, carry

  # Seeding the carry with the first (last) row itself is exact: min(v, v + 1) = v.
  _, forward = lax.scan(running_min, values[0], values)
  _, backward = lax.scan(running_min, values[-1], values, reverse=True)
  return jnp.minimum(forward, backward)


def city_block_distance(seeds: jax.Array, outside_is_seed: bool | jax.Array = False
                        ) -> jax.Array:
  """L1 distance of every pixel to the nearest True pixel of `seeds` (2-D bool).

  Exact for any mask: L1 distance is separable, min over a row then over a column. Pixels with
  no seed anywhere get H + W, more than any real distance. With `outside_is_seed` (may be
  traced) the pixels just outside the image count as seeds too: every edge pixel starts at
  distance 1, which gives the same distances as padding the image with seeds, without the pad.
  """
  height, width = seeds.shape
  far = height + width
  # int16 halves the memory traffic of the scans, which dominates on CPU.
  dtype = jnp.int16 if far < np.iinfo(np.int16).max else jnp.int32
  rows, cols = np.indices(seeds.shape)
  edge = (rows == 0) | (rows == height - 1) | (cols == 0) | (cols == width - 1)
  start = jnp.where(edge & outside_is_seed, 1, far)
  values = jnp.where(seeds, 0, start).astype(dtype)
  within_rows = _min_plus_abs_rows(values.T).T
  return jnp.minimum(_min_plus_abs_rows(within_rows), far)


def _distance_to_foreground(fg: jax.Array) -> jax.Array:
  return city_block_distance(fg)


def _distance_to_background(fg: jax.Array) -> jax.Array:
  # The outside of the image counts as background, as scipy's binary_erosion(border_value=0).
  return city_block_distance(~fg, outside_is_seed=True)


def dilate_cross(mask: jax.Array, iterations: int | jax.Array = 1) -> jax.Array:
  """`scipy.ndimage.binary_dilation(mask, iterations=k)` with the 3×3 cross, for k ≥ 0."""
  return _distance_to_foreground(mask.astype(bool)) <= iterations


def erode_cross(mask: jax.Array, iterations: int | jax.Array = 1) -> jax.Array:
  """`scipy.ndimage.binary_erosion(mask, iterations=k)` (3×3 cross, border 0), for k ≥ 0."""
  return _distance_to_background(mask.astype(bool)) > iterations


def morph_packed_to_target(packed: jax.Array, width: int, target: jax.Array,
                           erode: bool | jax.Array) -> tuple[jax.Array, jax.Array]:
  """The reference's dilate / erode loop on a bit-packed mask (`morphology.pack_bits`).

  Steps the 3×3 cross one iteration at a time and counts the pixels after each, until the
  size reaches `target` or the mask fills (dilation) / empties (erosion) the image, then keeps
  whichever of the last two iterates is closer to the target (the later one on a tie), as the
  reference. Erosion with the outside as background is the complement of a dilation of the
  complement with the outside as foreground, so both run as one dilation of
  y = mask XOR erode, and a traced `erode` costs no second program.

  A packed step is a few word operations and a population count, far cheaper on CPU than the
  int16 distance transform plus ~11 full-size counts of a binary search over the iteration
  count; under vmap the loop runs to the largest count of the batch (tens on Kvasir-SEG).

  Returns:
    (packed result, iterations in it). iterations = 0 where the loop never runs (the reference
    would crash there): the mask is returned unchanged.
  """
  height = packed.shape[-2]
  full = height * width
  valid = jnp.asarray(morphology.valid_bits(width))
  # Bits past column W start at the fill value, as `dilate_cross_packed` keeps them.
  flip = jnp.where(erode, morphology.ALL_BITS, np.uint32(0)).astype(jnp.uint32)

  def size_of(y):
    count = morphology.popcount(y & valid)
    return jnp.where(erode, full - count, count)

  def stop(size):
    grown = (size >= target) | (size == full)
    shrunk = (size <= target) | (size == 0)
    return jnp.where(erode, shrunk, grown)

  def keep_going(state):
    k, _, _, size, _ = state
    # Every non-empty mask fills the image within H + W dilations (and empties within as many
    # erosions), where `stop` holds; the bound only guards the loop.
    return ~stop(size) & (k < height + width)

  def one_step(state):
    k, y, _, size, _ = state
    grown = morphology.dilate_cross_packed(y, width, fill=erode)
    return k + 1, grown, y, size_of(grown), size

  y0 = packed ^ flip
  size0 = size_of(y0)
  k, last, prev, size_last, size_prev = lax.while_loop(
      keep_going, one_step, (jnp.int32(0), y0, y0, size0, size0))
  degenerate = jnp.where(erode, 0, full)
  prev_closer = jnp.abs(size_prev - target) < jnp.abs(size_last - target)
  take_prev = (k > 0) & ((size_last == degenerate) | prev_closer)
  result = jnp.where(take_prev, prev, last) ^ flip
  return result & valid, jnp.where(take_prev, k - 1, k)


def morph_to_target(fg: jax.Array, target: jax.Array, erode: bool | jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  """`dilate_to_target` or, where `erode` (may be traced), `erode_to_target`.

  Returns (mask, number of dilations / erosions in it); see `morph_packed_to_target`.
  """
  width = fg.shape[-1]
  result, iterations = morph_packed_to_target(morphology.pack_bits(fg.astype(bool)), width,
                                              target, erode)
  return morphology.unpack_bits(result, width), iterations


def dilate_to_target(fg: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Reference `dilate_mask`: dilate until |fg| ≥ target or the image is full.

  Returns (mask, number of dilations in the mask).
  """
  return morph_to_target(fg, target, erode=False)


def erode_to_target(fg: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Reference `erode_mask`: erode until |fg| ≤ target or the mask is empty.

  Returns (mask, number of erosions in the mask).
  """
  return morph_to_target(fg, target, erode=True)


# ------------------------------------------------------------------------------------------------
# Rotation, translation and the step bisection
# ------------------------------------------------------------------------------------------------


def rotation_center(fg: jax.Array, center: str, packed: jax.Array | None = None) -> jax.Array:
  """(row, col) centre of rotation: the foreground centroid, or the image centre.

  `packed` (`morphology.pack_bits(fg)`, optional) saves packing again when the caller has it.
  """
  height, width = fg.shape
  image_center = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
  if center == 'image':
    return image_center
  if height * width * max(height, width) < 2**25:
    # Integer moments are bit-identical to the float32 sums over the image here: every float32
    # partial sum of that form was an exact integer below 2**24, so its order did not matter.
    # Population counts of the packed mask give them without an int32 pass over the pixels.
    if packed is None:
      packed = morphology.pack_bits(fg.astype(bool))
    area, row_moment, col_moment = morphology.packed_moments(packed)
    area = area.astype(jnp.float32)
    moments = jnp.stack([row_moment, col_moment]).astype(jnp.float32)
  else:
    rows, cols = jnp.indices(fg.shape, dtype=jnp.float32)
    weight = fg.astype(jnp.float32)
    area = weight.sum()
    moments = jnp.stack([(rows * weight).sum(), (cols * weight).sum()])
  centroid = moments / jnp.maximum(area, 1.0)
  return jnp.where(area > 0, centroid, image_center)


def _sample(fg: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """fg[rows, cols] for integer coordinates, False outside the image."""
  height, width = fg.shape
  inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
  values = fg[jnp.clip(rows, 0, height - 1), jnp.clip(cols, 0, width - 1)]
  return values & inside


def rotate_mask(fg: jax.Array, angle_deg: jax.Array, center: jax.Array,
                interp: str = 'nearest') -> jax.Array:
  """Rotates a binary mask counter-clockwise (as displayed, rows down) about `center`.

  `interp='nearest'` samples the nearest source pixel. `'bilinear_floor'` mimics the reference's
  `skimage.transform.rotate(order=1)` followed by a cast to uint8: a pixel stays foreground only
  where every source pixel with a non-zero bilinear weight is foreground.
  """
  rows, cols = jnp.indices(fg.shape, dtype=jnp.float32)
  theta = jnp.deg2rad(angle_deg.astype(jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  d_row, d_col = rows - center[0], cols - center[1]
  # Inverse map: the output pixel takes the source pixel rotated back by -θ.
  src_row = cos * d_row + sin * d_col + center[0]
  src_col = cos * d_col - sin * d_row + center[1]
  if interp == 'nearest':
    return _sample(fg, jnp.floor(src_row + 0.5).astype(jnp.int32),
                   jnp.floor(src_col + 0.5).astype(jnp.int32))
  row0, col0 = jnp.floor(src_row), jnp.floor(src_col)
  frac_row, frac_col = src_row - row0, src_col - col0
  row0, col0 = row0.astype(jnp.int32), col0.astype(jnp.int32)
  # Float32 coordinates of exact grid points carry ~1e-6 noise; such tiny weights are zero.
  eps = 1e-4
  result = jnp.ones(fg.shape, bool)
  for dr, weight_row in ((0, 1 - frac_row), (1, frac_row)):
    for dc, weight_col in ((0, 1 - frac_col), (1, frac_col)):
      needed = (weight_row > eps) & (weight_col > eps)
      result &= ~needed | _sample(fg, row0 + dr, col0 + dc)
  return result


def translate_mask(mask: jax.Array, shift_row: jax.Array, shift_col: jax.Array) -> jax.Array:
  """out[r, c] = mask[r - shift_row, c - shift_col], zero fill."""
  height, width = mask.shape
  rows = jnp.arange(height) - shift_row
  cols = jnp.arange(width) - shift_col
  inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
  moved = mask[jnp.clip(rows, 0, height - 1)][:, jnp.clip(cols, 0, width - 1)]
  return moved & inside


def step_translator(mask: jax.Array, offset: jax.Array, max_step: int
                    ) -> Callable[[jax.Array], jax.Array]:
  """step ↦ translate_mask(mask, step·offset[0], step·offset[1]) for steps in [0, max_step].

  The mask is zero-padded once and each translation is one contiguous window of the padded copy
  (a dynamic slice), much cheaper than translate_mask's per-pixel gathers; the bisection
  translates the same rotated mask up to max_iters times. Offsets must be in {-1, 0, 1}.
  """
  height, width = mask.shape
  # A shift of the full height (width) already empties the mask, so larger pads are never needed.
  pad_row, pad_col = min(max_step, height), min(max_step, width)
  padded = jnp.pad(mask, ((pad_row, pad_row), (pad_col, pad_col)))

  def translate(step):
    shift_row = jnp.clip(step * offset[0], -pad_row, pad_row)
    shift_col = jnp.clip(step * offset[1], -pad_col, pad_col)
    return lax.dynamic_slice(padded, (pad_row - shift_row, pad_col - shift_col), mask.shape)

  return translate


def bisect_packed(packed_fg: jax.Array, translate: Callable[[jax.Array], jax.Array],
                  below: jax.Array, at_most: jax.Array, *, max_step: int, max_iters: int
                  ) -> tuple[jax.Array, jax.Array]:
  """`bisect_step` on bit-packed masks: `translate` maps a step to the packed translated mask
  (`packed_step_translator`). The same steps and evaluation counts as on bool pixels, at about
  1/32 of the memory traffic per evaluation."""

  def keep_going(state):
    left, right, count, done, _ = state
    return (left < right) & (count < max_iters) & ~done

  def one_evaluation(state):
    left, right, count, _, _ = state
    middle = (left + right) // 2
    changed = morphology.popcount(translate(middle) ^ packed_fg)
    too_noisy = changed >= at_most
    too_clean = changed < below
    return (jnp.where(too_clean, middle + 1, left), jnp.where(too_noisy, middle - 1, right),
            count + 1, ~too_noisy & ~too_clean, middle)

  zero = jnp.int32(0)
  init = (zero, jnp.int32(max_step), zero, jnp.bool_(False), zero)
  _, _, count, _, step = lax.while_loop(keep_going, one_evaluation, init)
  return step, count


def packed_step_translator(packed: jax.Array, width: int, offset: jax.Array, max_step: int
                           ) -> Callable[[jax.Array], jax.Array]:
  """`step_translator` on a bit-packed mask: step ↦ packed translation by step·offset.

  The packed mask is zero-padded once; each translation is one dynamic slice of it and a funnel
  shift of the words (`morphology.translate_packed`), no per-pixel gather even under vmap.
  """
  height = packed.shape[-2]
  # A shift of the full height (width) already empties the mask, so larger shifts are clipped.
  max_row, max_col = min(max_step, height), min(max_step, width)
  pad_row, pad_words = morphology.translation_pads(max_row, max_col)
  padded = jnp.pad(packed, ((pad_row, pad_row), (pad_words, pad_words)))

  def translate(step):
    shift_row = jnp.clip(step * offset[0], -max_row, max_row)
    shift_col = jnp.clip(step * offset[1], -max_col, max_col)
    return morphology.translate_packed(padded, shift_row, shift_col, pad_row, pad_words,
                                       (height, width))

  return translate


def bisect_step(fg: jax.Array, rotated: jax.Array, offset: jax.Array, below: jax.Array,
                at_most: jax.Array, *, max_step: int, max_iters: int
                ) -> tuple[jax.Array, jax.Array]:
  """The reference's integer bisection of the translation step.

  With a = #(translated XOR fg): noise < β ⟺ a < `below`, noise > β ⟺ a ≥ `at_most`.
  Returns (the last evaluated step, number of evaluations).
  """
  translate = packed_step_translator(morphology.pack_bits(rotated.astype(bool)), fg.shape[-1],
                                     offset, max_step)
  return bisect_packed(morphology.pack_bits(fg.astype(bool)), translate, below, at_most,
                       max_step=max_step, max_iters=max_iters)


# ------------------------------------------------------------------------------------------------
# float64 decisions of the reference, tabulated by foreground size
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _beta_tables(beta: float, max_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
  """Integer tables over n = |fg₀| ∈ [0, max_size] of the reference's float64 decisions.

  Returns (dilate target n + int(n·β), erode target n - int(n·β), below, at_most) where, for a
  changed-pixel count a, float64(a / n) < β ⟺ a < below[n] and float64(a / n) > β ⟺ a ≥ at_most[n].
  """
  sizes = np.arange(max_size + 1, dtype=np.int64)
  changed = (sizes * beta).astype(np.int64)  # int() truncation, as the reference
  base = np.maximum(np.floor(sizes * beta).astype(np.int64) - 2, 0)
  candidates = base[:, None] + np.arange(6)[None, :]
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio = candidates / sizes[:, None]
  below = base + (ratio < beta).sum(axis=1)
  at_most = base + (ratio <= beta).sum(axis=1)
  tables = (sizes + changed, sizes - changed, below, at_most)
  return tuple(t.astype(np.int32) for t in tables)


# ------------------------------------------------------------------------------------------------
# One binary mask, one sample
# ------------------------------------------------------------------------------------------------


def _corrupt_binary(fg: jax.Array, type_id: jax.Array, angle: jax.Array, offset: jax.Array, *,
                    tables: tuple[np.ndarray, ...], max_step: int, max_iters: int, center: str,
                    interp: str, branches: str = 'all') -> tuple[jax.Array, jax.Array, jax.Array]:
  """Corrupts one binary mask with the given type. Returns (mask, step, iterations).

  `branches` ('all' | 'morph' | 'affine') leaves out the program of the other types when the
  caller knows them: under vmap every branch of lax.switch is computed for every sample.
  """
  height, width = fg.shape
  packed = morphology.pack_bits(fg)
  size = morphology.popcount(packed)
  dilate_target, erode_target, below, at_most = (jnp.asarray(t)[size] for t in tables)
  no_step = jnp.int32(-1)

  def morph(_):
    erode = type_id == ERODE
    target = jnp.where(erode, erode_target, dilate_target)
    result, iterations = morph_packed_to_target(packed, width, target, erode)
    return morphology.unpack_bits(result, width), no_step, iterations

  def affine(_):
    rotated = rotate_mask(fg, angle, rotation_center(fg, center, packed), interp)
    # The packed copy is the rotation's only consumer: XLA fuses the rotation's gather into
    # each consumer, so a second one (a bool translation) would repeat the float index
    # arithmetic of every pixel.
    translate = packed_step_translator(morphology.pack_bits(rotated), width, offset, max_step)
    step, count = bisect_packed(packed, translate, below, at_most, max_step=max_step,
                                max_iters=max_iters)
    return morphology.unpack_bits(translate(step), width), step, count

  if branches == 'morph':
    mask, step, iterations = morph(None)
  elif branches == 'affine':
    mask, step, iterations = affine(None)
  else:
    # Dilate and erode share one program (one distance transform), so a batch with mixed types
    # computes two branches, not three.
    mask, step, iterations = lax.cond(type_id == AFFINE, affine, morph, None)
  empty = size == 0
  return jnp.where(empty, fg, mask), step, iterations


def _foreground_stack(mask: jax.Array, num_classes: int) -> jax.Array:
  """(num_classes - 1, H, W) bool: one binary mask per foreground class; 255 is never one."""
  if num_classes == 2:
    return ((mask >= 1) & (mask != IGNORE))[None]
  classes = jnp.arange(1, num_classes, dtype=mask.dtype)
  return mask[None] == classes[:, None, None]


def _paint(noisy_fg: jax.Array, paint_order: str) -> jax.Array:
  """Class map from per-class masks: later-painted classes overwrite earlier ones."""
  num_fg = noisy_fg.shape[0]
  classes = jnp.arange(1, num_fg + 1, dtype=jnp.int32)[:, None, None]
  if paint_order == 'ascending':  # the highest class present wins
    return jnp.max(jnp.where(noisy_fg, classes, 0), axis=0)
  lowest = jnp.min(jnp.where(noisy_fg, classes, num_fg + 1), axis=0)
  return jnp.where(lowest > num_fg, 0, lowest)


def _draw(key: jax.Array, type_probs: Sequence[float], max_angle: float,
          num_directions: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(type id, angle in degrees, direction id) for one image or one class."""
  key_type, key_angle, key_direction = jax.random.split(key, 3)
  type_id = jax.random.choice(key_type, len(TYPE_NAMES), p=jnp.asarray(type_probs, jnp.float32))
  angle = jax.random.uniform(key_angle, (), jnp.float32, -max_angle, max_angle)
  direction = jax.random.randint(key_direction, (), 0, num_directions)
  return type_id.astype(jnp.int32), angle, direction.astype(jnp.int32)


def corrupt(key: jax.Array, mask: jax.Array, *, beta: float,
            type_probs: Sequence[float] = DEFAULT_PARAMS['type_probs'],
            max_angle: float = DEFAULT_PARAMS['max_angle'],
            max_step: int = DEFAULT_PARAMS['max_step'],
            directions: str = DEFAULT_PARAMS['directions'],
            center: str = DEFAULT_PARAMS['center'],
            interp: str = DEFAULT_PARAMS['interp'],
            shift_mode: str = DEFAULT_PARAMS['shift_mode'],
            max_iters: int = DEFAULT_PARAMS['max_iters'],
            num_classes: int = 2,
            type_per: str = DEFAULT_PARAMS['type_per'],
            paint_order: str = DEFAULT_PARAMS['paint_order'],
            branches: str = 'all',
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Applies the α/β corruption to one label map (the α subset is chosen elsewhere).

  Args:
    key: per-sample PRNG key.
    mask: (H, W) integer class map; 255 = ignore, never modified. With `num_classes=2` every
      label in [1, 254] is foreground and the output uses {0, 1, 255}.
    beta: target ρ_fg = (FP+FN)/|fg₀| per class mask, a Python float in (0, 1].
    type_probs: probabilities of dilate, erode, affine.
    max_angle: rotation angle ~ U(-max_angle, max_angle) degrees.
    max_step: translation step searched in [0, max_step] pixels.
    directions: 'code7' | 'all8' direction list (see `DIRECTIONS`).
    center: 'centroid' | 'image' rotation centre.
    interp: 'nearest' | 'bilinear_floor' rotation resampling.
    shift_mode: 'signed' | 'code' ('code' applies |offset|, as the reference's translate_label).
    max_iters: most bisection evaluations.
    num_classes: C including background; classes 1..C-1 are corrupted independently.
    type_per: 'image' (one type, angle and direction shared by the classes) | 'class'.
    paint_order: 'ascending' | 'descending' overwrite order where class masks overlap.
    branches: 'all', or 'morph' / 'affine' when every class of the sample is known to get a
      dilate-or-erode / an affine type (see `corrupt_selected`); the output is then the same as
      with 'all', only the other program is left out.

  Returns:
    (noisy mask with the dtype of `mask`, log). Per-class log entries are scalars when
    `num_classes == 2` and have shape (C-1,) otherwise: 'type' (index into `TYPE_NAMES`), 'angle'
    (degrees, drawn even when unused), 'direction' (index into the direction list), 'step' (-1
    unless affine), 'iterations' (dilations / erosions, or bisection evaluations for affine),
    'empty' (the class mask was empty and is unchanged), 'rho_fg' (NaN if empty), 'dice' (1 if
    both empty). Sample-level scalars: 'rho_pix' (changed / valid pixels), 'rho_fg_all' and
    'dice_all' (pooled over classes; equal to the per-class values when binary).
  """
  beta = _static_beta(beta)
  _check_choice('directions', directions, tuple(DIRECTIONS))
  _check_choice('center', center, CENTERS)
  _check_choice('interp', interp, INTERPS)
  _check_choice('shift_mode', shift_mode, SHIFT_MODES)
  _check_choice('type_per', type_per, TYPE_PER)
  _check_choice('paint_order', paint_order, PAINT_ORDERS)
  _check_choice('branches', branches, BRANCHES)
  if mask.ndim != 2:
    raise ConfigError(f'abn.corrupt expects one (H, W) mask, got shape {mask.shape}')

  tables = _beta_tables(beta, mask.size)
  offsets = np.asarray(DIRECTIONS[directions], np.int32)
  if shift_mode == 'code':
    offsets = np.abs(offsets)
  offsets = jnp.asarray(offsets)
  clean_fg = _foreground_stack(mask, num_classes)
  num_fg = clean_fg.shape[0]

  if type_per == 'image':
    draws = _draw(key, type_probs, max_angle, len(offsets))
    draws_axis = None
  else:
    class_keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(1, num_fg + 1))
    draws = jax.vmap(lambda k: _draw(k, type_probs, max_angle, len(offsets)))(class_keys)
    draws_axis = 0
  type_id, angle, direction = draws
  corrupt_one = functools.partial(_corrupt_binary, tables=tables, max_step=max_step,
                                  max_iters=max_iters, center=center, interp=interp,
                                  branches=branches)
  # Shared draws stay unbatched, so lax.switch runs one branch for an unbatched sample.
  in_axes = (0, draws_axis, draws_axis, draws_axis)
  noisy_fg, step, iterations = jax.vmap(corrupt_one, in_axes=in_axes)(
      clean_fg, type_id, angle, offsets[direction])

  valid = mask != IGNORE
  painted = _paint(noisy_fg, paint_order)
  noisy = jnp.where(valid, painted, IGNORE).astype(mask.dtype)

  final_fg = (noisy[None] == jnp.arange(1, num_fg + 1, dtype=noisy.dtype)[:, None, None])
  per_class = {
      'type': jnp.broadcast_to(type_id, (num_fg,)),
      'angle': jnp.broadcast_to(angle, (num_fg,)),
      'direction': jnp.broadcast_to(direction, (num_fg,)),
      'step': step,
      'iterations': iterations,
  }
  return noisy, achieved_noise_log(mask, noisy, valid, clean_fg, final_fg, per_class)


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ConfigError(f'abn: unknown {name} {value!r}; valid choices: {", ".join(choices)}')


def _static_beta(beta: Any) -> float:
  try:
    beta = float(beta)
  except jax.errors.ConcretizationTypeError:
    raise ConfigError('abn: beta must be a Python float (it selects the compiled program), '
                      'not a traced value') from None
  if not 0.0 < beta <= 1.0:
    raise ConfigError(f'abn: beta must be in (0, 1], got {beta}')
  return beta


def _as_int(name: str, value: Any, low: int, high: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ConfigError(f'abn: {name} must be an integer, got {value!r}')
  if value < low or (high is not None and value > high):
    bound = f'[{low}, {high}]' if high is not None else f'>= {low}'
    raise ConfigError(f'abn: {name} must be {bound}, got {value}')
  return int(value)


def _as_float(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ConfigError(f'abn: {name} must be a number, got {value!r}')
  return float(value)


def resolve_params(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """Defaults filled in and every value checked; `max_label` is the largest non-ignore label.

  Raises:
    ConfigError: an unknown key or an out-of-range value; the message names the valid ones.
  """
  unknown = sorted(set(params) - set(DEFAULT_PARAMS))
  if unknown:
    raise ConfigError(f'abn: unknown parameter(s) {", ".join(map(repr, unknown))}; '
                      f'valid keys: {", ".join(DEFAULT_PARAMS)}')
  resolved = {**DEFAULT_PARAMS, **params}
  alpha = _as_float('alpha', resolved['alpha'])
  if not 0.0 <= alpha <= 1.0:
    raise ConfigError(f'abn: alpha must be in [0, 1], got {alpha}')
  resolved['alpha'] = alpha
  resolved['beta'] = _static_beta(_as_float('beta', resolved['beta']))
  probs = resolved['type_probs']
  if (not isinstance(probs, (tuple, list)) or len(probs) != len(TYPE_NAMES) or
      any(not isinstance(p, (int, float)) or isinstance(p, bool) or p < 0 for p in probs) or
      not math.isclose(sum(probs), 1.0, abs_tol=1e-6)):
    raise ConfigError(f'abn: type_probs must be 3 non-negative numbers summing to 1 '
                      f'(dilate, erode, affine), got {probs!r}')
  resolved['type_probs'] = tuple(float(p) for p in probs)
  max_angle = _as_float('max_angle', resolved['max_angle'])
  if not 0.0 <= max_angle <= 180.0:
    raise ConfigError(f'abn: max_angle must be in [0, 180] degrees, got {max_angle}')
  resolved['max_angle'] = max_angle
  resolved['max_step'] = _as_int('max_step', resolved['max_step'], 0)
  resolved['max_iters'] = _as_int('max_iters', resolved['max_iters'], 1)
  _check_choice('directions', resolved['directions'], tuple(DIRECTIONS))
  _check_choice('center', resolved['center'], CENTERS)
  _check_choice('interp', resolved['interp'], INTERPS)
  _check_choice('shift_mode', resolved['shift_mode'], SHIFT_MODES)
  _check_choice('type_per', resolved['type_per'], TYPE_PER)
  _check_choice('paint_order', resolved['paint_order'], PAINT_ORDERS)
  if resolved['num_classes'] is None:
    resolved['num_classes'] = max(int(max_label) + 1, 2)
  num_classes = _as_int('num_classes', resolved['num_classes'], 2, IGNORE)
  if num_classes > 2 and max_label >= num_classes:
    raise ConfigError(f'abn: num_classes={num_classes} but the masks contain label {max_label}')
  resolved['num_classes'] = num_classes
  return resolved


def corrupt_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
  """The keyword arguments of `corrupt` from resolved protocol params."""
  return {name: value for name, value in params.items() if name != 'alpha'}


def describe(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
             ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  """Noise-log fields of one corrupted sample from its host-side `corrupt` log.

  Returns (type, params, per-class [{'type', 'params'}]). The type is 'empty' for an empty class
  mask (left unchanged) and 'mixed' at sample level when classes got different types.
  """
  directions = DIRECTIONS[params['directions']]
  per_class = {name: np.atleast_1d(log[name]) for name in
               ('type', 'angle', 'direction', 'step', 'iterations', 'empty')}
  classes = []
  for c in range(per_class['type'].shape[0]):
    if per_class['empty'][c]:
      classes.append({'type': 'empty', 'params': {'beta': params['beta']}})
      continue
    type_name = TYPE_NAMES[int(per_class['type'][c])]
    class_params: dict[str, Any] = {'beta': params['beta']}
    if type_name == 'affine':
      direction = int(per_class['direction'][c])
      class_params.update(
          angle=float(per_class['angle'][c]), direction=list(directions[direction]),
          direction_id=direction, step=int(per_class['step'][c]),
          bisect_iterations=int(per_class['iterations'][c]), center=params['center'],
          shift_mode=params['shift_mode'])
    else:
      class_params['iterations'] = int(per_class['iterations'][c])
    classes.append({'type': type_name, 'params': class_params})

  types = {entry['type'] for entry in classes} - {'empty'}
  if not types:
    return 'empty', {'beta': params['beta']}, classes
  if len(classes) == 1:
    return classes[0]['type'], dict(classes[0]['params']), classes
  sample_type = types.pop() if len(types) == 1 else 'mixed'
  sample_params = {'beta': params['beta'], 'type_per': params['type_per']}
  if params['type_per'] == 'image' and sample_type == 'affine':
    shared = next(entry['params'] for entry in classes if entry['type'] == 'affine')
    sample_params.update({k: shared[k] for k in ('angle', 'direction', 'direction_id')})
  return sample_type, sample_params, classes


# ------------------------------------------------------------------------------------------------
# Batched generation grouped by type (an optional fast path for the generator)
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _type_program(type_probs: tuple[float, ...], max_angle: float, num_directions: int):
  """jit(vmap) of the image-level type draw, exactly as `corrupt` draws it."""

  def one(base_key, index):
    return _draw(jax.random.fold_in(base_key, index), type_probs, max_angle, num_directions)[0]

  return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def corrupt_selected(params: Mapping[str, Any], seed: int, masks: np.ndarray,
                     indices: np.ndarray, chunk: int = 16
                     ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
  """`corrupt` over the given masks, grouped by corruption type: a faster, bit-identical
  equivalent of the generator's `vmap(corrupt)` over chunks.

  Under vmap, lax.switch computes every branch for every sample, so a mixed batch pays for the
  distance transform and the affine bisection alike. The type is a pure function of the sample
  key, so it is drawn first (cheap) and each group runs its own program. With `type_per='class'`
  and several classes the types differ within a sample, and the ungrouped program is used.

  Args:
    params: resolved 'abn' params (`resolve_params`).
    seed: the noise seed; keys are fold_in(fold_in(key(seed), protocol id), index), as in
      `nsegjax.noise.generate.sample_key`.
    masks: uint8 [N, H, W] masks of the corrupted samples.
    indices: [N] their sample ids.
    chunk: samples per compiled call.

  Returns:
    (noisy uint8 [N, H, W], one host-side log dict per mask, in order) — what the generator's
    `_corrupt_selected` returns.
  """
  from nsegjax.noise import generate  # pylint: disable=g-import-not-at-top  (it imports us)
  masks = np.asarray(masks)
  indices = np.asarray(indices)
  if len(masks) == 0:
    return masks.copy(), []
  kwargs = corrupt_kwargs(params)
  frozen = tuple(sorted(kwargs.items()))
  with jax.default_device(jax.devices('cpu')[0]):
    base_key = jax.random.fold_in(jax.random.key(seed), PROTOCOL.id)
    if kwargs['type_per'] == 'class' and kwargs['num_classes'] > 2:
      groups = [({'branches': 'all'}, np.arange(len(masks)), chunk)]
    else:
      num_directions = len(DIRECTIONS[kwargs['directions']])
      draw_types = _type_program(tuple(kwargs['type_probs']), kwargs['max_angle'],
                                 num_directions)
      types = np.asarray(draw_types(base_key, indices.astype(np.uint32)))
      groups = [({'branches': 'morph'}, np.flatnonzero(types != AFFINE), chunk),
                ({'branches': 'affine'}, np.flatnonzero(types == AFFINE), chunk)]
    return generate.run_grouped(corrupt, frozen, base_key, masks, indices, groups)


PROTOCOL = register(NoiseProtocol(
    name='abn',
    version=1,
    corrupt=lambda key, mask, params: corrupt(key, mask, **corrupt_kwargs(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], 'abn'),
    resolve_params=resolve_params,
    describe=describe,
    default_params=MappingProxyType(DEFAULT_PARAMS),
    corrupt_selected=corrupt_selected,
))
