"""`ce_noisy` and `clean`: CE (+Dice) on the noisy labels (lower bound) or the clean ones (upper)."""
from nsegjax import losses
from nsegjax.errors import ConfigError
from nsegjax.methods.base import LossAux, Method


class SupervisedMethod(Method):
  """Plain supervised training on one label key; the two bounds differ only in that key."""

  label_key = 'noisy_mask'

  def __init__(self, config):
    super().__init__(config)
    if config.ce.fg_weight not in ('none', 'auto'):
      raise ConfigError(f"unknown ce.fg_weight {config.ce.fg_weight!r}; valid choices: auto, none")

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    del schedule
    labels = batch[self.label_key]
    logits, batch_stats = self.apply_train(model, params, batch_stats, batch['image'], rng)
    weights = None
    if self.config.ce.fg_weight == 'auto':
      weights = losses.foreground_class_weights(labels, logits.shape[-1])
    ce = losses.cross_entropy(logits, labels, weights)
    dice = losses.soft_dice_loss(logits, labels)
    loss = ce + self.config.ce.dice_weight * dice
    return loss, LossAux(metrics={'ce': ce, 'dice_loss': dice},
                         batch_stats=batch_stats, method_state=method_state)


class CENoisy(SupervisedMethod):
  name = 'ce_noisy'


class Clean(SupervisedMethod):
  name = 'clean'
  label_key = 'mask'
  trains_on_clean_labels = True
