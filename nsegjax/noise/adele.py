"""ADELE-style under / over segmentation (METHODS.md §2.5, SegTHOR).

Source: [code: Kangningthu/ADELE]. Every slice (α = 1 by default) draws mode ∈ {under, over}
and k ∈ {2, 3, 4} (`per='slice'`, or independently per class with `per='class'`). For each
class the binary mask is resized so its foreground is about `target_area` pixels, eroded (under)
or dilated (over) with k iterations of the 3×3 square, resized back with cubic interpolation
and thresholded at `thresh`. Under: removed pixels become background. Over: added pixels take
the class only where the clean label was background.

The resized image has a traced size, so it is never built: a static `canvas`×`canvas` window of
it, centred on the foreground's bounding box and aligned with its pixel grid, is resampled
directly (`morphology.resize`, nearest down, cubic back, as interpolation-matrix products). The
outside of the resized image is background, so the erosion also works from the image border
(scipy's `border_value=0`). A class whose resized bounding box, plus a margin of k + 2 pixels for
the morphology and the cubic kernel, does not fit in the canvas is left unchanged and logged as
'clipped'; an empty class is left unchanged and logged as 'empty'.

The nearest resize down selects pixels by index (its weight matrices are one-hot), the k
square steps run on bit-packed rows, and area and bounding box come from population counts; the
cubic resize back stays two float32 matmuls, whose accumulation order fixes the thresholded
result (an exact 4-tap version needs gathers that cost more on CPU than the matmuls).

Not implemented: METHODS' optional reference modes (fixed-kernel morphology per class, random
flips at rate 0.05).
"""
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax.errors import ConfigError
from nsegjax.noise import morphology
from nsegjax.noise.abn import _foreground_stack, _paint
from nsegjax.noise.base import achieved_noise_log
from nsegjax.noise.base import is_int as _is_int, is_number as _is_number
from nsegjax.noise.base import NoiseProtocol, alpha_subset, register

NAME = 'adele'
MODE_NAMES = ('under', 'over')
UNDER, OVER = 0, 1
STATUS_NAMES = ('ok', 'empty', 'clipped')
OK, EMPTY, CLIPPED = 0, 1, 2
PER_CHOICES = ('slice', 'class')
PAINT_ORDERS = ('ascending', 'descending')
IGNORE = 255

DEFAULT_PARAMS: dict[str, Any] = {
    'alpha': 1.0,  # noise level 1: every slice is corrupted
    'modes': ('under', 'over'),  # drawn uniformly from these
    'iterations': (2, 3, 4),  # k, drawn uniformly from these
    'per': 'slice',  # slice | class: one (mode, k) per slice or per class
    'target_area': 1000,  # foreground pixels after the first resize
    'thresh': 0.5,  # threshold of the cubic resize back
    'canvas': 128,  # static side of the resized window
    'num_classes': None,  # None: inferred from the clean masks (largest label + 1, at least 2)
    'paint_order': 'ascending',  # where over-segmented classes meet: which class wins
}


def _bounds(any_along: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(first, one past last) index of the True entries of a 1-D bool vector."""
  index = jnp.arange(any_along.shape[0])
  first = jnp.min(jnp.where(any_along, index, any_along.shape[0]))
  last = jnp.max(jnp.where(any_along, index, -1))
  return first, last + 1


def _nearest_indices(out_size: int, in_size: int, scale: jax.Array, translation: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
  """Source index of each output pixel of `morphology.resize(..., 'nearest')` along one axis,
  and whether it lies in the image: the one-hot rows of its weight matrix, as indices."""
  centres = (jnp.arange(out_size, dtype=jnp.float32) + 0.5 - translation) / scale
  source = jnp.floor(centres)
  inside = (source >= 0) & (source < in_size)
  return jnp.clip(source, 0, in_size - 1).astype(jnp.int32), inside


def _resize_nearest(fg: jax.Array, canvas: int, scale: jax.Array, shift: jax.Array
                    ) -> jax.Array:
  """`morphology.resize(fg, (canvas, canvas), scale, shift, 'nearest') > 0.5` by indexing.

  The weight matrices are one-hot (or zero) rows, so the two matmuls only select pixels: the
  same result as gathers, without the ~2·canvas·H·W multiply-adds.
  """
  height, width = fg.shape
  rows, rows_in = _nearest_indices(canvas, height, scale, shift[0])
  cols, cols_in = _nearest_indices(canvas, width, scale, shift[1])
  return fg[rows][:, cols] & rows_in[:, None] & cols_in[None, :]


def _dilate_square(mask: jax.Array, iterations: jax.Array, max_iterations: int) -> jax.Array:
  """`morphology.dilate_square` (zero outside) for a traced k ≤ max_iterations (static).

  k steps of the 3×3 square on bit-packed rows, in a loop of max_iterations steps with the
  steps past k masked off: ~2× cheaper on the small canvas than two 1-D distance transforms
  (and ~3× cheaper than the same steps on bool pixels, which XLA does not vectorise well).
  """
  width = mask.shape[-1]
  valid = jnp.asarray(morphology.valid_bits(width))

  def step(index, grown):
    rows = (grown | morphology.shift_words_right(grown) |
            morphology.shift_words_left(grown)) & valid
    square = (rows | morphology.shift_rows_packed(rows, 1) |
              morphology.shift_rows_packed(rows, -1))
    return jnp.where(index < iterations, square, grown)

  packed = lax.fori_loop(0, max_iterations, step, morphology.pack_bits(mask))
  return morphology.unpack_bits(packed, width)


def corrupt_binary(fg: jax.Array, mode: jax.Array, iterations: jax.Array, *, target_area: int,
                   thresh: float, canvas: int, max_iterations: int | None = None
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Resize → k square erosions / dilations → cubic resize back → threshold, for one class.

  `max_iterations` (static, ≥ every k) lets the morphology run as masked shifts instead of
  two distance transforms; None keeps the transforms (any k).

  Returns:
    (morphed mask, scale factor, status id); the mask is `fg` unless the status is OK.
  """
  width = fg.shape[-1]
  packed = morphology.pack_bits(fg)
  # Area and bounding box from the packed rows: no int32 pass over the pixels, and no column
  # reduction (a strided one on CPU).
  area = morphology.popcount(packed)
  row_any = jnp.any(packed != 0, axis=-1)
  col_any = morphology.unpack_bits(jnp.bitwise_or.reduce(packed, axis=0)[None], width)[0]
  scale = jnp.sqrt(target_area / jnp.maximum(area, 1).astype(jnp.float32))
  (row_lo, row_hi), (col_lo, col_hi) = _bounds(row_any), _bounds(col_any)
  low = jnp.stack([row_lo, col_lo]).astype(jnp.float32) * scale
  high = jnp.stack([row_hi, col_hi]).astype(jnp.float32) * scale
  # An integer shift keeps the canvas on the resized image's pixel grid.
  shift = jnp.round(canvas / 2 - (low + high) / 2)
  margin = iterations.astype(jnp.float32) + 2
  fits = jnp.all(low + shift >= margin) & jnp.all(high + shift <= canvas - margin)

  small = _resize_nearest(fg, canvas, scale, shift)
  # Erosion is the dilation of the complement; one dilation serves both modes.
  over = mode == OVER
  flipped = jnp.pad(small == over, 1, constant_values=~over)
  if max_iterations is None:
    grown = morphology.dilate_square(flipped, iterations)[1:-1, 1:-1]
  else:
    grown = _dilate_square(flipped, iterations, max_iterations)[1:-1, 1:-1]
  morphed = grown == over
  back = morphology.resize(morphed, fg.shape, 1.0 / scale, -shift / scale, 'cubic') > thresh

  status = jnp.where(area == 0, EMPTY, jnp.where(fits, OK, CLIPPED)).astype(jnp.int32)
  return jnp.where(status == OK, back, fg), scale, status


def _draw(key: jax.Array, modes: Sequence[str], iterations: Sequence[int]
          ) -> tuple[jax.Array, jax.Array]:
  key_mode, key_k = jax.random.split(key)
  mode_ids = jnp.asarray([MODE_NAMES.index(m) for m in modes], jnp.int32)
  mode = mode_ids[jax.random.randint(key_mode, (), 0, len(modes))]
  k = jnp.asarray(iterations, jnp.int32)[jax.random.randint(key_k, (), 0, len(iterations))]
  return mode, k


def corrupt(key: jax.Array, mask: jax.Array, *,
            modes: Sequence[str] = DEFAULT_PARAMS['modes'],
            iterations: Sequence[int] = DEFAULT_PARAMS['iterations'],
            per: str = DEFAULT_PARAMS['per'],
            target_area: int = DEFAULT_PARAMS['target_area'],
            thresh: float = DEFAULT_PARAMS['thresh'],
            canvas: int = DEFAULT_PARAMS['canvas'],
            num_classes: int = 2,
            paint_order: str = DEFAULT_PARAMS['paint_order'],
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Under- or over-segments every foreground class of one label map.

  Args:
    key: per-sample PRNG key.
    mask: (H, W) integer class map; 255 = ignore, never modified. With `num_classes=2` every
      label in [1, 254] is one foreground; over-segmentation adds label 1.
    modes: the modes drawn from ('under', 'over').
    iterations: the k drawn from.
    per: 'slice' (one mode and k for all classes) | 'class'.
    target_area: foreground size after the first resize.
    thresh: threshold of the cubic resize back.
    canvas: static side of the resized window.
    num_classes: C including background.
    paint_order: 'ascending' | 'descending' where over-segmented classes meet.

  Returns:
    (noisy mask with the dtype of `mask`, log). Per-class entries (scalars when binary, else
    shape (C-1,)): 'mode' (index into `MODE_NAMES`), 'iterations', 'scale' (first resize
    factor), 'status' (index into `STATUS_NAMES`), 'empty', 'rho_fg', 'dice'. Sample-level:
    'rho_pix', 'rho_fg_all', 'dice_all'.
  """
  if mask.ndim != 2:
    raise ConfigError(f'adele.corrupt expects one (H, W) mask, got shape {mask.shape}')
  if per not in PER_CHOICES or paint_order not in PAINT_ORDERS:
    raise ConfigError(f'adele: per must be one of {PER_CHOICES} and paint_order one of '
                      f'{PAINT_ORDERS}, got {per!r}, {paint_order!r}')
  clean_fg = _foreground_stack(mask, num_classes)
  num_fg = clean_fg.shape[0]
  if per == 'slice':
    mode, k = _draw(key, modes, iterations)
    mode, k = jnp.broadcast_to(mode, (num_fg,)), jnp.broadcast_to(k, (num_fg,))
  else:
    class_keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(1, num_fg + 1))
    mode, k = jax.vmap(lambda kk: _draw(kk, modes, iterations))(class_keys)

  morph = lambda fg, m, kk: corrupt_binary(fg, m, kk, target_area=target_area, thresh=thresh,
                                           canvas=canvas, max_iterations=max(iterations))
  result, scale, status = jax.vmap(morph)(clean_fg, mode, k)
  is_over = (mode == OVER)[:, None, None]
  removed = jnp.any(~is_over & clean_fg & ~result, axis=0)
  added = is_over & result & (mask == 0)[None]
  painted = _paint(added, paint_order)
  noisy = jnp.where(removed, 0, mask)
  noisy = jnp.where(painted > 0, painted, noisy).astype(mask.dtype)

  valid = mask != IGNORE
  if num_classes == 2:
    final_fg = ((noisy >= 1) & valid)[None]
  else:
    final_fg = noisy[None] == jnp.arange(1, num_fg + 1, dtype=noisy.dtype)[:, None, None]
  per_class = {
      'mode': mode,
      'iterations': k,
      'scale': scale,
      'status': status,
  }
  return noisy, achieved_noise_log(mask, noisy, valid, clean_fg, final_fg, per_class)


# ------------------------------------------------------------------------------------------------
# Parameters and log
# ------------------------------------------------------------------------------------------------


def _fail(message: str) -> None:
  raise ConfigError(f'{NAME}: {message}')


def resolve_params(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """Defaults filled in and every value checked.

  Raises:
    ConfigError: an unknown key or an out-of-range value; the message names the valid ones.
  """
  unknown = sorted(set(params) - set(DEFAULT_PARAMS))
  if unknown:
    _fail(f'unknown parameter(s) {", ".join(map(repr, unknown))}; valid keys: '
          f'{", ".join(DEFAULT_PARAMS)}')
  resolved = {**DEFAULT_PARAMS, **params}
  if not _is_number(resolved['alpha']) or not 0.0 <= resolved['alpha'] <= 1.0:
    _fail(f'alpha must be in [0, 1], got {resolved["alpha"]!r}')
  resolved['alpha'] = float(resolved['alpha'])
  modes = resolved['modes']
  modes = (modes,) if isinstance(modes, str) else modes
  if (not isinstance(modes, (list, tuple)) or not modes or
      any(m not in MODE_NAMES for m in modes)):
    _fail(f'modes must be a non-empty list of {", ".join(MODE_NAMES)}, got {modes!r}')
  resolved['modes'] = tuple(modes)
  ks = resolved['iterations']
  ks = (ks,) if _is_int(ks) else ks
  if not isinstance(ks, (list, tuple)) or not ks or any(not _is_int(k) or k < 0 for k in ks):
    _fail(f'iterations must be non-negative integers, got {ks!r}')
  resolved['iterations'] = tuple(int(k) for k in ks)
  if resolved['per'] not in PER_CHOICES:
    _fail(f'unknown per {resolved["per"]!r}; valid: {", ".join(PER_CHOICES)}')
  if resolved['paint_order'] not in PAINT_ORDERS:
    _fail(f'unknown paint_order {resolved["paint_order"]!r}; valid: {", ".join(PAINT_ORDERS)}')
  if not _is_number(resolved['target_area']) or resolved['target_area'] <= 0:
    _fail(f'target_area must be positive, got {resolved["target_area"]!r}')
  if not _is_number(resolved['thresh']) or not 0.0 < resolved['thresh'] < 1.0:
    _fail(f'thresh must be in (0, 1), got {resolved["thresh"]!r}')
  resolved['thresh'] = float(resolved['thresh'])
  canvas = resolved['canvas']
  if not _is_int(canvas) or canvas < 2 * (max(resolved['iterations']) + 2) + 1:
    _fail(f'canvas must be an integer larger than twice the margin k + 2, got {canvas!r}')
  num_classes = resolved['num_classes']
  if num_classes is None:
    num_classes = max(int(max_label) + 1, 2)
  if not _is_int(num_classes) or not 2 <= num_classes <= IGNORE:
    _fail(f'num_classes must be an integer in [2, 255], got {num_classes!r}')
  if num_classes > 2 and max_label >= num_classes:
    _fail(f'num_classes={num_classes} but the masks contain label {max_label}')
  resolved['num_classes'] = int(num_classes)
  return resolved


def corrupt_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
  return {name: value for name, value in params.items() if name != 'alpha'}


def describe(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
             ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  """(type, params, per-class entries); type 'under' / 'over' / 'mixed', or the status."""
  per_class = {name: np.atleast_1d(log[name]) for name in ('mode', 'iterations', 'scale',
                                                           'status', 'rho_fg')}
  classes = []
  for c in range(per_class['mode'].shape[0]):
    status = STATUS_NAMES[int(per_class['status'][c])]
    class_params = {'iterations': int(per_class['iterations'][c]),
                    'scale': float(per_class['scale'][c]), 'status': status}
    if status == 'ok':
      class_params['rho_fg'] = float(per_class['rho_fg'][c])
      type_name = MODE_NAMES[int(per_class['mode'][c])]
    else:
      type_name = status
    classes.append({'type': type_name, 'params': class_params})
  types = {entry['type'] for entry in classes} - {'empty', 'clipped'}
  if not types:
    status = 'empty' if all(e['type'] == 'empty' for e in classes) else 'clipped'
    return status, {'status': status}, classes
  if len(classes) == 1:
    return classes[0]['type'], dict(classes[0]['params']), classes
  sample_params = {'per': params['per']}
  if params['per'] == 'slice':
    sample_params['iterations'] = int(per_class['iterations'][0])
  return (types.pop() if len(types) == 1 else 'mixed'), sample_params, classes


PROTOCOL = register(NoiseProtocol(
    name=NAME,
    version=1,
    corrupt=lambda key, mask, params: corrupt(key, mask, **corrupt_kwargs(params)),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], NAME),
    resolve_params=resolve_params,
    describe=describe,
    default_params=MappingProxyType(DEFAULT_PARAMS),
))
