"""Train-step throughput: python -m launch.bench --config=configs/default.py [--config.k=v ...]

Prints one JSON line: images_per_sec (median over timed repetitions, after warm-up),
gflops_per_sec (XLA cost analysis of the compiled step), peak_rss_mb, device, image_size,
batch. The step is the real one (`train.make_train_step`) on random data shaped like the
configured dataset, so the figure covers model, method loss and optimizer alike.
`--profile` adds milliseconds per step by kind of XLA kernel (`launch/xla_profile.py`).
"""
import json
import resource
import sys
import time

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config file.',
                                lock_config=True)
flags.DEFINE_integer('steps', 10, 'Steps per timed repetition.')
flags.DEFINE_integer('reps', 5, 'Timed repetitions; the median is reported.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_bool('profile', False, 'Also trace `steps` steps with the JAX profiler and add '
                  'milliseconds per step by kind of kernel (launch.xla_profile).')


def bench(config, steps: int, reps: int, warmup: int, profile: bool = False) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nsegjax import data, methods, models, sharding, train  # pylint: disable=g-import-not-at-top
  from nsegjax.data import pipeline  # pylint: disable=g-import-not-at-top

  source = data.load_split(config.data, 'train')
  size, channels = source[0]['image'].shape[0], source[0]['image'].shape[-1]
  batch_size = int(config.train.batch_size)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    model = models.create_model(config.model, source.num_classes)
    method = methods.create_method(config)
    tx, _ = method.make_optimizer(1000, 100)
    rng = np.random.default_rng(0)
    batch = sharding.shard_batch(pipeline.random_batch(rng, batch_size, size, channels,
                                              source.num_classes), mesh)
    state = train.create_train_state(jax.random.PRNGKey(0), model, method, tx, batch, mesh)
    step_fn = train.make_train_step(model, method, tx, mesh)
    schedule = train.make_schedule(0, 100, 1000)
    compiled = step_fn.lower(state, batch, schedule).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get('flops', float('nan')))
    for _ in range(warmup):
      state, metrics = step_fn(state, batch, schedule)
    jax.block_until_ready(metrics)
    rates = []
    for _ in range(reps):
      start = time.perf_counter()
      for _ in range(steps):
        state, metrics = step_fn(state, batch, schedule)
      jax.block_until_ready(metrics)
      elapsed = time.perf_counter() - start
      rates.append(steps * batch_size / elapsed)
    if profile:
      from launch import xla_profile  # pylint: disable=g-import-not-at-top
      kernels = xla_profile.profile(step_fn, (state, batch, schedule), compiled.as_text(), steps)
  median = float(np.median(rates))
  device = jax.devices()[0]
  result = {
      'images_per_sec': round(median, 2),
      'gflops_per_sec': round(flops * median / batch_size / 1e9, 2),
      'gflop_per_step': round(flops / 1e9, 3),
      'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      'device': f'{device.platform}:{device.device_kind} x{jax.device_count()}',
      'image_size': int(size), 'batch': batch_size,
      'method': config.method, 'model': config.model.name, 'dtype': config.model.dtype,
      'rates': [round(r, 2) for r in rates],
  }
  if profile:
    result['profile'] = kernels
  return result


def main(argv):
  del argv
  from nsegjax.errors import NsegError  # pylint: disable=g-import-not-at-top
  try:
    print(json.dumps(bench(FLAGS.config, FLAGS.steps, FLAGS.reps, FLAGS.warmup, FLAGS.profile)))
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
