"""Noise-generation throughput, JAX vs a per-image SciPy loop:

  python -m launch.bench_noise --config=configs/default.py:kvasir \\
      --config.data.manual_dir=/work/shared/data/kvasir_seg --config.data.image_size=256 \\
      [--protocols=abn] [--reps=3] [--num=0]

Loads every mask of the dataset (train, validation and test concatenated; `--num` caps the
count) and prints one JSON line per protocol: masks_per_sec_jax (`generate.apply_noise` with
α = 1, so every mask is corrupted; compilation excluded by a warm-up run), masks_per_sec_scipy
(the protocol's reference loop in `launch.scipy_noise_reference` on the same masks with the same
draws), speedup, num_masks, image_size, device. Figures are medians over `--reps` runs.
Protocols without a SciPy reference are skipped with a note on stderr.
"""
import json
import sys
import time

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config file.',
                                lock_config=True)
flags.DEFINE_list('protocols', ['abn'], 'Protocols to time (those with a SciPy reference).')
flags.DEFINE_integer('reps', 3, 'Timed repetitions; the median is reported.')
flags.DEFINE_integer('num', 0, 'Use at most this many masks (0 = all).')
flags.DEFINE_integer('chunk', 64, 'Samples per vmapped call of apply_noise.')


def _median_rate(fn, count: int, reps: int) -> tuple[float, list[float]]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  rates = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    rates.append(count / (time.perf_counter() - start))
  return float(np.median(rates)), rates


def load_masks(data_cfg, num: int):
  """All masks of the three splits, concatenated, at most `num` (0 = all)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nsegjax import data  # pylint: disable=g-import-not-at-top
  masks = []
  for split in data.SPLITS:
    masks.append(data.load_all_masks(data.load_split(data_cfg, split)))
    if num and sum(len(m) for m in masks) >= num:
      break
  masks = np.concatenate(masks)
  return masks[:num] if num else masks


def bench_protocol(name: str, params: dict, masks, seed: int, reps: int, chunk: int) -> dict:
  """Times apply_noise (α = 1) and the SciPy reference loop on the same masks."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from launch import scipy_noise_reference  # pylint: disable=g-import-not-at-top
  from nsegjax.noise import generate  # pylint: disable=g-import-not-at-top

  params = dict(params, alpha=1.0)
  indices = np.arange(len(masks))
  _, resolved = generate.resolve(name, params, masks)

  def run_jax():
    return generate.apply_noise(masks, indices, name, params, seed, chunk=chunk)

  _, records = run_jax()  # warm-up: compiles, and gives the draws the reference reuses
  jax_rate, jax_rates = _median_rate(run_jax, len(masks), reps)

  reference = scipy_noise_reference.REFERENCES[name]

  def run_scipy():
    return [reference(mask, record, resolved) for mask, record in zip(masks, records)]

  scipy_rate, scipy_rates = _median_rate(run_scipy, len(masks), reps)
  device = jax.devices('cpu')[0]  # apply_noise generates on the CPU device
  return {
      'protocol': name,
      'masks_per_sec_jax': round(jax_rate, 1),
      'masks_per_sec_scipy': round(scipy_rate, 1),
      'speedup': round(jax_rate / scipy_rate, 2),
      'num_masks': int(len(masks)),
      'image_size': int(masks.shape[-1]),
      'device': f'{device.platform}:{device.device_kind}',
      'params': {k: v for k, v in resolved.items() if k != 'alpha'},
      'rates_jax': [round(r, 1) for r in jax_rates],
      'rates_scipy': [round(r, 1) for r in scipy_rates],
  }


def protocol_params(config, name: str) -> dict:
  """config.noise.params for the configured protocol, {} (defaults) for the others."""
  if name == config.noise.name:
    return dict(config.noise.params.to_dict() if hasattr(config.noise.params, 'to_dict')
                else config.noise.params)
  return {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from launch import scipy_noise_reference  # pylint: disable=g-import-not-at-top
  from nsegjax.errors import NsegError  # pylint: disable=g-import-not-at-top
  from nsegjax.noise import PROTOCOLS  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    for name in FLAGS.protocols:
      PROTOCOLS.get(name)  # unknown names are a one-line error
    masks = load_masks(config.data, FLAGS.num)
    for name in FLAGS.protocols:
      if name not in scipy_noise_reference.REFERENCES:
        print(f'skipping {name}: no SciPy reference registered', file=sys.stderr)
        continue
      result = bench_protocol(name, protocol_params(config, name), masks,
                              int(config.noise.seed), FLAGS.reps, FLAGS.chunk)
      print(json.dumps(result), flush=True)
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
