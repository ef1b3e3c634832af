"""Pixel affinity and differentiated affinity reasoning (DAR) of JCAS, METHODS.md §3.1.

Shapes: embeddings f and unit embeddings x̂ are [B, N, D]; logits Q and refined logits P are
[B, N, C]; the affinity A is [B, N, N].

    x̂ = ReLU(f) / (‖ReLU(f)‖₂ + 1e−9)          A = clip(x̂x̂ᵀ, 1e−10, 1)
    Â = A / max(Σ_k A_ik, 1e−12)               Ǎ = (1 − A) / max(Σ_k (1 − A)_ik, 1e−12)
    P = ½[(Q + ÂQ) + (Q − ǍQ)] = Q + ½(ÂQ − ǍQ)

Every row of P needs only the same row of A, so besides the naive functions (which build
the whole B×N×N matrix: a reference, and fine for the 32×32 test-time grid) there is a
blocked path that walks over row blocks of A with `lax.scan` and wraps each block in
`jax.checkpoint`: the forward pass keeps no block, the backward pass recomputes each block
when it needs it, so peak memory is O(B·block·N) instead of O(B·N²). At the training grid
(N = 4096, B = 4) one A is 268 MB; at 128×128 (N = 16384) it would be 4.3 GB.

Gradient conventions follow PyTorch where its autograd differs from JAX's on a set of
measure zero, because the diagonal of A sits exactly on such a set (x̂ᵢ·x̂ᵢ rounds to 1.0):
- clamp passes the gradient on the closed interval [lo, hi] (jnp.clip gives ½ or 0 at
  the ends);
- the norm of an all-zero ReLU(f) row (a dead pixel) has gradient 0, not NaN;
- the L1 row sums of `F.normalize(p=1)` are Σ|x|, whose gradient at x = 0 is 0.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST
# Constants of the reference code (Cosine_similarity, clamp, F.normalize's eps).
NORM_EPS = 1e-9
AFFINITY_MIN = 1e-10
L1_EPS = 1e-12


def clamp_like_torch(x, lo=None, hi=None):
  """min(max(x, lo), hi) with gradient 1 on the closed interval [lo, hi], as torch.clamp."""
  if lo is not None:
    x = jnp.where(x < lo, jnp.asarray(lo, x.dtype), x)
  if hi is not None:
    x = jnp.where(x > hi, jnp.asarray(hi, x.dtype), x)
  return x


def _l2_norm_zero_grad_at_origin(x, axis=-1):
  """‖x‖₂ along axis (keepdims) whose gradient at x = 0 is 0, as torch.norm's backward."""
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def l1_row_norm(x, axis=-1):
  """max(Σ|x|, 1e−12) along axis (keepdims): the denominator of F.normalize(x, p=1)."""
  return clamp_like_torch(jnp.sum(jnp.abs(x), axis=axis, keepdims=True), lo=L1_EPS)


def normalize_embeddings(f):
  """x̂ = ReLU(f) / (‖ReLU(f)‖₂ + 1e−9) along the last axis; dead pixels map to 0."""
  r = jax.nn.relu(f)
  return r / (_l2_norm_zero_grad_at_origin(r) + NORM_EPS)


def affinity_rows(xhat_rows, xhat, precision=HIGHEST):
  """Rows of A: clip(x̂_rows x̂ᵀ, 1e−10, 1), [B, R, D] × [B, N, D] → [B, R, N]."""
  gram = jnp.einsum('brd,bnd->brn', xhat_rows, xhat, precision=precision)
  return clamp_like_torch(gram, lo=AFFINITY_MIN, hi=1.0)


def affinity_matrix(xhat, precision=HIGHEST):
  """The full B×N×N affinity A (naive path)."""
  return affinity_rows(xhat, xhat, precision)


def dar_rows(a_rows, q_rows, q, precision=HIGHEST):
  """DAR output rows from the same rows of A: [B, R, N], [B, R, C], [B, N, C] → [B, R, C].

  Â and Ǎ are never formed: (A/r)Q = (AQ)/r for a per-row scalar r, which divides R×C
  entries instead of R×N. The ½[(Q + ÂQ) + (Q − ǍQ)] order is the reference code's.
  """
  complement = 1.0 - a_rows
  sim_q = jnp.einsum('brn,bnc->brc', a_rows, q, precision=precision) / l1_row_norm(a_rows)
  dis_q = (jnp.einsum('brn,bnc->brc', complement, q, precision=precision)
           / l1_row_norm(complement))
  return ((q_rows + sim_q) + (q_rows - dis_q)) / 2.0


def dar_from_affinity(a, q, precision=HIGHEST):
  """P = Q + ½(ÂQ − ǍQ) from a materialised A [B, N, N] and logits Q [B, N, C]."""
  return dar_rows(a, q, q, precision)


def dar_naive(xhat, q, precision=HIGHEST):
  """DAR from unit embeddings, materialising A (reference, and the 32×32 test grid)."""
  return dar_from_affinity(affinity_matrix(xhat, precision), q, precision)


def _split_rows(x, num_blocks: int, block: int):
  """[B, N, ...] → [num_blocks, B, block, ...], zero-padding N up to num_blocks·block."""
  pad = num_blocks * block - x.shape[1]
  if pad:
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  x = x.reshape(x.shape[0], num_blocks, block, *x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _merge_rows(y, num_rows: int):
  """[num_blocks, B, block, ...] → [B, num_rows, ...], dropping the padded rows."""
  y = jnp.moveaxis(y, 0, 1)
  y = y.reshape(y.shape[0], y.shape[1] * y.shape[2], *y.shape[3:])
  return y[:, :num_rows]


def map_row_blocks(block_fn: Callable[..., Any], rows, shared, block: int):
  """Runs block_fn over row blocks, recomputing each block in the backward pass.

  Args:
    block_fn: (rows_block, shared, row_valid) → (rows_out, partial). rows_block is `rows`
      cut to [B, block, ...]; row_valid is a [block] bool mask that is False on the
      padding rows added when N is not a multiple of block (block_fn must keep them out of
      `partial`); rows_out is a pytree of [B, block, ...] arrays; partial a pytree summed
      over blocks.
    rows: pytree of [B, N, ...] arrays split along axis 1.
    shared: pytree handed whole to every block (e.g. all of x̂ and Q).
    block: static row-block size.

  Returns:
    (rows_out merged back to [B, N, ...], sum of the partials).
  """
  leaves = jax.tree_util.tree_leaves(rows)
  num_rows = leaves[0].shape[1]
  block = max(1, min(int(block), num_rows))
  num_blocks = -(-num_rows // block)
  split = jax.tree_util.tree_map(lambda x: _split_rows(x, num_blocks, block), rows)
  valid = (jnp.arange(num_blocks * block) < num_rows).reshape(num_blocks, block)
  # Residuals of a checkpointed block are its inputs only: a row block (O(block·D)) and the
  # loop-invariant `shared`, which scan's partial evaluation keeps once, not per block.
  # prevent_cse=False is the recommended setting inside scan (the loop already stops CSE).
  remat_fn = jax.checkpoint(block_fn, prevent_cse=False)

  first = jax.tree_util.tree_map(lambda x: x[0], split)
  _, partial_shape = jax.eval_shape(remat_fn, first, shared, valid[0])
  init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), partial_shape)

  def body(acc, xs):
    rows_block, valid_block = xs
    out, partial = remat_fn(rows_block, shared, valid_block)
    return jax.tree_util.tree_map(jnp.add, acc, partial), out

  total, outs = jax.lax.scan(body, init, (split, valid))
  return jax.tree_util.tree_map(lambda y: _merge_rows(y, num_rows), outs), total


def dar_blocked(xhat, q, block: int = 256, precision=HIGHEST):
  """DAR in O(B·block·N) memory: the same P as `dar_naive`, A never materialised."""

  def block_fn(rows_block, shared, row_valid):
    del row_valid  # Padded rows only produce output rows that are dropped.
    xhat_rows, q_rows = rows_block
    xhat_all, q_all = shared
    a_rows = affinity_rows(xhat_rows, xhat_all, precision)
    return dar_rows(a_rows, q_rows, q_all, precision), ()

  p, _ = map_row_blocks(block_fn, (xhat, q), (xhat, q), block)
  return p
