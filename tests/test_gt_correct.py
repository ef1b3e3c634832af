"""`gt_correct` (METHODS §3.3): each rule against NumPy on tiny inputs, and end-to-end runs."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gt_correct as gt_config
from nsegjax import train
from nsegjax.errors import ConfigError
from nsegjax.methods import gt_correct as gt


def softmax_np(logits):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def random_case(seed=0, shape=(3, 5, 4), num_classes=3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=shape + (num_classes,)).astype(np.float32)
  labels = rng.integers(0, num_classes, shape).astype(np.int32)
  labels[0, 0, :2] = 255
  return logits, labels


def test_per_image_ce_and_dice_equal_numpy():
  logits, labels = random_case()
  probs = softmax_np(logits.astype(np.float64))
  valid = labels != 255
  picked = np.take_along_axis(probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  want_ce = [(-np.log(picked[n]) * valid[n]).sum() / valid[n].sum() for n in range(3)]
  np.testing.assert_allclose(gt.per_image_ce(jnp.asarray(logits), jnp.asarray(labels)),
                             want_ce, rtol=1e-5)
  want_dice = []
  for n in range(3):
    dices = []
    for c in (1, 2):
      p, t = probs[n, ..., c] * valid[n], (labels[n] == c) * valid[n]
      dices.append((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
    want_dice.append(1 - np.mean(dices))
  np.testing.assert_allclose(gt.per_image_dice_loss(jnp.asarray(logits), jnp.asarray(labels)),
                             want_dice, rtol=1e-5)


def test_confident_correction_by_hand():
  probs = np.array([[[0.9, 0.1], [0.85, 0.15], [0.3, 0.7], [0.05, 0.95], [0.1, 0.9]]])
  labels = np.array([[1, 1, 0, 0, 255]], np.uint8)
  # pixel 0: bg at 0.9 > τ_bg 0.8 → 0; pixel 1: 0.85 < τ_bg 0.88 stays; pixel 2: 0.7 < τ_fg;
  # pixel 3: fg 0.95 > τ_fg 0.8 → 1; pixel 4: ignore stays.
  got = gt.confident_correction(probs, labels, tau_fg=0.8, tau_bg=0.88)
  np.testing.assert_array_equal(got, [[0, 1, 0, 1, 255]])
  assert got.dtype == np.uint8


def test_elr_memory_and_loss_equal_numpy():
  logits, labels = random_case(1)
  probs = softmax_np(logits.astype(np.float64))
  clipped = np.clip(probs, 1e-4, 1 - 1e-4)
  p_hat = clipped / clipped.sum(-1, keepdims=True)
  memory = np.random.default_rng(2).dirichlet(np.ones(3), size=(3, 5, 4))
  np.testing.assert_allclose(gt.elr_memory_update(jnp.asarray(memory, jnp.float32),
                                                  jnp.asarray(probs, jnp.float32), 0.7),
                             0.7 * memory + 0.3 * p_hat, rtol=1e-5)
  valid = (labels != 255).astype(np.float64)
  term = np.log(1 - (memory * p_hat).sum(-1)) * valid
  want = term.sum((1, 2)) / valid.sum((1, 2))
  got = gt.per_image_elr(jnp.asarray(logits), jnp.asarray(memory, jnp.float32),
                         jnp.asarray(valid, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # ELR's gradient pushes p towards the memory: the inner product grows after a step.
  grad = jax.grad(lambda l: jnp.sum(gt.per_image_elr(l, jnp.asarray(memory, jnp.float32),
                                                     jnp.asarray(valid, jnp.float32))))(
                                                         jnp.asarray(logits))
  inner = lambda l: (np.asarray(memory) * softmax_np(np.asarray(l))).sum(-1)  # noqa: E731
  assert (inner(logits - 1.0 * np.asarray(grad)) * valid).sum() > (inner(logits) * valid).sum()


def test_gmm_recognition_finds_the_high_loss_samples():
  rng = np.random.default_rng(0)
  losses = np.concatenate([rng.normal(0.2, 0.03, 70), rng.normal(0.8, 0.05, 30)])
  normalized = gt.min_max_normalize(losses)
  assert normalized.min() == 0.0 and normalized.max() == 1.0
  posterior, fit = gt.clean_posterior(normalized, gt_config.get_config().gt.gmm)
  np.testing.assert_array_equal(posterior > 0.5, np.arange(100) < 70)
  assert fit['means'][0] < fit['means'][1]
  np.testing.assert_array_equal(gt.min_max_normalize(np.ones(4)), np.zeros(4))
  assert gt.set_change([1, 1, 0, 0], [1, 0, 0, 1]) == 0.5


def tiny_config(data_dir, **gt_overrides):
  config = gt_config.get_config()
  config.data.update(variant='tiny', image_size=0, data_dir=str(data_dir), num_workers=0)
  config.model.update(depth=2, base_width=4)
  config.train.update(batch_size=4, num_steps=30, log_every=3)  # 6 steps an epoch, 5 epochs
  config.eval.update(batch_size=4, num_overlays=2)
  config.gt.update(**gt_overrides)
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_end_to_end_runs_the_g_then_the_t_stage(tmp_path, data_dir):
  config = tiny_config(data_dir, rounds=2, tol=0.0)  # tol 0: every allowed round runs
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  assert 0.0 <= results['test']['dice'] <= 1.0
  rounds = read_jsonl(os.path.join(workdir, 'gt_rounds.jsonl'))
  assert [r['round'] for r in rounds] == [0, 1, 2]  # the warm-up fit, then two feedback rounds
  assert [r['epoch'] for r in rounds] == [1, 2, 3]
  records = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  recognition = [r for r in records if r['split'] == 'gt']
  assert len(recognition) == 4  # one fit after every epoch but the last
  noisy = [json.loads(line)['is_noisy'] for line in open(os.path.join(workdir,
                                                                      'noise_log.jsonl'))]
  for record in recognition:
    assert record['num_noisy'] == sum(noisy)
    assert 0.0 <= record['accuracy'] <= 1.0
  # Rounds train on the clean set only: the fraction of clean samples in a batch drops below 1.
  train_records = [r for r in records if r['split'] == 'train']
  assert train_records[0]['clean_in_batch'] == 1.0 and train_records[0]['elr'] == 0.0
  # The T stage starts after the last round (epoch 3): ELR and a bank correction every epoch.
  assert all(r['elr'] == 0.0 for r in train_records if r['step'] <= 18)
  assert any(r['elr'] != 0.0 for r in train_records if r['step'] > 18)  # batches with noisy ones
  bank = [r for r in records if r['split'] == 'gt_bank']
  assert [r['step'] for r in bank] == [18, 24]
  assert all(0.0 <= r['dice_after'] <= 1.0 for r in bank)


def test_killed_between_epochs_resumes_to_the_uninterrupted_results(tmp_path, data_dir,
                                                                    monkeypatch):
  config = tiny_config(data_dir, rounds=1)
  reference = train.train_and_evaluate(config, str(tmp_path / 'reference'))
  original = gt.GTCorrect.after_epoch

  def crash_after_the_round_hook(self, state, epoch, context):
    state = original(self, state, epoch, context)  # round 1 logged, the T stage not yet saved
    if epoch == 1:
      raise RuntimeError('pre-empted')
    return state

  workdir = str(tmp_path / 'crashed')
  with monkeypatch.context() as patch:
    patch.setattr(gt.GTCorrect, 'after_epoch', crash_after_the_round_hook)
    with pytest.raises(RuntimeError, match='pre-empted'):
      train.train_and_evaluate(config, workdir)
  resumed = train.train_and_evaluate(config, workdir)
  assert resumed['test'] == reference['test']
  assert resumed['validation_history'] == reference['validation_history']
  assert read_jsonl(os.path.join(workdir, 'gt_rounds.jsonl')) == read_jsonl(
      os.path.join(tmp_path / 'reference', 'gt_rounds.jsonl'))


@pytest.mark.parametrize('key,value,match', [
    ('sample_loss', 'mse', 'gt.sample_loss'), ('feedback', 'online', 'gt.feedback'),
    ('warmup_epochs', 0, 'gt.warmup_epochs'), ('tau_fg', 1.5, 'gt.tau_fg')])
def test_bad_options_name_the_key(data_dir, key, value, match):
  config = tiny_config(data_dir)
  config.gt[key] = value
  with pytest.raises(ConfigError, match=match):
    gt.GTCorrect(config)
