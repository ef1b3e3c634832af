"""`des`: distilling effective supervision (Shi & Wu, MICCAI 2021; METHODS.md §3.2).

No reference code exists; this follows METHODS' reconstruction after UA-MT and PNL, every open
detail a `config.des` knob with METHODS' assumed default:

- warm-up: the first `warmup_frac` of training is CE + Dice on the noisy labels ỹ;
- pixel noise estimation, without gradient: `mc_passes` teacher passes inside the jitted step
  (vmapped over passes, not a Python loop) with dropout on, BatchNorm in eval mode and input
  noise clip(N(0, input_noise), ±input_noise_clip); p̄ = mean softmax, u = entropy(p̄),
  pseudo label ŷ = argmax p̄, threshold τ_t = (0.75 + 0.25·r(t))·ln C with the sigmoid ramp
  r(t) = exp(−5(1 − t/t_max)²) over training;
- the teacher is an EMA of the student (`ema`; its BatchNorm statistics are averaged the same
  way, since eval-mode passes never update them) or the student itself (`teacher='self'`);
- pixel-wise robust learning: per pixel the loss mixes ỹ and ŷ with the weight m_i of ŷ:
  confident_disagree m = 1[ŷ ≠ ỹ ∧ u < τ], uncertain m = 1[u > τ], soft m = u / ln C; the
  image's loss is the mixed CE over its valid pixels plus (`pixel_loss='ce_dice'`) the soft
  Dice against the mixed one-hot target;
- image-level robust learning: weights q over the batch, Σ q_n = 1, from PNL's
  quality-awareness module (`qam`: q = softmax(2·tanh(g(x, ỹ))), a VGG-16-BN on the image and
  the one-hot label, trained jointly through the weighted loss), from each image's running
  mean loss over the last 5 epochs (`loss_stats`: q ∝ exp(−L̄_n/σ_B), σ_B the batch std of L̄),
  or uniform (`none`);
- total L = Σ_n q_n L_pix,n + λ_c(t)·mean_i ‖p_i − p̄_i‖², λ_c = w_cons·r(epoch/cons_rampup).

The teacher is updated from the student's parameters as the step sees them, i.e. one optimiser
step behind the student (the usual order in UA-MT, which updates after the step, differs by
that one step). Method state: the teacher, the per-image loss history (loss_stats) and the
QAM's BatchNorm statistics; all of it is checkpointed with the run.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax import config_checks, losses
from nsegjax.errors import ConfigError
from nsegjax.methods.base import LossAux, Method
from nsegjax.models.qam import QualityAwarenessModule

IGNORE = 255
CHOICES = {
    'teacher': ('ema', 'self'),
    'mask_rule': ('confident_disagree', 'uncertain', 'soft'),
    'pixel_loss': ('ce', 'ce_dice'),
    'image_weight': ('qam', 'loss_stats', 'none'),
    'eval_model': ('student', 'teacher'),
}
LOSS_HISTORY_EPOCHS = 5  # loss_stats' running mean spans this many epochs


# ------------------------------------------------------------------------------------------------
# Pure pieces
# ------------------------------------------------------------------------------------------------


def sigmoid_rampup(fraction: jax.Array) -> jax.Array:
  """r = exp(−5(1 − t)²) for t = fraction clipped to [0, 1] (Laine & Aila; UA-MT)."""
  t = jnp.clip(fraction, 0.0, 1.0)
  return jnp.exp(-5.0 * jnp.square(1.0 - t))


def entropy(probs: jax.Array) -> jax.Array:
  """−Σ_c p log p over the last axis, 0·log 0 = 0."""
  return jnp.sum(jax.scipy.special.entr(probs), axis=-1)


def uncertainty_threshold(ramp: jax.Array, num_classes: int) -> jax.Array:
  """τ = (0.75 + 0.25·r)·ln C."""
  return (0.75 + 0.25 * ramp) * np.log(num_classes)


def pseudo_label_weight(mean_probs: jax.Array, noisy: jax.Array, uncertainty: jax.Array,
                        tau: jax.Array, rule: str) -> jax.Array:
  """Per-pixel weight m ∈ [0, 1] of the pseudo label argmax p̄ (1 − m stays on ỹ)."""
  pseudo = jnp.argmax(mean_probs, axis=-1)
  if rule == 'confident_disagree':
    weight = (pseudo != noisy) & (uncertainty < tau)
  elif rule == 'uncertain':
    weight = uncertainty > tau
  elif rule == 'soft':
    return uncertainty / np.log(mean_probs.shape[-1])
  else:
    raise ConfigError(f'unknown des.mask_rule {rule!r}; valid: {", ".join(CHOICES["mask_rule"])}')
  return weight.astype(jnp.float32)


def per_image_mixed_ce(logits: jax.Array, noisy: jax.Array, pseudo: jax.Array,
                       weight: jax.Array) -> jax.Array:
  """[B] mean over each image's valid pixels of (1 − m)·CE(p, ỹ) + m·CE(p, ŷ)."""
  valid = (noisy != IGNORE).astype(jnp.float32)
  mixed = ((1.0 - weight) * losses.pixel_cross_entropy(logits, noisy) +
           weight * losses.pixel_cross_entropy(logits, pseudo)) * valid
  return jnp.sum(mixed, axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)


def mixed_target(noisy: jax.Array, pseudo: jax.Array, weight: jax.Array,
                 num_classes: int) -> jax.Array:
  """(1 − m)·onehot(ỹ) + m·onehot(ŷ), zero on ignore pixels."""
  valid = (noisy != IGNORE)[..., None]
  target = ((1.0 - weight)[..., None] * jax.nn.one_hot(noisy, num_classes) +
            weight[..., None] * jax.nn.one_hot(pseudo, num_classes))
  return jnp.where(valid, target, 0.0)


def per_image_soft_dice_loss(logits: jax.Array, target: jax.Array, valid: jax.Array,
                             smooth: float = 1.0) -> jax.Array:
  """[B] 1 − mean over foreground classes of each image's soft Dice against a soft target."""
  probs = jax.nn.softmax(logits, axis=-1) * valid[..., None]
  inter = jnp.sum(probs * target, axis=(1, 2))
  denom = jnp.sum(probs, axis=(1, 2)) + jnp.sum(target, axis=(1, 2))
  dice = (2.0 * inter + smooth) / (denom + smooth)
  return 1.0 - jnp.mean(dice[:, 1:], axis=-1)


def qam_weights(scores: jax.Array) -> jax.Array:
  """PNL's image weights: softmax over the batch of 2·tanh(g)."""
  return jax.nn.softmax(2.0 * jnp.tanh(scores))


def loss_stats_weights(mean_losses: jax.Array) -> jax.Array:
  """q ∝ exp(−L̄_n / σ_B), σ_B the std of L̄ within the batch; Σ q = 1."""
  sigma = jnp.std(mean_losses) + 1e-6
  return jax.nn.softmax(-mean_losses / sigma)


def consistency_loss(probs: jax.Array, target_probs: jax.Array, valid: jax.Array) -> jax.Array:
  """mean over valid pixels of ‖p − p̄‖² (p̄ carries no gradient)."""
  squared = jnp.sum(jnp.square(probs - lax.stop_gradient(target_probs)), axis=-1)
  return jnp.sum(squared * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def ema_update(teacher, student, decay: float):
  return jax.tree.map(lambda t, s: decay * t + (1.0 - decay) * s, teacher, student)


def mc_mean_probs(model, variables, images: jax.Array, rng: jax.Array, passes: int,
                  noise_std: float, noise_clip: float) -> jax.Array:
  """Mean softmax of `passes` teacher passes (dropout on, BatchNorm in eval mode, noisy input),
  vmapped over the passes; no gradient flows through it."""

  def one(key):
    key_noise, key_dropout = jax.random.split(key)
    noise = jnp.clip(noise_std * jax.random.normal(key_noise, images.shape), -noise_clip,
                     noise_clip)
    logits = model.apply(variables, images + noise, train=False, dropout_on=True,
                         rngs={'dropout': key_dropout})
    return jax.nn.softmax(logits, axis=-1)

  probs = jax.vmap(one)(jax.random.split(rng, passes))
  return lax.stop_gradient(jnp.mean(probs, axis=0))


def update_loss_history(history: jax.Array, index: jax.Array, epoch: jax.Array,
                        image_losses: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Writes each image's loss into its slot for this epoch; returns (history, mean over the
  filled slots of each image in the batch). history: [N, LOSS_HISTORY_EPOCHS], NaN = empty."""
  slot = jnp.floor(epoch).astype(jnp.int32) % history.shape[1]
  history = history.at[index, slot].set(lax.stop_gradient(image_losses))
  return history, jnp.nanmean(history[index], axis=1)


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------


class DES(Method):
  """DES behind the method interface; the student is `params['net']`."""

  name = 'des'

  def __init__(self, config):
    super().__init__(config)
    cfg = config.des
    config_checks.check_choices(cfg, 'des', CHOICES)
    if config.model.name != 'unet':
      raise ConfigError(f"des needs model.name='unet' (Monte-Carlo dropout passes), got "
                        f'{config.model.name!r}')
    if int(cfg.mc_passes) < 1:
      raise ConfigError(f'des.mc_passes must be >= 1, got {cfg.mc_passes}')
    for key in ('warmup_frac', 'ema'):
      if not 0.0 <= float(cfg[key]) <= 1.0:
        raise ConfigError(f'des.{key} must be in [0, 1], got {cfg[key]}')
    if cfg.eval_model == 'teacher' and cfg.teacher != 'ema':
      raise ConfigError("des.eval_model='teacher' needs des.teacher='ema'")
    if cfg.image_weight != 'none' and int(config.train.batch_size) < 2:
      raise ConfigError('des.image_weight needs train.batch_size >= 2 (weights over the batch)')
    self.qam = QualityAwarenessModule(width=int(cfg.qam_width))
    self.num_samples = None
    self.num_classes = None

  def setup_data(self, data) -> None:
    self.num_samples = len(data.train)

  def _qam_input(self, images, labels, num_classes):
    onehot = jax.nn.one_hot(labels, num_classes)  # ignore pixels: all zeros
    return jnp.concatenate([images, onehot], axis=-1)

  def init_variables(self, rng, model, images):
    net_rng, qam_rng = jax.random.split(rng)
    net = super().init_variables(net_rng, model, images)
    self.num_classes = model.num_classes
    params = {'net': net['params']}
    if self.config.des.image_weight == 'qam':
      dummy = self._qam_input(images, jnp.zeros(images.shape[:3], jnp.int32), model.num_classes)
      params['qam'] = self.qam.init(qam_rng, dummy)['params']
    return {'params': params, 'batch_stats': net['batch_stats']}

  def init_state(self, rng, variables, batch):
    # Copies, not aliases: the state is donated at every step.
    state = {}
    if self.config.des.teacher == 'ema':
      copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731
      state['teacher'] = {'params': copy(variables['params']['net']),
                          'batch_stats': copy(variables['batch_stats'])}
    if self.config.des.image_weight == 'loss_stats':
      num = self.num_samples if self.num_samples is not None else batch['image'].shape[0]
      state['loss_history'] = jnp.full((num, LOSS_HISTORY_EPOCHS), jnp.nan, jnp.float32)
    if self.config.des.image_weight == 'qam':
      dummy = self._qam_input(batch['image'], jnp.zeros(batch['image'].shape[:3], jnp.int32),
                              self.num_classes)
      state['qam_batch_stats'] = self.qam.init(rng, dummy)['batch_stats']
    return state

  def net_params(self, params):
    return params['net']

  def with_net_params(self, params, net):
    return dict(params, net=net)

  def _teacher_variables(self, params, batch_stats, method_state):
    if self.config.des.teacher == 'self':
      return {'params': lax.stop_gradient(params['net']), 'batch_stats': batch_stats}
    return method_state['teacher']

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    cfg = self.config.des
    images, noisy = batch['image'], batch['noisy_mask']
    dropout_rng, teacher_rng = jax.random.split(rng)
    logits, new_batch_stats = self.apply_train(model, params['net'], batch_stats, images,
                                               dropout_rng)
    num_classes = logits.shape[-1]
    valid = (noisy != IGNORE).astype(jnp.float32)
    warm = schedule['progress'] < float(cfg.warmup_frac)

    # The teacher passes are skipped (not computed and discarded) during the warm-up.
    teacher = self._teacher_variables(params, batch_stats, method_state)
    mean_probs = lax.cond(
        warm, lambda: lax.stop_gradient(jax.nn.softmax(logits, axis=-1)),
        lambda: mc_mean_probs(model, teacher, images, teacher_rng, int(cfg.mc_passes),
                              float(cfg.input_noise), float(cfg.input_noise_clip)))
    ramp = sigmoid_rampup(schedule['progress'])
    tau = uncertainty_threshold(ramp, num_classes)
    uncertainty = entropy(mean_probs)
    pseudo = jnp.argmax(mean_probs, axis=-1)
    weight = pseudo_label_weight(mean_probs, noisy, uncertainty, tau, cfg.mask_rule)
    weight = jnp.where(warm, 0.0, weight)

    image_losses = per_image_mixed_ce(logits, noisy, pseudo, weight)
    if cfg.pixel_loss == 'ce_dice':
      target = mixed_target(noisy, pseudo, weight, num_classes)
      image_losses = image_losses + per_image_soft_dice_loss(logits, target, valid)

    batch_size = images.shape[0]
    new_state = dict(method_state)
    metrics = {}
    if cfg.image_weight == 'qam':
      qam_input = self._qam_input(images, noisy, num_classes)
      scores, qam_updates = self.qam.apply(
          {'params': params['qam'], 'batch_stats': method_state['qam_batch_stats']},
          qam_input, train=True, mutable=['batch_stats'])
      new_state['qam_batch_stats'] = qam_updates['batch_stats']
      image_weights = qam_weights(scores)
    elif cfg.image_weight == 'loss_stats':
      history, mean_losses = update_loss_history(method_state['loss_history'], batch['index'],
                                                 schedule['epoch'], image_losses)
      new_state['loss_history'] = history
      image_weights = loss_stats_weights(mean_losses)
    else:
      image_weights = jnp.full((batch_size,), 1.0 / batch_size)
    image_weights = jnp.where(warm, 1.0 / batch_size, image_weights)
    pixel_loss = jnp.sum(image_weights * image_losses)

    cons_weight = float(cfg.w_cons) * sigmoid_rampup(
        schedule['epoch'] / max(float(cfg.cons_rampup), 1e-6))
    cons_weight = jnp.where(warm, 0.0, cons_weight)
    cons = consistency_loss(jax.nn.softmax(logits, axis=-1), mean_probs, valid)
    loss = pixel_loss + cons_weight * cons

    if cfg.teacher == 'ema':
      decay = float(cfg.ema)
      new_state['teacher'] = {
          'params': ema_update(method_state['teacher']['params'],
                               lax.stop_gradient(params['net']), decay),
          'batch_stats': ema_update(method_state['teacher']['batch_stats'],
                                    new_batch_stats, decay)}
    valid_count = jnp.maximum(jnp.sum(valid), 1.0)
    metrics.update({
        'pixel_loss': pixel_loss, 'consistency': cons, 'cons_weight': cons_weight,
        'tau': tau, 'mean_uncertainty': jnp.sum(uncertainty * valid) / valid_count,
        'pseudo_fraction': jnp.sum(weight * valid) / valid_count,
        'max_image_weight': jnp.max(image_weights), 'warm_up': warm.astype(jnp.float32)})
    return loss, LossAux(metrics=metrics, batch_stats=new_batch_stats, method_state=new_state)

  def predict(self, model, variables, method_state, images):
    if self.config.des.eval_model == 'teacher':
      variables = method_state['teacher']
    else:
      variables = {'params': variables['params']['net'], 'batch_stats': variables['batch_stats']}
    return jax.nn.softmax(model.apply(variables, images, train=False), axis=-1)
