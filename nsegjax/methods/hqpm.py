"""`hqpm`: high-quality pseudo masks (Huang et al., Neural Networks 2025; METHODS.md §3.4).

No reference code exists; this is METHODS' reconstruction, every open detail a `config.hqpm`
knob with METHODS' assumed default. One run holds both phases (`method_state['phase']`):

**Phase 1** (the first `nin_epochs` epochs): the noise identification network (NIN,
`models.nin`: shared encoder, decoders fp / fn / ref) learns on the clean subset D_c
(`clean_fraction` of the training set, drawn from `config.seed`), which the method keeps on the
device with its clean masks. Every step draws its own batch from D_c, corrupts each clean mask
afresh with the run's own noise protocol and parameters (a sample is corrupted with the
protocol's α, keyed on (seed, n, step); `nin_fresh_noise=False` or a rater protocol use D_c's
fixed labels instead), augments (flips, 90° rotations, intensity) and trains on
Σ_b BCE(pos_weight) + soft Dice (`hqpm_rules.nin_loss`). The loader's batch is not used.

**Revision** (once, between the phases): an eval-mode NIN pass over every training sample with
its fixed imperfect label gives ŷ and the reliability c (`hqpm_rules.revise`; the fp / fn
branches' thresholds are `revise_thresh`, or with `revise_select='clean_subset'` those of
`revise_grid` that revise D_c best under a fresh corruption), kept as a label
bank in the method state; `pseudo_masks.npz`, `pseudo_masks.png` and `hqpm_revision.json`
(pseudo-mask Dice against the clean truth before/after, for D_n and for its corrupted part)
are written to the workdir.

**Phase 2** (the remaining epochs): K U-Nets from different keys, parameters stacked (applied
by `networks.map_networks`: unrolled by default, `parallel='vmap'` to vmap), train on the loader's batches (D_c and D_n in proportion to their sizes): D_c samples
on CE + Dice against y, D_n samples on soft CE + soft Dice against ŷ softened per network
(`slsr` or `ensemble`, from the other networks' mean). Test time: the mean of the K
probability maps (`eval='mean'`) or the first network's.

Both parts live in `params` ({'nin', 'nets'}) under one optimiser (`optax.multi_transform`):
the NIN's Adam over phase 1, the networks' `config.train` optimiser with its schedule over
phase 2. The step is compiled once per phase (`step_variant`), so a phase never computes the
other's networks; the untaken part gets zero gradients, and the optimiser state restarts at the switch
(schedules keep their position), so neither part moves outside its phase. Binary segmentation
(one foreground class) only: METHODS' one-vs-rest extension to several classes is not built.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import PartitionSpec

from nsegjax import config_checks, metrics, noise, optim, sharding
from nsegjax.data.pipeline import eval_batches, gather_augmented, normalize_images
from nsegjax.errors import ConfigError
from nsegjax.methods import hqpm_rules as rules
from nsegjax.methods import networks
from nsegjax.methods.clean_subset import augment_jointly, choose_clean_subset
from nsegjax.methods.base import LossAux, Method
from nsegjax.models.nin import NoiseIdentificationNet
from nsegjax.noise import generate as noise_gen
from nsegjax.optim import keep_schedule_counts

IGNORE = 255
NIN_PHASE, SEG_PHASE = 1, 2
CHOICES = {'soften': ('slsr', 'ensemble'), 'sampling': ('proportional', 'balanced'),
           'seg_loss': ('ce_dice', 'ce'), 'eval': ('mean', 'first'),
           'parallel': networks.PARALLEL_CHOICES,
           'revise_select': ('fixed', 'clean_subset')}
_FRESH_NOISE_STREAM = 0x4851504D  # 'HQPM': keeps the fresh corruptions off every other stream
_SELECTION_STEP = 2**31 - 1  # the fresh corruption that selects thresholds: no training step


# ------------------------------------------------------------------------------------------------
# Pure pieces
# ------------------------------------------------------------------------------------------------


def fresh_corruption_keys(seed: int, index: jax.Array, step: jax.Array) -> jax.Array:
  """One key per sample, a function of (seed, n, step) alone."""
  base = jax.random.fold_in(jax.random.key(seed), _FRESH_NOISE_STREAM)
  return jax.vmap(lambda n: jax.random.fold_in(jax.random.fold_in(base, n), step))(index)


def fresh_imperfect_labels(keys: jax.Array, clean: jax.Array, corrupt_fn, alpha: float):
  """Each clean mask corrupted by `corrupt_fn(key, mask)` with probability α, else kept."""

  def one(key, mask):
    pick_key, noise_key = jax.random.split(key)
    noisy = corrupt_fn(noise_key, mask).astype(mask.dtype)
    return jnp.where(jax.random.uniform(pick_key) < alpha, noisy, mask)

  return jax.vmap(one)(keys, clean)


def nin_input(images: jax.Array, labels: jax.Array) -> jax.Array:
  """concat(x, onehot(ỹ), known): unlabelled pixels (255, scribbles) are all-zero in the
  one-hot part and 0 in the known channel."""
  known = (labels != IGNORE).astype(images.dtype)[..., None]
  return jnp.concatenate([images, jax.nn.one_hot(labels, 2, dtype=images.dtype), known], -1)


def foreground(labels: jax.Array) -> jax.Array:
  """Binary foreground of a label map; unlabelled pixels count as background."""
  return ((labels != 0) & (labels != IGNORE)).astype(jnp.float32)


def per_image_soft_seg_loss(logits: jax.Array, target_fg: jax.Array, valid: jax.Array,
                            with_dice: bool, smooth: float = 1.0) -> jax.Array:
  """[B] soft CE against the two-class target (1 − s, s) over valid pixels, plus (with_dice)
  1 − the foreground soft Dice of each image. A hard s is plain CE + Dice."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  target = jnp.stack([1.0 - target_fg, target_fg], axis=-1)
  ce = -jnp.sum(target * log_probs, axis=-1) * valid
  loss = jnp.sum(ce, axis=(1, 2)) / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)
  if with_dice:
    p = jnp.exp(log_probs[..., 1]) * valid
    t = target_fg * valid
    dice = (2.0 * jnp.sum(p * t, axis=(1, 2)) + smooth) / (
        jnp.sum(p, axis=(1, 2)) + jnp.sum(t, axis=(1, 2)) + smooth)
    loss = loss + 1.0 - dice
  return loss


def subset_weights(in_clean: jax.Array, clean_fraction: float, sampling: str) -> jax.Array:
  """[B] image weights: 1 (`proportional`), or (`balanced`) D_c and D_n images reweighted so
  that each set carries half of the expected batch loss."""
  if sampling == 'proportional':
    return jnp.ones_like(in_clean, jnp.float32)
  f = min(max(clean_fraction, 1e-6), 1.0 - 1e-6)
  return jnp.where(in_clean, 0.5 / f, 0.5 / (1.0 - f))


# ------------------------------------------------------------------------------------------------
# The method
# ------------------------------------------------------------------------------------------------


class HQPM(Method):
  """HQPM behind the method interface: `params = {'nin', 'nets'}`, the nets stacked over K."""

  name = 'hqpm'
  trains_on_clean_labels = False  # D_c's masks come through `setup_data`, nothing else

  def __init__(self, config):
    super().__init__(config)
    cfg = config.hqpm
    config_checks.check_choices(cfg, 'hqpm', CHOICES)
    if int(cfg.k) < 2:
      raise ConfigError(f'hqpm.k must be >= 2 (softening reads the other networks), got {cfg.k}')
    if int(cfg.nin_epochs) < 1:
      raise ConfigError(f'hqpm.nin_epochs must be >= 1, got {cfg.nin_epochs}')
    for key in ('clean_fraction', 'revise_thresh', 'eps', 'lambda'):
      if not 0.0 <= float(cfg[key]) <= 1.0:
        raise ConfigError(f'hqpm.{key} must be in [0, 1], got {cfg[key]}')
    if not cfg.revise_grid or not all(0.0 <= float(t) <= 1.0 for t in cfg.revise_grid):
      raise ConfigError(f'hqpm.revise_grid must be thresholds in [0, 1], got {cfg.revise_grid}')
    if float(cfg.clean_fraction) <= 0.0:
      raise ConfigError('hqpm.clean_fraction must be > 0: the NIN trains on the clean subset')
    self.nin = NoiseIdentificationNet(depth=int(cfg.nin.depth), base_width=int(cfg.nin.base_width))
    self.clean_ids = None
    self.fixed_pairs = not bool(cfg.nin_fresh_noise)
    self.corrupt_fn, self.alpha = None, 1.0
    self.tx = None
    self._maps_fn = None
    self._data = {}

  # -- data and state ---------------------------------------------------------------------------

  def setup_data(self, data) -> None:
    if jax.process_count() > 1:
      raise ConfigError('hqpm keeps its clean subset and label bank on one host; run it '
                        'single-process')
    if data.num_classes != 2:
      raise ConfigError(f'hqpm handles binary segmentation (one foreground class); the dataset '
                        f'has {data.num_classes} classes')
    num = len(data.train)
    self.clean_ids = choose_clean_subset(int(self.config.seed), num,
                                         float(self.config.hqpm.clean_fraction))
    clean = np.stack([data.train[int(n)]['mask'] for n in range(num)]).astype(np.uint8)
    self._data = {
        'noisy': np.asarray(data.train_noisy, np.uint8),
        'clean_subset_images': np.stack([data.train[int(n)]['image'] for n in self.clean_ids]),
        'clean_subset_masks': clean[self.clean_ids],
        'clean_masks_for_report': clean,  # scores the revision; never a training target
        'is_noisy': np.array([bool(r['is_noisy']) for r in data.noise_records]),
    }
    entry = noise.PROTOCOLS.get(self.config.noise.name)
    if entry.from_dataset is not None:  # real raters: the pairs are what there is
      self.fixed_pairs = True
    if not self.fixed_pairs:
      _, params = noise_gen.resolve(self.config.noise.name, dict(self.config.noise.params), clean)
      self.alpha = float(params.get('alpha', 1.0))
      self.corrupt_fn = lambda key, mask: entry.corrupt(key, mask, params)[0]

  def init_variables(self, rng, model, images):
    nin_rng, nets_rng = jax.random.split(rng)
    k = int(self.config.hqpm.k)
    nets = networks.init_stacked(self, nets_rng, model, images, k)
    labels = jnp.zeros(images.shape[:3], jnp.int32)
    nin = self.nin.init(nin_rng, nin_input(images, labels), train=False)
    return {'params': {'nin': nin['params'], 'nets': nets['params']},
            'batch_stats': {'nin': nin['batch_stats'], 'nets': nets['batch_stats']}}

  def init_state(self, rng, variables, batch):
    del rng, variables
    if not self._data:  # no data seen (a benchmark on random batches): size it from the batch
      labels = np.zeros(batch['noisy_mask'].shape, np.uint8)
      self.clean_ids = np.arange(labels.shape[0])
      images = np.zeros(batch['image'].shape, np.uint8)
      self._data = {'noisy': labels, 'clean_subset_images': images,
                    'clean_subset_masks': labels, 'clean_masks_for_report': labels}
      self.fixed_pairs = True
    d = self._data
    num = d['noisy'].shape[0]
    in_clean = np.zeros(num, bool)
    in_clean[self.clean_ids] = True
    clean_labels = np.zeros_like(d['noisy'])
    clean_labels[self.clean_ids] = d['clean_subset_masks']
    return {
        'phase': jnp.int32(NIN_PHASE),
        'clean_ids': jnp.asarray(self.clean_ids, jnp.int32),
        'in_clean': jnp.asarray(in_clean),
        'clean_subset_images': jnp.asarray(d['clean_subset_images']),
        'clean_subset_masks': jnp.asarray(d['clean_subset_masks']),
        'clean_subset_noisy': jnp.asarray(d['noisy'][self.clean_ids]),
        'clean_labels': jnp.asarray(clean_labels),  # y on D_c, zeros elsewhere (never read)
        'revised': jnp.asarray(d['noisy']),
        'reliability': jnp.zeros(d['noisy'].shape, jnp.float16),
    }

  def make_optimizer(self, num_steps: int, steps_per_epoch: int):
    cfg, train_cfg = self.config.hqpm, self.config.train
    switch = min(int(cfg.nin_epochs) * steps_per_epoch, num_steps)
    nin_lr = optim.lr_schedule(train_cfg, switch, peak=float(cfg.nin_lr))
    seg_lr = optax.join_schedules(
        [optax.constant_schedule(0.0), optim.lr_schedule(train_cfg, max(num_steps - switch, 1))],
        [switch])
    tx = optax.multi_transform(
        {'nin': optax.adam(nin_lr), 'nets': optim.base_optimizer(train_cfg, seg_lr)},
        lambda params: {part: jax.tree.map(lambda _, p=part: p, params[part]) for part in params})
    self.tx = optim.with_grad_clip(train_cfg, tx)
    return self.tx, lambda step: jnp.where(step < switch, nin_lr(step), seg_lr(step))

  # -- the step ---------------------------------------------------------------------------------

  def step_variant(self, state):
    return int(state.method_state['phase'])

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    ms = method_state
    # The phase is static (`step_variant`): a lax.cond between the phases would run every
    # convolution inside a conditional, which XLA:CPU does ~14× slower (measured).
    phase = schedule['variant'] or NIN_PHASE
    if phase == NIN_PHASE:
      loss, stats, out = self._nin_loss(params['nin'], batch_stats['nin'], ms, batch, rng,
                                        schedule['step'])
      stats = {'nin': stats, 'nets': batch_stats['nets']}
    else:
      loss, stats, out = self._seg_loss(model, params['nets'], batch_stats['nets'], ms, batch,
                                        rng)
      stats = {'nin': batch_stats['nin'], 'nets': stats}
    names = ('nin_loss', 'seg_loss', 'soft_fraction', 'clean_in_batch')
    out = {n: out.get(n, jnp.float32(0.0)) for n in names}
    out['phase'] = jnp.float32(phase)
    return loss, LossAux(metrics=out, batch_stats=stats, method_state=ms)

  def _nin_loss(self, nin_params, nin_stats, ms, batch, rng, step):
    """Phase 1: a batch drawn from D_c, freshly corrupted, augmented; the NIN's loss."""
    cfg = self.config.hqpm
    size = batch['index'].shape[0]
    pick_rng, aug_rng = jax.random.split(rng)
    count = ms['clean_ids'].shape[0]
    picks = jax.random.choice(pick_rng, count, (size,), replace=count < size)
    clean = ms['clean_subset_masks'][picks]
    if self.fixed_pairs:
      noisy = ms['clean_subset_noisy'][picks]
    else:
      keys = fresh_corruption_keys(int(self.config.seed), ms['clean_ids'][picks], step)
      noisy = fresh_imperfect_labels(keys, clean, self.corrupt_fn, self.alpha)
    images = normalize_images(ms['clean_subset_images'][picks])
    images, (clean, noisy) = augment_jointly(aug_rng, images, (clean, noisy),
                                             float(cfg.nin_intensity))
    # Drawn inside the step, the batch would be replicated: split it like a loader's batch.
    images = lax.with_sharding_constraint(images, PartitionSpec(sharding.DATA_AXIS))
    out, updates = self.nin.apply({'params': nin_params, 'batch_stats': nin_stats},
                                  nin_input(images, noisy), train=True, mutable=['batch_stats'])
    targets = rules.nin_targets(foreground(noisy), foreground(clean))
    loss = float(cfg.nin_w) * rules.nin_loss(tuple(out[b] for b in ('fp', 'fn', 'ref')),
                                             targets)
    return loss, updates['batch_stats'], {'nin_loss': loss}

  def _seg_loss(self, model, nets_params, nets_stats, ms, batch, rng):
    """Phase 2: the K networks on the loader's batch, D_c on y, D_n on softened ŷ."""
    cfg = self.config.hqpm
    k = int(cfg.k)
    index, where = batch['index'], batch['source_pixel']
    logits, new_stats = networks.train_forward(model, nets_params, nets_stats, batch['image'],
                                               rng, cfg.parallel)
    fg_probs = jax.nn.softmax(logits, axis=-1)[..., 1]  # [K, B, H, W]
    others = rules.others_mean(fg_probs)
    revised = gather_augmented(ms['revised'], index, where)
    reliability = gather_augmented(ms['reliability'], index, where).astype(jnp.float32)
    if cfg.soften == 'slsr':
      soft = jax.vmap(lambda o: rules.slsr_soften(revised, o, reliability, float(cfg.eps)))(others)
    else:
      soft = jax.vmap(lambda o: rules.ensemble_soften(revised, o, float(cfg['lambda'])))(others)
    in_clean = ms['in_clean'][index]
    clean = gather_augmented(ms['clean_labels'], index, where)
    target = jnp.where(in_clean[None, :, None, None], foreground(clean)[None], soft)
    valid = jnp.where(in_clean[:, None, None], clean != IGNORE, True).astype(jnp.float32)
    with_dice = cfg.seg_loss == 'ce_dice'
    per_image = jax.vmap(lambda z, t: per_image_soft_seg_loss(z, t, valid, with_dice))(
        logits, target)  # [K, B]
    weights = subset_weights(in_clean, float(cfg.clean_fraction), cfg.sampling)
    loss = jnp.sum(jnp.mean(per_image * weights[None], axis=1))  # Σ_k of each network's loss
    softened = jnp.mean(jnp.where(in_clean[None, :, None, None], False,
                                  (soft != revised[None].astype(jnp.float32))))
    return loss, new_stats, {'seg_loss': loss / k, 'soft_fraction': softened,
                             'clean_in_batch': jnp.mean(in_clean.astype(jnp.float32))}

  # -- between the phases -----------------------------------------------------------------------

  def _nin_maps(self, state, images, labels):
    """Eval-mode NIN probabilities (p_fp, p_fn, p_ref) of one batch."""
    if self._maps_fn is None:
      nin = self.nin

      @jax.jit
      def maps(variables, images, labels):
        out = nin.apply(variables, nin_input(normalize_images(images), labels), train=False)
        return tuple(jax.nn.sigmoid(out[b]) for b in ('fp', 'fn', 'ref'))

      self._maps_fn = maps
    variables = {'params': state.params['nin'], 'batch_stats': state.batch_stats['nin']}
    return self._maps_fn(variables, images, labels)

  def _branch_thresholds(self, state) -> dict:
    """(t_fp, t_fn): `revise_thresh` for both, or with `revise_select='clean_subset'` the grid
    pair that revises D_c best under one more fresh corruption (keyed on a step no training
    batch has) — D_c is the only place with both ỹ and y; the test and D_n's truth are unseen."""
    cfg, ms = self.config.hqpm, state.method_state
    thresh = float(cfg.revise_thresh)
    if cfg.revise_select == 'fixed':
      return {'fp': thresh, 'fn': thresh}
    clean = ms['clean_subset_masks']
    if self.fixed_pairs:
      noisy = ms['clean_subset_noisy']
    else:
      keys = fresh_corruption_keys(int(self.config.seed), ms['clean_ids'], _SELECTION_STEP)
      noisy = fresh_imperfect_labels(keys, clean, self.corrupt_fn, self.alpha)
    size = int(self.config.eval.batch_size)
    maps = [self._nin_maps(state, ms['clean_subset_images'][i:i + size], noisy[i:i + size])
            for i in range(0, clean.shape[0], size)]
    p_fp, p_fn, p_ref = (jnp.concatenate(m) for m in zip(*maps))
    (t_fp, t_fn), table, grid = rules.select_branch_thresholds(
        foreground(noisy), p_fp, p_fn, p_ref, foreground(clean), cfg.revise_grid, thresh)
    return {'fp': t_fp, 'fn': t_fn, 'grid': grid, 'clean_subset_dice': np.asarray(table),
            'clean_subset_dice_before': float(rules.set_dice(foreground(noisy), foreground(clean)))}

  def _revision_pass(self, state, context, thresholds: dict):
    """The NIN over every training sample and its fixed label: (ŷ, c) as NumPy."""
    thresh = float(self.config.hqpm.revise_thresh)
    revised, reliability = [], []
    for batch, valid in eval_batches(context.data.train, self._data['noisy'],
                                     int(self.config.eval.batch_size)):
      p_fp, p_fn, p_ref = self._nin_maps(state, batch['image'], batch['noisy_mask'])
      r, c = jax.device_get(rules.revise(foreground(batch['noisy_mask']), p_fp, p_fn, p_ref,
                                         thresh, thresholds['fp'], thresholds['fn']))
      revised.append(r[:valid])
      reliability.append(c[:valid])
    return np.concatenate(revised).astype(np.uint8), np.concatenate(reliability)

  def after_epoch(self, state, epoch: int, context):
    if int(state.method_state['phase']) != NIN_PHASE or epoch + 1 < int(self.config.hqpm.nin_epochs):
      return state
    thresholds = self._branch_thresholds(state)
    revised, reliability = self._revision_pass(state, context, thresholds)
    self._report_revision(context, state, revised, reliability, thresholds)
    method_state = dict(state.method_state)
    for key, value in (('revised', revised), ('reliability', reliability),
                       ('phase', np.int32(SEG_PHASE))):
      old = method_state[key]
      method_state[key] = jax.device_put(np.asarray(value).astype(old.dtype), old.sharding)
    opt_state = keep_schedule_counts(jax.jit(self.tx.init)(state.params), state.opt_state)
    print(f'hqpm: phase 2 from step {int(state.step)}: labels revised by the NIN', flush=True)
    return state.replace(method_state=method_state, opt_state=opt_state)

  def _report_revision(self, context, state, revised, reliability, thresholds):
    d = self._data
    imperfect = ~np.asarray(jax.device_get(state.method_state['in_clean']))
    clean, noisy = d['clean_masks_for_report'], d['noisy']

    def quality(select):
      if not select.any():
        return None
      q = metrics.revised_label_quality(revised[select], noisy[select], clean[select], 2)
      return {key: value[0] for key, value in q.items()} | {'num_samples': int(select.sum())}

    report = {'step': int(state.step), 'clean_subset_size': int((~imperfect).sum()),
              'imperfect_set': quality(imperfect),
              'imperfect_and_corrupted': quality(imperfect & d['is_noisy']),
              'changed_pixels': float(np.mean(revised[imperfect] != np.where(
                  noisy[imperfect] == IGNORE, 0, noisy[imperfect]))),
              'mean_reliability': float(np.mean(reliability[imperfect])),
              'branch_thresholds': thresholds}
    summary = report['imperfect_set']
    print(f'hqpm: pseudo-mask Dice on D_n {summary["dice_before"]:.4f} -> '
          f'{summary["dice_after"]:.4f} (t_fp {thresholds["fp"]}, t_fn {thresholds["fn"]})',
          flush=True)
    context.writer.write(int(state.step), {k: summary[k] for k in ('dice_before', 'dice_after')},
                         prefix='hqpm_revision')
    if jax.process_index() != 0:
      return
    workdir = context.workdir
    with open(os.path.join(workdir, 'hqpm_revision.json.tmp'), 'w', encoding='utf-8') as f:
      json.dump(metrics.json_safe(report), f, indent=2)
    os.replace(os.path.join(workdir, 'hqpm_revision.json.tmp'),
               os.path.join(workdir, 'hqpm_revision.json'))
    np.savez_compressed(os.path.join(workdir, 'pseudo_masks.npz'), revised=revised,
                        reliability=reliability.astype(np.float16), noisy=noisy,
                        in_clean_subset=~imperfect)
    from nsegjax import plots  # pylint: disable=g-import-not-at-top  (matplotlib is slow to load)
    shown = np.flatnonzero(imperfect & d.get('is_noisy', imperfect))[
        :int(self.config.eval.num_overlays)]
    if shown.size:
      images = np.stack([context.data.train[int(n)]['image'] for n in shown])
      plots.overlay_figure(images, clean[shown], noisy[shown], revised[shown],
                           os.path.join(workdir, 'pseudo_masks.png'),
                           titles=('image', 'clean', 'imperfect', 'revised'))

  # -- weights and test time --------------------------------------------------------------------

  def net_params(self, params):
    return networks.network(params['nets'], 0)

  def load_weights(self, state):
    """A user's `model.weights` copied into every one of the K networks."""
    path = self.config.model.get('weights', '')
    if not path:
      return state
    nets, _ = networks.load_into_every_network(
        path, {'params': state.params['nets'], 'batch_stats': state.batch_stats['nets']},
        int(self.config.hqpm.k))
    return state.replace(params=dict(state.params, nets=nets['params']),
                         batch_stats=dict(state.batch_stats, nets=nets['batch_stats']))

  def predict(self, model, variables, method_state, images):
    del method_state
    nets = {'params': variables['params']['nets'], 'batch_stats': variables['batch_stats']['nets']}
    return networks.predict_stacked(model, nets, images, self.config.hqpm.eval,
                                    self.config.hqpm.parallel)
