"""`adele`: adaptive early-learning correction (Liu et al., CVPR 2022; [code: Kangningthu/ADELE];
METHODS.md §4).

**Detection.** The step accumulates, per class, the intersection and union of the network's
training predictions with the current labels; after every epoch the class's training IoU joins
its history, f(t) = a(1 − exp(−t^b / c)) (a, b ∈ [0, 1], c > 0) is fitted to it, and the class
starts at the first epoch with |f′(1) − f′(t)| / |f′(1)| > r: its IoU curve has flattened, so
the network is about to memorise the noise.

**Correction.** For the started classes an eval-mode pass over the un-augmented training set
relabels the pixels with p_c > τ as c in the label bank, at the start epoch and every `every`
epochs after it.

**Consistency.** The step also predicts the batch rescaled by every factor of `scales` (sizes
rounded to the network's stride multiple), resized back; the JSD between those predictions
counts on the pixels whose mean max-probability exceeds ρ, weight λ.

Label bank [N, H, W] in the samples' own coordinates (read in the batch's augmented ones through
`source_pixel`), IoU counts, IoU history and start epochs live in the method state, so a killed
run resumes exactly. `adele_classes.jsonl` logs each epoch's IoUs, fits and starts; the bank's
Dice against the clean truth is logged as `adele_bank/*`.
"""
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from nsegjax import losses, metrics, resize, writers
from nsegjax.data.pipeline import eval_batches, gather_augmented, normalize_images
from nsegjax.errors import ConfigError
from nsegjax.methods.base import LossAux, Method

IGNORE = 255
NOT_STARTED = -1
MIN_FIT_EPOCHS = 3  # three parameters need three points


# ------------------------------------------------------------------------------------------------
# Detection (host, NumPy / SciPy)
# ------------------------------------------------------------------------------------------------


def iou_curve(t, a, b, c):
  return a * (1.0 - np.exp(-(t ** b) / c))


def iou_curve_slope(t, a, b, c):
  """f′(t) = a·exp(−t^b/c)·b·t^(b−1)/c."""
  return a * np.exp(-(t ** b) / c) * b * t ** (b - 1.0) / c


def fit_iou_curve(ious: np.ndarray) -> tuple[float, float, float]:
  """(a, b, c) of f fitted to the IoU of epochs 1..len(ious), ADELE's bounds and budget."""
  epochs = np.arange(1, len(ious) + 1, dtype=np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # covariance warnings on flat curves
    params, _ = scipy.optimize.curve_fit(iou_curve, epochs, np.asarray(ious, np.float64),
                                         p0=(max(min(float(np.max(ious)), 1.0), 1e-3), 0.5, 1.0),
                                         bounds=([0.0, 0.0, 1e-8], [1.0, 1.0, np.inf]),
                                         maxfev=50000)
  return tuple(float(p) for p in params)


def slope_drop(ious: np.ndarray) -> tuple[float, tuple]:
  """|f′(1) − f′(t)| / |f′(1)| at the last epoch t of the fitted curve, and the fit."""
  fit = fit_iou_curve(ious)
  first, last = iou_curve_slope(1.0, *fit), iou_curve_slope(float(len(ious)), *fit)
  return (abs(first - last) / abs(first) if first else 0.0), fit


def correct_labels(probs: np.ndarray, labels: np.ndarray, correct: np.ndarray, tau: float):
  """Pixels whose most probable class c is being corrected and has p_c > τ become c; the
  rest (and ignored pixels) keep their label."""
  best = np.argmax(probs, axis=-1)
  confident = (np.max(probs, axis=-1) > tau) & correct[best] & (labels != IGNORE)
  return np.where(confident, best, labels).astype(labels.dtype)


# ------------------------------------------------------------------------------------------------
# The step (pure JAX)
# ------------------------------------------------------------------------------------------------


def iou_counts(pred, labels, num_classes: int):
  """[C, 2] (intersection, union) of argmax predictions and labels over valid pixels."""
  valid = labels != IGNORE
  p = jax.nn.one_hot(jnp.where(valid, pred, -1), num_classes)
  t = jax.nn.one_hot(jnp.where(valid, labels, -1), num_classes)
  axes = tuple(range(pred.ndim))
  inter = jnp.sum(p * t, axis=axes)
  return jnp.stack([inter, jnp.sum(p, axis=axes) + jnp.sum(t, axis=axes) - inter], axis=-1)


def scaled_size(size: int, scale: float, multiple: int) -> int:
  return max(multiple, int(round(size * scale / multiple)) * multiple)


def multiscale_jsd(probs: list, rho: float):
  """JSD = mean_s KL(p_s ‖ m), m = mean_s p_s, averaged over the pixels with max m > ρ."""
  stacked = jnp.stack(probs)
  mean = jnp.mean(stacked, axis=0)
  kl = jnp.sum(stacked * (jnp.log(jnp.clip(stacked, 1e-7)) - jnp.log(jnp.clip(mean, 1e-7))), -1)
  mask = (jnp.max(mean, axis=-1) > rho).astype(jnp.float32)
  return jnp.sum(jnp.mean(kl, axis=0) * mask) / jnp.maximum(jnp.sum(mask), 1.0), jnp.mean(mask)


class ADELE(Method):
  name = 'adele'

  def __init__(self, config):
    super().__init__(config)
    cfg = config.adele
    if not 0.0 < float(cfg.r) < 1.0:
      raise ConfigError(f'adele.r must be in (0, 1), got {cfg.r}')
    if not 0.5 <= float(cfg.tau) < 1.0:
      raise ConfigError(f'adele.tau must be in [0.5, 1), got {cfg.tau}')
    if int(cfg.every) < 1:
      raise ConfigError(f'adele.every must be >= 1 epoch, got {cfg.every}')
    if not cfg.scales or any(float(s) <= 0 for s in cfg.scales):
      raise ConfigError(f'adele.scales must be positive factors, got {cfg.scales}')
    self.noisy_labels = None
    self.clean_masks = None
    self.num_classes = None
    self._pass_fn = None
    self.total_epochs = max(int(config.train.num_epochs), 1)

  @property
  def stride_multiple(self) -> int:
    return 2 ** int(self.config.model.depth) if self.config.model.name == 'unet' else 8

  def setup_data(self, data) -> None:
    self.noisy_labels = np.asarray(data.train_noisy, np.uint8)
    self.clean_masks = np.stack([data.train[n]['mask'] for n in range(len(data.train))])

  def init_variables(self, rng, model, images):
    self.num_classes = model.num_classes
    return super().init_variables(rng, model, images)

  def make_optimizer(self, num_steps: int, steps_per_epoch: int):
    self.total_epochs = max(-(-num_steps // steps_per_epoch), 1)  # sizes the IoU history
    return super().make_optimizer(num_steps, steps_per_epoch)

  def init_state(self, rng, variables, batch):
    del rng, variables
    labels = self.noisy_labels
    if labels is None:  # no data seen (a benchmark on random batches)
      labels = np.zeros(batch['noisy_mask'].shape, np.uint8)
    epochs, c = self.total_epochs, self.num_classes
    return {'bank': jnp.asarray(labels),
            'iou_counts': jnp.zeros((c, 2), jnp.float32),
            'iou_history': jnp.full((epochs, c), jnp.nan, jnp.float32),
            'start_epoch': jnp.full((c,), NOT_STARTED, jnp.int32)}

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    del schedule
    cfg, ms = self.config.adele, method_state
    images = batch['image']
    labels = gather_augmented(ms['bank'], batch['index'], batch['source_pixel']).astype(jnp.int32)
    logits, new_stats = self.apply_train(model, params, batch_stats, images, rng)
    num_classes = logits.shape[-1]
    ce = losses.cross_entropy(logits, labels)
    probs = [jax.nn.softmax(logits, axis=-1)]
    height, width = images.shape[1:3]
    for scale in (float(s) for s in cfg.scales):
      size = (scaled_size(height, scale, self.stride_multiple),
              scaled_size(width, scale, self.stride_multiple))
      if size == (height, width):
        continue  # the main prediction is this scale
      scaled, _ = self.apply_train(model, params, batch_stats,
                                   resize.resize_bilinear(images, size), rng)
      probs.append(jax.nn.softmax(resize.resize_bilinear(scaled, (height, width)), axis=-1))
    jsd, confident = (multiscale_jsd(probs, float(cfg.rho)) if len(probs) > 1
                      else (jnp.float32(0.0), jnp.float32(0.0)))
    loss = ce + float(cfg.lam) * jsd
    counts = ms['iou_counts'] + jax.lax.stop_gradient(
        iou_counts(jnp.argmax(logits, axis=-1), labels, num_classes))
    return loss, LossAux(metrics={'ce': ce, 'jsd': jsd, 'jsd_pixels': confident},
                         batch_stats=new_stats, method_state=dict(ms, iou_counts=counts))

  # -- between epochs ---------------------------------------------------------------------------

  def _train_probs(self, state, context):
    if self._pass_fn is None:
      model = context.model
      self._pass_fn = jax.jit(lambda v, images: jax.nn.softmax(
          model.apply(v, normalize_images(images), train=False), axis=-1))
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    probs = []
    for batch, valid in eval_batches(context.data.train, self.noisy_labels,
                                     int(self.config.eval.batch_size)):
      probs.append(np.asarray(jax.device_get(self._pass_fn(variables, batch['image'])))[:valid])
    return np.concatenate(probs)

  def after_epoch(self, state, epoch: int, context):
    cfg, ms = self.config.adele, state.method_state
    counts = np.asarray(jax.device_get(ms['iou_counts']), np.float64)
    ious = counts[:, 0] / np.maximum(counts[:, 1], 1.0)
    history = np.asarray(jax.device_get(ms['iou_history'])).copy()
    history[epoch] = ious
    start = np.asarray(jax.device_get(ms['start_epoch'])).copy()
    record = {'epoch': epoch + 1, 'iou': ious.tolist(), 'fit': {}, 'slope_drop': {}}
    if epoch + 1 >= MIN_FIT_EPOCHS:
      for c in np.flatnonzero(start == NOT_STARTED):
        drop, fit = slope_drop(history[:epoch + 1, c])
        record['fit'][int(c)], record['slope_drop'][int(c)] = fit, drop
        if drop > float(cfg.r):
          start[c] = epoch
    correct = (start != NOT_STARTED) & ((epoch - start) % int(cfg.every) == 0)
    record.update(start_epoch=[int(s) + 1 if s != NOT_STARTED else None for s in start],
                  corrected=np.flatnonzero(correct).tolist())
    bank = np.asarray(jax.device_get(ms['bank']))
    if correct.any():
      bank = correct_labels(self._train_probs(state, context), bank, correct, float(cfg.tau))
      self._log_bank(context, state, bank)
    self._log_epoch(context, record)
    new = {'bank': bank, 'iou_history': history, 'start_epoch': start,
           'iou_counts': np.zeros_like(counts)}
    method_state = dict(ms)
    for key, value in new.items():
      old = ms[key]
      method_state[key] = jax.device_put(np.asarray(value).astype(old.dtype), old.sharding)
    return state.replace(method_state=method_state)

  def _log_bank(self, context, state, bank):
    quality = metrics.revised_label_quality(bank, self.noisy_labels, self.clean_masks,
                                            context.data.num_classes)
    context.writer.write(int(state.step), {
        'dice_before': float(np.nanmean(quality['dice_before'])),
        'dice_after': float(np.nanmean(quality['dice_after'])),
        'changed_pixels': float(np.mean(bank != self.noisy_labels))}, prefix='adele_bank')

  def _log_epoch(self, context, record):
    if jax.process_index() != 0:
      return
    writers.write_epoch_record(os.path.join(context.workdir, 'adele_classes.jsonl'),
                               metrics.json_safe(record))
