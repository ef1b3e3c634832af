"""Noise-robust pixel losses of the baselines (METHODS.md §4): GCE, SCE and SparseReg.

Same conventions as `segmentation.py`: logits [B, H, W, C], integer labels [B, H, W] with
255 = ignore, a mean over the valid pixels of the whole batch.
"""
import jax
import jax.numpy as jnp

from nsegjax.losses.segmentation import IGNORE, valid_mask


def _label_probability(probs, labels):
  """p_y per pixel (0 on ignored pixels)."""
  safe = jnp.where(labels == IGNORE, 0, labels)
  return jnp.take_along_axis(probs, safe[..., None], axis=-1)[..., 0]


def _valid_mean(values, labels):
  valid = valid_mask(labels)
  return jnp.sum(values * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def generalized_cross_entropy(logits, labels, q: float = 0.7, truncate: float = 0.0):
  """GCE (Zhang & Sabuncu 2018): L_q = (1 − p_y^q)/q; with `truncate` = k > 0 the truncated
  form, (1 − k^q)/q wherever p_y ≤ k (a constant: those pixels give no gradient)."""
  p_y = _label_probability(jax.nn.softmax(logits, axis=-1), labels)
  loss = (1.0 - p_y ** q) / q
  if truncate > 0:
    loss = jnp.where(p_y <= truncate, (1.0 - truncate ** q) / q, loss)
  return _valid_mean(loss, labels)


def reverse_cross_entropy(logits, labels, log_zero: float = -4.0):
  """RCE = −Σ_c p_c log q_c with q the one-hot label and log 0 := A: −A(1 − p_y)."""
  p_y = _label_probability(jax.nn.softmax(logits, axis=-1), labels)
  return _valid_mean(-log_zero * (1.0 - p_y), labels)


def symmetric_cross_entropy(logits, labels, alpha: float = 0.1, beta: float = 1.0,
                            log_zero: float = -4.0):
  """SCE (Wang et al. 2019): α·CE + β·RCE."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  ce = _valid_mean(-_label_probability(logp, labels), labels)
  return alpha * ce + beta * reverse_cross_entropy(logits, labels, log_zero)


def sparse_regularized_logits(logits, tau: float = 0.5):
  """z̃ = (z / ‖z‖₂ over classes) / τ."""
  # clamped inside the sqrt: its gradient at z = 0 would be NaN
  norm = jnp.sqrt(jnp.maximum(jnp.sum(logits ** 2, axis=-1, keepdims=True), 1e-24))
  return logits / norm / tau


def sparse_regularized_ce(logits, labels, tau: float = 0.5, lam: float = 1.0, q: float = 0.01):
  """SparseReg (Zhou et al. 2021, as JCAS's code runs it): CE(softmax(z̃), ỹ) + λ·mean_i
  Σ_c p_ic^q with p = softmax(z̃). The ℓ_q term (q < 1) is smallest for one-hot p, so it
  pushes predictions towards sparse ones that noisy labels cannot easily pull apart."""
  z = sparse_regularized_logits(logits, tau)
  logp = jax.nn.log_softmax(z, axis=-1)
  ce = _valid_mean(-_label_probability(logp, labels), labels)
  sparsity = _valid_mean(jnp.sum(jnp.exp(q * logp), axis=-1), labels)  # p^q, finite gradient at p → 0
  return ce + lam * sparsity
