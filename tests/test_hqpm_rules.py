"""HQPM's rules (METHODS §3.4) against NumPy and hand computations on tiny inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsegjax.methods import hqpm_rules as rules


def sigmoid_np(z):
  return 1 / (1 + np.exp(-z))


def test_nin_targets_by_hand():
  noisy = np.array([1, 1, 0, 0])
  clean = np.array([1, 0, 1, 0])
  fp, fn, ref = rules.nin_targets(jnp.asarray(noisy), jnp.asarray(clean))
  np.testing.assert_array_equal(fp, [0, 1, 0, 0])
  np.testing.assert_array_equal(fn, [0, 0, 1, 0])
  np.testing.assert_array_equal(ref, clean)


def test_weighted_bce_and_dice_equal_numpy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2, 6, 6)).astype(np.float32)
  t = (rng.random((2, 6, 6)) > 0.85).astype(np.float32)
  w = min((t.size - t.sum()) / t.sum(), 1e3)
  assert float(rules.sparse_pos_weight(jnp.asarray(t))) == pytest.approx(w, rel=1e-6)
  assert float(rules.sparse_pos_weight(jnp.zeros((4, 4)))) == 1e3  # no positive: the cap
  p = sigmoid_np(z.astype(np.float64))
  want = -np.mean(w * t * np.log(p) + (1 - t) * np.log(1 - p))
  assert float(rules.weighted_bce_with_logits(jnp.asarray(z), jnp.asarray(t), w)) == \
      pytest.approx(want, rel=1e-5)
  want_dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
  assert float(rules.binary_soft_dice_loss(jnp.asarray(p, jnp.float32), jnp.asarray(t))) == \
      pytest.approx(want_dice, rel=1e-5)
  total = rules.nin_loss((jnp.asarray(z),) * 3, (jnp.asarray(t),) * 3)
  assert float(total) == pytest.approx(3 * (want + want_dice), rel=1e-5)


def test_revision_by_hand_and_identity():
  noisy = np.array([1, 1, 0, 0, 1])
  p_fp = np.array([0.9, 0.1, 0.0, 0.0, 0.9])
  p_fn = np.array([0.0, 0.0, 0.8, 0.2, 0.0])
  p_ref = np.array([0.2, 0.9, 0.7, 0.1, 0.95])
  # r = [0, 1, 1, 0, 0]; (r + p_ref)/2 = [.1, .95, .85, .05, .475] → [0, 1, 1, 0, 0]
  revised, reliability = rules.revise(*map(jnp.asarray, (noisy, p_fp, p_fn, p_ref)))
  np.testing.assert_array_equal(revised, [0, 1, 1, 0, 0])
  np.testing.assert_allclose(reliability, 2 * np.abs(p_ref - 0.5), rtol=1e-6)
  rng = np.random.default_rng(1)
  noisy = (rng.random((3, 8, 8)) > 0.5).astype(np.uint8)
  zeros = np.zeros(noisy.shape, np.float32)
  revised, _ = rules.revise(jnp.asarray(noisy), zeros, zeros, noisy.astype(np.float32))
  np.testing.assert_array_equal(revised, noisy)


def test_branch_thresholds_apart_and_never_flipping_at_one():
  noisy = np.array([1, 1, 0, 0, 1])
  p_fp = np.array([0.9, 0.6, 0.0, 0.0, 0.9])
  p_fn = np.array([0.0, 0.0, 0.8, 0.6, 0.0])
  p_ref = np.full(5, 0.5)
  args = tuple(map(jnp.asarray, (noisy, p_fp, p_fn, p_ref)))
  # t_fp = .7 removes pixels 0 and 4 only; t_fn = .5 adds pixels 2 and 3
  revised, _ = rules.revise(*args, 0.5, 0.7, 0.5)
  np.testing.assert_array_equal(revised, [0, 1, 1, 1, 0])
  revised, _ = rules.revise(*args, 0.5, 1.0, 1.0)
  np.testing.assert_array_equal(revised, noisy)


def test_threshold_selection_against_brute_force_numpy():
  rng = np.random.default_rng(3)
  clean = (rng.random((4, 16, 16)) > 0.6).astype(np.float32)
  noisy = np.where(rng.random(clean.shape) < 0.2, 1 - clean, clean)
  # over-confident branches: wrong pixels score high, but many right pixels score ~.6 too
  p_fp = np.where(noisy * (1 - clean) > 0, 0.97, rng.uniform(0.0, 0.8, clean.shape))
  p_fn = np.where((1 - noisy) * clean > 0, 0.85, rng.uniform(0.0, 0.7, clean.shape))
  p_ref = rng.uniform(0.05, 0.95, clean.shape)
  grid = (0.5, 0.9, 0.7, 1.0)
  (t_fp, t_fn), table, order = rules.select_branch_thresholds(
      *map(jnp.asarray, (noisy, p_fp, p_fn, p_ref, clean)), grid)
  assert order == [1.0, 0.9, 0.7, 0.5]

  def numpy_dice(a, b):
    return 2 * np.sum(a * b) / (np.sum(a) + np.sum(b))

  def numpy_revise(a, b):
    r = noisy * (p_fp <= a) + (1 - noisy) * (p_fn > b)
    return ((r + p_ref) / 2 > 0.5).astype(np.float32)

  want = np.array([[numpy_dice(numpy_revise(a, b), clean) for b in order] for a in order])
  np.testing.assert_allclose(table, want, rtol=1e-5)
  assert table[0, 0] == pytest.approx(numpy_dice(noisy, clean), rel=1e-6)  # (1, 1): ỹ itself
  i, j = np.unravel_index(np.argmax(want), want.shape)
  assert (t_fp, t_fn) == (order[i], order[j]) == (0.9, 0.7)


def test_softening_rules_by_hand():
  revised = np.array([1, 1, 0, 0])
  others = np.array([0.9, 0.2, 0.1, 0.6])
  reliability = np.array([0.8, 0.9, 0.3, 0.9])
  # disagree at 1 and 3, unreliable at 2 → |ŷ − .25| there
  got = rules.slsr_soften(*map(jnp.asarray, (revised, others, reliability)), eps=0.25)
  np.testing.assert_allclose(got, [1.0, 0.75, 0.25, 0.25])
  got = rules.ensemble_soften(jnp.asarray(revised), jnp.asarray(others), lam=0.3)
  np.testing.assert_allclose(got, 0.7 * revised + 0.3 * others, rtol=1e-6)
  grad = jax.grad(lambda o: jnp.sum(rules.ensemble_soften(jnp.asarray(revised), o)))(
      jnp.asarray(others, jnp.float32))
  np.testing.assert_array_equal(grad, 0.0)  # the other networks' mean carries no gradient


def test_others_mean_leaves_each_network_out():
  probs = np.random.default_rng(2).random((3, 4, 4)).astype(np.float32)
  got = rules.others_mean(jnp.asarray(probs))
  for k in range(3):
    np.testing.assert_allclose(got[k], np.delete(probs, k, axis=0).mean(0), rtol=1e-6)


def test_nin_shares_the_encoder_and_keeps_the_decoders_apart():
  from nsegjax.models.nin import NoiseIdentificationNet  # pylint: disable=g-import-not-at-top
  net = NoiseIdentificationNet(depth=2, base_width=4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
  variables = net.init(jax.random.key(0), x)
  out = net.apply(variables, x)
  assert set(out) == {'fp', 'fn', 'ref'} and all(v.shape == (2, 16, 16) for v in out.values())
  assert not np.allclose(out['fp'], out['fn'])  # separately initialised decoders

  def fp_only(params):
    return jnp.sum(net.apply({'params': params, 'batch_stats': variables['batch_stats']},
                             x)['fp'])

  grads = jax.grad(fp_only)(variables['params'])
  norm = lambda tree: float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(tree)))  # noqa
  assert norm(grads['encoder_0']) > 0 and norm(grads['decoder_fp']) > 0
  assert norm(grads['decoder_fn']) == 0 and norm(grads['decoder_ref']) == 0
