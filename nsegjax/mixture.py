"""A 1-D Gaussian mixture fitted by EM, in pure JAX (G-T correcting's G stage, METHODS.md §3.3).

DivideMix separates clean from noisy samples by fitting a two-component GMM to the per-sample
losses (`sklearn.mixture.GaussianMixture(n_components=2, max_iter=10, tol=1e-2,
reg_covar=5e-4)`); the clean component is the one with the lower mean. This is that fit as one
jittable function, with METHODS' deterministic start instead of k-means: the component means
start at the quantiles (k + ½)/K (the 25th and 75th percentiles for two), every sample is
assigned to its nearest start, and one M-step gives the first parameters. Then E- and M-steps
alternate, as scikit-learn's, until the mean log-likelihood changes by less than `tol` or
`max_iter` iterations have run; `reg_covar` is added to every variance.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class GaussianMixture1D(NamedTuple):
  """Fitted parameters, components sorted by mean (index 0 = lowest)."""
  weights: jax.Array      # [K]
  means: jax.Array        # [K]
  variances: jax.Array    # [K]
  log_likelihood: jax.Array  # mean per-sample log-likelihood at the last E-step
  iterations: jax.Array   # EM iterations run
  converged: jax.Array    # bool: stopped by `tol`


def _log_joint(x: jax.Array, weights, means, variances) -> jax.Array:
  """[N, K] log w_k + log N(x_n; μ_k, σ²_k)."""
  diff = x[:, None] - means[None, :]
  log_normal = -0.5 * (jnp.log(2 * jnp.pi * variances)[None, :] + diff * diff / variances[None, :])
  return jnp.log(weights)[None, :] + log_normal


def _m_step(x: jax.Array, resp: jax.Array, reg_covar: float):
  counts = jnp.sum(resp, axis=0) + 10 * jnp.finfo(jnp.float32).eps
  means = resp.T @ x / counts
  variances = jnp.sum(resp * jnp.square(x[:, None] - means[None, :]), axis=0) / counts
  return counts / x.shape[0], means, variances + reg_covar


def _e_step(x: jax.Array, weights, means, variances):
  log_joint = _log_joint(x, weights, means, variances)
  log_norm = jax.nn.logsumexp(log_joint, axis=1)
  return jnp.exp(log_joint - log_norm[:, None]), jnp.mean(log_norm)


def fit_gmm_1d(x: jax.Array, num_components: int = 2, max_iter: int = 10, tol: float = 1e-2,
               reg_covar: float = 5e-4) -> GaussianMixture1D:
  """EM fit of a 1-D GMM to the values `x` [N] (float), deterministic in `x`."""
  x = jnp.asarray(x, jnp.float32)
  quantiles = (jnp.arange(num_components) + 0.5) / num_components  # 25th, 75th for two
  starts = jnp.quantile(x, quantiles)
  nearest = jnp.argmin(jnp.abs(x[:, None] - starts[None, :]), axis=1)
  params = _m_step(x, jax.nn.one_hot(nearest, num_components), reg_covar)

  def keep_going(state):
    _, _, iteration, change = state
    return (iteration < max_iter) & (change >= tol)

  def one_iteration(state):
    params, log_likelihood, iteration, _ = state
    resp, new_log_likelihood = _e_step(x, *params)
    return (_m_step(x, resp, reg_covar), new_log_likelihood, iteration + 1,
            jnp.abs(new_log_likelihood - log_likelihood))

  params, log_likelihood, iterations, change = lax.while_loop(
      keep_going, one_iteration, (params, jnp.float32(-jnp.inf), jnp.int32(0), jnp.float32(jnp.inf)))
  order = jnp.argsort(params[1])
  weights, means, variances = (p[order] for p in params)
  return GaussianMixture1D(weights, means, variances, log_likelihood, iterations, change < tol)


def posteriors(gmm: GaussianMixture1D, x: jax.Array) -> jax.Array:
  """[N, K] P(component k | x_n) under the fitted mixture (components sorted by mean)."""
  resp, _ = _e_step(jnp.asarray(x, jnp.float32), gmm.weights, gmm.means, gmm.variances)
  return resp
