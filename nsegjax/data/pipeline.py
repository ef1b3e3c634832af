"""The input pipeline: sample → its fixed noisy mask → augmentation → per-process batch.

Training batches form a grain `MapDataset` indexed by step, so the stream is a pure
function of (seed, step): every epoch is a fresh seeded permutation (the last partial
batch dropped), augmentation draws from its own stream keyed on (seed, epoch, sample), and
the iterator's position is all there is to checkpoint. Each process builds only its own
slice of every global batch.
"""
import functools

import grain
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

_AUGMENT_STREAM = 1
_SHUFFLE_STREAM = 2


def normalize_images(images):
  """uint8 [B, H, W, C] → float32, zero mean and unit variance per image and channel.

  Per-image statistics need no dataset constants, so the same code serves every dataset.
  """
  x = images.astype(jnp.float32)
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  std = jnp.std(x, axis=(1, 2), keepdims=True)
  return (x - mean) / jnp.maximum(std, 1.0)


def _resize(array, size_hw, resample):
  squeeze = array.ndim == 3 and array.shape[-1] == 1
  img = Image.fromarray(array[..., 0] if squeeze else array)
  out = np.asarray(img.resize((size_hw[1], size_hw[0]), resample=resample))
  return out[..., None] if squeeze else out


def augment(rng: np.random.Generator, image, masks, aug_cfg):
  """Flips, 90° rotations and a random scale-crop, identical for the image and all masks.

  `masks` is a tuple of label maps (clean, noisy, ...); they are resampled with nearest
  neighbours so class ids and the ignore value survive.
  """
  arrays = [image] + list(masks)
  if aug_cfg.flip:
    if rng.random() < 0.5:
      arrays = [a[:, ::-1] for a in arrays]
    if rng.random() < 0.5:
      arrays = [a[::-1] for a in arrays]
  if aug_cfg.rot90 and image.shape[0] == image.shape[1]:
    k = int(rng.integers(4))
    arrays = [np.rot90(a, k) for a in arrays]
  if aug_cfg.min_scale < 1.0:
    h, w = image.shape[:2]
    scale = rng.uniform(aug_cfg.min_scale, 1.0)
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    arrays = [a[top:top + ch, left:left + cw] for a in arrays]
    arrays = ([_resize(np.ascontiguousarray(arrays[0]), (h, w), Image.BILINEAR)] +
              [_resize(np.ascontiguousarray(m), (h, w), Image.NEAREST) for m in arrays[1:]])
  arrays = [np.ascontiguousarray(a) for a in arrays]
  return arrays[0], tuple(arrays[1:])


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
  return np.random.default_rng([seed, _SHUFFLE_STREAM, epoch]).permutation(num_samples)


def train_sample_ids(step: int, *, seed: int, num_samples: int, global_batch: int,
                     process_index: int = 0, process_count: int = 1) -> tuple[int, np.ndarray]:
  """(epoch, this process's sample ids) of global batch `step`."""
  steps_per_epoch = num_samples // global_batch
  epoch, offset = divmod(step, steps_per_epoch)
  local = global_batch // process_count
  start = offset * global_batch + process_index * local
  return epoch, epoch_permutation(seed, epoch, num_samples)[start:start + local]


def make_train_dataset(source, noisy_masks, *, seed: int, global_batch: int, num_steps: int,
                       aug_cfg, process_index: int = 0, process_count: int = 1):
  """A `grain.MapDataset` whose element `step` is this process's part of that global batch."""
  num_samples = len(source)
  if num_samples < global_batch:
    raise ValueError(f'the training split has {num_samples} samples, fewer than one batch '
                     f'of {global_batch}')

  def load_batch(step):
    epoch, ids = train_sample_ids(step, seed=seed, num_samples=num_samples,
                                  global_batch=global_batch, process_index=process_index,
                                  process_count=process_count)
    images, clean, noisy, where_from = [], [], [], []
    for n in ids:
      example = source[int(n)]
      rng = np.random.default_rng([seed, _AUGMENT_STREAM, epoch, int(n)])
      pixel_ids = np.arange(noisy_masks[n].size, dtype=np.int32).reshape(noisy_masks[n].shape)
      image, (mask, noisy_mask, pixel_ids) = augment(
          rng, example['image'], (example['mask'], noisy_masks[n], pixel_ids), aug_cfg)
      images.append(image)
      clean.append(mask)
      noisy.append(noisy_mask)
      where_from.append(pixel_ids)
    return {'image': np.stack(images), 'mask': np.stack(clean).astype(np.int32),
            'noisy_mask': np.stack(noisy).astype(np.int32), 'index': ids.astype(np.int32),
            'source_pixel': np.stack(where_from)}

  return grain.MapDataset.range(num_steps).map(load_batch)


def gather_augmented(per_sample: jax.Array, index: jax.Array,
                     source_pixel: jax.Array) -> jax.Array:
  """A per-sample array kept in un-augmented coordinates ([N, H, W, ...]: a label bank, a
  target memory) read out for a batch in the batch's augmented coordinates.

  `source_pixel` [B, H, W] is the batch's map of flat source pixel ids (the pipeline augments
  an id image exactly like the masks), so the result equals augmenting each sample's entry."""
  num, height, width = per_sample.shape[:3]
  flat = per_sample.reshape((num, height * width) + per_sample.shape[3:])[index]
  return jax.vmap(lambda rows, ids: rows[ids])(flat, source_pixel)


def random_batch(rng: np.random.Generator, batch: int, size: int, channels: int,
                 num_classes: int) -> dict:
  """A training batch laid out like `make_train_dataset`'s, with random content (benchmarks,
  tests): no augmentation, so every pixel comes from itself."""
  return {'image': rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8),
          'mask': rng.integers(0, num_classes, (batch, size, size), dtype=np.int32),
          'noisy_mask': rng.integers(0, num_classes, (batch, size, size), dtype=np.int32),
          'index': rng.permutation(batch).astype(np.int32),
          'source_pixel': np.broadcast_to(np.arange(size * size, dtype=np.int32).reshape(size, size),
                                          (batch, size, size)).copy()}


def make_train_iterator(dataset, num_threads: int = 2):
  """Prefetching iterator with `get_state`/`set_state`, checkpointed by Orbax."""
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * max(num_threads, 1))
  return iter(dataset.to_iter_dataset(options))


def eval_batches(source, noisy_masks, global_batch: int):
  """Yields (global batch, number of real samples in it), in order.

  `noisy_masks` may be None (test split). The last batch is padded by repeating sample 0, so
  every global batch has the same shape (one compilation) and divides the device count; callers
  drop the padding. Every process reads whole batches: predictions come back replicated.
  """
  num = len(source)
  for start in range(0, num, global_batch):
    ids = np.arange(start, start + global_batch)
    valid = int(min(global_batch, num - start))
    ids = np.where(ids < num, ids, 0)
    examples = [source[int(n)] for n in ids]
    batch = {'image': np.stack([e['image'] for e in examples]),
             'mask': np.stack([e['mask'] for e in examples]).astype(np.int32),
             'index': ids.astype(np.int32)}
    if noisy_masks is not None:
      batch['noisy_mask'] = np.stack([noisy_masks[n] for n in ids]).astype(np.int32)
    yield batch, valid
