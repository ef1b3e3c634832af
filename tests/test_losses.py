"""Losses against NumPy references and finite-difference gradients."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsegjax import losses


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_ce(logits, labels, class_weights=None):
  p = np_softmax(logits.astype(np.float64))
  total, norm = 0.0, 0.0
  for idx in np.ndindex(labels.shape):
    y = labels[idx]
    if y == 255:
      continue
    w = 1.0 if class_weights is None else class_weights[y]
    total += -w * np.log(p[idx][y])
    norm += w
  return total / norm


def np_dice_loss(logits, labels, smooth=1.0):
  p = np_softmax(logits.astype(np.float64))
  c = logits.shape[-1]
  valid = labels != 255
  dices = []
  for k in range(1, c):
    pk = p[..., k][valid]
    gk = (labels[valid] == k).astype(np.float64)
    dices.append((2 * (pk * gk).sum() + smooth) / (pk.sum() + gk.sum() + smooth))
  return 1 - np.mean(dices)


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 5, 6)).astype(np.int32)
  labels[0, 0, :3] = 255
  return logits, labels


def test_cross_entropy_matches_numpy(data):
  logits, labels = data
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), np_ce(logits, labels),
                             rtol=1e-5)


def test_weighted_cross_entropy_matches_numpy(data):
  logits, labels = data
  w = np.array([1.0, 2.5, 2.5], np.float32)
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, jnp.asarray(w)),
                             np_ce(logits, labels, w), rtol=1e-5)


def test_foreground_weights_are_background_over_foreground(data):
  _, labels = data
  valid = labels != 255
  expected = (labels[valid] == 0).sum() / (labels[valid] > 0).sum()
  w = losses.foreground_class_weights(labels, 3)
  np.testing.assert_allclose(w, [1.0, expected, expected], rtol=1e-6)


def test_soft_dice_matches_numpy(data):
  logits, labels = data
  np.testing.assert_allclose(losses.soft_dice_loss(logits, labels), np_dice_loss(logits, labels),
                             rtol=1e-5)


def test_perfect_prediction_has_near_zero_loss():
  labels = np.array([[[0, 1], [1, 0]]], np.int32)
  logits = 50.0 * jax.nn.one_hot(labels, 2)
  assert float(losses.cross_entropy(logits, labels)) < 1e-6
  assert float(losses.soft_dice_loss(logits, labels)) < 1e-6


def test_ignore_pixels_do_not_change_loss_or_gradient(data):
  logits, labels = data
  changed = logits.copy()
  changed[0, 0, :3] += 100.0  # the ignored pixels
  for fn in (losses.cross_entropy, losses.soft_dice_loss):
    np.testing.assert_allclose(fn(changed, labels), fn(logits, labels), rtol=1e-6)
    grad = jax.grad(lambda z: fn(z, labels))(logits)
    np.testing.assert_array_equal(np.asarray(grad)[0, 0, :3], 0.0)


def test_ce_dice_gradient_matches_finite_differences(data):
  logits, labels = data
  f = lambda z: losses.ce_dice_loss(z, labels, dice_weight=1.0)
  grad = np.asarray(jax.grad(f)(logits), np.float64)
  rng = np.random.default_rng(1)
  for _ in range(5):
    idx = tuple(rng.integers(s) for s in logits.shape)
    if labels[idx[:-1]] == 255:
      continue
    eps = 1e-3
    plus, minus = logits.copy(), logits.copy()
    plus[idx] += eps
    minus[idx] -= eps
    fd = (float(f(plus)) - float(f(minus))) / (2 * eps)
    np.testing.assert_allclose(grad[idx], fd, rtol=2e-2, atol=1e-4)


def test_pixel_cross_entropy_shape(data):
  logits, labels = data
  chex.assert_shape(losses.pixel_cross_entropy(logits, labels), labels.shape)
