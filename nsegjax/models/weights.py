"""User-supplied network weights (no download is possible): a .npz of named arrays.

Keys are '/'-joined paths into the variables, e.g. `params/layer3_0/conv1/kernel` or
`batch_stats/bn1/mean`, with Flax layouts (conv kernels HWIO). An array is copied where its name
and shape match, as the JCAS reference loads DeepLab weights by name and shape; the rest keep their
initial values. `np.load(allow_pickle=False)`: a weights file is data, never code.
"""
import os

import flax
import jax.numpy as jnp
import numpy as np

from nsegjax.errors import DataError


def load_npz_weights(variables: dict, path: str) -> tuple[dict, dict]:
  """(variables with matching arrays replaced, {'loaded': n, 'skipped': [...], 'unused': [...]})."""
  if not os.path.isfile(path):
    raise DataError(f'model weights file {path} does not exist')
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {name: archive[name] for name in archive.files}
  except (OSError, ValueError) as e:
    raise DataError(f'cannot read model weights {path}: {e}') from None
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep='/')
  report = {'loaded': 0, 'skipped': [], 'unused': sorted(set(arrays) - set(flat))}
  for name, value in flat.items():
    if name not in arrays:
      continue
    if arrays[name].shape != value.shape:
      report['skipped'].append(f'{name}: file {arrays[name].shape} vs model {value.shape}')
      continue
    flat[name] = jnp.asarray(arrays[name], value.dtype)
    report['loaded'] += 1
  if not report['loaded']:
    raise DataError(f'model weights {path}: no array matches the model by name and shape '
                    f'(e.g. expected key {next(iter(flat))!r})')
  return flax.traverse_util.unflatten_dict(flat, sep='/'), report


def save_npz_weights(variables: dict, path: str) -> None:
  """The inverse of `load_npz_weights` (e.g. to move a trained backbone between runs)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep='/')
  np.savez(path, **{name: np.asarray(value) for name, value in flat.items()})
