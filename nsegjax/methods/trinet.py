"""`trinet`: TriNet (Zhang et al. 2020) per pixel, as the SP_guided re-implementation runs it
(METHODS.md §4); no official code is public.

Three networks. For network k the other two give per-pixel CE ℓ_i, ℓ_j against ỹ; per class
the pixels with the largest d = |ℓ_i − ℓ_j| (`criterion='absdiff'`) or d = ℓ_i + ℓ_j (`sum`,
the consensus variant) are dropped, a share 1 − R_c(t) ramped as in Co-teaching, and k trains
on the rest: two networks vote for the third. Test: the mean of the three probability maps.
"""
import jax
import jax.numpy as jnp

from nsegjax import config_checks
from nsegjax.losses import IGNORE, selection
from nsegjax.methods.base import LossAux
from nsegjax.methods.coteach import SmallLossMethod

CRITERIA = ('absdiff', 'sum')


def vote_scores(ce_i, ce_j, criterion: str):
  """The two voters' score of every pixel: large means drop."""
  return jnp.abs(ce_i - ce_j) if criterion == 'absdiff' else ce_i + ce_j


class TriNet(SmallLossMethod):
  name = 'trinet'
  num_networks = 3

  def __init__(self, config):
    super().__init__(config)
    config_checks.check_choices(config.trinet, 'trinet', {'criterion': CRITERIA})

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    labels = batch['noisy_mask']
    ce, new_stats, num_classes = self.pixel_losses(model, params, batch_stats, batch, rng)
    rates = self.rates(method_state, schedule, num_classes)
    voters = jax.lax.stop_gradient(ce)
    total, metrics = 0.0, {'remember_rate_fg': rates[-1]}
    for k in range(3):
      i, j = (n for n in range(3) if n != k)
      kept = selection.keep_small_loss(vote_scores(voters[i], voters[j],
                                                   self.config.trinet.criterion),
                                       labels, rates, num_classes)
      loss_k = selection.masked_mean(ce[k], kept)
      total = total + loss_k
      metrics[f'ce_net{k + 1}'] = loss_k
      if k == 0:
        metrics['kept_fraction'] = selection.masked_mean(kept.astype(jnp.float32), labels != IGNORE)
    return total, LossAux(metrics=metrics, batch_stats=new_stats, method_state=method_state)
