"""`mtcl` (METHODS §4): confident learning on pixels against NumPy loops, and the method."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mtcl as mtcl_config
from nsegjax import train
from nsegjax.errors import ConfigError
from nsegjax.methods import mtcl


def softmax_np(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def cl_numpy(probs, labels, c, prune):
  """cleanlab's rules written as loops."""
  n = len(labels)
  t = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(c)])
  joint = np.zeros((c, c))
  for p, y in zip(probs, labels):
    above = [j for j in range(c) if p[j] >= t[j]]
    if y >= 0 and above:
      joint[y, max(above, key=lambda j: p[j])] += 1
  counts = np.array([(labels == i).sum() for i in range(c)])
  for i in range(c):
    if joint[i].sum():
      joint[i] = joint[i] / joint[i].sum() * counts[i]
  by_rate, by_class = np.zeros(n, bool), np.zeros(n, bool)
  for i in range(c):
    members = np.flatnonzero(labels == i)
    for j in range(c):
      if i != j:
        k = int(np.round(joint[i, j]))
        order = members[np.argsort(-(probs[members, j] - probs[members, i]), kind='stable')]
        by_rate[order[:k]] = True
    k = int(np.round(joint[i].sum() - joint[i, i]))
    order = members[np.argsort(probs[members, i], kind='stable')]
    by_class[order[:k]] = True
  return joint, {'by_noise_rate': by_rate, 'by_class': by_class, 'both': by_rate & by_class}[prune]


@pytest.mark.parametrize('seed,c', [(0, 2), (2, 3)])
@pytest.mark.parametrize('prune', ['both', 'by_noise_rate', 'by_class'])
def test_confident_learning_against_numpy(seed, c, prune):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, 200)
  labels[:5] = -1  # ignored pixels
  logits = rng.normal(size=(200, c)) + 2.5 * np.eye(c)[np.maximum(labels, 0)]
  flips = rng.random(200) < 0.2  # some labels disagree with what the logits say
  labels = np.where(flips & (labels >= 0), (labels + 1) % c, labels)
  probs = softmax_np(logits).astype(np.float32)
  want_joint, want = cl_numpy(probs, labels, c, prune)
  # float32 counts round either way at an exact half; these cases have none
  assert np.abs(want_joint - np.floor(want_joint) - 0.5).min() > 1e-3
  joint = mtcl.confident_joint(jnp.asarray(probs), jnp.asarray(labels), c)
  np.testing.assert_allclose(joint, want_joint, rtol=1e-5)
  got = mtcl.label_issues(jnp.asarray(probs), jnp.asarray(labels), c, prune)
  np.testing.assert_array_equal(got, want)
  assert not np.asarray(got)[:5].any()
  if prune == 'by_noise_rate':  # most flagged pixels are the flipped ones
    assert (flips[np.asarray(got)]).mean() > 0.7


def test_repaired_targets_flip_and_smooth_by_hand():
  noisy = jnp.array([0, 1, 1, 255])
  teacher = jnp.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
  issues = jnp.array([False, True, False, False])
  flip = mtcl.repaired_targets(noisy, teacher, issues, 2, 'flip')
  np.testing.assert_allclose(flip, [[1, 0], [1, 0], [0, 1], [0, 0]])
  smooth = mtcl.repaired_targets(noisy, teacher, issues, 2, 'smooth')
  np.testing.assert_allclose(smooth, [[1, 0], [0.8, 0.2], [0, 1], [0, 0]], rtol=1e-6)


def test_soft_ce_dice_equals_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
  targets = rng.dirichlet([1, 1], (2, 3, 3)).astype(np.float32)
  valid = (rng.random((2, 3, 3)) > 0.2).astype(np.float32)
  p = softmax_np(logits.astype(np.float64))
  ce = (-(targets * np.log(p)).sum(-1) * valid).sum() / valid.sum()
  pv, tv = p * valid[..., None], targets * valid[..., None]
  dice = (2 * (pv * tv).sum((0, 1, 2)) + 1) / (pv.sum((0, 1, 2)) + tv.sum((0, 1, 2)) + 1)
  want = 0.5 * (ce + 1 - dice[1])
  got = mtcl.soft_ce_dice(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(valid))
  assert float(got) == pytest.approx(want, rel=1e-5)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def tiny(data_dir, **overrides):
  config = mtcl_config.get_config()
  config.data.update(variant='tiny', image_size=0, data_dir=str(data_dir), num_workers=0)
  config.model.update(depth=2, base_width=4)
  config.train.update(batch_size=4, num_epochs=2, log_every=2)
  config.eval.update(batch_size=4, num_overlays=0)
  config.mtcl.update(clean_fraction=0.25, **overrides)
  return config


@pytest.mark.parametrize('fix', ['flip', 'smooth'])
def test_end_to_end(tmp_path, data_dir, fix):
  config = tiny(data_dir, fix=fix)
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  assert 0.0 <= results['test']['dice'] <= 1.0
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [r for r in map(json.loads, f) if r['split'] == 'train']
  ramps = [r['ramp'] for r in records]
  assert ramps == sorted(ramps) and ramps[-1] <= 0.1 + 1e-6
  assert all(0.0 <= r['flagged_fraction'] < 1.0 and np.isfinite(r['loss']) for r in records)


def test_teacher_is_an_ema_of_the_student(data_dir):
  from nsegjax import models  # pylint: disable=g-import-not-at-top
  from nsegjax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = tiny(data_dir, ema=0.5)
  method = mtcl.MTCL(config)
  model = models.create_model(config.model, 2)
  raw = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 1)).astype(np.uint8)
  variables = method.init_variables(jax.random.key(0), model, pipeline.normalize_images(raw))
  batch = {'image': pipeline.normalize_images(raw), 'noisy_mask': jnp.zeros((4, 16, 16), jnp.int32)}
  state = method.init_state(jax.random.key(1), variables, batch)
  state['teacher']['params'] = jax.tree.map(jnp.zeros_like, state['teacher']['params'])
  schedule = {'progress': jnp.float32(0.5), 'epoch': jnp.float32(1.0), 'step': jnp.int32(3)}
  _, aux = method.loss(model, variables['params'], variables['batch_stats'], state, batch,
                       jax.random.key(2), schedule)
  for t, s in zip(jax.tree.leaves(aux.method_state['teacher']['params']),
                  jax.tree.leaves(variables['params'])):
    np.testing.assert_allclose(t, 0.5 * np.asarray(s), rtol=1e-6)


@pytest.mark.parametrize('key,value,match', [('cl_prune', 'all', 'mtcl.cl_prune'),
                                             ('fix', 'drop', 'mtcl.fix'),
                                             ('hq_share', 0.0, 'mtcl.hq_share')])
def test_bad_options_name_the_key(data_dir, key, value, match):
  config = tiny(data_dir)
  config.mtcl[key] = value
  with pytest.raises(ConfigError, match=match):
    mtcl.MTCL(config)
