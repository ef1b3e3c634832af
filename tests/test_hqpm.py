"""`hqpm` (METHODS §3.4): the method's pieces against NumPy, its optimiser's phase gating, and
end-to-end runs (α/β noise and box labels, a killed run resumed)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hqpm as hqpm_config
from nsegjax import train
from nsegjax.errors import ConfigError
from nsegjax.methods import hqpm


def test_clean_subset_is_seeded_and_sized():
  a = hqpm.choose_clean_subset(0, 800, 0.1)
  assert len(a) == 80 and len(set(a.tolist())) == 80 and np.all(np.diff(a) > 0)
  np.testing.assert_array_equal(a, hqpm.choose_clean_subset(0, 800, 0.1))
  assert not np.array_equal(a, hqpm.choose_clean_subset(1, 800, 0.1))
  assert len(hqpm.choose_clean_subset(0, 24, 0.01)) == 1  # never empty


def test_fresh_corruptions_depend_on_seed_sample_and_step_only():
  clean = jnp.zeros((3, 4, 4), jnp.uint8)
  corrupt = lambda key, mask: (mask + jax.random.randint(key, mask.shape, 1, 200)).astype(  # noqa: E731
      mask.dtype)
  index = jnp.array([5, 6, 5])
  keys = hqpm.fresh_corruption_keys(0, index, jnp.int32(3))
  out = np.asarray(hqpm.fresh_imperfect_labels(keys, clean, corrupt, 1.0))
  np.testing.assert_array_equal(out[0], out[2])  # same (seed, n, step): same label
  assert not np.array_equal(out[0], out[1])
  later = hqpm.fresh_imperfect_labels(hqpm.fresh_corruption_keys(0, index, jnp.int32(4)),
                                      clean, corrupt, 1.0)
  assert not np.array_equal(out[0], np.asarray(later)[0])
  other_seed = hqpm.fresh_imperfect_labels(hqpm.fresh_corruption_keys(1, index, jnp.int32(3)),
                                           clean, corrupt, 1.0)
  assert not np.array_equal(out[0], np.asarray(other_seed)[0])
  kept = hqpm.fresh_imperfect_labels(keys, clean, corrupt, 0.0)  # α = 0: the clean mask
  np.testing.assert_array_equal(kept, clean)
  # α = ½ over many samples: about half corrupted.
  many = hqpm.fresh_corruption_keys(0, jnp.arange(400), jnp.int32(0))
  mixed = np.asarray(hqpm.fresh_imperfect_labels(many, jnp.zeros((400, 2, 2), jnp.uint8),
                                                 corrupt, 0.5))
  assert 0.4 < np.mean(mixed.reshape(400, -1).any(1)) < 0.6


def test_augmentation_moves_masks_with_the_image():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(6, 8, 8, 1)).astype(np.float32)
  masks = (images[..., 0] > 0).astype(np.uint8)
  out, (moved,) = hqpm.augment_jointly(jax.random.key(0), jnp.asarray(images),
                                       (jnp.asarray(masks),), 0.0)
  np.testing.assert_array_equal(np.asarray(moved), (np.asarray(out)[..., 0] > 0))
  # Each output is one of the 8 flips/rotations of its input.
  for image, result in zip(images[..., 0], np.asarray(out)[..., 0]):
    variants = [np.rot90(v, k) for v in (image, image[:, ::-1]) for k in range(4)]
    assert any(np.array_equal(result, v) for v in variants)


def test_soft_seg_loss_equals_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 5, 2)).astype(np.float32)
  target = rng.random((2, 4, 5)).astype(np.float32)
  valid = np.ones((2, 4, 5), np.float32)
  valid[0, 0] = 0
  z = logits.astype(np.float64)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  t = np.stack([1 - target, target], -1)
  ce = (-(t * log_p).sum(-1) * valid).sum((1, 2)) / valid.sum((1, 2))
  p = np.exp(log_p[..., 1]) * valid
  dice = (2 * (p * target * valid).sum((1, 2)) + 1) / (p.sum((1, 2)) +
                                                      (target * valid).sum((1, 2)) + 1)
  got = hqpm.per_image_soft_seg_loss(jnp.asarray(logits), jnp.asarray(target),
                                     jnp.asarray(valid), True)
  np.testing.assert_allclose(got, ce + 1 - dice, rtol=1e-5)
  np.testing.assert_allclose(hqpm.per_image_soft_seg_loss(
      jnp.asarray(logits), jnp.asarray(target), jnp.asarray(valid), False), ce, rtol=1e-5)


def test_balanced_sampling_gives_each_set_half_the_expected_loss():
  in_clean = jnp.array([True, False, False, False])
  np.testing.assert_array_equal(hqpm.subset_weights(in_clean, 0.1, 'proportional'), 1.0)
  w = np.asarray(hqpm.subset_weights(in_clean, 0.1, 'balanced'))
  np.testing.assert_allclose(w, [5.0, 0.5 / 0.9, 0.5 / 0.9, 0.5 / 0.9], rtol=1e-6)
  assert 0.1 * w[0] == pytest.approx(0.9 * w[1])  # expected shares equal


def test_nin_input_marks_unlabelled_pixels():
  images = jnp.zeros((1, 1, 3, 3))
  labels = jnp.array([[[0, 1, 255]]])
  x = np.asarray(hqpm.nin_input(images, labels))[0, 0]
  np.testing.assert_array_equal(x[:, 3:], [[1, 0, 1], [0, 1, 1], [0, 0, 0]])


def tiny_config(data_dir, arg='synthetic', **overrides):
  config = hqpm_config.get_config(arg)
  config.data.update(variant='tiny', image_size=0, data_dir=str(data_dir), num_workers=0)
  config.model.update(depth=2, base_width=4)
  config.train.update(batch_size=4, num_steps=24, log_every=3)  # 6 steps an epoch, 4 epochs
  config.eval.update(batch_size=4, num_overlays=2)
  config.hqpm.nin.update(depth=2, base_width=4)
  config.hqpm.update(clean_fraction=0.25, **overrides)
  return config


def test_each_part_moves_only_in_its_phase():
  config = tiny_config('/unused')
  method = hqpm.HQPM(config)
  tx, lr = method.make_optimizer(num_steps=20, steps_per_epoch=5)  # phase 1: 10 steps
  params = {'nin': {'w': jnp.ones(3)}, 'nets': {'w': jnp.ones(3)}}
  opt_state = tx.init(params)
  grads_nin = {'nin': {'w': jnp.ones(3)}, 'nets': {'w': jnp.zeros(3)}}
  for _ in range(10):
    updates, opt_state = tx.update(grads_nin, opt_state, params)
    np.testing.assert_array_equal(updates['nets']['w'], 0.0)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  assert float(lr(5)) > 0 and float(lr(12)) > 0
  # The switch restarts the moments, so the NIN stops dead while the networks train.
  opt_state = hqpm.keep_schedule_counts(tx.init(params), opt_state)
  grads_nets = {'nin': {'w': jnp.zeros(3)}, 'nets': {'w': jnp.ones(3)}}
  for _ in range(2):  # the networks' schedule warms up from 0 at the switch
    updates, opt_state = tx.update(grads_nets, opt_state, params)
    np.testing.assert_array_equal(updates['nin']['w'], 0.0)
  assert np.all(np.asarray(updates['nets']['w']) < 0)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize('arg', ['synthetic', 'synthetic,box'])
def test_end_to_end_revises_then_trains_the_parallel_networks(tmp_path, data_dir, arg):
  config = tiny_config(data_dir, arg)
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  assert 0.0 <= results['test']['dice'] <= 1.0
  with open(os.path.join(workdir, 'hqpm_revision.json'), encoding='utf-8') as f:
    report = json.load(f)
  assert report['step'] == 12 and report['clean_subset_size'] == 6  # 25% of 24
  imperfect = report['imperfect_set']
  assert imperfect['num_samples'] == 18
  saved = np.load(os.path.join(workdir, 'pseudo_masks.npz'))
  assert saved['revised'].shape == saved['noisy'].shape and saved['in_clean_subset'].sum() == 6
  # The report is recomputed from what was saved and the clean truth (NumPy).
  source = train.prepare_data(config)
  clean = np.stack([source.train[n]['mask'] for n in range(len(source.train))])
  keep = ~saved['in_clean_subset']

  def set_dice(labels):
    fg = (labels == 1)[keep]
    return 2 * (fg & (clean[keep] == 1)).sum() / (fg.sum() + (clean[keep] == 1).sum())

  assert imperfect['dice_before'] == pytest.approx(set_dice(saved['noisy']))
  assert imperfect['dice_after'] == pytest.approx(set_dice(saved['revised']))
  np.testing.assert_array_equal(saved['noisy'], source.train_noisy)
  if arg.endswith('box'):
    assert json.loads(open(os.path.join(workdir, 'noise_log.jsonl')).readline())['protocol'] == 'box'
  records = [r for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl')) if r['split'] == 'train']
  assert [r['phase'] for r in records] == [1.0] * 4 + [2.0] * 4
  assert all(r['seg_loss'] == 0.0 for r in records[:4]) and all(
      r['nin_loss'] == 0.0 for r in records[4:])
  assert os.path.exists(os.path.join(workdir, 'pseudo_masks.png'))


def test_killed_after_the_revision_resumes_to_the_uninterrupted_results(tmp_path, data_dir,
                                                                         monkeypatch):
  config = tiny_config(data_dir)
  reference = train.train_and_evaluate(config, str(tmp_path / 'reference'))
  original = hqpm.HQPM.after_epoch

  def crash_after_the_revision(self, state, epoch, context):
    state = original(self, state, epoch, context)  # revised, phase 2 not yet checkpointed
    if epoch == 1:
      raise RuntimeError('pre-empted')
    return state

  workdir = str(tmp_path / 'crashed')
  with monkeypatch.context() as patch:
    patch.setattr(hqpm.HQPM, 'after_epoch', crash_after_the_revision)
    with pytest.raises(RuntimeError, match='pre-empted'):
      train.train_and_evaluate(config, workdir)
  resumed = train.train_and_evaluate(config, workdir)
  assert resumed['test'] == reference['test']
  assert resumed['validation_history'] == reference['validation_history']
  for name in ('revised', 'reliability'):
    np.testing.assert_array_equal(
        np.load(os.path.join(workdir, 'pseudo_masks.npz'))[name],
        np.load(os.path.join(tmp_path / 'reference', 'pseudo_masks.npz'))[name])


@pytest.mark.parametrize('key,value,match', [
    ('soften', 'mixup', 'hqpm.soften'), ('k', 1, 'hqpm.k'), ('nin_epochs', 0, 'hqpm.nin_epochs'),
    ('clean_fraction', 0.0, 'hqpm.clean_fraction'), ('eps', 2.0, 'hqpm.eps')])
def test_bad_options_name_the_key(key, value, match):
  config = tiny_config('/unused')
  config.hqpm[key] = value
  with pytest.raises(ConfigError, match=match):
    hqpm.HQPM(config)


def test_weak_label_presets():
  assert hqpm_config.get_config('synthetic,scribble').noise.name == 'scribble'
  with pytest.raises(ValueError, match="unknown noise protocol 'blob'"):
    hqpm_config.get_config('synthetic,blob')
