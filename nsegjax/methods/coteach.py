"""`coteach`: Co-teaching (Han et al. 2018) per pixel, as the SP_guided code runs it for
segmentation (METHODS.md §4).

Two networks from different keys. Each ranks the pixels of every (noisy) class by its own CE
and keeps the R_c(t) smallest-loss share; its **peer** is trained on that set. R_c ramps from 1
to 1 − τ_c over `rampup_epochs`; τ_c is the class's noisy-pixel share from the noise log
(`rate_source='oracle'`, as the code does) or `forget_rate` for every class (`fixed`). Test:
network 1 (`eval='first'`) or the mean of both.
"""
import jax
import jax.numpy as jnp
import numpy as np

from nsegjax import config_checks, data as datasets
from nsegjax.errors import ConfigError
from nsegjax.losses import IGNORE, pixel_cross_entropy
from nsegjax.losses import selection
from nsegjax.methods import networks
from nsegjax.methods.base import LossAux

CHOICES = {'rate_source': ('oracle', 'fixed'), 'eval': ('first', 'mean'),
           'parallel': networks.PARALLEL_CHOICES}


def check_small_loss_config(cfg, prefix: str) -> None:
  """The options Co-teaching and TriNet share."""
  config_checks.check_choices(cfg, prefix, {k: v for k, v in CHOICES.items() if k in cfg})
  if not 0.0 <= float(cfg.forget_rate) <= 1.0:
    raise ConfigError(f'{prefix}.forget_rate must be in [0, 1], got {cfg.forget_rate}')
  if float(cfg.rampup_epochs) < 0:
    raise ConfigError(f'{prefix}.rampup_epochs must be >= 0, got {cfg.rampup_epochs}')


class SmallLossMethod(networks.StackedNetworks):
  """Stacked networks trained on small-loss pixel sets, with per-class forget rates τ_c."""

  def __init__(self, config):
    super().__init__(config)
    check_small_loss_config(config[self.name], self.name)
    self.forget_rates = None

  def setup_data(self, data) -> None:
    cfg = self.config[self.name]
    if cfg.rate_source == 'oracle':
      clean = datasets.load_all_masks(data.train)
      self.forget_rates = selection.oracle_forget_rates(clean, data.train_noisy,
                                                        data.num_classes)
      print(f'{self.name}: oracle forget rates per class {np.round(self.forget_rates, 4)}',
            flush=True)
    else:
      self.forget_rates = np.full(data.num_classes, float(cfg.forget_rate), np.float32)

  def init_state(self, rng, variables, batch):
    del rng, variables, batch
    if self.forget_rates is None:  # no data seen (a benchmark): `forget_rate` in the loss
      return {}
    return {'forget_rates': jnp.asarray(self.forget_rates)}

  def rates(self, method_state, schedule, num_classes: int):
    cfg = self.config[self.name]
    forget = method_state.get('forget_rates',
                              jnp.full((num_classes,), float(cfg.forget_rate), jnp.float32))
    return selection.remember_rates(schedule['epoch'], forget, float(cfg.rampup_epochs))

  def pixel_losses(self, model, params, batch_stats, batch, rng):
    """CE of every network [K, B, H, W] against ỹ, and the new BatchNorm stats."""
    logits, new_stats = networks.train_forward(model, params, batch_stats, batch['image'], rng,
                                               self.parallel)
    ce = jax.vmap(lambda z: pixel_cross_entropy(z, batch['noisy_mask']))(logits)
    return ce, new_stats, logits.shape[-1]


class CoTeaching(SmallLossMethod):
  name = 'coteach'
  num_networks = 2

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    labels = batch['noisy_mask']
    ce, new_stats, num_classes = self.pixel_losses(model, params, batch_stats, batch, rng)
    rates = self.rates(method_state, schedule, num_classes)
    kept = [selection.keep_small_loss(jax.lax.stop_gradient(ce[k]), labels, rates, num_classes)
            for k in range(2)]
    # each network learns from the pixels its peer found small-loss
    losses = [selection.masked_mean(ce[0], kept[1]), selection.masked_mean(ce[1], kept[0])]
    metrics = {'ce_net1': losses[0], 'ce_net2': losses[1], 'remember_rate_fg': rates[-1]}
    metrics['kept_fraction'] = selection.masked_mean(kept[1].astype(jnp.float32), labels != IGNORE)
    return losses[0] + losses[1], LossAux(metrics=metrics, batch_stats=new_stats,
                                          method_state=method_state)
