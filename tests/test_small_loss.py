"""Co-teaching and TriNet (METHODS §4): the small-loss rule against NumPy, and the methods."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import coteach as coteach_config
from configs import trinet as trinet_config
from nsegjax import methods, models, train
from nsegjax.data import pipeline
from nsegjax.errors import ConfigError
from nsegjax.losses import selection
from nsegjax.methods import trinet


def keep_numpy(scores, labels, rates, num_classes):
  keep = np.zeros(labels.shape, bool)
  for c in range(num_classes):
    member = labels == c
    ranked = np.sort(scores[member])[::-1]
    k = int(np.floor((1 - rates[c]) * member.sum()))
    threshold = ranked[k] if k < member.sum() else -np.inf
    keep |= member & (scores < threshold)
  return keep


def test_remember_rates_ramp_by_hand():
  forget = np.array([0.1, 0.4])
  np.testing.assert_allclose(selection.remember_rates(0.0, forget, 2.0), [1.0, 1.0])
  np.testing.assert_allclose(selection.remember_rates(1.0, forget, 2.0), [0.95, 0.8])
  np.testing.assert_allclose(selection.remember_rates(5.0, forget, 2.0), [0.9, 0.6])
  np.testing.assert_allclose(selection.remember_rates(0.0, forget, 0.0), [0.9, 0.6])


def test_keep_small_loss_by_hand():
  scores = np.array([[0.9, 0.1, 0.5, 0.4, 0.3, 0.7, 0.2]])
  labels = np.array([[1, 1, 1, 1, 0, 0, 255]])
  # class 1 (4 pixels), R = 0.75: drop ⌊0.25·4⌋ = 1 → the threshold is 0.5: keep 0.1 and 0.4
  # class 0 (2 pixels), R = 0.5: drop 1 → threshold 0.3: nothing is below it
  keep = selection.keep_small_loss(jnp.asarray(scores), jnp.asarray(labels),
                                   jnp.asarray([0.5, 0.75]), 2)
  np.testing.assert_array_equal(keep, [[False, True, False, True, False, False, False]])


@pytest.mark.parametrize('seed', [0, 1])
def test_keep_small_loss_against_numpy(seed):
  rng = np.random.default_rng(seed)
  scores = rng.random((3, 8, 8)).astype(np.float32)
  labels = rng.integers(0, 3, (3, 8, 8))
  labels[0, :2] = 255
  rates = rng.uniform(0.3, 1.0, 3)
  got = selection.keep_small_loss(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(rates), 3)
  np.testing.assert_array_equal(got, keep_numpy(scores, labels, rates, 3))
  assert not np.asarray(got)[labels == 255].any()


def test_oracle_forget_rates_by_hand():
  clean = np.array([[0, 0, 1, 1, 1, 255]], np.uint8)
  noisy = np.array([[0, 1, 1, 1, 0, 1]], np.uint8)
  # labelled 0: pixels 0 (right) and 4 (wrong) → ½; labelled 1: pixels 1 (wrong), 2, 3 → ⅓
  np.testing.assert_allclose(selection.oracle_forget_rates(clean, noisy, 2), [0.5, 1 / 3])


def test_trinet_vote_scores():
  a, b = jnp.array([1.0, 0.2]), jnp.array([0.5, 0.9])
  np.testing.assert_allclose(trinet.vote_scores(a, b, 'absdiff'), [0.5, 0.7])
  np.testing.assert_allclose(trinet.vote_scores(a, b, 'sum'), [1.5, 1.1])


def test_coteaching_trains_each_network_on_its_peers_selection():
  """The gradient of network 1's loss term reaches only pixels network 2 kept."""
  rng = np.random.default_rng(0)
  labels = jnp.asarray(rng.integers(0, 2, (1, 4, 4)))
  ce = jnp.asarray(rng.random((2, 1, 4, 4)).astype(np.float32))
  rates = jnp.asarray([0.5, 0.5])
  kept_by_2 = selection.keep_small_loss(ce[1], labels, rates, 2)
  grad = jax.grad(lambda c: selection.masked_mean(c, kept_by_2))(ce[0])
  np.testing.assert_array_equal(np.asarray(grad) > 0, np.asarray(kept_by_2))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def tiny(config, data_dir):
  config.data.update(variant='tiny', image_size=0, data_dir=str(data_dir), num_workers=0)
  config.model.update(depth=2, base_width=4)
  config.train.update(batch_size=4, num_epochs=2, log_every=2)
  config.eval.update(batch_size=4, num_overlays=0)
  config[config.method].rampup_epochs = 1
  return config


@pytest.mark.parametrize('module', [coteach_config, trinet_config])
def test_end_to_end(tmp_path, data_dir, module):
  config = tiny(module.get_config(), data_dir)
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  assert 0.0 <= results['test']['dice'] <= 1.0
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [r for r in map(json.loads, f) if r['split'] == 'train']
  rates = [r['remember_rate_fg'] for r in records]
  assert rates[0] > rates[-1] and rates == sorted(rates, reverse=True)  # the forget rate ramps in
  assert all(0.0 < r['kept_fraction'] < 1.0 for r in records)
  assert all(np.isfinite(r['loss']) for r in records)


def test_predict_first_or_mean(data_dir):
  config = tiny(trinet_config.get_config(), data_dir)
  model = models.create_model(config.model, 2)
  images = pipeline.normalize_images(
      np.random.default_rng(0).integers(0, 255, (2, 16, 16, 1)).astype(np.uint8))
  method = methods.create_method(config)
  variables = method.init_variables(jax.random.key(0), model, images)
  assert jax.tree.leaves(variables['params'])[0].shape[0] == 3
  mean = method.predict(model, variables, {}, images)
  each = [jax.nn.softmax(model.apply(jax.tree.map(lambda x, i=i: x[i], variables), images), -1)
          for i in range(3)]
  np.testing.assert_allclose(mean, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
  config.trinet.eval = 'first'
  np.testing.assert_allclose(methods.create_method(config).predict(model, variables, {}, images),
                             each[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('module,key,value,match', [
    (coteach_config, 'rate_source', 'guess', 'coteach.rate_source'),
    (coteach_config, 'forget_rate', 1.5, 'coteach.forget_rate'),
    (trinet_config, 'criterion', 'max', 'trinet.criterion'),
    (trinet_config, 'rampup_epochs', -1, 'trinet.rampup_epochs')])
def test_bad_options_name_the_key(module, key, value, match):
  config = module.get_config()
  config[config.method][key] = value
  with pytest.raises(ConfigError, match=match):
    methods.create_method(config)
