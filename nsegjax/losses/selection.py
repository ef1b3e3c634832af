"""Small-loss pixel selection of Co-teaching and TriNet (METHODS.md §4), jit-friendly.

Per class c (of the noisy label), the pixels are ranked by a score (a peer network's CE, or a
disagreement); the ⌊(1 − R_c)·count_c⌋ highest-scoring ones are dropped as likely noise.
"""
import jax.numpy as jnp
import numpy as np

from nsegjax.losses.segmentation import IGNORE


def remember_rates(epoch, forget_rates, rampup_epochs: float):
  """R_c(t) = 1 − min(t / T_k, 1)·τ_c: every pixel is kept at first, the class's forget rate τ_c
  of them is dropped after T_k epochs (`rampup_epochs` = 0: from the start)."""
  ramp = jnp.minimum(epoch / rampup_epochs, 1.0) if rampup_epochs > 0 else 1.0
  return 1.0 - ramp * jnp.asarray(forget_rates, jnp.float32)


def keep_small_loss(scores, labels, rates, num_classes: int):
  """Boolean [...] mask of the kept pixels: per class c, sort the scores of the pixels labelled
  c in descending order; the one at index ⌊(1 − R_c)·count_c⌋ is the threshold and pixels
  strictly below it are kept (the SP_guided code's rule; with R_c = 1 only the maximum goes).
  Ignored pixels are never kept."""
  flat_scores, flat_labels = scores.reshape(-1), labels.reshape(-1)
  keep = jnp.zeros(flat_scores.shape, bool)
  for c in range(num_classes):
    member = flat_labels == c
    count = jnp.sum(member)
    ranked = jnp.sort(jnp.where(member, flat_scores, -jnp.inf))[::-1]  # descending
    k = jnp.floor((1.0 - rates[c]) * count).astype(jnp.int32)
    threshold = jnp.where(k < count, ranked[jnp.minimum(k, ranked.size - 1)], -jnp.inf)
    keep = keep | (member & (flat_scores < threshold))
  return (keep & (flat_labels != IGNORE)).reshape(labels.shape)


def masked_mean(values, mask):
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def oracle_forget_rates(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
  """τ_c = P(y ≠ c | ỹ = c) over pixels valid in both (host-side, NumPy): the share of the
  pixels labelled c that the noise log knows to be wrong (Co-teaching's oracle rates)."""
  valid = (clean != IGNORE) & (noisy != IGNORE)
  labelled = np.bincount(noisy[valid].ravel(), minlength=num_classes)[:num_classes]
  wrong = np.bincount(noisy[valid & (clean != noisy)].ravel(), minlength=num_classes)
  return (wrong[:num_classes] / np.maximum(labelled, 1)).astype(np.float32)

