"""`mtcl`: mean teacher + pixel-wise confident learning (Xu et al., MICCAI 2021;
[code: lemoshu/MTCL]; METHODS.md §4).

A few images have high-quality (HQ) labels: a clean subset D_c (`mtcl.clean_fraction`, drawn from
`config.seed`), kept on the device. Every step `hq_share` of the student's batch is drawn from
D_c (with y, flip / rotation / intensity augmented) and the rest is the start of the loader's
batch (low-quality, LQ: ỹ). The EMA teacher (decay
`ema`, noisy input clip(N(0, 0.1), ±0.2)) predicts the LQ images; confident learning on those
probabilities flags the LQ pixels whose label is likely wrong:

- per-class thresholds t_j = mean p_j over the pixels labelled j;
- the confident joint C[i, j] counts pixels labelled i whose most probable class above its
  threshold is j, calibrated so row i sums to the count of label i;
- pruning (`cl_prune`): `by_noise_rate` flags, for every i ≠ j, the round(C[i, j]) pixels
  labelled i with the largest margin p_j − p_i; `by_class` the Σ_{j≠i} C[i, j] pixels labelled
  i with the lowest p_i; `both` the pixels flagged by both (cleanlab's rules);
- flagged pixels are flipped to the teacher's argmax (`fix='flip'`) or get the soft target
  0.8 on it and 0.2 on ỹ (`smooth`).

Loss: 0.5(CE + Dice) on HQ against y, + weak_weight·λ(t)·0.5(CE + Dice) on LQ against the
repaired labels, + λ(t)·MSE(student, teacher) on all, with λ(t) = w_cons·sigmoid ramp over the
first `cons_rampup` of training (the code: 40 of 53 "epochs" of 150 iterations). Test: the
student (`eval_model`).
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax import config_checks
from nsegjax.errors import ConfigError
from nsegjax.losses import IGNORE
from nsegjax.methods import clean_subset
from nsegjax.methods.base import LossAux, Method
from nsegjax.methods.des import ema_update, sigmoid_rampup

CHOICES = {'cl_prune': ('both', 'by_noise_rate', 'by_class'), 'fix': ('flip', 'smooth'),
           'eval_model': ('student', 'teacher')}
SMOOTH_TARGET = 0.8


# ------------------------------------------------------------------------------------------------
# Confident learning on pixels (pure; [N, C] probabilities and [N] labels, −1 = not counted)
# ------------------------------------------------------------------------------------------------


def per_class_thresholds(probs, labels, num_classes: int):
  """t_j = mean of p_j over the pixels labelled j (1 where no pixel is)."""
  onehot = jax.nn.one_hot(labels, num_classes)  # label −1: all zeros
  counts = jnp.sum(onehot, axis=0)
  return jnp.where(counts > 0, jnp.sum(onehot * probs, axis=0) / jnp.maximum(counts, 1), 1.0)


def raw_confident_joint(probs, labels, num_classes: int):
  """Integer C [C, C]: rows the given label, columns the confident label (the most probable
  class among those at or above their threshold; pixels with none are not counted)."""
  thresholds = per_class_thresholds(probs, labels, num_classes)
  above = probs >= thresholds
  confident = jnp.argmax(jnp.where(above, probs, -1.0), axis=-1)
  counted = jnp.any(above, axis=-1) & (labels >= 0)
  return jnp.zeros((num_classes, num_classes), jnp.int32).at[
      jnp.where(counted, labels, 0), confident].add(counted.astype(jnp.int32))


def _label_counts(labels, num_classes: int):
  return jnp.sum(jax.nn.one_hot(labels, num_classes, dtype=jnp.int32), axis=0)


def confident_joint(probs, labels, num_classes: int):
  """Calibrated C: row i rescaled to sum to the number of pixels labelled i."""
  joint = raw_confident_joint(probs, labels, num_classes).astype(jnp.float32)
  row = jnp.sum(joint, axis=1, keepdims=True)
  counts = _label_counts(labels, num_classes).astype(jnp.float32)[:, None]
  return jnp.where(row > 0, joint / jnp.maximum(row, 1.0) * counts, 0.0)


def top_k_mask(scores, member, k):
  """Boolean mask of the k highest-scoring members (k traced)."""
  masked = jnp.where(member, scores, -jnp.inf)
  ranks = jnp.argsort(jnp.argsort(-masked))
  return member & (ranks < k)


def label_issues(probs, labels, num_classes: int, prune: str = 'both'):
  """Boolean [N]: the pixels confident learning flags as wrongly labelled."""
  # float32 counts: a calibrated count at an exact half may round either way (one pixel)
  joint = confident_joint(probs, labels, num_classes)
  by_rate = jnp.zeros(labels.shape, bool)
  by_class = jnp.zeros(labels.shape, bool)
  for i in range(num_classes):
    member = labels == i
    for j in range(num_classes):
      if i != j:
        count = jnp.round(joint[i, j]).astype(jnp.int32)
        by_rate = by_rate | top_k_mask(probs[:, j] - probs[:, i], member, count)
    off = jnp.round(jnp.sum(joint[i]) - joint[i, i]).astype(jnp.int32)
    by_class = by_class | top_k_mask(-probs[:, i], member, off)
  return {'by_noise_rate': by_rate, 'by_class': by_class, 'both': by_rate & by_class}[prune]


def repaired_targets(noisy, teacher_probs, issues, num_classes: int, fix: str):
  """[..., C] targets: one-hot ỹ, with flagged pixels flipped to the teacher's argmax or
  softened to 0.8 on it and 0.2 on ỹ. Ignored pixels stay all-zero."""
  noisy_1h = jax.nn.one_hot(noisy, num_classes)
  teacher_1h = jax.nn.one_hot(jnp.argmax(teacher_probs, axis=-1), num_classes)
  fixed = teacher_1h if fix == 'flip' else SMOOTH_TARGET * teacher_1h + (
      1 - SMOOTH_TARGET) * noisy_1h
  return jnp.where(issues[..., None], fixed, noisy_1h)


# ------------------------------------------------------------------------------------------------
# Losses on soft targets
# ------------------------------------------------------------------------------------------------


def soft_ce_dice(logits, targets, valid, smooth: float = 1.0):
  """0.5·(CE + Dice) against soft targets [..., C]: CE over valid pixels, and 1 − the mean
  foreground soft Dice over the batch (MTCL's 0.5(CE + Dice))."""
  log_p = jax.nn.log_softmax(logits, axis=-1)
  ce = -jnp.sum(targets * log_p, axis=-1)
  ce = jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1.0)
  probs = jnp.exp(log_p) * valid[..., None]
  t = targets * valid[..., None]
  axes = tuple(range(logits.ndim - 1))
  dice = (2 * jnp.sum(probs * t, axis=axes) + smooth) / (
      jnp.sum(probs, axis=axes) + jnp.sum(t, axis=axes) + smooth)
  return 0.5 * (ce + 1.0 - jnp.mean(dice[1:]))


class MTCL(Method):
  name = 'mtcl'
  trains_on_clean_labels = False  # D_c's masks come through `setup_data`, nothing else

  def __init__(self, config):
    super().__init__(config)
    cfg = config.mtcl
    config_checks.check_choices(cfg, 'mtcl', CHOICES)
    for key in ('clean_fraction', 'hq_share', 'ema', 'cons_rampup'):
      if not 0.0 < float(cfg[key]) <= 1.0:
        raise ConfigError(f'mtcl.{key} must be in (0, 1], got {cfg[key]}')
    self.clean = None

  def setup_data(self, data) -> None:
    ids = clean_subset.choose_clean_subset(int(self.config.seed), len(data.train),
                                           float(self.config.mtcl.clean_fraction))
    self.clean = (np.stack([data.train[int(n)]['image'] for n in ids]),
                  np.stack([data.train[int(n)]['mask'] for n in ids]).astype(np.uint8))

  def init_state(self, rng, variables, batch):
    del rng
    if self.clean is None:  # no data seen (a benchmark): the batch stands in for D_c
      self.clean = (np.zeros(batch['image'].shape, np.uint8),
                    np.zeros(batch['image'].shape[:3], np.uint8))
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (the state is donated)
    return {'teacher': {'params': copy(variables['params']),
                        'batch_stats': copy(variables['batch_stats'])},
            'clean_images': jnp.asarray(self.clean[0]), 'clean_masks': jnp.asarray(self.clean[1])}

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    cfg, ms = self.config.mtcl, method_state
    # HQ samples replace the end of the loader's batch, so the student sees train.batch_size
    # images a step, hq_share of them HQ (the code's 2 + 2).
    size = batch['image'].shape[0]
    hq_size = min(max(1, int(round(float(cfg.hq_share) * size))), size - 1)
    lq_images, noisy = batch['image'][:size - hq_size], batch['noisy_mask'][:size - hq_size]
    hq_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
    hq_images, hq_masks = clean_subset.draw_batch(hq_rng, ms['clean_images'], ms['clean_masks'],
                                                  hq_size, float(cfg.intensity))
    images = jnp.concatenate([hq_images, lq_images])
    logits, new_stats = self.apply_train(model, params, batch_stats, images, dropout_rng)
    num_classes = logits.shape[-1]
    noise = jnp.clip(float(cfg.input_noise) * jax.random.normal(noise_rng, images.shape),
                     -float(cfg.input_noise_clip), float(cfg.input_noise_clip))
    teacher_probs = lax.stop_gradient(jax.nn.softmax(
        model.apply(ms['teacher'], images + noise, train=False), axis=-1))

    hq_labels = hq_masks.astype(jnp.int32)
    hq_valid = (hq_labels != IGNORE).astype(jnp.float32)
    hq_loss = soft_ce_dice(logits[:hq_size], jax.nn.one_hot(hq_labels, num_classes), hq_valid)

    lq_valid = noisy != IGNORE
    lq_teacher = teacher_probs[hq_size:]
    flat_labels = jnp.where(lq_valid, noisy, -1).reshape(-1)
    issues = label_issues(lq_teacher.reshape(-1, num_classes), flat_labels, num_classes,
                          cfg.cl_prune).reshape(noisy.shape)
    targets = repaired_targets(noisy, lq_teacher, issues, num_classes, cfg.fix)
    lq_loss = soft_ce_dice(logits[hq_size:], targets, lq_valid.astype(jnp.float32))

    ramp = float(cfg.w_cons) * sigmoid_rampup(schedule['progress'] / float(cfg.cons_rampup))
    consistency = jnp.mean((jax.nn.softmax(logits, axis=-1) - teacher_probs) ** 2)
    loss = hq_loss + float(cfg.weak_weight) * ramp * lq_loss + ramp * consistency

    decay = float(cfg.ema)
    teacher = {'params': ema_update(ms['teacher']['params'], lax.stop_gradient(params), decay),
               'batch_stats': ema_update(ms['teacher']['batch_stats'], new_stats, decay)}
    flagged = jnp.sum(issues & lq_valid) / jnp.maximum(jnp.sum(lq_valid), 1)
    metrics = {'hq_loss': hq_loss, 'lq_loss': lq_loss, 'consistency': consistency,
               'ramp': ramp, 'flagged_fraction': flagged}
    return loss, LossAux(metrics=metrics, batch_stats=new_stats,
                         method_state=dict(ms, teacher=teacher))

  def predict(self, model, variables, method_state, images):
    if self.config.mtcl.eval_model == 'teacher':
      variables = method_state['teacher']
    return jax.nn.softmax(model.apply(variables, images, train=False), axis=-1)
