"""GCE, SCE and SparseReg (METHODS §4) against NumPy: values and closed-form gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsegjax.losses import robust


def softmax_np(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def case(seed=0, shape=(2, 3, 4), num_classes=3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=shape + (num_classes,)).astype(np.float32) * 2
  labels = rng.integers(0, num_classes, shape).astype(np.int32)
  labels[0, 0, :2] = 255
  return logits, labels


def label_prob_np(p, labels):
  valid = labels != 255
  p_y = np.take_along_axis(p, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  return p_y, valid


def onehot_np(labels, c):
  return np.eye(c)[np.where(labels == 255, 0, labels)]


@pytest.mark.parametrize('q,truncate', [(0.7, 0.0), (0.7, 0.5), (1.0, 0.0)])
def test_gce_value_and_gradient(q, truncate):
  logits, labels = case()
  p = softmax_np(logits.astype(np.float64))
  p_y, valid = label_prob_np(p, labels)
  per_pixel = (1 - p_y ** q) / q
  if truncate:
    per_pixel = np.where(p_y <= truncate, (1 - truncate ** q) / q, per_pixel)
  want = per_pixel[valid].mean()
  fn = lambda z: robust.generalized_cross_entropy(z, jnp.asarray(labels), q, truncate)
  assert float(fn(jnp.asarray(logits))) == pytest.approx(want, rel=1e-5)
  # d/dz (1 − p_y^q)/q = −p_y^q (onehot − p), zero where truncated, over the valid count
  grad = -(p_y ** q)[..., None] * (onehot_np(labels, 3) - p) / valid.sum()
  grad *= valid[..., None]
  if truncate:
    grad *= (p_y > truncate)[..., None]
  np.testing.assert_allclose(jax.grad(fn)(jnp.asarray(logits)), grad, atol=1e-6)


def test_gce_with_q_one_is_one_minus_p_and_tends_to_ce_as_q_shrinks():
  logits, labels = case(1)
  p_y, valid = label_prob_np(softmax_np(logits.astype(np.float64)), labels)
  ce = -np.log(p_y[valid]).mean()
  small_q = robust.generalized_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 1e-3)
  assert float(small_q) == pytest.approx(ce, rel=2e-3)


def test_sce_value_and_gradient():
  logits, labels = case(2)
  p = softmax_np(logits.astype(np.float64))
  p_y, valid = label_prob_np(p, labels)
  n = valid.sum()
  # RCE with log 0 := −4: −Σ_c p_c log q_c = 4(1 − p_y)
  log_q = np.where(onehot_np(labels, 3) > 0, 0.0, -4.0)
  rce = -(p * log_q).sum(-1)
  want = 0.1 * (-np.log(p_y))[valid].mean() + 1.0 * rce[valid].mean()
  fn = lambda z: robust.symmetric_cross_entropy(z, jnp.asarray(labels), 0.1, 1.0, -4.0)
  assert float(fn(jnp.asarray(logits))) == pytest.approx(want, rel=1e-5)
  delta = onehot_np(labels, 3)
  grad = (0.1 * (p - delta) - 4.0 * p_y[..., None] * (delta - p)) * valid[..., None] / n
  np.testing.assert_allclose(jax.grad(fn)(jnp.asarray(logits)), grad, atol=1e-6)


def test_sparse_regularized_ce_value():
  logits, labels = case(3)
  z = logits.astype(np.float64)
  z_tilde = z / np.linalg.norm(z, axis=-1, keepdims=True) / 0.5
  p = softmax_np(z_tilde)
  p_y, valid = label_prob_np(p, labels)
  want = (-np.log(p_y))[valid].mean() + 1.0 * (p ** 0.01).sum(-1)[valid].mean()
  got = robust.sparse_regularized_ce(jnp.asarray(logits), jnp.asarray(labels), 0.5, 1.0, 0.01)
  assert float(got) == pytest.approx(want, rel=1e-5)
  grad = jax.grad(lambda z: robust.sparse_regularized_ce(z, jnp.asarray(labels)))(
      jnp.asarray(logits))
  assert np.all(np.isfinite(grad))
  assert np.all(np.asarray(grad)[~valid] == 0)


def test_sparsity_term_prefers_one_hot_predictions():
  labels = jnp.zeros((1, 1, 2), jnp.int32)
  sharp = jnp.array([[[[9.0, -9.0], [9.0, -9.0]]]])
  flat = jnp.array([[[[1.0, 0.9], [1.0, 0.9]]]])  # z̃ has norm 1/τ: only the direction counts
  reg = lambda z: robust.sparse_regularized_ce(z, labels, tau=0.5, lam=1.0) - \
      robust.sparse_regularized_ce(z, labels, tau=0.5, lam=0.0)
  assert float(reg(sharp)) < float(reg(flat))
