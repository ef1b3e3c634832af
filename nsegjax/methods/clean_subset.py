"""A granted clean subset D_c (HQPM, MTCL): which samples, and their in-step augmentation.

Methods given a few clean masks keep D_c on the device and draw batches from it inside the
step, so these batches get their own augmentation here rather than the loader's.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsegjax.data.pipeline import normalize_images

_CLEAN_SUBSET_STREAM = 7


def choose_clean_subset(seed: int, num_samples: int, fraction: float) -> np.ndarray:
  """Sorted indices of D_c: round(fraction·N) samples (at least one) drawn from `seed`."""
  count = min(max(int(round(fraction * num_samples)), 1), num_samples)
  rng = np.random.default_rng([seed, _CLEAN_SUBSET_STREAM])
  return np.sort(rng.choice(num_samples, count, replace=False))


def augment_jointly(key: jax.Array, images: jax.Array, masks: tuple, intensity: float):
  """Per sample: random horizontal / vertical flips, a 90° rotation (square images) and
  x ← x·(1 + U(±intensity)) + U(±intensity) on the normalised image; masks move with it."""
  square = images.shape[1] == images.shape[2]

  def one(key, image, *labels):
    keys = jax.random.split(key, 5)
    arrays = (image,) + labels
    flip_w, flip_h = jax.random.bernoulli(keys[0]), jax.random.bernoulli(keys[1])
    arrays = tuple(jnp.where(flip_w, a[:, ::-1], a) for a in arrays)
    arrays = tuple(jnp.where(flip_h, a[::-1], a) for a in arrays)
    if square:
      turns = jax.random.randint(keys[2], (), 0, 4)
      arrays = tuple(lax.switch(turns, [lambda a, k=k: jnp.rot90(a, k) for k in range(4)], a)
                     for a in arrays)
    gain = 1.0 + jax.random.uniform(keys[3], (), minval=-intensity, maxval=intensity)
    bias = jax.random.uniform(keys[4], (), minval=-intensity, maxval=intensity)
    return (arrays[0] * gain + bias,) + arrays[1:]

  out = jax.vmap(one)(jax.random.split(key, images.shape[0]), images, *masks)
  return out[0], out[1:]


def draw_batch(rng: jax.Array, images: jax.Array, masks: jax.Array, size: int,
               intensity: float):
  """`size` samples of D_c (uint8 images [n, H, W, C] normalised, masks [n, H, W]) drawn
  uniformly (with replacement only when D_c is smaller than the batch), augmented jointly."""
  pick_rng, aug_rng = jax.random.split(rng)
  count = images.shape[0]
  picks = jax.random.choice(pick_rng, count, (size,), replace=count < size)
  out, (labels,) = augment_jointly(aug_rng, normalize_images(images[picks]), (masks[picks],),
                                   intensity)
  return out, labels
