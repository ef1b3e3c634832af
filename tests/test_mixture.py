"""nsegjax.mixture: the 1-D GMM EM against a NumPy float64 loop and on data of known mixture."""
import jax
import numpy as np
import pytest

from nsegjax import mixture


def numpy_em(x, max_iter=10, tol=1e-2, reg_covar=5e-4):
  """The same algorithm, written out in float64 (scikit-learn's loop, quantile start)."""
  x = np.asarray(x, np.float64)
  starts = np.quantile(x, [0.25, 0.75])
  resp = np.eye(2)[np.argmin(np.abs(x[:, None] - starts[None]), axis=1)]

  def m_step(resp):
    counts = resp.sum(0) + 10 * np.finfo(np.float32).eps
    means = resp.T @ x / counts
    variances = (resp * (x[:, None] - means) ** 2).sum(0) / counts + reg_covar
    return counts / len(x), means, variances

  weights, means, variances = m_step(resp)
  previous, iterations = -np.inf, 0
  for iterations in range(1, max_iter + 1):
    log_joint = (np.log(weights) - 0.5 * np.log(2 * np.pi * variances) -
                 0.5 * (x[:, None] - means) ** 2 / variances)
    norm = np.logaddexp(log_joint[:, 0], log_joint[:, 1])
    resp = np.exp(log_joint - norm[:, None])
    weights, means, variances = m_step(resp)
    log_likelihood = norm.mean()
    if abs(log_likelihood - previous) < tol:
      break
    previous = log_likelihood
  order = np.argsort(means)
  return weights[order], means[order], variances[order], iterations


@pytest.mark.parametrize('seed', [0, 1])
def test_em_equals_numpy_loop(seed):
  rng = np.random.default_rng(seed)
  x = np.concatenate([rng.normal(0.2, 0.05, 300), rng.normal(0.6, 0.15, 120)]).astype(np.float32)
  gmm = jax.jit(mixture.fit_gmm_1d)(x)
  weights, means, variances, iterations = numpy_em(x)
  np.testing.assert_allclose(gmm.weights, weights, rtol=1e-4)
  np.testing.assert_allclose(gmm.means, means, rtol=1e-4)
  np.testing.assert_allclose(gmm.variances, variances, rtol=1e-3)
  assert int(gmm.iterations) == iterations


def test_recovers_a_well_separated_mixture_and_its_posteriors():
  rng = np.random.default_rng(3)
  clean = rng.normal(0.1, 0.03, 700)
  noisy = rng.normal(0.7, 0.1, 300)
  x = np.concatenate([clean, noisy]).astype(np.float32)
  gmm = mixture.fit_gmm_1d(x, max_iter=100, tol=1e-6)
  assert bool(gmm.converged)
  np.testing.assert_allclose(gmm.weights, [0.7, 0.3], atol=0.02)
  np.testing.assert_allclose(gmm.means, [0.1, 0.7], atol=0.02)
  # reg_covar = 5e-4 is added to each variance, as scikit-learn's.
  np.testing.assert_allclose(gmm.variances, np.square([0.03, 0.1]) + 5e-4, rtol=0.15)
  post = np.asarray(mixture.posteriors(gmm, x))
  np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-5)
  clean_set = post[:, 0] > 0.5
  assert clean_set[:700].mean() > 0.99 and clean_set[700:].mean() < 0.01


def test_max_iter_bounds_the_loop():
  x = np.random.default_rng(4).random(200).astype(np.float32)
  gmm = mixture.fit_gmm_1d(x, max_iter=3, tol=0.0)
  assert int(gmm.iterations) == 3 and not bool(gmm.converged)
