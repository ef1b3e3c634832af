"""Loss-only baselines (METHODS.md §4): `gce`, `sce` and `sparsereg`.

One network trained on the noisy labels with a noise-robust loss in place of CE; each reads its
own config block (`config.gce`, `config.sce`, `config.sparsereg`), with `dice_weight` adding the
soft Dice of `ce_noisy` (0, the published loss alone, by default).
"""
import jax

from nsegjax import losses
from nsegjax.errors import ConfigError
from nsegjax.jcas import calc
from nsegjax.losses import robust
from nsegjax.methods.base import LossAux, Method


class RobustLossMethod(Method):
  """Plain training on ỹ with `pixel_loss(logits, labels)`."""

  def pixel_loss(self, logits, labels):
    raise NotImplementedError

  @property
  def cfg(self):
    return self.config[self.name]

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    del schedule
    labels = batch['noisy_mask']
    logits, batch_stats = self.apply_train(model, params, batch_stats, batch['image'], rng)
    robust_loss = self.pixel_loss(logits, labels)
    dice = losses.soft_dice_loss(logits, labels)
    loss = robust_loss + float(self.cfg.dice_weight) * dice
    return loss, LossAux(metrics={self.name: robust_loss, 'dice_loss': dice},
                         batch_stats=batch_stats, method_state=method_state)


class GCE(RobustLossMethod):
  name = 'gce'

  def __init__(self, config):
    super().__init__(config)
    if not 0.0 < float(config.gce.q) <= 1.0:
      raise ConfigError(f'gce.q must be in (0, 1], got {config.gce.q}')
    if not 0.0 <= float(config.gce.truncate) < 1.0:
      raise ConfigError(f'gce.truncate must be in [0, 1) (0: untruncated), got '
                        f'{config.gce.truncate}')

  def pixel_loss(self, logits, labels):
    return robust.generalized_cross_entropy(logits, labels, float(self.cfg.q),
                                            float(self.cfg.truncate))


class SCE(RobustLossMethod):
  name = 'sce'

  def __init__(self, config):
    super().__init__(config)
    if float(config.sce.log_zero) >= 0:
      raise ConfigError(f'sce.log_zero (A = log 0) must be negative, got {config.sce.log_zero}')

  def pixel_loss(self, logits, labels):
    return robust.symmetric_cross_entropy(logits, labels, float(self.cfg.alpha),
                                          float(self.cfg.beta), float(self.cfg.log_zero))


class SparseReg(RobustLossMethod):
  """`refine=True` reproduces JCAS's code quirk: the test prediction goes through DAR with the
  model's embedding head, which this loss never trains (random affinities)."""

  name = 'sparsereg'

  def __init__(self, config):
    super().__init__(config)
    if float(config.sparsereg.tau) <= 0:
      raise ConfigError(f'sparsereg.tau must be > 0, got {config.sparsereg.tau}')
    if bool(config.sparsereg.refine) and config.model.name == 'unet' and int(
        config.model.get('embedding_dim', 0)) <= 0:
      raise ConfigError('sparsereg.refine needs an embedding head: set model.embedding_dim > 0')

  def pixel_loss(self, logits, labels):
    return robust.sparse_regularized_ce(logits, labels, float(self.cfg.tau),
                                        float(self.cfg.lam), float(self.cfg.q))

  def predict(self, model, variables, method_state, images):
    del method_state
    if not bool(self.cfg.refine):  # the probabilities the loss trained: softmax(z̃)
      logits = model.apply(variables, images, train=False)
      return jax.nn.softmax(robust.sparse_regularized_logits(logits, float(self.cfg.tau)), -1)
    heads = model.apply(variables, images, heads=True)
    return calc.dar_predict(heads['embeddings'][-1], heads['logits'][-1], images.shape[1:3],
                            grid=(int(self.cfg.test_grid),) * 2) / 2
