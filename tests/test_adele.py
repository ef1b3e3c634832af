"""`adele` (METHODS §4): detection, correction and consistency against NumPy, and the method."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import adele as adele_config
from nsegjax import train
from nsegjax.errors import ConfigError
from nsegjax.methods import adele


def test_curve_fit_recovers_the_parameters_and_slope_matches_finite_differences():
  truth = (0.8, 0.6, 2.0)
  ious = adele.iou_curve(np.arange(1, 16, dtype=float), *truth)
  fit = adele.fit_iou_curve(ious)
  np.testing.assert_allclose(fit, truth, rtol=1e-3)
  t, h = 3.0, 1e-6
  numeric = (adele.iou_curve(t + h, *truth) - adele.iou_curve(t - h, *truth)) / (2 * h)
  assert adele.iou_curve_slope(t, *truth) == pytest.approx(numeric, rel=1e-5)


def test_slope_drop_small_while_rising_large_once_flat():
  rising = adele.iou_curve(np.arange(1, 5, dtype=float), 1.0, 1.0, 50.0)  # nearly linear
  flat = adele.iou_curve(np.arange(1, 12, dtype=float), 0.8, 1.0, 1.0)  # saturates fast
  drop_rising, _ = adele.slope_drop(rising)
  drop_flat, _ = adele.slope_drop(flat)
  assert drop_rising < 0.1 and drop_flat > 0.9
  fit = adele.fit_iou_curve(flat)
  want = abs(adele.iou_curve_slope(1.0, *fit) - adele.iou_curve_slope(11.0, *fit)) / abs(
      adele.iou_curve_slope(1.0, *fit))
  assert drop_flat == pytest.approx(want)


def test_correct_labels_by_hand():
  probs = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]]])
  labels = np.array([[1, 0, 1, 255]], np.uint8)
  only_bg = adele.correct_labels(probs, labels, np.array([True, False]), 0.7)
  np.testing.assert_array_equal(only_bg, [[0, 0, 1, 255]])  # 0.6 is below τ; 255 stays
  both = adele.correct_labels(probs, labels, np.array([True, True]), 0.7)
  np.testing.assert_array_equal(both, [[0, 1, 1, 255]])


def test_iou_counts_and_jsd_against_numpy():
  rng = np.random.default_rng(0)
  pred = rng.integers(0, 3, (2, 5, 5))
  labels = rng.integers(0, 3, (2, 5, 5))
  labels[0, 0] = 255
  got = np.asarray(adele.iou_counts(jnp.asarray(pred), jnp.asarray(labels), 3))
  valid = labels != 255
  for c in range(3):
    p, t = (pred == c) & valid, (labels == c) & valid
    np.testing.assert_allclose(got[c], [(p & t).sum(), (p | t).sum()])
  probs = [rng.dirichlet([1, 1, 1], (2, 5, 5)) for _ in range(3)]
  probs[0][0, 0] = [0.98, 0.01, 0.01]
  m = np.mean(probs, axis=0)
  kl = np.mean([(p * (np.log(p) - np.log(m))).sum(-1) for p in probs], axis=0)
  mask = m.max(-1) > 0.4
  jsd, share = adele.multiscale_jsd([jnp.asarray(p, jnp.float32) for p in probs], 0.4)
  assert float(jsd) == pytest.approx(kl[mask].mean(), rel=1e-4)
  assert float(share) == pytest.approx(mask.mean())


def test_scaled_sizes_keep_the_stride():
  assert [adele.scaled_size(128, s, 16) for s in (0.7, 1.0, 1.5)] == [96, 128, 192]
  assert adele.scaled_size(16, 0.1, 16) == 16


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def tiny(data_dir, **overrides):
  config = adele_config.get_config()
  config.data.update(variant='tiny', image_size=0, data_dir=str(data_dir), num_workers=0)
  config.model.update(depth=2, base_width=4)
  config.train.update(batch_size=4, num_epochs=5, log_every=2)
  config.eval.update(batch_size=4, num_overlays=0)
  config.adele.update(**overrides)
  return config


def test_end_to_end_classes_start_and_the_bank_is_corrected(tmp_path, data_dir):
  config = tiny(data_dir, r=0.01, tau=0.5, every=1)  # start as soon as a curve can be fitted
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  assert 0.0 <= results['test']['dice'] <= 1.0
  with open(os.path.join(workdir, 'adele_classes.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  assert [r['epoch'] for r in records] == [1, 2, 3, 4]
  assert records[0]['fit'] == {} and records[2]['fit']  # fitted from epoch 3 on
  assert all(0.0 <= iou <= 1.0 for r in records for iou in r['iou'])
  started = [s for s in records[-1]['start_epoch'] if s is not None]
  assert started and all(s >= 3 for s in started)
  assert records[-1]['corrected']
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    bank = [r for r in map(json.loads, f) if r['split'] == 'adele_bank']
  assert bank and all(0.0 <= r['dice_after'] <= 1.0 for r in bank)


@pytest.mark.parametrize('key,value,match', [('r', 1.0, 'adele.r'), ('tau', 0.3, 'adele.tau'),
                                             ('every', 0, 'adele.every'),
                                             ('scales', (0.0,), 'adele.scales')])
def test_bad_options_name_the_key(data_dir, key, value, match):
  config = tiny(data_dir)
  config.adele[key] = value
  with pytest.raises(ConfigError, match=match):
    adele.ADELE(config)
