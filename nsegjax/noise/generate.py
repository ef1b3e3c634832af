"""Host-side noisy-label generation: a registered protocol over a dataset, logged and cached.

METHODS.md §2.0: ỹ_n = G(y_n, params, seed, n). The per-sample key is derived from
(seed, protocol id, n) alone, and the noisy subset from (seed, protocol id), so a sample's noisy
label does not depend on the batch, the chunking or the order of the other samples. Generation
runs once, on the CPU device (f32 trigonometry differs between backends), and is cached next to a
JSON-lines noise log with one record per sample:

  sample_id, protocol, protocol_version, seed, is_noisy, type, params,
  classes: [{class, type, params, rho_fg, dice}], rho_pix, rho_fg, dice, sha1

`is_noisy` is membership of the corrupted subset. `type` is 'clean' outside it. The achieved noise
(ρ_pix, ρ_fg, Dice) is recomputed here from the (clean, noisy) pair, so every protocol is measured
the same way; with several classes the sample-level ρ_fg and Dice pool the classes' counts. NaN (no
foreground, no valid pixel) is written as null. `sha1` hashes the noisy mask's bytes.
"""
import functools
import hashlib
import json
import math
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nsegjax.errors import ConfigError, DataError
from nsegjax.noise import PROTOCOLS, NoiseProtocol, morphology, protocol_id

IGNORE = 255
_CACHE_FORMAT = 1
# Samples per vmapped call. The protocols' programs are bound by memory traffic on CPU: with 16
# masks their temporaries stay in cache, measured 1-2.5× faster per mask than 64 for every
# simulator (none slower).
DEFAULT_CHUNK = 16


def sample_key(seed: int, protocol_name: str, index: int) -> jax.Array:
  """The per-sample PRNG key of sample `index`: fold_in(fold_in(key(seed), protocol id), index)."""
  return jax.random.fold_in(_protocol_key(seed, protocol_name), index)


def _protocol_key(seed: int, protocol_name: str) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), protocol_id(protocol_name))


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_masks(masks: np.ndarray) -> np.ndarray:
  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise DataError(f'masks must have shape (N, H, W), got {masks.shape}')
  if not np.issubdtype(masks.dtype, np.integer):
    raise DataError(f'masks must hold integer class ids, got dtype {masks.dtype}')
  if masks.dtype != np.uint8:
    if masks.size and (masks.min() < 0 or masks.max() > IGNORE):
      raise DataError('mask labels must be in [0, 255] (255 = ignore)')
    masks = masks.astype(np.uint8)
  return masks


def _check_indices(indices: np.ndarray, num_masks: int, num_samples: int) -> np.ndarray:
  indices = np.asarray(indices)
  if indices.shape != (num_masks,) or not np.issubdtype(indices.dtype, np.integer):
    raise DataError(f'indices must be {num_masks} integers (one per mask), got shape '
                    f'{indices.shape} and dtype {indices.dtype}')
  if num_masks and (indices.min() < 0 or indices.max() >= num_samples):
    raise DataError(f'sample indices must be in [0, num_samples={num_samples}); pass the dataset '
                    f'size as num_samples when generating part of a dataset')
  if len(np.unique(indices)) != num_masks:
    raise DataError('sample indices must be unique')
  return indices.astype(np.int64)


def _check_seed(seed: int) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
    raise ConfigError(f'noise seed must be an integer in [0, 2**32), got {seed!r}')
  return int(seed)


def _max_label(masks: np.ndarray) -> int:
  """Largest label other than the ignore label 255 (0 for no such pixel)."""
  if not masks.size:
    return 0
  top = int(masks.max())
  if top != IGNORE:  # the common case: one max, no boolean-indexed copy of every mask
    return top
  return int(np.where(masks == IGNORE, 0, masks).max())


def _num_classes(params: Mapping[str, Any], max_label: int) -> int:
  return params.get('num_classes') or max(max_label + 1, 2)


def resolve(protocol: str, params: Mapping[str, Any] | None, masks: np.ndarray
            ) -> tuple[NoiseProtocol, dict[str, Any]]:
  """The registered protocol and its params with defaults filled in; raises ConfigError."""
  return _resolve(protocol, params, _max_label(masks))


def _resolve(protocol: str, params: Mapping[str, Any] | None, max_label: int
             ) -> tuple[NoiseProtocol, dict[str, Any]]:
  entry = PROTOCOLS.get(protocol)
  if params is not None and not isinstance(params, Mapping):
    raise ConfigError(f'noise params must be a mapping, got {type(params).__name__}')
  return entry, entry.resolve_params(dict(params or {}), max_label)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def _freeze(value: Any) -> Any:
  if isinstance(value, Mapping):
    return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  return value


def _thaw(frozen: tuple) -> dict[str, Any]:
  return {k: v for k, v in frozen}


@functools.lru_cache(maxsize=16)
def _batched_corrupt(protocol_name: str, frozen_params: tuple):
  """jit(vmap(corrupt)) over (sample index, mask), keyed from one protocol key."""
  entry = PROTOCOLS.get(protocol_name)
  params = _thaw(frozen_params)

  def one(base_key, index, mask):
    return entry.corrupt(jax.random.fold_in(base_key, index), mask, params)

  return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def _corrupt_selected(entry: NoiseProtocol, params: dict[str, Any], seed: int,
                      masks: np.ndarray, indices: np.ndarray, chunk: int
                      ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
  """Runs `corrupt` over all given masks in chunks of exactly `chunk` (the last one padded
  with empty masks), so one program serves every dataset size."""
  count = len(masks)
  if count == 0:
    return masks.copy(), []
  run = _batched_corrupt(entry.name, _freeze(params))
  with jax.default_device(jax.devices('cpu')[0]):
    return run_chunks(functools.partial(run, _protocol_key(seed, entry.name)), masks, indices,
                      chunk)


def run_chunks(program, masks: np.ndarray, indices: np.ndarray, chunk: int
               ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
  """program(indices uint32 [chunk], masks [chunk, H, W]) -> (outputs, log of [chunk, ...]
  arrays) over fixed-size chunks, the last one padded with empty masks, so one compiled shape
  serves every dataset size.

  Returns:
    (outputs [N, H, W] in the dtype of `masks`, one log dict of numpy values per mask).
  """
  noisy = np.empty_like(masks)
  logs: list[dict[str, np.ndarray]] = []
  for start in range(0, len(masks), chunk):
    stop = min(start + chunk, len(masks))
    batch = np.zeros((chunk,) + masks.shape[1:], masks.dtype)
    batch[:stop - start] = masks[start:stop]
    batch_indices = np.zeros(chunk, np.uint32)
    batch_indices[:stop - start] = indices[start:stop]
    out, log = jax.device_get(program(batch_indices, batch))
    noisy[start:stop] = out[:stop - start]
    logs.extend({name: value[j] for name, value in log.items()} for j in range(stop - start))
  return noisy, logs


@functools.lru_cache(maxsize=32)
def vmapped_program(corrupt: Callable[..., Any], frozen_kwargs: tuple):
  """jit(vmap) over (sample index, mask) of corrupt(fold_in(base_key, index), mask, **kwargs):
  the generator's program for a protocol function with static keyword arguments."""
  kwargs = dict(frozen_kwargs)

  def one(base_key, index, mask):
    return corrupt(jax.random.fold_in(base_key, index), mask, **kwargs)

  return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def run_grouped(corrupt: Callable[..., Any], frozen_kwargs: tuple, base_key: jax.Array,
                masks: np.ndarray, indices: np.ndarray,
                groups: Sequence[tuple[dict[str, Any], np.ndarray, int]]
                ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
  """Runs each group of samples (extra static kwargs, member positions, chunk) through its own
  `vmapped_program`, for protocols that draw a sample's type first so that a group skips the
  programs of the other types (`abn`, `radius`, `mstfal`). Same outputs as one program for all.
  """
  noisy = np.empty_like(masks)
  logs: list[dict[str, np.ndarray] | None] = [None] * len(masks)
  for extra, members, chunk in groups:
    if len(members) == 0:
      continue
    program = vmapped_program(corrupt, frozen_kwargs + tuple(sorted(extra.items())))
    group_noisy, group_logs = run_chunks(functools.partial(program, base_key), masks[members],
                                         indices[members], chunk)
    noisy[members] = group_noisy
    for position, log in zip(members.tolist(), group_logs):
      logs[position] = log
  return noisy, logs


def _metric_block(num_classes: int, height: int, width: int) -> int:
  """Masks per counting call: bounds the (block, C-1, H, W) per-class temporaries (~16 M px)."""
  return max(1, min(64, 2**24 // ((num_classes - 1) * height * width)))


@functools.lru_cache(maxsize=16)
def _pair_counts(num_classes: int):
  """jit: (clean, noisy) uint8 [B, H, W] → the int32 counts of `label_noise_metrics`.

  Bit-packed masks and population counts (`morphology.pack_bits`): NumPy's bool sums over the
  same pairs cost ~0.3 ms per 256² mask, the largest host-side cost of `apply_noise`.
  """

  def counts(clean, noisy):
    valid = clean != IGNORE
    if num_classes == 2:
      truth = ((clean >= 1) & valid)[:, None]
      pred = ((noisy >= 1) & (noisy != IGNORE))[:, None]
    else:
      classes = jnp.arange(1, num_classes, dtype=clean.dtype)[None, :, None, None]
      truth, pred = clean[:, None] == classes, noisy[:, None] == classes
    truth_bits, pred_bits = morphology.pack_bits(truth), morphology.pack_bits(pred)
    truth_size, pred_size = morphology.popcount(truth_bits), morphology.popcount(pred_bits)
    overlap = morphology.popcount(truth_bits & pred_bits)
    # Weak labels (scribbles) mark unlabelled pixels 255: "known" = labelled in both.
    known_bits = morphology.pack_bits(valid & (noisy != IGNORE))
    truth_known = morphology.popcount(truth_bits & known_bits[:, None])
    return {
        'changed_pix': morphology.popcount(morphology.pack_bits((clean != noisy) & valid)),
        'num_valid': morphology.popcount(morphology.pack_bits(valid)),
        'num_known': morphology.popcount(known_bits),
        'truth_known_size': truth_known,
        'changed': truth_size + pred_size - 2 * overlap,  # |truth XOR pred|
        'truth_size': truth_size,
        'overlap': overlap,
        'pred_size': pred_size,
    }

  return jax.jit(counts)


def label_noise_metrics(clean: np.ndarray, noisy: np.ndarray, num_classes: int
                        ) -> dict[str, np.ndarray]:
  """Achieved noise of (N, H, W) label pairs, recomputed from the pair (METHODS §2.0 point 2).

  Returns float64 arrays: 'rho_pix' [N] (changed / valid pixels), 'rho_fg' and 'dice' [N, C-1]
  per foreground class, and 'rho_fg_all', 'dice_all' [N] pooled over classes. With
  num_classes == 2 every label in [1, 254] is foreground. NaN where |G| = 0 (ρ_fg) or no pixel is
  valid (ρ_pix); Dice is 1 when both masks are empty.
  """
  clean, noisy = np.asarray(clean, np.uint8), np.asarray(noisy, np.uint8)
  count, height, width = clean.shape
  block = _metric_block(num_classes, height, width)
  program = _pair_counts(num_classes)
  results = []
  with jax.default_device(jax.devices('cpu')[0]):
    for start in range(0, count, block):
      stop = min(start + block, count)
      pair = clean[start:stop], noisy[start:stop]
      if stop - start < block:  # padded to one shape: one compilation per image size
        pair = tuple(np.concatenate([part, np.zeros((block - len(part), height, width),
                                                    np.uint8)]) for part in pair)
      results.append((stop - start, jax.device_get(program(*pair))))

  def stacked(name, per_class):
    empty = np.zeros((0, num_classes - 1) if per_class else (0,), np.int64)
    return np.concatenate([empty] + [out[name][:size] for size, out in results]).astype(np.int64)

  changed, truth_size = stacked('changed', True), stacked('truth_size', True)
  overlap, pred_size = stacked('overlap', True), stacked('pred_size', True)
  changed_pix, num_valid = stacked('changed_pix', False), stacked('num_valid', False)
  num_known, truth_known = stacked('num_known', False), stacked('truth_known_size', True)
  # Labelled pixels of ỹ are a subset of the known ones, so overlap and pred_size need no mask.

  def ratio(num, den, if_zero):
    with np.errstate(divide='ignore', invalid='ignore'):
      return np.where(den > 0, num / np.maximum(den, 1), if_zero)

  return {
      'rho_pix': ratio(changed_pix, num_valid, np.nan),
      'rho_fg': ratio(changed, truth_size, np.nan),
      'dice': ratio(2 * overlap, truth_size + pred_size, 1.0),
      'rho_fg_all': ratio(changed.sum(1), truth_size.sum(1), np.nan),
      'dice_all': ratio(2 * overlap.sum(1), truth_size.sum(1) + pred_size.sum(1), 1.0),
      'known_fraction': ratio(num_known, num_valid, np.nan),
      'dice_known': ratio(2 * overlap.sum(1), truth_known.sum(1) + pred_size.sum(1), 1.0),
  }


def _json_float(value: float) -> float | None:
  value = float(value)
  return None if math.isnan(value) else value


def mask_sha1(mask: np.ndarray) -> str:
  """sha1 of a mask's C-order bytes."""
  return hashlib.sha1(np.ascontiguousarray(mask).tobytes()).hexdigest()


def _record(entry: NoiseProtocol, params: dict[str, Any], seed: int, sample_id: int,
            is_noisy: bool, log: Mapping[str, np.ndarray] | None, metrics: Mapping[str, Any],
            noisy_mask: np.ndarray, sha1: str | None = None) -> dict[str, Any]:
  """One noise-log record; `sha1` is `mask_sha1(noisy_mask)` when the caller has it already."""
  num_fg = len(metrics['rho_fg'])
  if is_noisy:
    sample_type, sample_params, class_entries = entry.describe(log, params)
  else:
    sample_type, sample_params, class_entries = 'clean', {}, []
  class_entries = list(class_entries) + [
      {'type': sample_type, 'params': {}} for _ in range(num_fg - len(class_entries))]
  classes = [{
      'class': k + 1,
      'type': class_entries[k]['type'],
      'params': class_entries[k]['params'],
      'rho_fg': _json_float(metrics['rho_fg'][k]),
      'dice': _json_float(metrics['dice'][k]),
  } for k in range(num_fg)]
  return {
      'sample_id': int(sample_id),
      'protocol': entry.name,
      'protocol_version': entry.version,
      'seed': seed,
      'is_noisy': bool(is_noisy),
      'type': sample_type,
      'params': sample_params,
      'classes': classes,
      'rho_pix': _json_float(metrics['rho_pix']),
      'rho_fg': _json_float(metrics['rho_fg_all']),
      'dice': _json_float(metrics['dice_all']),
      'known_fraction': _json_float(metrics['known_fraction']),
      'dice_known': _json_float(metrics['dice_known']),
      'sha1': mask_sha1(noisy_mask) if sha1 is None else sha1,
  }


def apply_noise(masks: np.ndarray, indices: np.ndarray, protocol: str,
                params: Mapping[str, Any] | None, seed: int, chunk: int = DEFAULT_CHUNK,
                num_samples: int | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """Generates the noisy labels of a dataset and their noise log.

  Args:
    masks: (N, H, W) clean labels, uint8 class ids with 255 = ignore (other integer dtypes with
      values in [0, 255] are converted).
    indices: (N,) sample ids n of the masks, unique, in [0, num_samples).
    protocol: a name in `PROTOCOLS` ('none', 'abn', ...).
    params: protocol parameters; see `PROTOCOLS.get(protocol).default_params` for the keys.
    seed: the noise seed, in [0, 2**32).
    chunk: samples per vmapped call; one shape is compiled per (protocol, params, chunk, H, W).
    num_samples: dataset size the noisy subset is drawn from; defaults to N.

  Returns:
    (noisy uint8 [N, H, W], one JSON-serialisable record per mask, in the order of `masks`).

  Raises:
    ConfigError: unknown protocol, unknown parameter or out-of-range value.
    DataError: masks or indices of the wrong shape, dtype or range.
  """
  masks = _check_masks(masks)
  num_samples = len(masks) if num_samples is None else int(num_samples)
  indices = _check_indices(indices, len(masks), num_samples)
  seed = _check_seed(seed)
  max_label = _max_label(masks)
  entry, resolved = _resolve(protocol, params, max_label)
  if chunk < 1:
    raise ConfigError(f'chunk must be >= 1, got {chunk}')

  is_noisy = np.asarray(entry.select_noisy(seed, num_samples, resolved), bool)[indices]
  positions = np.flatnonzero(is_noisy)
  noisy = masks.copy()
  batch_fn = entry.corrupt_selected or functools.partial(_corrupt_selected, entry)
  corrupted, logs = batch_fn(resolved, seed, masks[positions], indices[positions], chunk)
  noisy[positions] = corrupted
  log_at = dict(zip(positions.tolist(), logs))

  num_classes = _num_classes(resolved, max_label)
  metrics = label_noise_metrics(masks, noisy, num_classes)
  # Python floats per sample from one tolist() per metric: cheaper than numpy scalars per field.
  columns = {name: value.tolist() for name, value in metrics.items()}
  records = []
  for pos in range(len(masks)):
    sample_metrics = {name: column[pos] for name, column in columns.items()}
    records.append(_record(entry, resolved, seed, indices[pos], is_noisy[pos], log_at.get(pos),
                           sample_metrics, noisy[pos], sha1=_row_sha1(noisy, pos)))
  return noisy, records


def _row_sha1(masks: np.ndarray, pos: int) -> str:
  """`mask_sha1(masks[pos])` of a C-contiguous stack, hashed in place (no byte copy)."""
  return hashlib.sha1(masks[pos]).hexdigest()


# ---------------------------------------------------------------------------------------------
# Noise log
# ---------------------------------------------------------------------------------------------


def write_noise_log(records: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
  """One JSON object per line; NaN is refused (records carry null instead)."""
  with open(path, 'w', encoding='utf-8') as f:
    for record in records:
      f.write(json.dumps(record, allow_nan=False) + '\n')


def read_noise_log(path: str | os.PathLike) -> list[dict[str, Any]]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def _mean(values: Sequence[float | None]) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def summarize_noise_log(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Dataset-level summary: fraction noisy, mean ρ_pix and Dice over all samples, mean ρ_fg over
  the noisy ones, and the count of each type. Means skip null values; None when nothing is left.
  """
  noisy = [r for r in records if r['is_noisy']]
  type_counts: dict[str, int] = {}
  for r in records:
    type_counts[r['type']] = type_counts.get(r['type'], 0) + 1
  return {
      'num_samples': len(records),
      'num_noisy': len(noisy),
      'fraction_noisy': len(noisy) / len(records) if records else None,
      'mean_rho_pix': _mean([r['rho_pix'] for r in records]),
      'mean_rho_fg_noisy': _mean([r['rho_fg'] for r in noisy]),
      'mean_dice': _mean([r['dice'] for r in records]),
      # .get: noise logs written before these fields existed have none.
      'mean_dice_known': _mean([r.get('dice_known') for r in records]),
      'mean_known_fraction': _mean([r.get('known_fraction') for r in records]),
      'type_counts': dict(sorted(type_counts.items())),
  }


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def cache_key(masks: np.ndarray, indices: np.ndarray, protocol: str,
              params: Mapping[str, Any] | None, seed: int,
              num_samples: int | None = None) -> str:
  """sha1 over everything the output depends on: the protocol and its version, the resolved
  params, the seed, the sample ids, the dataset size and the clean masks' bytes."""
  masks = _check_masks(masks)
  num_samples = len(masks) if num_samples is None else int(num_samples)
  indices = _check_indices(indices, len(masks), num_samples)
  entry, resolved = resolve(protocol, params, masks)
  content = {
      'format': _CACHE_FORMAT,
      'protocol': entry.name,
      'protocol_version': entry.version,
      'params': _jsonable(resolved),
      'seed': _check_seed(seed),
      'num_samples': num_samples,
      'shape': list(masks.shape),
      'indices_sha1': mask_sha1(indices),
      'masks_sha1': mask_sha1(masks),
  }
  return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _writer_id() -> str:
  # Host and pid: the processes of a multi-host job share the cache folder, and may share pids.
  return f'{socket.gethostname()}.{os.getpid()}'


def _cache_paths(cache_dir: Path, cache_name: str, key: str) -> tuple[Path, Path]:
  stem = f'{cache_name}.{key[:16]}'
  return cache_dir / f'{stem}.npz', cache_dir / f'{stem}.jsonl'


def _load_cached(npz_path: Path, log_path: Path, key: str, num_masks: int
                 ) -> tuple[np.ndarray, list[dict[str, Any]]] | None:
  """The cached pair if it is complete and consistent, else None."""
  if not (npz_path.exists() and log_path.exists()):
    return None
  try:
    with np.load(npz_path, allow_pickle=False) as data:
      if str(data['cache_key']) != key:
        return None
      noisy = data['noisy']
    records = read_noise_log(log_path)
  except (OSError, ValueError, KeyError):
    return None
  if len(records) != num_masks or len(noisy) != num_masks:
    return None
  if any(r['sha1'] != mask_sha1(m) for r, m in zip(records, noisy)):
    return None
  return noisy, records


def cached_apply_noise(cache_dir: str | os.PathLike, cache_name: str, masks: np.ndarray,
                       indices: np.ndarray, protocol: str, params: Mapping[str, Any] | None,
                       seed: int, chunk: int = DEFAULT_CHUNK, num_samples: int | None = None
                       ) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """`apply_noise`, stored as `<cache_name>.<key>.npz` + `.jsonl` and reused when present.

  The key is `cache_key(...)`; a missing, truncated or hash-inconsistent cache is regenerated.
  """
  key = cache_key(masks, indices, protocol, params, seed, num_samples)
  cache_dir = Path(cache_dir)
  npz_path, log_path = _cache_paths(cache_dir, cache_name, key)
  cached = _load_cached(npz_path, log_path, key, len(masks))
  if cached is not None:
    return cached

  noisy, records = apply_noise(masks, indices, protocol, params, seed, chunk, num_samples)
  cache_dir.mkdir(parents=True, exist_ok=True)
  # Write to temporary names and rename, so an interrupted run never leaves a half file.
  tmp_log = log_path.with_name(f'{log_path.name}.{_writer_id()}.tmp')  # side-by-side runs: own tmp
  write_noise_log(records, tmp_log)
  tmp_npz = npz_path.with_name(f'{npz_path.name}.{_writer_id()}.tmp')
  with open(tmp_npz, 'wb') as f:
    np.savez_compressed(f, noisy=noisy, indices=np.asarray(indices, np.int64),
                        cache_key=np.array(key))
  os.replace(tmp_log, log_path)
  os.replace(tmp_npz, npz_path)
  return noisy, records


# ---------------------------------------------------------------------------------------------
# Dataset-sourced protocols ('rater'): labels read from the dataset, logged and cached alike
# ---------------------------------------------------------------------------------------------


def _check_dataset_masks(masks_by_name: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  checked = {name: _check_masks(masks) for name, masks in masks_by_name.items()}
  if not checked:
    raise DataError('the dataset stores no extra masks (raters) for this protocol to read')
  if len({masks.shape for masks in checked.values()}) > 1:
    shapes = ', '.join(f'{name} {masks.shape}' for name, masks in checked.items())
    raise DataError(f'the raters\' masks differ in shape: {shapes}')
  return checked


def _resolve_dataset(protocol: str, params: Mapping[str, Any] | None,
                     masks_by_name: Mapping[str, np.ndarray]
                     ) -> tuple[NoiseProtocol, dict[str, Any]]:
  entry = PROTOCOLS.get(protocol)
  if entry.from_dataset is None:
    raise ConfigError(f'noise protocol {protocol!r} corrupts clean masks: use apply_noise')
  return resolve(protocol, params, np.concatenate(list(masks_by_name.values())))


def apply_dataset_noise(masks_by_name: Mapping[str, np.ndarray], indices: np.ndarray,
                        protocol: str, params: Mapping[str, Any] | None, seed: int
                        ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
  """The (truth, label) pairs of a protocol that reads its labels from the dataset, and their log.

  `apply_noise`'s counterpart for protocols with a `from_dataset` hook (e.g. 'rater'): the hook
  picks the truth y (an eval rater, a consensus) and the label ỹ (the train rater) from the
  dataset's masks; the achieved noise is recomputed from the pair exactly as for the simulators.
  Every record has the protocol's `type` (each label is a rater's, none is untouched) and
  `is_noisy` from the hook (for 'rater', the Dice threshold).

  Args:
    masks_by_name: name (e.g. rater) -> uint8 (N, H, W) masks of the same N samples, in order.
    indices: (N,) sample ids of those samples, unique, in [0, N).
    protocol: a registered protocol with `from_dataset`.
    params: its parameters.
    seed: logged with every record (and keying the cache); the rater protocol draws nothing.

  Returns:
    (truth uint8 [N, H, W], label uint8 [N, H, W], one record per sample).

  Raises:
    ConfigError: a protocol without `from_dataset`, a bad parameter or an unknown rater name.
    DataError: masks of the wrong shape, dtype or range.
  """
  masks_by_name = _check_dataset_masks(masks_by_name)
  num = len(next(iter(masks_by_name.values())))
  indices = _check_indices(indices, num, num)
  seed = _check_seed(seed)
  entry, resolved = _resolve_dataset(protocol, params, masks_by_name)
  truth, label, is_noisy, logs = entry.from_dataset(masks_by_name, resolved)
  truth, label = _check_masks(truth), _check_masks(label)
  num_classes = _num_classes(resolved, max(_max_label(truth), _max_label(label)))
  records = []
  for start in range(0, num, 256):  # bounds the metric temporaries
    stop = min(start + 256, num)
    metrics = label_noise_metrics(truth[start:stop], label[start:stop], num_classes)
    for pos in range(start, stop):
      sample_metrics = {name: value[pos - start] for name, value in metrics.items()}
      record = _record(entry, resolved, seed, indices[pos], True, logs[pos], sample_metrics,
                       label[pos])
      record['is_noisy'] = bool(is_noisy[pos])  # described as the protocol's type either way
      records.append(record)
  return truth, label, records


def dataset_cache_key(masks_by_name: Mapping[str, np.ndarray], indices: np.ndarray,
                      protocol: str, params: Mapping[str, Any] | None, seed: int) -> str:
  """`cache_key` for `apply_dataset_noise`: every input mask set's bytes, by name."""
  masks_by_name = _check_dataset_masks(masks_by_name)
  num = len(next(iter(masks_by_name.values())))
  indices = _check_indices(indices, num, num)
  entry, resolved = _resolve_dataset(protocol, params, masks_by_name)
  content = {
      'format': _CACHE_FORMAT,
      'source': 'dataset',
      'protocol': entry.name,
      'protocol_version': entry.version,
      'params': _jsonable(resolved),
      'seed': _check_seed(seed),
      'indices_sha1': mask_sha1(indices),
      'masks': [[name, list(masks.shape), mask_sha1(masks)]
                for name, masks in masks_by_name.items()],
  }
  return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()


def cached_dataset_noise(cache_dir: str | os.PathLike, cache_name: str,
                         masks_by_name: Mapping[str, np.ndarray], indices: np.ndarray,
                         protocol: str, params: Mapping[str, Any] | None, seed: int
                         ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
  """`apply_dataset_noise`, stored as `<cache_name>.<key>.npz` + `.jsonl` like `cached_apply_noise`.

  The npz holds the truth next to the labels, so a STAPLE consensus is computed once.
  """
  key = dataset_cache_key(masks_by_name, indices, protocol, params, seed)
  npz_path, log_path = _cache_paths(Path(cache_dir), cache_name, key)
  num = len(next(iter(masks_by_name.values())))
  cached = _load_cached(npz_path, log_path, key, num)
  if cached is not None:
    try:
      with np.load(npz_path, allow_pickle=False) as stored:
        truth = stored['truth']
    except (OSError, ValueError, KeyError):
      truth = None
    if truth is not None and len(truth) == num:
      return truth, cached[0], cached[1]

  truth, label, records = apply_dataset_noise(masks_by_name, indices, protocol, params, seed)
  Path(cache_dir).mkdir(parents=True, exist_ok=True)
  # Temporary names, then renames: an interrupted run never leaves a half file.
  tmp_log = log_path.with_name(f'{log_path.name}.{_writer_id()}.tmp')  # side-by-side runs: own tmp
  write_noise_log(records, tmp_log)
  tmp_npz = npz_path.with_name(f'{npz_path.name}.{_writer_id()}.tmp')
  with open(tmp_npz, 'wb') as f:
    np.savez_compressed(f, noisy=label, truth=truth, indices=np.asarray(indices, np.int64),
                        cache_key=np.array(key))
  os.replace(tmp_log, log_path)
  os.replace(tmp_npz, npz_path)
  return truth, label, records
