"""Noise-generation throughput, JAX vs a plain per-image SciPy loop:

  python -m launch.bench_noise --config=configs/default.py:kvasir \\
      --config.data.manual_dir=/work/shared/data/kvasir_seg --config.data.image_size=256 \\
      [--protocols=abn,radius,adele,mstfal] [--reps=3] [--num=0] [--chunk=16]

Loads every mask of the dataset (train, validation and test concatenated; `--num` caps the
count), corrupts all of them (α = 1) with each protocol and prints one JSON line per protocol:

- masks_per_sec_corrupt: the protocol's batched JAX corruption alone, i.e. the jitted, vmapped
  `corrupt` over every mask in chunks, with its achieved-noise log arrays (the protocol's
  `corrupt_selected` fast path where it has one, else the generator's `vmap(corrupt)`): the
  work the SciPy loop does;
- masks_per_sec_apply_noise: end to end, `generate.apply_noise` with its noise-log records
  (achieved noise recomputed from each pair, description, sha1 per mask);
- masks_per_sec_scipy: the protocol's reference loop in `launch.scipy_noise_reference` on the
  same masks with the same draws (taken from the noise log; the per-pixel fields of radius
  edge noise are replayed beforehand and not timed);
- speedup_corrupt, speedup_apply_noise: the two JAX rates over the SciPy rate;
- for 'mstfal', masks_per_sec_branch / speedup_branch: its disk dilation / erosion alone
  (`geometry.dilate_disk` / `erode_disk`, jitted and vmapped per type), the part of the
  protocol the reference covers; the protocol rates go through its grouped fast path
  (`polygon.mstfal_selected`), which also draws types first, and the benchmark draws only the
  two disk types (`scipy_noise_reference.BENCH_PARAMS`);
- num_masks, image_size, chunk, device, params, and every repetition's rates.

Figures are medians over `--reps` runs after an untimed warm-up run (compilation). Protocols
without a SciPy reference are skipped with a note on stderr. OpenBLAS is pinned to one thread
(the SciPy loop is one image at a time; on a small shared machine OpenBLAS's thread pool made
ADELE's 256×128 matrix products ~50× slower, which would flatter the JAX side). JAX generates
on its CPU device, as `apply_noise` does.
"""
import os

# Before anything imports NumPy, which reads it once (see the module docstring).
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app, flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config file.',
                                lock_config=True)
flags.DEFINE_list('protocols', ['abn', 'radius', 'adele', 'mstfal'],
                  'Protocols to time (those with a SciPy reference).')
flags.DEFINE_integer('reps', 3, 'Timed repetitions; the median is reported.')
flags.DEFINE_integer('num', 0, 'Use at most this many masks (0 = all).')
flags.DEFINE_integer('chunk', 16, 'Samples per vmapped call.')


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


def mstfal_branch(masks, records, params: dict, chunk: int):
  """A function timing mstfal's disk dilation / erosion alone on the given (binary) masks with
  the logged radii: jit(vmap) of `geometry.dilate_disk` / `erode_disk` per type, in chunks."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nsegjax.noise import geometry, polygon  # pylint: disable=g-import-not-at-top

  scale = polygon.radius_scale(masks.shape[1:], params['reference_size'])
  reach = max(1, int(np.ceil(params['max_radius'] * scale)))
  programs = {name: jax.jit(jax.vmap(lambda fg, r, op=op: op(fg, r, reach)))
              for name, op in (('dilate', geometry.dilate_disk), ('erode', geometry.erode_disk))}
  groups = []
  for name in programs:
    members = [i for i, r in enumerate(records) if r['type'] == name]
    fg = (masks[members] >= 1) & (masks[members] != 255)
    radii = np.asarray([records[i]['params']['radius'] for i in members], np.float32)
    groups.append((programs[name], fg, radii))

  def run():
    with jax.default_device(jax.devices('cpu')[0]):
      for program, fg, radii in groups:
        for start in range(0, len(fg), chunk):
          batch = np.zeros((chunk,) + fg.shape[1:], bool)
          batch[:len(fg[start:start + chunk])] = fg[start:start + chunk]
          batch_radii = np.zeros(chunk, np.float32)
          batch_radii[:len(radii[start:start + chunk])] = radii[start:start + chunk]
          jax.device_get(program(jnp.asarray(batch), jnp.asarray(batch_radii)))

  return run


def bench_protocol(name: str, params: dict, masks, seed: int, reps: int, chunk: int) -> dict:
  """Times the JAX corruption, apply_noise (α = 1) and the SciPy reference on the same masks."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from launch import scipy_noise_reference  # pylint: disable=g-import-not-at-top
  from nsegjax.noise import generate  # pylint: disable=g-import-not-at-top

  params = dict(params, **scipy_noise_reference.BENCH_PARAMS.get(name, {}), alpha=1.0)
  indices = np.arange(len(masks))
  entry, resolved = generate.resolve(name, params, masks)
  batch_fn = entry.corrupt_selected or functools.partial(generate._corrupt_selected, entry)  # pylint: disable=protected-access

  def run_corrupt():
    return batch_fn(resolved, seed, masks, indices, chunk)

  def run_apply_noise():
    return generate.apply_noise(masks, indices, name, params, seed, chunk=chunk)

  run_corrupt()  # warm-up: compiles
  _, records = run_apply_noise()  # warm-up, and the draws the reference reuses
  corrupt_rate, corrupt_rates = _median_rate(run_corrupt, len(masks), reps)
  apply_rate, apply_rates = _median_rate(run_apply_noise, len(masks), reps)

  reference = scipy_noise_reference.REFERENCES[name]
  draws_fn = scipy_noise_reference.DRAWS.get(name)
  draws = (draws_fn(masks, records, resolved, seed) if draws_fn else [{}] * len(masks))

  def run_scipy():
    return [reference(mask, record, resolved, **extra)
            for mask, record, extra in zip(masks, records, draws)]

  scipy_rate, scipy_rates = _median_rate(run_scipy, len(masks), reps)
  device = jax.devices('cpu')[0]  # apply_noise generates on the CPU device
  result = {
      'protocol': name,
      'masks_per_sec_corrupt': round(corrupt_rate, 1),
      'masks_per_sec_apply_noise': round(apply_rate, 1),
      'masks_per_sec_scipy': round(scipy_rate, 1),
      'speedup_corrupt': round(corrupt_rate / scipy_rate, 2),
      'speedup_apply_noise': round(apply_rate / scipy_rate, 2),
  }
  if name == 'mstfal':
    run_branch = mstfal_branch(masks, records, resolved, chunk)
    run_branch()  # warm-up: compiles
    branch_rate, branch_rates = _median_rate(run_branch, len(masks), reps)
    result.update(masks_per_sec_branch=round(branch_rate, 1),
                  speedup_branch=round(branch_rate / scipy_rate, 2),
                  rates_branch=[round(r, 1) for r in branch_rates])
  result.update({
      'num_masks': int(len(masks)),
      'image_size': int(masks.shape[-1]),
      'chunk': chunk,
      'device': f'{device.platform}:{device.device_kind} ({os.cpu_count()} cores)',
      'params': {k: v for k, v in resolved.items() if k != 'alpha'},
      'rates_corrupt': [round(r, 1) for r in corrupt_rates],
      'rates_apply_noise': [round(r, 1) for r in apply_rates],
      'rates_scipy': [round(r, 1) for r in scipy_rates],
  })
  return result


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
      print(json.dumps(result, default=str), flush=True)
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
