"""Input pipeline: deterministic order, per-process slices, identical augmentation of all maps."""
import jax.numpy as jnp
import ml_collections
import numpy as np

from nsegjax.data import pipeline

AUG = ml_collections.ConfigDict(dict(flip=True, rot90=True, min_scale=0.6))


class ArraySource:
  """A random-access source over in-memory arrays, like a TFDS data source."""

  def __init__(self, images, masks):
    self.images, self.masks = images, masks

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {'index': i, 'image': self.images[i], 'mask': self.masks[i]}


def toy_source(n=10, size=16):
  rng = np.random.default_rng(0)
  masks = (rng.random((n, size, size)) > 0.6).astype(np.uint8)
  images = (masks * 200 + 20)[..., None].astype(np.uint8)  # image encodes its own mask
  return ArraySource(images, masks)


def test_epoch_is_a_permutation_and_epochs_differ():
  ids = [pipeline.train_sample_ids(s, seed=3, num_samples=10, global_batch=5)[1] for s in range(4)]
  assert sorted(np.concatenate(ids[:2])) == list(range(10))
  assert sorted(np.concatenate(ids[2:])) == list(range(10))
  assert not np.array_equal(np.concatenate(ids[:2]), np.concatenate(ids[2:]))


def test_process_slices_tile_the_global_batch():
  full = pipeline.train_sample_ids(7, seed=1, num_samples=30, global_batch=8)[1]
  parts = [pipeline.train_sample_ids(7, seed=1, num_samples=30, global_batch=8,
                                     process_index=p, process_count=4)[1] for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts), full)


def test_flips_and_rotations_move_image_and_masks_together():
  rng = np.random.default_rng(5)
  src = toy_source()
  aug = ml_collections.ConfigDict(dict(flip=True, rot90=True, min_scale=1.0))
  for i in range(len(src)):
    image, (mask, noisy) = pipeline.augment(rng, src.images[i], (src.masks[i], 1 - src.masks[i]),
                                            aug)
    np.testing.assert_array_equal(image[..., 0] > 110, mask == 1)
    np.testing.assert_array_equal(noisy, 1 - mask)


def test_scale_crop_keeps_image_and_masks_aligned():
  rng = np.random.default_rng(6)
  blocks = (np.random.default_rng(1).random((8, 4, 4)) > 0.5).astype(np.uint8)
  masks = blocks.repeat(8, 1).repeat(8, 2)  # 32×32 masks made of 8×8 blocks
  images = (masks * 200 + 20)[..., None].astype(np.uint8)
  for image, mask in zip(images, masks):
    out, (out_mask, out_noisy) = pipeline.augment(rng, image, (mask, 1 - mask), AUG)
    assert out.shape == image.shape and out_mask.shape == mask.shape
    # Bilinear image vs nearest masks: they may disagree only on block boundaries.
    assert np.mean((out[..., 0] > 120) != (out_mask == 1)) < 0.08
    np.testing.assert_array_equal(out_noisy, 1 - out_mask)


def test_train_dataset_is_a_pure_function_of_step():
  src = toy_source()
  noisy = 1 - src.masks
  make = lambda: pipeline.make_train_dataset(src, noisy, seed=0, global_batch=4, num_steps=6,
                                             aug_cfg=AUG)
  a, b = make(), make()
  for step in (0, 3, 5):
    for key in ('image', 'mask', 'noisy_mask', 'index'):
      np.testing.assert_array_equal(a[step][key], b[step][key])
  batch = a[2]
  assert batch['image'].shape == (4, 16, 16, 1) and batch['mask'].dtype == np.int32


def test_iterator_state_round_trip():
  src = toy_source()
  ds = pipeline.make_train_dataset(src, src.masks, seed=0, global_batch=2, num_steps=8,
                                   aug_cfg=AUG)
  it = pipeline.make_train_iterator(ds)
  next(it), next(it)
  state = it.get_state()
  expected = next(it)
  it2 = pipeline.make_train_iterator(ds)
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)['image'], expected['image'])


def test_eval_batches_cover_split_in_order_with_padding():
  src = toy_source(n=7)
  seen = []
  for batch, valid in pipeline.eval_batches(src, None, 4):
    assert batch['image'].shape[0] == 4 and 'noisy_mask' not in batch
    seen.extend(batch['index'][:valid])
  assert seen == list(range(7))


def test_normalize_images_zero_mean_unit_std():
  x = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3)).astype(np.uint8)
  y = np.asarray(pipeline.normalize_images(x))
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-4)


def test_per_sample_arrays_are_read_in_the_batch_augmented_coordinates():
  """A label bank gathered through `source_pixel` equals the augmented noisy mask exactly."""
  source = toy_source(n=6, size=12)
  noisy = np.random.default_rng(3).integers(0, 4, (6, 12, 12)).astype(np.uint8)
  dataset = pipeline.make_train_dataset(source, noisy, seed=1, global_batch=3, num_steps=6,
                                        aug_cfg=AUG)
  for step in range(6):
    batch = dataset[step]
    got = pipeline.gather_augmented(jnp.asarray(noisy), jnp.asarray(batch['index']),
                                    jnp.asarray(batch['source_pixel']))
    np.testing.assert_array_equal(got, batch['noisy_mask'])
    soft = np.random.default_rng(step).random((6, 12, 12, 2)).astype(np.float32)
    got = pipeline.gather_augmented(jnp.asarray(soft), jnp.asarray(batch['index']),
                                    jnp.asarray(batch['source_pixel']))
    assert got.shape == (3, 12, 12, 2)
    np.testing.assert_array_equal(got[..., 0], np.take_along_axis(
        soft[batch['index'], ..., 0].reshape(3, -1), batch['source_pixel'].reshape(3, -1),
        1).reshape(3, 12, 12))
