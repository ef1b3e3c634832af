"""`gt_correct`: G-T correcting (Gao et al., Med Biol Eng Comput 2024; METHODS.md §3.3).

No reference code exists; this is METHODS' reconstruction from DivideMix, ELR and ADELE, every
open detail a `config.gt` knob with METHODS' assumed default.

**G stage** (sample recognition, positive feedback):
1. warm-up: `warmup_epochs` epochs of CE + Dice on every ỹ;
2. after every epoch, a loss pass over the training set (eval mode, no augmentation):
   ℓ_n = mean-pixel CE (or 1 − Dice) against ỹ_n, min-max normalised over n;
3. a 2-component 1-D GMM on ℓ (`nsegjax.mixture`, DivideMix's settings), w_n = posterior of
   the lower-mean component, clean set 𝒞 = {n : w_n > clean_thresh};
4. positive feedback: rounds of `warmup_epochs` epochs retraining from the warm-up weights
   (`feedback='retrain'`) or continuing (`'finetune'`) on 𝒞 alone, 𝒞 refitted after each,
   until |𝒞_k Δ 𝒞_{k−1}|/N < `tol` or `rounds` rounds have run.
Recognition accuracy / precision / recall / F1 / AUROC of the per-epoch fit against the noise log
are logged every epoch (`gt/*` in metrics.jsonl) and per round in `gt_rounds.jsonl`.

**T stage** (the remaining epochs): clean samples train on CE + Dice against ỹ; noisy ones on
CE + Dice against their label-bank entry plus λ·ELR. Every `correct_every` T-stage epochs the
bank takes the confident corrections of the noisy samples (max p > τ_fg / τ_bg by predicted
class, argmax p ≠ current label); after every epoch the ELR target memory takes
t ← β·t + (1 − β)·p̂. Both come from the epoch-end eval pass on un-augmented images: ELR updates a
sample's memory once per visit, which is once per epoch, so the pass does the same update from
the end-of-epoch network (and in eval mode, not from the dropout/BN-train forward of the step).

Label bank [N, H, W] uint8 and ELR memory [N, H, W, C] float16 live in the method state in the
samples' own (un-augmented) coordinates and are checkpointed with it; the step reads them in the
batch's augmented coordinates through the pipeline's `source_pixel` map
(`pipeline.gather_augmented`). Every hook is a pure function of the state, so a run killed at
any point resumes exactly.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax import config_checks, losses, metrics, mixture, writers
from nsegjax.data.pipeline import eval_batches, gather_augmented, normalize_images
from nsegjax.errors import ConfigError
from nsegjax.methods.base import LossAux, Method
from nsegjax.optim import keep_schedule_counts

IGNORE = 255
CHOICES = {'sample_loss': ('ce', 'one_minus_dice'), 'feedback': ('retrain', 'finetune'),
           'early': ('elr', 'none')}
WARMUP, FEEDBACK, CORRECT = 0, 1, 2  # phases


# ------------------------------------------------------------------------------------------------
# Pure pieces
# ------------------------------------------------------------------------------------------------


def per_image_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """[B] mean CE over each image's valid (non-ignore) pixels."""
  valid = (labels != IGNORE).astype(jnp.float32)
  total = jnp.sum(losses.pixel_cross_entropy(logits, labels) * valid, axis=(1, 2))
  return total / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)


def per_image_dice_loss(logits: jax.Array, labels: jax.Array, smooth: float = 1.0) -> jax.Array:
  """[B] 1 − mean over foreground classes of each image's soft Dice (ignore pixels left out)."""
  num_classes = logits.shape[-1]
  valid = (labels != IGNORE)[..., None].astype(jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1) * valid
  target = jax.nn.one_hot(labels, num_classes) * valid
  inter = jnp.sum(probs * target, axis=(1, 2))
  denom = jnp.sum(probs, axis=(1, 2)) + jnp.sum(target, axis=(1, 2))
  return 1.0 - jnp.mean(((2.0 * inter + smooth) / (denom + smooth))[:, 1:], axis=-1)


def min_max_normalize(values: np.ndarray) -> np.ndarray:
  values = np.asarray(values, np.float64)
  span = values.max() - values.min()
  return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def clean_posterior(sample_losses: np.ndarray, gmm_cfg) -> tuple[np.ndarray, dict]:
  """(w_n = posterior of the lower-mean GMM component, the fit as a dict) for losses [N]."""
  fit = mixture.fit_gmm_1d(jnp.asarray(sample_losses, jnp.float32), 2, int(gmm_cfg.max_iter),
                           float(gmm_cfg.tol), float(gmm_cfg.reg_covar))
  posterior = np.asarray(mixture.posteriors(fit, jnp.asarray(sample_losses, jnp.float32)))[:, 0]
  summary = {k: np.asarray(getattr(fit, k)).tolist()
             for k in ('weights', 'means', 'variances', 'iterations', 'converged')}
  return posterior, summary


def confident_correction(probs: np.ndarray, labels: np.ndarray, tau_fg: float,
                         tau_bg: float) -> np.ndarray:
  """Labels with every pixel relabelled to argmax p where p's max exceeds τ (τ_bg for a predicted
  background, τ_fg otherwise) and disagrees with the label; ignore pixels stay ignored."""
  pred = probs.argmax(-1)
  tau = np.where(pred == 0, tau_bg, tau_fg)
  change = (probs.max(-1) > tau) & (pred != labels) & (labels != IGNORE)
  return np.where(change, pred, labels).astype(labels.dtype)


def elr_normalize(probs):
  """ELR's p̂: probabilities clipped to [1e−4, 1 − 1e−4] and renormalised."""
  clipped = jnp.clip(probs, 1e-4, 1.0 - 1e-4)
  return clipped / jnp.sum(clipped, axis=-1, keepdims=True)


def elr_memory_update(memory, probs, beta: float):
  """t ← β·t + (1 − β)·p̂ (p̂ carries no gradient)."""
  return beta * memory + (1.0 - beta) * lax.stop_gradient(elr_normalize(probs))


def per_image_elr(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """[B] mean over valid pixels of log(1 − ⟨t_i, p̂_i⟩) (Liu et al. 2020)."""
  inner = jnp.sum(targets * elr_normalize(jax.nn.softmax(logits, axis=-1)), axis=-1)
  term = jnp.log(1.0 - inner) * valid
  return jnp.sum(term, axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)


def set_change(previous: np.ndarray, current: np.ndarray) -> float:
  """|𝒞_k Δ 𝒞_{k−1}| / N."""
  return float(np.mean(np.asarray(previous, bool) != np.asarray(current, bool)))


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------


class GTCorrect(Method):
  """G-T correcting behind the method interface; one U-Net, its state a label bank and memory."""

  name = 'gt_correct'

  def __init__(self, config):
    super().__init__(config)
    cfg = config.gt
    config_checks.check_choices(cfg, 'gt', CHOICES)
    for key in ('warmup_epochs', 'rounds', 'correct_every'):
      if int(cfg[key]) < 1:
        raise ConfigError(f'gt.{key} must be >= 1, got {cfg[key]}')
    for key in ('clean_thresh', 'tau_fg', 'tau_bg', 'elr_beta', 'tol'):
      if not 0.0 <= float(cfg[key]) <= 1.0:
        raise ConfigError(f'gt.{key} must be in [0, 1], got {cfg[key]}')
    self.noisy_labels = None
    self.is_noisy = None
    self.num_classes = None
    self.tx = None
    self._pass_fn = None

  # -- data and state ---------------------------------------------------------------------------

  def setup_data(self, data) -> None:
    if jax.process_count() > 1:
      raise ConfigError('gt_correct keeps its label bank on one host; run it single-process')
    self.noisy_labels = np.asarray(data.train_noisy, np.uint8)
    self.is_noisy = np.array([bool(r['is_noisy']) for r in data.noise_records])

  def init_variables(self, rng, model, images):
    self.num_classes = model.num_classes
    return super().init_variables(rng, model, images)

  def init_state(self, rng, variables, batch):
    del rng
    labels = self.noisy_labels
    if labels is None:  # no data seen (a benchmark on random batches): size it from the batch
      labels = np.zeros(batch['noisy_mask'].shape, np.uint8)
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (the state is donated)
    return {
        'phase': jnp.int32(WARMUP), 'round': jnp.int32(0), 't_epochs': jnp.int32(0),
        'clean': jnp.ones(labels.shape[0], jnp.float32),
        'bank': jnp.asarray(labels),
        'memory': jnp.zeros(labels.shape + (self.num_classes,), jnp.float16),
        'warm': {'params': copy(variables['params']), 'batch_stats': copy(variables['batch_stats'])},
    }

  def make_optimizer(self, num_steps: int, steps_per_epoch: int):
    self.tx, lr = super().make_optimizer(num_steps, steps_per_epoch)
    return self.tx, lr

  # -- the step ---------------------------------------------------------------------------------

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    del schedule
    cfg = self.config.gt
    logits, new_batch_stats = self.apply_train(model, params, batch_stats, batch['image'], rng)
    index = batch['index']
    labels = gather_augmented(method_state['bank'], index, batch['source_pixel']).astype(jnp.int32)
    phase = method_state['phase']
    in_clean = method_state['clean'][index]
    # Warm-up and T stage train on every sample; feedback rounds on 𝒞 alone.
    weights = jnp.where(phase == FEEDBACK, in_clean, 1.0)
    seg = per_image_ce(logits, labels) + self.config.ce.dice_weight * per_image_dice_loss(
        logits, labels)
    seg_loss = jnp.sum(weights * seg) / jnp.maximum(jnp.sum(weights), 1.0)
    metrics_out = {'seg_loss': seg_loss, 'clean_in_batch': jnp.mean(in_clean)}
    loss = seg_loss
    if cfg.early == 'elr':
      targets = gather_augmented(method_state['memory'], index, batch['source_pixel'])
      valid = (labels != IGNORE).astype(jnp.float32)
      elr = per_image_elr(logits, targets.astype(jnp.float32), valid)
      noisy_weight = jnp.where(phase == CORRECT, 1.0 - in_clean, 0.0)
      elr_loss = float(cfg.elr_lambda) * jnp.sum(noisy_weight * elr) / index.shape[0]
      loss = loss + elr_loss
      metrics_out['elr'] = elr_loss
    return loss, LossAux(metrics=metrics_out, batch_stats=new_batch_stats,
                         method_state=method_state)

  # -- between epochs ---------------------------------------------------------------------------

  def _train_pass(self, state, context):
    """Eval-mode pass over the un-augmented training split: per-sample losses against ỹ and
    the probabilities, both as NumPy (host memory: N·H·W·C float32)."""
    if self._pass_fn is None:  # compiled once per run, not once per epoch
      model, sample_loss = context.model, self.config.gt.sample_loss

      @jax.jit
      def probs_and_loss(variables, images, noisy):
        logits = model.apply(variables, normalize_images(images), train=False)
        value = (per_image_ce(logits, noisy) if sample_loss == 'ce'
                 else per_image_dice_loss(logits, noisy))
        return jax.nn.softmax(logits, axis=-1), value

      self._pass_fn = probs_and_loss
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    probs, values = [], []
    for batch, valid in eval_batches(context.data.train, context.data.train_noisy,
                                     int(self.config.eval.batch_size)):
      p, v = jax.device_get(self._pass_fn(variables, batch['image'], batch['noisy_mask']))
      probs.append(p[:valid])
      values.append(v[:valid])
    return np.concatenate(probs), np.concatenate(values)

  def _recognise(self, sample_losses):
    normalized = min_max_normalize(sample_losses)
    posterior, fit = clean_posterior(normalized, self.config.gt.gmm)
    clean = posterior > float(self.config.gt.clean_thresh)
    scores = metrics.sample_identification_scores(~clean, self.is_noisy, 1.0 - posterior)
    return clean, fit, scores

  def _restart_from_warm(self, state):
    warm = state.method_state['warm']
    params = jax.tree.map(jnp.copy, warm['params'])
    opt_state = keep_schedule_counts(jax.jit(self.tx.init)(params), state.opt_state)
    return state.replace(params=params, batch_stats=jax.tree.map(jnp.copy, warm['batch_stats']),
                         opt_state=opt_state)

  def after_epoch(self, state, epoch: int, context):
    cfg = self.config.gt
    ms = jax.device_get(state.method_state)
    phase, round_ = int(ms['phase']), int(ms['round'])
    probs, sample_losses = self._train_pass(state, context)
    fitted_clean, fit, scores = self._recognise(sample_losses)
    context.writer.write(int(state.step), scores, prefix='gt')
    updates = {}
    warm_epochs = int(cfg.warmup_epochs)

    if phase == WARMUP and epoch + 1 == warm_epochs:
      updates.update(phase=FEEDBACK, round=1, clean=fitted_clean)
      updates['warm'] = {'params': state.params, 'batch_stats': state.batch_stats}
      self._log_round(context, epoch, 0, fitted_clean, fit, scores, change=None)
    elif phase == FEEDBACK and (epoch + 1 - warm_epochs) % warm_epochs == 0:
      change = set_change(ms['clean'] > 0.5, fitted_clean)
      self._log_round(context, epoch, round_, fitted_clean, fit, scores, change)
      updates['clean'] = fitted_clean
      if change < float(cfg.tol) or round_ >= int(cfg.rounds):
        updates['phase'] = CORRECT
      else:
        updates['round'] = round_ + 1

    clean = updates.get('clean', ms['clean'] > 0.5)
    if updates.get('phase', phase) == CORRECT:
      t_epochs = int(ms['t_epochs'])
      if cfg.early == 'elr':
        updates['memory'] = np.asarray(elr_memory_update(
            ms['memory'].astype(np.float32), probs, float(cfg.elr_beta))).astype(np.float16)
      if t_epochs % int(cfg.correct_every) == 0:
        bank = np.array(ms['bank'])
        noisy = ~np.asarray(clean, bool)
        bank[noisy] = confident_correction(probs[noisy], bank[noisy], float(cfg.tau_fg),
                                           float(cfg.tau_bg))
        self._log_bank(context, state, bank)
        updates['bank'] = bank
      updates['t_epochs'] = t_epochs + 1

    if not updates:
      return state
    method_state = dict(state.method_state)
    for key, value in updates.items():
      if key == 'warm':
        method_state[key] = jax.tree.map(jnp.copy, value)
      else:
        old = state.method_state[key]
        method_state[key] = jax.device_put(np.asarray(value).astype(old.dtype), old.sharding)
    state = state.replace(method_state=method_state)
    if updates.get('round', round_) > round_ and cfg.feedback == 'retrain':
      state = self._restart_from_warm(state)
    return state

  # -- logs -------------------------------------------------------------------------------------

  def _log_round(self, context, epoch, round_, clean, fit, scores, change):
    record = {'epoch': epoch + 1, 'round': round_, 'clean_size': int(np.sum(clean)),
              'change': change, 'gmm': fit, **scores}
    print(f'gt_correct: round {round_} after epoch {epoch + 1}: |C| = {record["clean_size"]}, '
          f'recognition accuracy {scores["accuracy"]:.3f} precision {scores["precision"]:.3f} '
          f'recall {scores["recall"]:.3f}', flush=True)
    if jax.process_index() != 0:
      return
    writers.write_epoch_record(os.path.join(context.workdir, 'gt_rounds.jsonl'),
                               metrics.json_safe(record))

  def _log_bank(self, context, state, bank):
    """How far the bank is from the clean truth: the revised labels' Dice before/after."""
    clean_masks = np.stack([context.data.train[n]['mask'] for n in range(len(context.data.train))])
    quality = metrics.revised_label_quality(bank, self.noisy_labels, clean_masks,
                                            context.data.num_classes)
    context.writer.write(int(state.step), {
        'dice_before': float(np.nanmean(quality['dice_before'])),
        'dice_after': float(np.nanmean(quality['dice_after'])),
        'changed_pixels': float(np.mean(bank != self.noisy_labels))}, prefix='gt_bank')
