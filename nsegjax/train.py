"""The one generic training loop: every method runs through `train_and_evaluate`.

init → sharded, donated jit step (schedules as traced inputs) → per-epoch method hook →
validation + Orbax checkpoint (latest and best) → test metrics, results.json, overlays.png.
A run whose workdir holds a checkpoint resumes from it, data iterator included, and ends
with exactly the metrics of an uninterrupted run.
"""
import dataclasses
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nsegjax import checkpoint as ckpt_lib
from nsegjax import data as datasets
from nsegjax import evaluate, methods, models, noise, sharding, writers
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
  """Loads (building on first use) the three splits and the noisy train/validation masks."""
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


def make_train_step(model, method, tx, mesh, variant=None):
  """The jitted step: (state, sharded batch, schedule) → (state, metrics); state is donated.
  `variant` (`Method.step_variant`) reaches the loss as the Python value `schedule['variant']`."""

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
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=aux.batch_stats, opt_state=opt_state,
                              method_state=aux.method_state)
    metrics = dict(aux.metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return new_state, metrics

  replicated, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(train_step, in_shardings=(replicated, data, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


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
  for key in ('train.batch_size', 'eval.batch_size'):
    size = config[key.split('.')[0]].batch_size
    if size % mesh.size:
      raise ConfigError(f'{key}={size} is not divisible by the {mesh.size} devices')

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
        compiled_steps[variant] = make_train_step(model, method, tx, mesh, variant)
      return compiled_steps[variant]
    predict_fn = evaluate.make_predict_fn(model, method, mesh)

    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
    meta = {'val_dice': float('-inf'), 'history': []}
    if checkpointer.latest_step() is not None:
      state, meta = checkpointer.restore(checkpointer.latest_step(), state, train_iter)
      print(f'resumed from step {int(state.step)} of {workdir}', flush=True)

    writer = writers.MetricWriter(workdir, enabled=is_main)
    context = EpochContext(config, data, model, mesh, workdir, checkpointer, writer)
    eval_every = int(config.train.eval_every_epochs) * epoch_steps
    ckpt_every = int(config.train.checkpoint_every_steps)
    start = int(state.step)
    progress = writers.Progress(num_steps, start, global_batch, enabled=is_main)

    def validate(step):
      out = evaluate.predict_split(predict_fn, state, data.validation, data.validation_noisy,
                                   mesh, int(config.eval.batch_size))
      target = out['mask'] if config.eval.val_labels == 'clean' else out['noisy_mask']
      summary = evaluate.score(out['pred'], target, data.num_classes, config.eval, surface=False)
      writer.write(step, {'dice': summary['dice'], 'iou': summary['iou']}, prefix='validation')
      return summary['dice']

    train_step = train_step_for(method.step_variant(state))
    for step in range(start, num_steps):
      if step and step % epoch_steps == 0:
        # Between epochs, before the next one's first step: a run resumed from the checkpoint
        # of an epoch's end redoes the hook, so it must be a pure function of the state.
        state = method.after_epoch(state, step // epoch_steps - 1, context)
        train_step = train_step_for(method.step_variant(state))
      batch = sharding.shard_batch(next(train_iter), mesh)
      state, metrics = train_step(state, batch, make_schedule(step, epoch_steps, num_steps))
      done = step + 1
      evaluate_now = done % eval_every == 0 or done == num_steps
      save_now = evaluate_now or (ckpt_every and done % ckpt_every == 0)
      log_now = done % config.train.log_every == 0 or done == num_steps
      if log_now or save_now:  # never checkpoint a state that a non-finite step produced
        metrics = jax.device_get(metrics)
        if not np.isfinite(metrics['loss']) or not np.isfinite(metrics['grad_norm']):
          raise NsegError(f'non-finite loss or gradient at step {done}; the last checkpoint '
                          'is kept intact')
      if log_now:
        rate = progress.images_per_sec(done)
        writer.write(done, dict(metrics, lr=lr_fn(step), images_per_sec=rate))
        progress.line(done, float(metrics['loss']), rate)
      if evaluate_now:
        val_dice = validate(done)
        meta = {'val_dice': val_dice, 'history': meta['history'] + [[done, val_dice]]}
      if save_now:
        checkpointer.save(done, state, train_iter, meta, meta['val_dice'])

    if is_main:
      method.after_training(state, context)
    results = finish(config, workdir, state, checkpointer, predict_fn, data, mesh, meta)
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
      'val_labels': config.eval.val_labels,
      'test': evaluate.score(last['pred'], last['mask'], data.num_classes, config.eval, True),
      'test_best_val': dict(step=int(best_step), **evaluate.score(
          best['pred'], best['mask'], data.num_classes, config.eval, True)),
      'validation_history': meta['history'],
      'noise_summary': noise_gen.summarize_noise_log(data.noise_records),
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
