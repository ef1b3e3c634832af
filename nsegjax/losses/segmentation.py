"""Pixel losses on logits [B, H, W, C] and integer labels [B, H, W] (255 = ignore).

Every loss is a mean over valid pixels of the whole batch, so a batch sharded over
devices gives the same value as on one device.
"""
import jax
import jax.numpy as jnp

IGNORE = 255


def valid_mask(labels):
  return (labels != IGNORE).astype(jnp.float32)


def pixel_cross_entropy(logits, labels):
  """Per-pixel CE [B, H, W]; 0 on ignore pixels."""
  valid = labels != IGNORE
  safe = jnp.where(valid, labels, 0)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return jnp.where(valid, nll, 0.0)


def foreground_class_weights(labels, num_classes, cap=1e6):
  """#bg/#fg weight for every foreground class, 1 for background (SP_guided's `auto`)."""
  valid = valid_mask(labels)
  bg = jnp.sum((labels == 0) * valid)
  fg = jnp.sum((labels > 0) * valid)
  w_fg = jnp.minimum(bg / jnp.maximum(fg, 1.0), cap)
  return jnp.concatenate([jnp.ones((1,)), jnp.full((num_classes - 1,), w_fg)])


def cross_entropy(logits, labels, class_weights=None):
  """Mean CE over valid pixels; with class weights, a weighted mean (as PyTorch's)."""
  ce = pixel_cross_entropy(logits, labels)
  valid = valid_mask(labels)
  if class_weights is None:
    w = valid
  else:
    w = class_weights[jnp.where(labels == IGNORE, 0, labels)] * valid
  return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)


def soft_dice_loss(logits, labels, smooth=1.0, include_background=False):
  """1 − mean over classes of the batch soft Dice between softmax(logits) and one-hot labels."""
  num_classes = logits.shape[-1]
  valid = valid_mask(labels)[..., None]
  probs = jax.nn.softmax(logits, axis=-1) * valid
  onehot = jax.nn.one_hot(labels, num_classes) * valid  # ignore (255) one-hots to zeros anyway
  axes = tuple(range(logits.ndim - 1))
  inter = jnp.sum(probs * onehot, axis=axes)
  denom = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
  dice = (2.0 * inter + smooth) / (denom + smooth)
  if not include_background and num_classes > 1:
    dice = dice[1:]
  return 1.0 - jnp.mean(dice)


def ce_dice_loss(logits, labels, dice_weight=1.0, class_weights=None):
  """CE + dice_weight·Dice, the supervised loss of the `ce_noisy` / `clean` bounds."""
  loss = cross_entropy(logits, labels, class_weights)
  if dice_weight:
    loss = loss + dice_weight * soft_dice_loss(logits, labels)
  return loss
