"""Resampling that matches PyTorch, shared by models and methods (METHODS.md §3.1 "Resampling").

`jax.image.resize` uses half-pixel centres; the published code uses `align_corners=True` for
features and logits and floor indexing for labels, so these are written out. Bilinear resampling
is two small interpolation matrices applied with einsum: on CPU and GPU a matmul beats a gather,
and its transpose is the exact backward pass.
"""
import jax.numpy as jnp
import numpy as np


def align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] linear-interpolation weights with source coordinate dst·(in−1)/(out−1)."""
  if out_size == 1 or in_size == 1:
    source = np.zeros(out_size)
  else:
    source = np.arange(out_size) * (in_size - 1) / (out_size - 1)
  low = np.clip(np.floor(source).astype(int), 0, in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = source - low
  weights = np.zeros((out_size, in_size), np.float32)
  np.add.at(weights, (np.arange(out_size), low), 1.0 - frac)
  np.add.at(weights, (np.arange(out_size), high), frac)
  return weights


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """Bilinear resize of [B, H, W, C] with align_corners=True, computed in x's dtype."""
  rows = jnp.asarray(align_corners_matrix(x.shape[1], size[0]), x.dtype)
  cols = jnp.asarray(align_corners_matrix(x.shape[2], size[1]), x.dtype)
  if (x.shape[1], x.shape[2]) == tuple(size):
    return x
  return jnp.einsum('oh,bhwc,pw->bopc', rows, x, cols)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """PyTorch 'nearest' source indices: ⌊dst·in/out⌋."""
  return np.minimum(np.floor(np.arange(out_size) * in_size / out_size).astype(int), in_size - 1)


def resize_labels_nearest(labels: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """Nearest resize of an integer label map [B, H, W] (or one-hot [B, H, W, C])."""
  rows = nearest_indices(labels.shape[1], size[0])
  cols = nearest_indices(labels.shape[2], size[1])
  return labels[:, rows][:, :, cols]
