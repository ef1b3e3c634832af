"""`volmin`: forward correction with a learned class transition T_C and its log-det volume
(Li et al. 2021), as JCAS's code runs it (METHODS.md §4).

L = Σ_b w_b·NLL(log clip(softmax(up(Q_b))·T_C), ỹ) + w_vol·log|det T_C|, with T_C the
diagonally dominant VolMin parameterisation of `jcas.calc`. It shares JCAS's layout and run
shape, so it subclasses `JCAS` for them: params {'net', 'transition'}, the optimiser groups and
the two stages of `config.jcas` (a plain-CE warm-up, then T from the best warm-up checkpoint),
and T_C logged every epoch with its heatmap beside the observed transition. Only the loss and
the test prediction differ. T is not used at test time; `volmin.refine=True` reproduces the
code's quirk of refining the prediction by DAR with the never-trained embedding head.
"""
import jax
import jax.numpy as jnp

from nsegjax import resize
from nsegjax.errors import ConfigError
from nsegjax.jcas import calc
from nsegjax.methods.base import LossAux
from nsegjax.methods.jcas import JCAS


def branch_logits(model, variables, images, multi_branch: bool, **kwargs):
  """Every branch's class logits: the ResNet's (layer3, layer4) heads, or the one output."""
  if multi_branch:
    out = model.apply(variables, images, heads=True, **kwargs)
    heads, updates = out if kwargs.get('mutable') else (out, None)
    return heads['logits'], updates
  out = model.apply(variables, images, **kwargs)
  logits, updates = out if kwargs.get('mutable') else (out, None)
  return (logits,), updates


def volmin_loss(branches, labels, t_class_logits, stage2, branch_w, w_vol: float):
  """(loss, terms). Stage 1 (`stage2` = 0) uses T = I, which is plain NLL with a zero volume
  and no gradient to T."""
  num_classes = t_class_logits.shape[0]
  t = jnp.where(stage2 > 0, calc.transition_matrix(t_class_logits), jnp.eye(num_classes))
  weights = branch_w[-len(branches):]  # one branch (U-Net): the main branch's weight
  nll = sum(w * calc.forward_corrected_nll(resize.resize_bilinear(q, labels.shape[1:3]), labels, t)
            for w, q in zip(weights, branches))
  volume = calc.log_abs_det(t)
  return nll + w_vol * volume, {'nll': nll, 'log_det_t': volume}


class VolMin(JCAS):
  name = 'volmin'

  def __init__(self, config):
    super().__init__(config)
    if len(config.volmin.branch_w) != 2:
      raise ConfigError('volmin.branch_w must be [layer3 branch, layer4 branch]')
    multi = config.model.name == 'resnet'
    if bool(config.volmin.refine) and not multi and int(config.model.get('embedding_dim', 0)) <= 0:
      raise ConfigError('volmin.refine needs an embedding head: set model.embedding_dim > 0')
    self.multi_branch = multi

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    del schedule
    branches, updates = branch_logits(
        model, {'params': params['net'], 'batch_stats': batch_stats}, batch['image'],
        self.multi_branch, train=True, rngs={'dropout': rng}, mutable=['batch_stats'])
    cfg = self.config.volmin
    loss, terms = volmin_loss(branches, batch['noisy_mask'], params['transition']['class'],
                              method_state['stage'], tuple(float(w) for w in cfg.branch_w),
                              float(cfg.w_vol))
    terms['stage'] = method_state['stage'].astype(jnp.float32)
    return loss, LossAux(metrics=terms, batch_stats=updates['batch_stats'],
                         method_state=method_state)

  def predict(self, model, variables, method_state, images):
    if bool(self.config.volmin.refine):
      return super().predict(model, variables, method_state, images)
    net = {'params': variables['params']['net'], 'batch_stats': variables['batch_stats']}
    branches, _ = branch_logits(model, net, images, self.multi_branch)
    return jax.nn.softmax(resize.resize_bilinear(branches[-1], images.shape[1:3]), axis=-1)
