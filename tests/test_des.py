"""`des` (METHODS §3.2): each rule against NumPy on tiny inputs, and end-to-end runs."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import des as des_config
from nsegjax import models, train
from nsegjax.data import pipeline
from nsegjax.errors import ConfigError
from nsegjax.methods import des


def log_softmax_np(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def softmax_np(logits):
  return np.exp(log_softmax_np(logits))


def random_case(seed=0, shape=(3, 5, 4), num_classes=3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=shape + (num_classes,)).astype(np.float32)
  noisy = rng.integers(0, num_classes, shape).astype(np.int32)
  noisy[0, 0, :2] = 255
  pseudo = rng.integers(0, num_classes, shape).astype(np.int32)
  weight = rng.random(shape).astype(np.float32)
  return logits, noisy, pseudo, weight


def test_ramp_entropy_and_threshold_by_hand():
  for t in (0.0, 0.3, 1.0, 1.7):
    expected = np.exp(-5 * (1 - min(t, 1.0)) ** 2)
    assert float(des.sigmoid_rampup(jnp.float32(t))) == pytest.approx(expected, rel=1e-6)
  probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], np.float32)
  expected = [np.log(2), 0.0, -(0.2 * np.log(0.2) + 0.3 * np.log(0.3) + 0.5 * np.log(0.5))]
  np.testing.assert_allclose(des.entropy(jnp.asarray(probs)), expected, rtol=1e-6, atol=1e-7)
  assert float(des.uncertainty_threshold(jnp.float32(0.0), 4)) == pytest.approx(0.75 * np.log(4))
  assert float(des.uncertainty_threshold(jnp.float32(1.0), 4)) == pytest.approx(np.log(4))


def test_pseudo_label_weight_rules_by_hand():
  mean_probs = np.array([[[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]]], np.float32)
  noisy = np.array([[1, 1, 1, 0]])
  u = np.asarray(des.entropy(jnp.asarray(mean_probs)))
  tau = 0.68  # u ≈ 0.325, 0.673, 0.500, 0.688: only the last pixel is above τ
  # argmax: 0, 0, 1, 1; disagree with ỹ at pixels 0, 1, 3; confident (u < τ) at 0, 1, 2.
  got = des.pseudo_label_weight(jnp.asarray(mean_probs), jnp.asarray(noisy), jnp.asarray(u),
                                tau, 'confident_disagree')
  np.testing.assert_array_equal(got, [[1, 1, 0, 0]])
  got = des.pseudo_label_weight(jnp.asarray(mean_probs), jnp.asarray(noisy), jnp.asarray(u),
                                tau, 'uncertain')
  np.testing.assert_array_equal(got, [[0, 0, 0, 1]])
  got = des.pseudo_label_weight(jnp.asarray(mean_probs), jnp.asarray(noisy), jnp.asarray(u),
                                tau, 'soft')
  np.testing.assert_allclose(got, u / np.log(2), rtol=1e-6)
  with pytest.raises(ConfigError, match='mask_rule'):
    des.pseudo_label_weight(jnp.asarray(mean_probs), jnp.asarray(noisy), jnp.asarray(u), tau,
                            'coin')


def test_per_image_mixed_ce_equals_numpy():
  logits, noisy, pseudo, weight = random_case()
  logp = log_softmax_np(logits.astype(np.float64))
  expected = []
  for n in range(logits.shape[0]):
    total, count = 0.0, 0
    for i in range(logits.shape[1]):
      for j in range(logits.shape[2]):
        if noisy[n, i, j] == 255:
          continue
        m = weight[n, i, j]
        total += -(1 - m) * logp[n, i, j, noisy[n, i, j]] - m * logp[n, i, j, pseudo[n, i, j]]
        count += 1
    expected.append(total / count)
  got = des.per_image_mixed_ce(jnp.asarray(logits), jnp.asarray(noisy), jnp.asarray(pseudo),
                               jnp.asarray(weight))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_per_image_soft_dice_of_the_mixed_target_equals_numpy():
  logits, noisy, pseudo, weight = random_case(1)
  num_classes = logits.shape[-1]
  target = np.asarray(des.mixed_target(jnp.asarray(noisy), jnp.asarray(pseudo),
                                       jnp.asarray(weight), num_classes))
  valid = noisy != 255
  eye = np.eye(num_classes)
  expected_target = ((1 - weight)[..., None] * eye[np.where(valid, noisy, 0)] +
                     weight[..., None] * eye[pseudo]) * valid[..., None]
  np.testing.assert_allclose(target, expected_target, rtol=1e-6)
  probs = softmax_np(logits.astype(np.float64)) * valid[..., None]
  expected = []
  for n in range(logits.shape[0]):
    dices = [(2 * (probs[n, ..., c] * target[n, ..., c]).sum() + 1) /
             (probs[n, ..., c].sum() + target[n, ..., c].sum() + 1) for c in range(1, num_classes)]
    expected.append(1 - np.mean(dices))
  got = des.per_image_soft_dice_loss(jnp.asarray(logits), jnp.asarray(target),
                                     jnp.asarray(valid, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_image_weights_by_hand():
  scores = np.array([0.3, -1.2, 2.0], np.float32)
  expected = np.exp(2 * np.tanh(scores)) / np.exp(2 * np.tanh(scores)).sum()
  np.testing.assert_allclose(des.qam_weights(jnp.asarray(scores)), expected, rtol=1e-6)
  mean_losses = np.array([0.2, 0.5, 1.1, 0.4], np.float32)
  z = np.exp(-mean_losses / mean_losses.std())
  np.testing.assert_allclose(des.loss_stats_weights(jnp.asarray(mean_losses)), z / z.sum(),
                             rtol=1e-5)


def test_loss_history_keeps_five_epochs_per_image():
  history = jnp.full((4, des.LOSS_HISTORY_EPOCHS), jnp.nan)
  index = jnp.array([2, 0])
  history, mean = des.update_loss_history(history, index, jnp.float32(0.5), jnp.array([1.0, 3.0]))
  np.testing.assert_allclose(mean, [1.0, 3.0])
  history, mean = des.update_loss_history(history, index, jnp.float32(1.2), jnp.array([2.0, 5.0]))
  np.testing.assert_allclose(mean, [1.5, 4.0])
  # Epoch 5 overwrites epoch 0's slot.
  history, mean = des.update_loss_history(history, index, jnp.float32(5.0), jnp.array([6.0, 1.0]))
  np.testing.assert_allclose(mean, [4.0, 3.0])
  assert np.isnan(np.asarray(history)[[1, 3]]).all()


def test_consistency_value_and_gradient_flow_only_through_the_student():
  rng = np.random.default_rng(2)
  probs = softmax_np(rng.normal(size=(2, 3, 3, 4)))
  target = softmax_np(rng.normal(size=(2, 3, 3, 4)))
  valid = np.ones((2, 3, 3), np.float32)
  valid[0, 0, 0] = 0
  expected = (((probs - target) ** 2).sum(-1) * valid).sum() / valid.sum()
  got = des.consistency_loss(jnp.asarray(probs), jnp.asarray(target), jnp.asarray(valid))
  assert float(got) == pytest.approx(expected, rel=1e-5)
  grad_p, grad_t = jax.grad(des.consistency_loss, (0, 1))(
      jnp.asarray(probs), jnp.asarray(target), jnp.asarray(valid))
  np.testing.assert_allclose(grad_p, 2 * (probs - target) * valid[..., None] / valid.sum(),
                             rtol=1e-5, atol=1e-7)
  assert not np.asarray(grad_t).any()


def test_mc_passes_are_vmapped_dropout_passes_in_eval_mode():
  model = models.UNet(num_classes=3, depth=1, base_width=4, dropout=0.5)
  images = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 1)), jnp.float32)
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, images)
  key = jax.random.key(7)
  got = des.mc_mean_probs(model, variables, images, key, 4, 0.1, 0.2)
  looped = []
  for k in jax.random.split(key, 4):
    k_noise, k_drop = jax.random.split(k)
    noise = jnp.clip(0.1 * jax.random.normal(k_noise, images.shape), -0.2, 0.2)
    looped.append(jax.nn.softmax(model.apply(variables, images + noise, train=False,
                                             dropout_on=True, rngs={'dropout': k_drop})))
  np.testing.assert_allclose(got, np.mean(looped, axis=0), rtol=1e-5, atol=1e-6)
  # No dropout and no input noise: every pass is the eval-mode prediction.
  plain = des.mc_mean_probs(model, variables, images, key, 3, 0.0, 0.0)
  np.testing.assert_allclose(
      des.mc_mean_probs(models.UNet(num_classes=3, depth=1, base_width=4, dropout=0.0),
                        variables, images, key, 3, 0.0, 0.0),
      jax.nn.softmax(model.apply(variables, images, train=False)), rtol=1e-5, atol=1e-6)
  assert not np.allclose(plain, jax.nn.softmax(model.apply(variables, images, train=False)))


def test_ema_update_by_hand():
  teacher = {'w': jnp.array([1.0, 2.0])}
  student = {'w': jnp.array([3.0, -2.0])}
  np.testing.assert_allclose(des.ema_update(teacher, student, 0.9)['w'], [1.2, 1.6], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The method in the loop
# ---------------------------------------------------------------------------------------------


def tiny_config(data_dir, **des_overrides):
  config = des_config.get_config()
  config.data.update(variant='tiny', image_size=0, data_dir=str(data_dir), num_workers=0)
  config.model.update(depth=2, base_width=4)
  config.train.update(batch_size=4, num_steps=12, log_every=2)
  config.eval.update(batch_size=4, num_overlays=2)
  config.des.update(mc_passes=2, warmup_frac=0.25, qam_width=2, **des_overrides)
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def train_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == 'train']


@pytest.mark.parametrize('image_weight,mask_rule', [('qam', 'confident_disagree'),
                                                    ('loss_stats', 'soft')])
def test_end_to_end_run(tmp_path, data_dir, image_weight, mask_rule):
  config = tiny_config(data_dir, image_weight=image_weight, mask_rule=mask_rule)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 0.0 <= results['test']['dice'] <= 1.0
  records = train_records(str(tmp_path / 'run'))
  assert all(np.isfinite(r['loss']) for r in records)
  warm = [r['warm_up'] for r in records]  # steps 2, 4, ...: only step 2 is in the first 25%
  assert warm[0] == 1.0 and not any(warm[1:])
  assert records[0]['pseudo_fraction'] == 0.0
  assert all(0.0 < r['max_image_weight'] <= 1.0 for r in records)


def test_killed_between_epochs_resumes_to_the_uninterrupted_results(tmp_path, data_dir,
                                                                    monkeypatch):
  config = tiny_config(data_dir, image_weight='loss_stats')
  reference = train.train_and_evaluate(config, str(tmp_path / 'reference'))

  def crash(self, state, epoch, context):
    raise RuntimeError('pre-empted')

  workdir = str(tmp_path / 'crashed')
  with monkeypatch.context() as patch:
    patch.setattr(des.DES, 'after_epoch', crash)
    with pytest.raises(RuntimeError, match='pre-empted'):
      train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  resumed = train.train_and_evaluate(config, workdir)
  assert resumed['test'] == reference['test']
  assert resumed['validation_history'] == reference['validation_history']
  want = {r['step']: r['loss'] for r in train_records(str(tmp_path / 'reference'))}
  assert all(r['loss'] == want[r['step']] for r in train_records(workdir))


def test_predict_uses_the_student_or_the_teacher(data_dir):
  config = tiny_config(data_dir)
  method = des.DES(config)
  model = models.create_model(config.model, 2)
  images = pipeline.normalize_images(
      np.random.default_rng(0).integers(0, 255, (2, 16, 16, 1)).astype(np.uint8))
  variables = method.init_variables(jax.random.key(0), model, images)
  state = method.init_state(jax.random.key(1), variables, {'image': images})
  student = method.predict(model, variables, state, images)
  np.testing.assert_allclose(np.asarray(student).sum(-1), 1.0, atol=1e-5)
  teacher_state = {'teacher': {'params': jax.tree.map(lambda x: x * 0.5,
                                                      variables['params']['net']),
                               'batch_stats': variables['batch_stats']}}
  config.des.eval_model = 'teacher'
  teacher = des.DES(config).predict(model, variables, teacher_state, images)
  assert not np.allclose(student, teacher)


@pytest.mark.parametrize('key,value,match', [
    ('mask_rule', 'coin', 'des.mask_rule'), ('image_weight', 'vgg', 'des.image_weight'),
    ('mc_passes', 0, 'des.mc_passes'), ('ema', 1.5, 'des.ema')])
def test_bad_options_name_the_key(data_dir, key, value, match):
  config = tiny_config(data_dir)
  config.des[key] = value
  with pytest.raises(ConfigError, match=match):
    des.DES(config)
