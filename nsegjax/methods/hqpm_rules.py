"""HQPM's rules (Huang et al., Neural Networks 2025; METHODS.md §3.4) as pure functions.

Phase 1's noise identification network (NIN) trains on `nin_targets` with `nin_loss` and
revises labels with `revise`; phase 2's parallel networks train on `slsr_soften` or
`ensemble_soften` targets. Each rule is checked against NumPy in tests/test_hqpm_rules.py. Classes are
handled one-vs-rest, so every map here is binary (one foreground class at a time).
"""
import jax
import jax.numpy as jnp


def nin_targets(noisy: jax.Array, clean: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The three NIN branches' targets from binary ỹ and y: over-annotation ỹ(1 − y),
  under-annotation (1 − ỹ)y and the refined mask y."""
  noisy, clean = noisy.astype(jnp.float32), clean.astype(jnp.float32)
  return noisy * (1.0 - clean), (1.0 - noisy) * clean, clean


def sparse_pos_weight(target: jax.Array, cap: float = 1e3) -> jax.Array:
  """#neg / #pos of a binary target, capped (and `cap` when there is no positive pixel)."""
  positives = jnp.sum(target)
  return jnp.minimum((target.size - positives) / jnp.maximum(positives, 1e-6), cap)


def weighted_bce_with_logits(logits: jax.Array, target: jax.Array,
                             pos_weight: jax.Array) -> jax.Array:
  """mean of −[w·t·log σ(z) + (1 − t)·log(1 − σ(z))] (PyTorch's BCEWithLogits pos_weight)."""
  log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  return -jnp.mean(pos_weight * target * log_p + (1.0 - target) * log_not_p)


def binary_soft_dice_loss(probs: jax.Array, target: jax.Array, smooth: float = 1.0) -> jax.Array:
  """1 − (2Σpt + s)/(Σp + Σt + s) over the whole map."""
  return 1.0 - (2.0 * jnp.sum(probs * target) + smooth) / (
      jnp.sum(probs) + jnp.sum(target) + smooth)


def nin_loss(logits: tuple, targets: tuple, cap: float = 1e3) -> jax.Array:
  """Σ over branches of BCE(pos_weight) + soft Dice, equal weights."""
  total = 0.0
  for z, t in zip(logits, targets):
    total = total + weighted_bce_with_logits(z, t, sparse_pos_weight(t, cap)) + \
        binary_soft_dice_loss(jax.nn.sigmoid(z), t)
  return total


def revise(noisy: jax.Array, p_fp: jax.Array, p_fn: jax.Array, p_ref: jax.Array,
           thresh: float = 0.5, fp_thresh=None, fn_thresh=None) -> tuple[jax.Array, jax.Array]:
  """(ŷ, reliability): r = ỹ(1 − 1[p_fp > t_fp]) + (1 − ỹ)·1[p_fn > t_fn],
  ŷ = 1[(r + p_ref)/2 > t], c = 2|p_ref − 0.5|; t_fp and t_fn default to t. The identity when
  p_fp = p_fn = 0 and p_ref = ỹ, and whenever t_fp = t_fn = 1 (nothing is flipped)."""
  fp_thresh = thresh if fp_thresh is None else fp_thresh
  fn_thresh = thresh if fn_thresh is None else fn_thresh
  noisy = noisy.astype(jnp.float32)
  removed = (p_fp > fp_thresh).astype(jnp.float32)
  added = (p_fn > fn_thresh).astype(jnp.float32)
  rule = noisy * (1.0 - removed) + (1.0 - noisy) * added
  revised = ((rule + p_ref) / 2.0 > thresh).astype(jnp.uint8)
  return revised, 2.0 * jnp.abs(p_ref - 0.5)


def set_dice(pred: jax.Array, target: jax.Array) -> jax.Array:
  """2Σpt / (Σp + Σt) over a whole set of binary maps (1 when both are empty)."""
  pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
  total = jnp.sum(pred) + jnp.sum(target)
  return jnp.where(total > 0, 2.0 * jnp.sum(pred * target) / jnp.maximum(total, 1e-12), 1.0)


def select_branch_thresholds(noisy, p_fp, p_fn, p_ref, clean, grid, thresh: float = 0.5):
  """The (t_fp, t_fn) of `grid` × `grid` whose revision of the pairs (ỹ, y) has the highest
  set Dice against y, and the [G, G] Dice table (rows t_fp, columns t_fn, in grid order).

  Why: the fp / fn branches train on BCE with pos_weight = #neg/#pos, which shifts their
  probabilities up (at the optimum p_w/(1 − p_w) = w·p/(1 − p)), so 0.5 over-flags. Ties go to
  the larger thresholds (fewer flips); with 1 in the grid the choice is never worse than ỹ
  on these pairs."""
  grid = sorted({float(g) for g in grid}, reverse=True)
  table = jnp.stack([jnp.stack([
      set_dice(revise(noisy, p_fp, p_fn, p_ref, thresh, t_fp, t_fn)[0], clean) for t_fn in grid])
      for t_fp in grid])
  best = int(jnp.argmax(table))  # first maximum: the most conservative pair
  return (grid[best // len(grid)], grid[best % len(grid)]), table, grid


def slsr_soften(revised: jax.Array, others_fg: jax.Array, reliability: jax.Array,
                eps: float = 0.25) -> jax.Array:
  """Soft foreground target: |ŷ − ε| where ŷ disagrees with the other networks' mean
  (foreground probability `others_fg`, no gradient) or the reliability is below ½, else ŷ."""
  revised = revised.astype(jnp.float32)
  others = jax.lax.stop_gradient(others_fg)
  doubtful = (revised != (others > 0.5).astype(jnp.float32)) | (reliability < 0.5)
  return jnp.where(doubtful, jnp.abs(revised - eps), revised)


def ensemble_soften(revised: jax.Array, others_fg: jax.Array, lam: float = 0.3) -> jax.Array:
  """s = (1 − λ)ŷ + λ·p̄_{−k}."""
  return (1.0 - lam) * revised.astype(jnp.float32) + lam * jax.lax.stop_gradient(others_fg)


def others_mean(probs: jax.Array) -> jax.Array:
  """[K, ...] → for every k the mean of the other K − 1 networks' maps (K ≥ 2)."""
  k = probs.shape[0]
  return (jnp.sum(probs, axis=0, keepdims=True) - probs) / (k - 1)
