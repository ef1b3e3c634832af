"""Resampling that matches PyTorch's `F.interpolate` bit for bit in the index maths.

JCAS's reference code resizes with `nn.Upsample(mode='bilinear', align_corners=True)` and
`nn.Upsample(mode='nearest')`. `jax.image.resize` uses half-pixel centres for both, so its
grids differ; these functions rebuild PyTorch's grids instead.

Bilinear resampling is separable and linear, so it is two small matmuls with [out, in]
interpolation matrices (built once, in NumPy, from static shapes). On CPU, GPU and TPU a
matmul with a 64×64 or 256×64 matrix beats a gather of four neighbours per pixel, and its
transpose (the backward pass) is again a matmul rather than a scatter-add.
Nearest resampling of label maps keeps one source row/column per output, so it is a static
slice (strided when the picked indices are evenly spaced, as 256→64 is) or a static gather.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] float32 weights of 1-D bilinear resampling, align_corners=True.

  Mirrors PyTorch's CPU/CUDA kernels, float32 arithmetic included: scale = (in−1)/(out−1)
  (0 when out = 1), source = scale·dst, i0 = ⌊source⌋, i1 = min(i0 + 1, in − 1),
  λ1 = source − i0, λ0 = 1 − λ1.
  """
  scale = (np.float32(in_size - 1) / np.float32(out_size - 1)
           if out_size > 1 else np.float32(0.0))
  source = np.float32(scale) * np.arange(out_size, dtype=np.float32)
  i0 = np.floor(source).astype(np.int64)
  i0 = np.minimum(i0, in_size - 1)
  i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
  lam1 = np.clip(source - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
  lam0 = (np.float32(1.0) - lam1).astype(np.float32)
  weights = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(weights, (rows, i0), lam0)
  np.add.at(weights, (rows, i1), lam1)
  weights.setflags(write=False)
  return weights


@functools.lru_cache(maxsize=None)
def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index of every output position for PyTorch's (legacy) 'nearest' mode.

  ⌊dst·(in/out)⌋ with the scale rounded to float32 first, clamped to in − 1, exactly as
  `nearest_neighbor_compute_source_index`; 256→64 picks rows 0, 4, 8, ….
  """
  scale = np.float32(in_size) / np.float32(out_size)
  idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  idx = np.minimum(idx, in_size - 1)
  idx.setflags(write=False)
  return idx


def resize_bilinear(x, size, precision=jax.lax.Precision.HIGHEST):
  """Bilinear resize of an NHWC float array to `size` = (H_out, W_out), align_corners=True.

  Args:
    x: [B, H, W, C] floating array.
    size: static (H_out, W_out).
    precision: matmul precision; HIGHEST by default so that GPUs/TPUs do not round the
      inputs to TF32/bf16 (PyTorch computes these in full float32).

  Returns:
    [B, H_out, W_out, C] array of x's dtype.
  """
  _, h, w, _ = x.shape
  h_out, w_out = size
  if (h, w) == (h_out, w_out):
    return x
  if h != h_out:
    mh = jnp.asarray(bilinear_matrix(h, h_out), x.dtype)
    x = jnp.einsum('oh,bhwc->bowc', mh, x, precision=precision)
  if w != w_out:
    mw = jnp.asarray(bilinear_matrix(w, w_out), x.dtype)
    x = jnp.einsum('pw,bowc->bopc', mw, x, precision=precision)
  return x


def _take_static(x, indices: np.ndarray, axis: int):
  """x indexed along `axis` by static indices: a (strided) slice when they are evenly spaced."""
  n = len(indices)
  if n == x.shape[axis] and np.array_equal(indices, np.arange(n)):
    return x
  step = int(indices[1] - indices[0]) if n > 1 else 1
  if step > 0 and np.array_equal(indices, indices[0] + step * np.arange(n)):
    return jax.lax.slice_in_dim(x, int(indices[0]), int(indices[-1]) + 1, step, axis=axis)
  return jnp.take(x, jnp.asarray(indices), axis=axis)


def resize_nearest(x, size):
  """PyTorch 'nearest' resize of [B, H, W] or [B, H, W, C] arrays (labels, one-hots) to size.

  Labels keep their values (255 = ignore included): one-hot encoding then nearest
  resampling, as the reference code does, equals nearest resampling of the label map.
  """
  h_out, w_out = size
  x = _take_static(x, nearest_indices(x.shape[1], h_out), axis=1)
  return _take_static(x, nearest_indices(x.shape[2], w_out), axis=2)
