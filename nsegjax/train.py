"""The one generic training loop: every method runs through `train_and_evaluate`.

init → sharded, donated jit step (schedules as traced inputs) → per-epoch method hook →
validation + Orbax checkpoint (latest and best) → test metrics, results.json, overlays.png.
A run whose workdir holds a checkpoint resumes from it, data iterator included, and ends
with exactly the metrics of an uninterrupted run.

Crash safety: a step with a non-finite loss, gradient or updated weight either stops the run
before any state it touched is checkpointed (`train.nonfinite='stop'`) or is dropped inside the
step (`'skip'`); SIGTERM makes the loop save a checkpoint at the next step boundary and raise
`TrainingTerminated`; Orbax commits a checkpoint by renaming its finished directory, so a kill
at any moment leaves the last complete checkpoint to resume from.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from nsegjax import checkpoint as ckpt_lib
from nsegjax import data as datasets
from nsegjax import config_checks, evaluate, methods, models, noise, sharding, writers
from nsegjax.data import pipeline
from nsegjax.noise import generate as noise_gen
from nsegjax.errors import ConfigError, NsegError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  method_state: Any


class NonFiniteError(NsegError):
  """A step produced a non-finite loss, gradient or weight under `train.nonfinite='stop'`."""

  def __init__(self, step: int, last_checkpoint: int | None):
    kept = ('no checkpoint was written yet' if last_checkpoint is None else
            f'the last checkpoint (step {last_checkpoint}) is intact')
    super().__init__(f'non-finite loss, gradient or weights at step {step}; training stopped '
                     f'and {kept} (--config.train.nonfinite=skip drops such steps instead)')
    self.step = step


class TrainingTerminated(Exception):
  """SIGTERM (pre-emption) ended training after a checkpoint of `step` was saved."""

  def __init__(self, step: int):
    super().__init__(f'terminated at step {step}; checkpoint saved')
    self.step = step


@dataclasses.dataclass
class RunData:
  """The splits of one run and the fixed noisy labels of its train and validation splits.

  Each split's `mask` is the run's truth: the stored mask, or for a protocol that reads its labels
  from the dataset (real raters), the truth that protocol names (a rater, a consensus).
  `test_noisy` is set only by such protocols (the overlay's noisy column); test scores never use it.
  """
  train: Any
  validation: Any
  test: Any
  train_noisy: np.ndarray
  validation_noisy: np.ndarray
  noise_records: list
  num_classes: int
  test_noisy: np.ndarray | None = None


def _split_seed(seed: int, split: str) -> int:
  # Validation labels get their own noise stream, so adding a split never changes train noise.
  return int(np.random.SeedSequence([seed, sum(map(ord, split))]).generate_state(1)[0] >> 1)


def _noise_seed(config, split: str) -> int:
  return config.noise.seed if split == 'train' else _split_seed(config.noise.seed, split)


def _noise_cache_name(source, masks: np.ndarray) -> str:
  return f'{source.name.replace("/", "_")}-{source.split}-{masks.shape[1]}x{masks.shape[2]}'


def prepare_data(config) -> RunData:
  """Loads (building on first use) the three splits and the noisy train/validation masks.

  `data.train_limit` > 0 keeps the first N training examples. Noise is drawn for the whole split
  first, so example i carries the same noisy label whatever the limit.
  """
  data = _prepare_all_data(config)
  limit = int(config.data.get('train_limit', 0))
  if not limit:
    return data
  if limit > len(data.train):
    raise ConfigError(f'data.train_limit={limit} exceeds the {len(data.train)} training examples '
                      f'of {data.train.name}')
  return dataclasses.replace(data, train=data.train.head(limit),
                             train_noisy=data.train_noisy[:limit],
                             noise_records=data.noise_records[:limit])


def _prepare_all_data(config) -> RunData:
  splits = {s: datasets.load_split(config.data, s) for s in ('train', 'validation', 'test')}
  cache_dir = os.path.join(datasets.resolve_data_dir(config.data), 'nsegjax_noise_cache')
  if noise.PROTOCOLS.get(config.noise.name).from_dataset is not None:
    return _prepare_dataset_noise(config, splits, cache_dir)
  noisy, records = {}, {}
  for split in ('train', 'validation'):
    masks = datasets.load_all_masks(splits[split])
    noisy[split], records[split] = noise_gen.cached_apply_noise(
        cache_dir, _noise_cache_name(splits[split], masks), masks,
        np.arange(len(masks)), config.noise.name, dict(config.noise.params),
        _noise_seed(config, split))
  return RunData(train=splits['train'], validation=splits['validation'], test=splits['test'],
                 train_noisy=noisy['train'], validation_noisy=noisy['validation'],
                 noise_records=records['train'], num_classes=splits['train'].num_classes)


def _prepare_dataset_noise(config, splits: dict, cache_dir: str) -> RunData:
  """`prepare_data` for protocols that read truth and labels from the dataset's raters.

  Every split, test included, gets its (truth, label) pair from the protocol, logged and cached
  like simulated noise; the truth then replaces each split's `mask`, so validation (with
  eval.val_labels=clean) and test are scored against the protocol's evaluation truth.
  """
  datasets.require_raters(config.data, f'noise protocol {config.noise.name!r}')
  truth, noisy, records = {}, {}, {}
  for split, source in splits.items():
    raters = datasets.load_all_raters(source)
    first = next(iter(raters.values()))
    truth[split], noisy[split], records[split] = noise_gen.cached_dataset_noise(
        cache_dir, _noise_cache_name(source, first), raters, np.arange(len(source)),
        config.noise.name, dict(config.noise.params), _noise_seed(config, split))
  relabelled = {split: splits[split].with_masks(truth[split]) for split in splits}
  return RunData(train=relabelled['train'], validation=relabelled['validation'],
                 test=relabelled['test'], train_noisy=noisy['train'],
                 validation_noisy=noisy['validation'], noise_records=records['train'],
                 num_classes=splits['train'].num_classes, test_noisy=noisy['test'])


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
  return max(num_samples // global_batch, 1)


def total_steps(train_cfg, num_samples: int) -> int:
  if train_cfg.num_steps > 0:
    return int(train_cfg.num_steps)
  return int(train_cfg.num_epochs) * steps_per_epoch(num_samples, train_cfg.batch_size)


def create_train_state(rng, model, method, tx, sample_batch, mesh) -> TrainState:
  """Initialises every replicated leaf directly on the mesh."""

  def init(rng, batch):
    init_rng, state_rng, train_rng = jax.random.split(rng, 3)
    images = pipeline.normalize_images(batch['image'])
    variables = method.init_variables(init_rng, model, images)
    method_state = method.init_state(state_rng, variables, dict(batch, image=images))
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables['batch_stats'],
                      opt_state=tx.init(variables['params']), rng=train_rng,
                      method_state=method_state)

  return jax.jit(init, out_shardings=sharding.replicated(mesh))(rng, sample_batch)


def _all_finite(tree) -> jax.Array:
  """True when every floating-point element of `tree` is finite."""
  flags = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
           if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.stack(flags).all() if flags else jnp.asarray(True)


def _keep_if(keep, new, old):
  return jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)


def make_train_step(model, method, tx, mesh, variant=None, skip_nonfinite=False):
  """The jitted step: (state, sharded batch, schedule) → (state, metrics); state is donated.

  `variant` (`Method.step_variant`) reaches the loss as the Python value `schedule['variant']`.
  `metrics['nonfinite_step']` is the step's number when its loss, gradients, updated params or
  BatchNorm statistics hold a NaN or inf, else 0. With `skip_nonfinite`, such a step leaves
  params, optimiser state, BatchNorm statistics and method state as they were and only advances
  `step`, so schedules and the data stream stay aligned with a run that had no such step. The
  method state is not checked: some methods keep NaN in it by design (ADELE's and DES's
  histories); a non-finite one reaches the loss, and so the check, at the next step.
  """

  def train_step(state: TrainState, batch, schedule):
    rng = jax.random.fold_in(state.rng, state.step)
    schedule = dict(schedule, variant=variant)
    batch = dict(batch, image=pipeline.normalize_images(batch['image']))
    if not method.trains_on_clean_labels:
      batch.pop('mask')  # the clean truth never reaches a method that may not use it

    def loss_fn(params):
      return method.loss(model, params, state.batch_stats, state.method_state, batch, rng,
                         schedule)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The new weights too: finite gradients times a huge learning rate can still overflow them.
    finite = _all_finite((loss, grads, params, aux.batch_stats))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=aux.batch_stats,
                              opt_state=opt_state, method_state=aux.method_state)
    if skip_nonfinite:
      # Not optax.apply_if_finite: it guards the optimiser alone (not BatchNorm statistics or
      # method state), applies the update anyway after `max_consecutive_errors`, and adds state
      # that would keep 'stop' and 'skip' checkpoints from restoring into each other.
      new_state = _keep_if(finite, new_state, state.replace(step=state.step + 1))
    metrics = dict(aux.metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   nonfinite_step=jnp.where(finite, 0, state.step + 1))
    return new_state, metrics

  replicated, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(train_step, in_shardings=(replicated, data, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


@jax.jit
def _tally_nonfinite(tally, nonfinite_step):
  """(first non-finite step or 0, number of non-finite steps), kept on the device so the loop
  reads it only where it syncs anyway (logging, saving, epoch ends)."""
  first, count = tally
  return jnp.where(first > 0, first, nonfinite_step), count + (nonfinite_step > 0)


def _new_tally(count: int, mesh):
  return jax.device_put((jnp.zeros((), jnp.int32), jnp.asarray(count, jnp.int32)),
                        sharding.replicated(mesh))


def _checked_count(tally, mode: str, checkpointer) -> int:
  """The number of non-finite steps so far; in 'stop' mode there must be none."""
  first, count = (int(x) for x in jax.device_get(tally))
  if first and mode == 'stop':
    raise NonFiniteError(first, checkpointer.latest_step())
  return count


class _SigtermFlag:
  """While entered, SIGTERM only sets `requested`; the loop saves and stops at a step boundary.

  Signal handlers can only be installed from the main thread; elsewhere (and in multi-process
  jobs, where JAX's preemption service owns SIGTERM) the default handling stays.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _stop_requested(flag: _SigtermFlag, step: int) -> bool:
  if jax.process_count() > 1:
    # Every process must save at the same step: JAX's preemption service agrees on one.
    return multihost_utils.reached_preemption_sync_point(step)
  return flag.requested


def _drop_replayed_records(path: str, step: int) -> None:
  """Rewrites metrics.jsonl as it was when the checkpoint of `step` was saved.

  A resumed run replays the steps after its checkpoint and redoes the epoch hook at `step`, so
  their records (and any line a kill cut short) go; the loop's own records of `step` stay.
  """
  if not os.path.exists(path):
    return
  kept = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record['step'] < step or (record['step'] == step and
                                   record['split'] in ('train', 'validation')):
        kept.append(line if line.endswith('\n') else line + '\n')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)


def make_schedule(step: int, steps_in_epoch: int, num_steps: int) -> dict:
  """Scalars a method may ramp on; arrays, so new values never trigger a recompilation."""
  return {'epoch': jnp.asarray(step / steps_in_epoch, jnp.float32),
          'progress': jnp.asarray(step / max(num_steps, 1), jnp.float32),
          'step': jnp.asarray(step, jnp.int32)}


@dataclasses.dataclass
class EpochContext:
  """What a method's host-side `after_epoch` hook may use."""
  config: Any
  data: RunData
  model: Any
  mesh: Any
  workdir: str
  checkpointer: Any  # e.g. to restore the best state so far (JCAS's stage switch)
  writer: Any  # per-epoch method metrics (metrics.jsonl, TensorBoard)


def code_version() -> dict | None:
  """{'commit', 'dirty'} of the git checkout this package runs from (tracked files only); None
  outside a checkout. Recorded with every result so a table can name the code behind it."""
  package_dir = os.path.dirname(os.path.abspath(__file__))
  try:
    git = lambda *args: subprocess.run(  # noqa: E731
        ['git', '-C', package_dir, *args], capture_output=True, text=True, check=True,
        timeout=30).stdout.strip()
    return {'commit': git('rev-parse', 'HEAD'),
            'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
  except (OSError, subprocess.SubprocessError):
    return None


def _write_json(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains `config.method` and evaluates it; returns (and writes) results.json's content."""
  sharding.maybe_initialize_distributed()
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(devices)
  global_batch = int(config.train.batch_size)
  config_checks.check_batch_sizes(config, mesh.size)  # `devices` may be a subset

  with jax.set_mesh(mesh):
    data = prepare_data(config)
    if is_main:
      noise_gen.write_noise_log(data.noise_records, os.path.join(workdir, 'noise_log.jsonl'))
      with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
        f.write(config.to_json_best_effort(indent=2))
    model = models.create_model(config.model, data.num_classes)
    method = methods.create_method(config)
    method.setup_data(data)
    num_steps = total_steps(config.train, len(data.train))
    epoch_steps = steps_per_epoch(len(data.train), global_batch)
    tx, lr_fn = method.make_optimizer(num_steps, epoch_steps)

    dataset = pipeline.make_train_dataset(
        data.train, data.train_noisy, seed=config.seed, global_batch=global_batch,
        num_steps=num_steps, aug_cfg=config.data.augment, process_index=jax.process_index(),
        process_count=jax.process_count())
    train_iter = pipeline.make_train_iterator(dataset, config.data.num_workers)
    sample = sharding.shard_batch(dataset[0], mesh)
    state = create_train_state(jax.random.PRNGKey(config.seed), model, method, tx, sample, mesh)
    state = jax.device_put(method.load_weights(state), sharding.replicated(mesh))
    compiled_steps = {}

    def train_step_for(variant):  # one compilation per variant the method asks for
      if variant not in compiled_steps:
        compiled_steps[variant] = make_train_step(
            model, method, tx, mesh, variant, skip_nonfinite=config.train.nonfinite == 'skip')
      return compiled_steps[variant]
    predict_fn = evaluate.make_predict_fn(model, method, mesh)

    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), owner=True)
    meta = {'val_dice': float('-inf'), 'history': [], 'skipped_steps': 0}
    if checkpointer.latest_step() is not None:
      state, restored = checkpointer.restore(checkpointer.latest_step(), state, train_iter)
      meta.update(restored)  # checkpoints older than 'skipped_steps' lack it
      if is_main:
        _drop_replayed_records(os.path.join(workdir, 'metrics.jsonl'), int(state.step))
      print(f'resumed from step {int(state.step)} of {workdir}', flush=True)

    writer = writers.MetricWriter(workdir, enabled=is_main, resumed_step=int(state.step))
    context = EpochContext(config, data, model, mesh, workdir, checkpointer, writer)
    eval_every = int(config.train.eval_every_epochs) * epoch_steps
    ckpt_every = int(config.train.checkpoint_every_steps)
    start = int(state.step)
    progress = writers.Progress(num_steps, start, global_batch, enabled=is_main)
    nonfinite = config.train.nonfinite
    tally = _new_tally(meta['skipped_steps'], mesh)

    def validate(step):
      out = evaluate.predict_split(predict_fn, state, data.validation, data.validation_noisy,
                                   mesh, int(config.eval.batch_size))
      target = out['mask'] if config.eval.val_labels == 'clean' else out['noisy_mask']
      summary = evaluate.score(out['pred'], target, data.num_classes, config.eval, surface=False)
      writer.write(step, {'dice': summary['dice'], 'iou': summary['iou']}, prefix='validation')
      return summary['dice']

    train_step = train_step_for(method.step_variant(state))
    try:
      with _SigtermFlag() as sigterm:
        for step in range(start, num_steps):
          if step and step % epoch_steps == 0:
            _checked_count(tally, nonfinite, checkpointer)  # no hook sees a non-finite state
            # Between epochs, before the next one's first step: a run resumed from the
            # checkpoint of an epoch's end redoes the hook, so it must be a pure function of
            # the state.
            state = method.after_epoch(state, step // epoch_steps - 1, context)
            train_step = train_step_for(method.step_variant(state))
          batch = sharding.shard_batch(next(train_iter), mesh)
          state, metrics = train_step(state, batch, make_schedule(step, epoch_steps, num_steps))
          tally = _tally_nonfinite(tally, metrics.pop('nonfinite_step'))
          done = step + 1
          evaluate_now = done % eval_every == 0 or done == num_steps
          save_now = evaluate_now or (ckpt_every and done % ckpt_every == 0)
          log_now = done % config.train.log_every == 0 or done == num_steps
          stop_now = _stop_requested(sigterm, done)
          if log_now or save_now or stop_now:  # never checkpoint a non-finite step's state
            skipped_before = meta['skipped_steps']
            meta = dict(meta, skipped_steps=_checked_count(tally, nonfinite, checkpointer))
            metrics = jax.device_get(metrics)
            if meta['skipped_steps'] > skipped_before and is_main:
              print(f'step {done}: {meta["skipped_steps"]} non-finite step(s) skipped so far',
                    file=sys.stderr, flush=True)
          if log_now:
            rate = progress.images_per_sec(done)
            skipped = {'skipped_steps': meta['skipped_steps']} if nonfinite == 'skip' else {}
            writer.write(done, dict(metrics, lr=lr_fn(step), images_per_sec=rate, **skipped))
            progress.line(done, float(metrics['loss']), rate)
          if evaluate_now:
            val_dice = validate(done)
            meta = dict(meta, val_dice=val_dice, history=meta['history'] + [[done, val_dice]])
          if save_now or stop_now:
            # Only evaluated states compete for best-by-validation.
            checkpointer.save(done, state, train_iter, meta,
                              meta['val_dice'] if evaluate_now else None)
          if stop_now:
            raise TrainingTerminated(done)

      if is_main:
        method.after_training(state, context)
      results = finish(config, workdir, state, checkpointer, predict_fn, data, mesh, meta)
    finally:
      writer.close()
      checkpointer.close()
  return results


def finish(config, workdir, state, checkpointer, predict_fn, data, mesh, meta) -> dict:
  """Test metrics of the last state and of the best-by-validation checkpoint; results.json."""
  from nsegjax import plots  # pylint: disable=g-import-not-at-top  (matplotlib is slow to load)

  batch = int(config.eval.batch_size)
  last = evaluate.predict_split(predict_fn, state, data.test, None, mesh, batch)
  best_step = checkpointer.best_step()
  best_state, _ = checkpointer.restore(best_step, state)
  best = evaluate.predict_split(predict_fn, best_state, data.test, None, mesh, batch)
  results = {
      'method': config.method,
      'dataset': config.data.name + (f'/{config.data.variant}' if config.data.variant else ''),
      'noise': {'name': config.noise.name, 'seed': config.noise.seed,
                **dict(config.noise.params)},
      'seed': config.seed,
      'steps': int(state.step),
      'skipped_steps': int(meta['skipped_steps']),  # non-finite steps dropped (train.nonfinite)
      'val_labels': config.eval.val_labels,
      'test': evaluate.score(last['pred'], last['mask'], data.num_classes, config.eval, True),
      'test_best_val': dict(step=int(best_step), **evaluate.score(
          best['pred'], best['mask'], data.num_classes, config.eval, True)),
      'validation_history': meta['history'],
      'noise_summary': noise_gen.summarize_noise_log(data.noise_records),
      'code': code_version(),
  }
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, 'results.json'), results)
    n = int(config.eval.num_overlays)
    if n > 0:  # 0: no overlay figure
      # Test labels are never corrupted for scoring; this noisy column only shows the protocol.
      if data.test_noisy is not None:  # labels read from the dataset (a rater's)
        test_noisy = data.test_noisy[:n]
      else:
        test_noisy, _ = noise_gen.apply_noise(last['mask'][:n].astype(np.uint8), np.arange(n),
                                              config.noise.name, dict(config.noise.params),
                                              _split_seed(config.noise.seed, 'test'))
      plots.overlay_figure(last['image'][:n], last['mask'][:n], test_noisy, last['pred'][:n],
                           os.path.join(workdir, 'overlays.png'))
  return results
