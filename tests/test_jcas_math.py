"""JCAS maths against NumPy references (float64), finite differences and check values."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nsegjax import jcas
from nsegjax.jcas import calc

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------------------
# NumPy references: written from the PyTorch reference code, in float64 loops where cheap.
# ----------------------------------------------------------------------------------------
def np_source_coord(dst, in_size, out_size):
  """PyTorch's align_corners source coordinate, computed in float32 as its kernels do."""
  if out_size == 1:
    return 0.0
  scale = np.float32(in_size - 1) / np.float32(out_size - 1)
  return float(np.float32(scale) * np.float32(dst))


def np_bilinear(x, size):
  """F.interpolate(bilinear, align_corners=True) on NHWC, one output pixel at a time."""
  b, h, w, c = x.shape
  ho, wo = size
  out = np.zeros((b, ho, wo, c))
  for o in range(ho):
    sh = np_source_coord(o, h, ho)
    h0 = min(int(np.floor(sh)), h - 1)
    h1 = min(h0 + 1, h - 1)
    lh = sh - h0
    for p in range(wo):
      sw = np_source_coord(p, w, wo)
      w0 = min(int(np.floor(sw)), w - 1)
      w1 = min(w0 + 1, w - 1)
      lw = sw - w0
      out[:, o, p] = ((1 - lh) * ((1 - lw) * x[:, h0, w0] + lw * x[:, h0, w1])
                      + lh * ((1 - lw) * x[:, h1, w0] + lw * x[:, h1, w1]))
  return out


def np_nearest(x, size):
  ho, wo = size
  h, w = x.shape[1:3]
  out = np.zeros((x.shape[0], ho, wo) + x.shape[3:], x.dtype)
  for o in range(ho):
    for p in range(wo):
      out[:, o, p] = x[:, min(o * h // ho, h - 1), min(p * w // wo, w - 1)]
  return out


def np_unit(f):
  r = np.maximum(f, 0.0)
  return r / (np.sqrt((r * r).sum(-1, keepdims=True)) + 1e-9)


def np_affinity(f):
  x = np_unit(f)
  return np.clip(x @ x.transpose(0, 2, 1), 1e-10, 1.0)


def np_l1_normalize(m):
  return m / np.maximum(np.abs(m).sum(-1, keepdims=True), 1e-12)


def np_dar(f, q):
  a = np_affinity(f)
  return ((q + np_l1_normalize(a) @ q) + (q - np_l1_normalize(1.0 - a) @ q)) / 2.0


def np_transition(w):
  k = w.shape[0]
  t = np.eye(k) + (1.0 / (1.0 + np.exp(-w))) * (1.0 - np.eye(k))
  return t / t.sum(1, keepdims=True)


def np_bce(p, y):
  with np.errstate(divide='ignore'):
    return np.mean(-(y * np.maximum(np.log(p), -100.0)
                     + (1 - y) * np.maximum(np.log(1.0 - p), -100.0)))


def np_affinity_bce(f, classes, t_aff=None):
  a = np_affinity(f)
  p = a if t_aff is None else (1.0 - a) * t_aff[0, 1] + a * t_aff[1, 1]
  y = (classes[:, :, None] == classes[:, None, :]).astype(np.float64)
  return np_bce(p, y)


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_nll(logits, labels, t=None):
  """CrossEntropy2d(is_softmax=False) of softmax(logits)·T over pixels with 0 ≤ ỹ < C."""
  probs = np_softmax(logits.astype(np.float64))
  if t is not None:
    probs = probs @ t
  valid = (labels >= 0) & (labels < logits.shape[-1])
  picked = np.take_along_axis(probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  return -np.sum(np.log(np.clip(picked, 1e-10, 1.0))[valid]) / max(valid.sum(), 1)


def np_class2affinity(t, prior):
  """The reference code's four nested loops."""
  v00 = v01 = v10 = v11 = 0.0
  k = t.shape[0]
  for i in range(k):
    for j in range(k):
      for m in range(k):
        for n in range(k):
          v = t[i, j] * t[m, n] * prior[i] * prior[m]
          if i == m and j == n:
            v11 += v
          if i == m and j != n:
            v10 += v
          if i != m and j == n:
            v01 += v
          if i != m and j != n:
            v00 += v
  return np.array([[v11 / (v11 + v10), v10 / (v11 + v10)],
                   [v01 / (v01 + v00), v00 / (v01 + v00)]])


def np_c2a_methods(t, prior):
  """METHODS.md's closed form with s₂ = Σπ²."""
  s2 = np.sum(prior**2)
  v_ss = np.sum(prior**2 * np.sum(t**2, 1))
  v_ds = np.sum((prior @ t)**2) - v_ss
  return np.array([[v_ss / s2, 1 - v_ss / s2], [v_ds / (1 - s2), 1 - v_ds / (1 - s2)]])


def np_fd_grad(fn, x, eps=1e-6, coords=None):
  """Central differences of a float64 scalar function at the given (or all) coordinates."""
  x = np.array(x, np.float64)
  coords = list(np.ndindex(x.shape)) if coords is None else coords
  grad = np.zeros_like(x)
  for idx in coords:
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    grad[idx] = (fn(xp) - fn(xm)) / (2 * eps)
  return grad


def random_coords(shape, count):
  flat = RNG.choice(int(np.prod(shape)), size=count, replace=False)
  return [tuple(int(i) for i in np.unravel_index(j, shape)) for j in flat]


def grad_close(actual, expected, rtol=2e-3, atol_scale=2e-3, coords=None):
  actual = np.asarray(actual, np.float64)
  if coords is not None:
    idx = tuple(np.array(coords).T)
    actual, expected = actual[idx], expected[idx]
  atol = atol_scale * max(np.abs(expected).max(), 1e-6)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tokens():
  """B=2, N=50 (not a multiple of the block sizes), D=8, C=3, 5 label classes (4 = ignore)."""
  rng = np.random.default_rng(1)
  f = rng.normal(size=(2, 50, 8))
  f[0, 3] = -np.abs(f[0, 3])          # a dead pixel: ReLU(f) = 0
  f[1, 7] = f[1, 8]                   # two identical embeddings: A = 1 off the diagonal
  q = rng.normal(size=(2, 50, 3))
  classes = rng.integers(0, 5, size=(2, 50)).astype(np.int32)
  return f, q, classes


# ----------------------------------------------------------------------------------------
# resize.py
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize('in_hw,out_hw', [((5, 6), (9, 13)), ((33, 41), (64, 64)),
                                          ((8, 8), (3, 5)), ((4, 1), (7, 3)),
                                          ((6, 5), (1, 5))])
def test_resize_bilinear_matches_numpy_loop(in_hw, out_hw):
  x = RNG.normal(size=(2,) + in_hw + (3,)).astype(np.float32)
  out = jcas.resize_bilinear(jnp.asarray(x), out_hw)
  chex.assert_shape(out, (2,) + out_hw + (3,))
  np.testing.assert_allclose(out, np_bilinear(x.astype(np.float64), out_hw),
                             rtol=1e-5, atol=1e-5)


def test_resize_bilinear_aligns_corners_and_has_linear_gradient():
  x = jnp.asarray(RNG.normal(size=(1, 5, 7, 2)), jnp.float32)
  out = jcas.resize_bilinear(x, (13, 9))
  np.testing.assert_allclose(out[0, 0, 0], x[0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(out[0, -1, -1], x[0, -1, -1], rtol=1e-6)
  g = RNG.normal(size=(1, 13, 9, 2))
  grad = jax.grad(lambda z: jnp.sum(jcas.resize_bilinear(z, (13, 9)) * g))(x)
  mh, mw = jcas.bilinear_matrix(5, 13), jcas.bilinear_matrix(7, 9)
  np.testing.assert_allclose(grad, np.einsum('oh,pw,bopc->bhwc', mh, mw, g), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('in_hw,out_hw', [((256, 320), (64, 64)), ((256, 320), (32, 32)),
                                          ((7, 9), (5, 4)), ((5, 6), (11, 13)),
                                          ((33, 41), (64, 64))])
def test_resize_nearest_matches_numpy_loop(in_hw, out_hw):
  labels = RNG.integers(0, 5, size=(2,) + in_hw).astype(np.int32)
  labels[labels == 4] = 255
  out = jcas.resize_nearest(jnp.asarray(labels), out_hw)
  np.testing.assert_array_equal(out, np_nearest(labels, out_hw))
  onehot = np.eye(6)[np.where(labels == 255, 5, labels)].astype(np.float32)
  np.testing.assert_array_equal(jcas.resize_nearest(jnp.asarray(onehot), out_hw),
                                np_nearest(onehot, out_hw))


def test_resize_nearest_picks_documented_rows_and_columns():
  np.testing.assert_array_equal(jcas.nearest_indices(256, 64), np.arange(0, 256, 4))
  np.testing.assert_array_equal(jcas.nearest_indices(320, 64), np.arange(0, 320, 5))


# ----------------------------------------------------------------------------------------
# affinity.py
# ----------------------------------------------------------------------------------------
def test_normalize_embeddings_and_affinity_match_numpy(tokens):
  f, _, _ = tokens
  x = jcas.normalize_embeddings(jnp.asarray(f, jnp.float32))
  np.testing.assert_allclose(x, np_unit(f), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(x[0, 3], 0.0)
  a = jcas.affinity_matrix(x)
  np.testing.assert_allclose(a, np_affinity(f), rtol=1e-5, atol=1e-6)
  assert float(a.min()) >= 1e-10 and float(a.max()) <= 1.0


def test_normalize_embeddings_gradient_is_zero_not_nan_at_a_dead_pixel():
  f = jnp.array([[[-1.0, -2.0, -0.5], [1.0, 2.0, -3.0]]])
  grad = jax.grad(lambda z: jnp.sum(jcas.normalize_embeddings(z) * jnp.arange(3.0)))(f)
  assert np.isfinite(np.asarray(grad)).all()
  np.testing.assert_array_equal(grad[0, 0], 0.0)


def test_clamp_like_torch_passes_gradient_on_the_closed_interval():
  grad = jax.vmap(jax.grad(lambda v: jcas.clamp_like_torch(v, 1e-10, 1.0)))(
      jnp.array([-1.0, 1e-10, 0.5, 1.0, 2.0]))
  np.testing.assert_array_equal(grad, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_dar_naive_matches_numpy(tokens):
  f, q, _ = tokens
  x = jcas.normalize_embeddings(jnp.asarray(f, jnp.float32))
  p = jcas.dar_naive(x, jnp.asarray(q, jnp.float32))
  chex.assert_shape(p, q.shape)
  np.testing.assert_allclose(p, np_dar(f, q), rtol=1e-5, atol=1e-5)


def test_dar_gradient_matches_finite_differences(tokens):
  f, q, _ = tokens
  g = RNG.normal(size=q.shape)

  def jax_loss(f32, q32):
    return jnp.sum(jcas.dar_naive(jcas.normalize_embeddings(f32), q32) * g)

  gf, gq = jax.grad(jax_loss, (0, 1))(jnp.asarray(f, jnp.float32), jnp.asarray(q, jnp.float32))
  coords = random_coords(f.shape, 40)
  fd_f = np_fd_grad(lambda z: np.sum(np_dar(z, q) * g), f, coords=coords)
  grad_close(gf, fd_f, coords=coords)
  fd_q = np_fd_grad(lambda z: np.sum(np_dar(f, z) * g), q)
  grad_close(gq, fd_q)


@pytest.mark.parametrize('block', [1, 16, 25, 64])
def test_dar_blocked_equals_naive_in_value_and_gradient(tokens, block):
  f, q, _ = tokens
  f32, q32 = jnp.asarray(f, jnp.float32), jnp.asarray(q, jnp.float32)
  g = jnp.asarray(RNG.normal(size=q.shape), jnp.float32)

  def loss(dar, f_, q_):
    return jnp.sum(dar(jcas.normalize_embeddings(f_), q_) * g)

  naive = jax.jit(jax.value_and_grad(lambda a, b: loss(jcas.dar_naive, a, b), (0, 1)))(f32, q32)
  blocked = jax.jit(jax.value_and_grad(
      lambda a, b: loss(lambda x, y: jcas.dar_blocked(x, y, block), a, b), (0, 1)))(f32, q32)
  np.testing.assert_allclose(blocked[0], naive[0], rtol=1e-5)
  for got, want in zip(blocked[1], naive[1]):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------
# calc.py: affinity BCE
# ----------------------------------------------------------------------------------------
def test_affinity_classes_and_targets_map_ignore_to_an_extra_class():
  labels = jnp.array([[0, 255, 2, 255, 3]])
  classes = jcas.affinity_classes(labels, num_classes=4)
  np.testing.assert_array_equal(classes, [[0, 4, 2, 4, 3]])
  targets = jcas.affinity_targets(classes)
  assert targets[0, 1, 3] == 1.0 and targets[0, 0, 1] == 0.0
  np.testing.assert_array_equal(np.diag(targets[0]), 1.0)


@pytest.mark.parametrize('with_t', [False, True])
def test_affinity_bce_matches_numpy(tokens, with_t):
  f, _, classes = tokens
  w = RNG.normal(size=(2, 2)) - 2.0
  t_np = np_transition(w) if with_t else None
  t = jnp.asarray(t_np, jnp.float32) if with_t else None
  x = jcas.normalize_embeddings(jnp.asarray(f, jnp.float32))
  got = jcas.affinity_bce(jcas.affinity_matrix(x), jnp.asarray(classes), t)
  np.testing.assert_allclose(got, np_affinity_bce(f, classes, t_np), rtol=1e-5)


def test_affinity_bce_gradient_is_torch_bce_backward():
  """d/dp of BCELoss is (p − y)/max(p(1 − p), 1e−12) / count, finite at p = 1, y = 0."""
  a = jnp.array([[[1.0, 1e-10, 0.3], [1.0, 1.0, 0.9999], [0.3, 0.5, 1.0]]])
  classes = jnp.array([[0, 1, 2]])
  y = np.asarray(jcas.affinity_targets(classes))
  grad = jax.grad(lambda m: jcas.affinity_bce(m, classes))(a)
  p = np.asarray(a, np.float64)
  expected = (p - y) / np.maximum(p * (1 - p), 1e-12) / p.size
  assert np.isfinite(np.asarray(grad)).all()
  np.testing.assert_allclose(grad, expected, rtol=1e-4)
  value = jcas.affinity_bce(a, classes)
  np.testing.assert_allclose(value, np_bce(np.clip(p, 0, 1), y), rtol=1e-5)


@pytest.mark.parametrize('with_t', [False, True])
def test_affinity_bce_gradient_matches_finite_differences(tokens, with_t):
  f, _, classes = tokens
  f = f.copy()
  f[1, 8] += 0.05   # keep the finite differences away from the A = 1, y = 0 corner
  w = RNG.normal(size=(2, 2)) - 2.0

  def jax_loss(f32, w32):
    t = jcas.transition_matrix(w32) if with_t else None
    a = jcas.affinity_matrix(jcas.normalize_embeddings(f32))
    return jcas.affinity_bce(a, jnp.asarray(classes), t)

  gf, gw = jax.grad(jax_loss, (0, 1))(jnp.asarray(f, jnp.float32), jnp.asarray(w, jnp.float32))
  coords = random_coords(f.shape, 40)
  t_np = np_transition(w) if with_t else None
  fd_f = np_fd_grad(lambda z: np_affinity_bce(z, classes, t_np), f, coords=coords)
  grad_close(gf, fd_f, coords=coords)
  if with_t:
    fd_w = np_fd_grad(lambda z: np_affinity_bce(f, classes, np_transition(z)), w)
    grad_close(gw, fd_w)


@pytest.mark.parametrize('block', [1, 16, 64])
@pytest.mark.parametrize('with_t', [False, True])
def test_blocked_affinity_bce_and_fused_dar_equal_naive(tokens, block, with_t):
  f, q, classes = tokens
  f32, q32 = jnp.asarray(f, jnp.float32), jnp.asarray(q, jnp.float32)
  w32 = jnp.asarray(RNG.normal(size=(2, 2)) - 2.0, jnp.float32)
  cls = jnp.asarray(classes)
  g = jnp.asarray(RNG.normal(size=q.shape), jnp.float32)

  def naive(f_, q_, w_):
    t = jcas.transition_matrix(w_) if with_t else None
    x = jcas.normalize_embeddings(f_)
    a = jcas.affinity_matrix(x)
    return jnp.sum(jcas.dar_from_affinity(a, q_) * g) + jcas.affinity_bce(a, cls, t)

  def fused(f_, q_, w_):
    t = jcas.transition_matrix(w_) if with_t else None
    p, l_aff = jcas.dar_and_affinity_bce_blocked(jcas.normalize_embeddings(f_), q_, cls, t,
                                                 block)
    return jnp.sum(p * g) + l_aff

  def bce_only(f_, q_, w_):
    del q_
    t = jcas.transition_matrix(w_) if with_t else None
    return jcas.affinity_bce_blocked(jcas.normalize_embeddings(f_), cls, t, block)

  def naive_bce_only(f_, q_, w_):
    del q_
    t = jcas.transition_matrix(w_) if with_t else None
    return jcas.affinity_bce(jcas.affinity_matrix(jcas.normalize_embeddings(f_)), cls, t)

  for reference, candidate in ((naive, fused), (naive_bce_only, bce_only)):
    want = jax.jit(jax.value_and_grad(reference, (0, 1, 2)))(f32, q32, w32)
    got = jax.jit(jax.value_and_grad(candidate, (0, 1, 2)))(f32, q32, w32)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for g_got, g_want in zip(got[1], want[1]):
      np.testing.assert_allclose(g_got, g_want, rtol=1e-4, atol=1e-5)


def test_blocked_affinity_grows_linearly_in_memory():
  """XLA's temp buffers for value_and_grad: ×4 tokens costs ≈×4 (blocked) vs ≈×16 (naive)."""

  def temp_bytes(dar_bce, n):
    f = jax.ShapeDtypeStruct((1, n, 16), jnp.float32)
    q = jax.ShapeDtypeStruct((1, n, 4), jnp.float32)
    cls = jax.ShapeDtypeStruct((1, n), jnp.int32)

    def loss(f_, q_, c_):
      p, l_aff = dar_bce(jcas.normalize_embeddings(f_), q_, c_)
      return jnp.sum(p * p) + l_aff

    compiled = jax.jit(jax.grad(loss, (0, 1))).lower(f, q, cls).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  def naive(x, q, c):
    a = jcas.affinity_matrix(x)
    return jcas.dar_from_affinity(a, q), jcas.affinity_bce(a, c)

  def blocked(x, q, c):
    return jcas.dar_and_affinity_bce_blocked(x, q, c, None, 128)

  blocked_ratio = temp_bytes(blocked, 4096) / temp_bytes(blocked, 1024)
  naive_ratio = temp_bytes(naive, 4096) / temp_bytes(naive, 1024)
  assert blocked_ratio < 6.0, blocked_ratio
  assert naive_ratio > 12.0, naive_ratio
  # One B×N×N float32 matrix at N = 4096 is 64 MiB; the blocked step must stay far below.
  assert temp_bytes(blocked, 4096) < 32 * 2**20


# ----------------------------------------------------------------------------------------
# calc.py: transition matrices, class loss, volume, C2A, CACR
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize('k,diag,off', [(4, 0.7366, 0.0878), (2, 0.8935, 0.1065)])
def test_transition_matrix_init_check_values(k, diag, off):
  t = np.asarray(jcas.transition_matrix(jcas.init_transition_logits(k)))
  np.testing.assert_allclose(np.diag(t), diag, atol=5e-5)
  np.testing.assert_allclose(t[~np.eye(k, dtype=bool)], off, atol=5e-5)
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)


def test_transition_matrix_matches_numpy_and_ignores_the_diagonal_of_w():
  w = RNG.normal(size=(4, 4))
  t = jcas.transition_matrix(jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(t, np_transition(w), rtol=1e-5)
  grad = jax.grad(lambda z: jnp.sum(jcas.transition_matrix(z) * jnp.arange(16.0).reshape(4, 4)))(
      jnp.asarray(w, jnp.float32))
  np.testing.assert_array_equal(np.diag(grad), 0.0)


@pytest.mark.parametrize('with_t', [False, True])
def test_forward_corrected_nll_matches_numpy_with_ignore(with_t):
  logits = RNG.normal(size=(2, 5, 6, 4)) * 3
  labels = RNG.integers(0, 4, size=(2, 5, 6)).astype(np.int32)
  labels[0, 0, :4] = 255
  labels[1, 2, 1] = 7           # outside [0, C): ignored as well
  w = RNG.normal(size=(4, 4)) - 2
  t_np = np_transition(w) if with_t else None
  t = jnp.asarray(t_np, jnp.float32) if with_t else None
  got = jcas.forward_corrected_nll(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), t)
  np.testing.assert_allclose(got, np_nll(logits, labels, t_np), rtol=1e-5)

  def jax_loss(z, wz):
    tz = jcas.transition_matrix(wz) if with_t else None
    return jcas.forward_corrected_nll(z, jnp.asarray(labels), tz)

  gz, gw = jax.grad(jax_loss, (0, 1))(jnp.asarray(logits, jnp.float32),
                                      jnp.asarray(w, jnp.float32))
  fd_z = np_fd_grad(lambda z: np_nll(z, labels, t_np), logits,
                    coords=random_coords(logits.shape, 30))
  coords = [c for c in np.ndindex(logits.shape) if fd_z[c] != 0]
  grad_close(gz, fd_z, coords=coords)
  np.testing.assert_array_equal(np.asarray(gz)[0, 0, :4], 0.0)   # ignored pixels
  if with_t:
    grad_close(gw, np_fd_grad(lambda z: np_nll(logits, labels, np_transition(z)), w))


def test_forward_corrected_nll_is_zero_without_valid_pixels():
  labels = jnp.full((1, 2, 2), 255)
  assert float(jcas.forward_corrected_nll(jnp.zeros((1, 2, 2, 3)), labels)) == 0.0


def test_identity_correction_is_exactly_no_correction():
  logits = jnp.asarray(RNG.normal(size=(2, 4, 4, 4)) * 5, jnp.float32)
  labels = jnp.asarray(RNG.integers(0, 4, size=(2, 4, 4)))
  plain = jax.value_and_grad(jcas.forward_corrected_nll)(logits, labels)
  ident = jax.value_and_grad(lambda z, y: jcas.forward_corrected_nll(z, y, jnp.eye(4)))(
      logits, labels)
  np.testing.assert_array_equal(ident[0], plain[0])
  np.testing.assert_array_equal(ident[1], plain[1])
  a = jnp.asarray(RNG.uniform(1e-10, 1, size=(1, 6, 6)), jnp.float32)
  np.testing.assert_array_equal(jcas.noisy_similarity(a, jnp.eye(2)), a)


def test_volume_loss_matches_slogdet_and_its_gradient():
  t_c = np_transition(RNG.normal(size=(4, 4)) - 2)
  t_a = np_transition(RNG.normal(size=(2, 2)) - 2)
  got = jcas.volume_loss(jnp.asarray(t_c, jnp.float32), jnp.asarray(t_a, jnp.float32))
  want = np.linalg.slogdet(t_c)[1] + np.linalg.slogdet(t_a)[1]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  grad = jax.grad(jcas.log_abs_det)(jnp.asarray(t_c, jnp.float32))
  np.testing.assert_allclose(grad, np.linalg.inv(t_c).T, rtol=1e-4)


def test_class_to_affinity_check_values():
  """METHODS' check values. They hold for any prior: for a T with a on the diagonal and b
  elsewhere, C2A = [[a² + (K−1)b², ·], [2ab + (K−2)b², ·]] whatever π is."""
  t_init = jcas.transition_matrix(jcas.init_transition_logits(4))
  sym50 = jnp.full((4, 4), 0.5 / 3) + jnp.eye(4) * (0.5 - 0.5 / 3)
  priors = [jnp.full((4,), 0.25),
            jnp.array([0.45128565, 0.1960985, 0.17388929, 0.17872656]),   # symmetric-50
            jnp.array([0.82303918, 0.08347754, 0.01862445, 0.07485883])]  # ellipse
  for prior in priors:
    np.testing.assert_allclose(jcas.class_to_affinity(t_init, prior),
                               [[0.566, 0.434], [0.145, 0.855]], atol=6e-4)
    np.testing.assert_allclose(jcas.class_to_affinity(sym50, prior),
                               [[1 / 3, 2 / 3], [2 / 9, 7 / 9]], atol=1e-5)


def test_class_to_affinity_matches_reference_loops_and_methods_closed_form():
  for _ in range(3):
    t = np_transition(RNG.normal(size=(4, 4)) - 1)
    prior = RNG.dirichlet(np.ones(4))
    got = jcas.class_to_affinity(jnp.asarray(t, jnp.float32), jnp.asarray(prior, jnp.float32))
    np.testing.assert_allclose(got, np_class2affinity(t, prior), rtol=1e-5)
    np.testing.assert_allclose(got, np_c2a_methods(t, prior), rtol=1e-5)
  # An unnormalised T and prior: the code's denominators, not s₂ and 1 − s₂.
  t = RNG.uniform(0.1, 1.0, size=(3, 3))
  prior = RNG.uniform(1, 5, size=3)
  np.testing.assert_allclose(
      jcas.class_to_affinity(jnp.asarray(t, jnp.float32), jnp.asarray(prior, jnp.float32)),
      np_class2affinity(t, prior), rtol=1e-5)


@pytest.mark.parametrize('cacr_index', ['code', 'math'])
def test_cacr_loss_and_gradient(cacr_index):
  w_c = RNG.normal(size=(4, 4)) - 2
  w_a = RNG.normal(size=(2, 2)) - 2
  prior = RNG.dirichlet(np.ones(4))

  def np_cacr(wc, wa):
    target = np_transition(wa)
    if cacr_index == 'math':
      target = target[::-1, ::-1]
    return np.mean((np_class2affinity(np_transition(wc), prior) - target)**2)

  def jax_cacr(wc, wa):
    return jcas.cacr_loss(jcas.transition_matrix(wc), jcas.transition_matrix(wa),
                          jnp.asarray(prior, jnp.float32), cacr_index)

  args = (jnp.asarray(w_c, jnp.float32), jnp.asarray(w_a, jnp.float32))
  value, (g_c, g_a) = jax.value_and_grad(jax_cacr, (0, 1))(*args)
  np.testing.assert_allclose(value, np_cacr(w_c, w_a), rtol=1e-5)
  grad_close(g_c, np_fd_grad(lambda z: np_cacr(z, w_a), w_c), rtol=5e-3)
  grad_close(g_a, np_fd_grad(lambda z: np_cacr(w_c, z), w_a), rtol=5e-3)
  # A constant prior: no gradient flows into it.
  g_prior = jax.grad(lambda p: jcas.cacr_loss(*map(jcas.transition_matrix, args), p))(
      jnp.asarray(prior, jnp.float32))
  np.testing.assert_array_equal(g_prior, 0.0)


def test_cacr_index_code_and_math_differ_by_swapping_t_aff():
  t_c = jcas.transition_matrix(jcas.init_transition_logits(4))
  t_a = jnp.array([[0.9, 0.1], [0.3, 0.7]])
  prior = jnp.full((4,), 0.25)
  c2a = np.asarray(jcas.class_to_affinity(t_c, prior))
  np.testing.assert_allclose(jcas.cacr_loss(t_c, t_a, prior, 'code'),
                             np.mean((c2a - np.asarray(t_a))**2), rtol=1e-6)
  np.testing.assert_allclose(jcas.cacr_loss(t_c, t_a, prior, 'math'),
                             np.mean((c2a - np.array([[0.7, 0.3], [0.1, 0.9]]))**2), rtol=1e-6)
  with pytest.raises(ValueError, match='code'):
    jcas.cacr_loss(t_c, t_a, prior, 'paper')


def test_label_prior_is_the_normalised_histogram():
  labels = np.array([[0, 0, 1, 255], [3, 3, 3, 0]])
  np.testing.assert_allclose(jcas.label_prior(jnp.asarray(labels), 4),
                             np.array([3, 1, 0, 3]) / 7, rtol=1e-6)


# ----------------------------------------------------------------------------------------
# calc.py: the assembled loss and test-time fusion
# ----------------------------------------------------------------------------------------
GRID = (8, 8)


@pytest.fixture(scope='module')
def heads():
  """Two branches at a 5×6 head grid, D=8 and 12, C=3; labels 16×20 with ignore pixels."""
  rng = np.random.default_rng(2)
  # Dense embeddings (shifted up), so that no two pixels of different classes have parallel
  # ReLU(f): there A rounds to exactly 1 in float32, and BCE's log(1 − A) is clamped at −100
  # in float32 (as in PyTorch) but not in the float64 reference.
  f1, f2 = rng.normal(size=(2, 5, 6, 8)) + 0.5, rng.normal(size=(2, 5, 6, 12)) + 0.5
  q1, q2 = rng.normal(size=(2, 5, 6, 3)), rng.normal(size=(2, 5, 6, 3))
  labels = rng.integers(0, 3, size=(2, 16, 20)).astype(np.int32)
  labels[:, :3, :5] = 255
  w_c, w_a = rng.normal(size=(3, 3)) - 2, rng.normal(size=(2, 2)) - 2
  prior = np.array([0.5, 0.3, 0.2])
  return f1, q1, f2, q2, labels, w_c, w_a, prior


def np_branch(f, q, labels, t_c, t_a, q_res='grid'):
  b, c = q.shape[0], q.shape[-1]
  n = GRID[0] * GRID[1]
  fg = np_bilinear(f, GRID).reshape(b, n, -1)
  qg = np_bilinear(q, GRID)
  p = np_dar(fg, qg.reshape(b, n, c)).reshape(qg.shape)
  classes = np_nearest(np.where(labels == 255, c, labels), GRID).reshape(b, n)
  size = labels.shape[1:]
  seg = (np_nll(np_bilinear(p, size), labels, t_c)
         + np_nll(np_bilinear(q if q_res == 'native' else qg, size), labels, t_c))
  return seg, np_affinity_bce(fg, classes, t_a)


def np_jcas_loss(f1, q1, f2, q2, labels, w_c, w_a, prior, stage2, cacr_index='code'):
  t_c, t_a = np_transition(w_c), np_transition(w_a)
  used_c, used_a = (t_c, t_a) if stage2 else (None, None)
  seg1, aff1 = np_branch(f1, q1, labels, used_c, used_a)
  seg2, aff2 = np_branch(f2, q2, labels, used_c, used_a)
  loss = seg2 + 0.1 * seg1 + 1.0 * aff1 + 0.1 * aff2
  if stage2:
    vol = np.linalg.slogdet(t_c)[1] + np.linalg.slogdet(t_a)[1]
    target = t_a if cacr_index == 'code' else t_a[::-1, ::-1]
    cacr = np.mean((np_class2affinity(t_c, prior) - target)**2)
    loss += 0.5 * vol + 0.01 * cacr
  return loss


def _jcas(block, cacr_index='code'):
  def loss_fn(f1, q1, f2, q2, w_c, w_a, labels, prior, stage2):
    return calc.jcas_loss(((f1, q1), (f2, q2)), labels, w_c, w_a, prior, stage2,
                          grid=GRID, block=block, cacr_index=cacr_index)[0]
  return loss_fn


def _as_f32(*arrays):
  return [jnp.asarray(a, jnp.float32) for a in arrays]


@pytest.mark.parametrize('stage2', [False, True])
@pytest.mark.parametrize('cacr_index', ['code', 'math'])
def test_jcas_loss_matches_numpy(heads, stage2, cacr_index):
  f1, q1, f2, q2, labels, w_c, w_a, prior = heads
  got = _jcas(None, cacr_index)(*_as_f32(f1, q1, f2, q2, w_c, w_a), jnp.asarray(labels),
                                jnp.asarray(prior, jnp.float32), jnp.asarray(stage2))
  want = np_jcas_loss(f1, q1, f2, q2, labels, w_c, w_a, prior, stage2, cacr_index)
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize('stage2', [False, True])
def test_jcas_loss_gradient_matches_finite_differences(heads, stage2):
  f1, q1, f2, q2, labels, w_c, w_a, prior = heads
  args = _as_f32(f1, q1, f2, q2, w_c, w_a)
  grads = jax.jit(jax.grad(_jcas(16), tuple(range(6))))(
      *args, jnp.asarray(labels), jnp.asarray(prior, jnp.float32), jnp.asarray(stage2))
  inputs = [f1, q1, f2, q2, w_c, w_a]
  for i, (x, g) in enumerate(zip(inputs, grads)):
    if i >= 4 and not stage2:
      np.testing.assert_array_equal(g, 0.0)   # T is the identity in stage 1
      continue
    coords = random_coords(x.shape, min(12, x.size))

    def fn(z, i=i):
      moved = list(inputs)
      moved[i] = z
      return np_jcas_loss(*moved[:4], labels, *moved[4:], prior, stage2)

    grad_close(g, np_fd_grad(fn, x, coords=coords), rtol=5e-3, atol_scale=5e-3,
               coords=coords)


def test_jcas_loss_blocked_equals_naive_and_stage_switch_does_not_recompile(heads):
  f1, q1, f2, q2, labels, w_c, w_a, prior = heads
  args = _as_f32(f1, q1, f2, q2, w_c, w_a)
  rest = (jnp.asarray(labels), jnp.asarray(prior, jnp.float32))
  naive = jax.jit(jax.value_and_grad(_jcas(None), tuple(range(6))))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def blocked(*a):
    return jax.value_and_grad(_jcas(24), tuple(range(6)))(*a)

  for stage2 in (False, True, False):
    want = naive(*args, *rest, jnp.asarray(stage2))
    got = blocked(*args, *rest, jnp.asarray(stage2))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for g_got, g_want in zip(got[1], want[1]):
      np.testing.assert_allclose(g_got, g_want, rtol=1e-4, atol=1e-6)


def test_jcas_loss_with_one_branch_is_the_main_branch_terms(heads):
  f1, q1, _, _, labels, w_c, w_a, prior = heads
  loss, terms = calc.jcas_loss(((*_as_f32(f1, q1),),), jnp.asarray(labels),
                               *_as_f32(w_c, w_a, prior), jnp.asarray(True), grid=GRID,
                               block=None)
  assert 'seg1' not in terms
  seg, l_aff = np_branch(f1, q1, labels, np_transition(w_c), np_transition(w_a))
  t_c, t_a = np_transition(w_c), np_transition(w_a)
  vol = np.linalg.slogdet(t_c)[1] + np.linalg.slogdet(t_a)[1]
  cacr = np.mean((np_class2affinity(t_c, prior) - t_a)**2)
  np.testing.assert_allclose(loss, seg + 0.1 * l_aff + 0.5 * vol + 0.01 * cacr, rtol=1e-5)
  with pytest.raises(ValueError, match='branches'):
    calc.jcas_loss((), jnp.asarray(labels), *_as_f32(w_c, w_a, prior), jnp.asarray(True))


@pytest.mark.parametrize('q_res', ['grid', 'native'])
def test_branch_losses_shapes_and_dar_logits(heads, q_res):
  f1, q1, _, _, labels, w_c, w_a, _ = heads
  out = calc.branch_losses(*_as_f32(f1, q1), jnp.asarray(labels), grid=GRID, block=None,
                           q_res=q_res)
  chex.assert_shape(out['dar_logits'], (2,) + GRID + (3,))
  chex.assert_shape(out['seg'], ())
  seg, l_aff = np_branch(f1, q1, labels, None, None, q_res)
  np.testing.assert_allclose(out['seg'], seg, rtol=1e-5)
  np.testing.assert_allclose(out['aff'], l_aff, rtol=1e-5)


def test_native_q_keeps_a_head_finer_than_the_grid():
  # A full-resolution head (16×20, the label size) over an 8×8 grid: 'native' reads Q unresized,
  # 'grid' sees it downsampled and back; DAR (and so 'aff') is the same either way.
  rng = np.random.default_rng(5)
  f, q = rng.normal(size=(2, 16, 20, 6)) + 0.5, rng.normal(size=(2, 16, 20, 3))
  labels = rng.integers(0, 3, size=(2, 16, 20)).astype(np.int32)
  t_c = np_transition(rng.normal(size=(3, 3)) - 2)
  outs = {}
  for q_res in ('grid', 'native'):
    outs[q_res] = calc.branch_losses(*_as_f32(f, q), jnp.asarray(labels), jnp.asarray(t_c),
                                     grid=GRID, block=None, q_res=q_res)
    seg, _ = np_branch(f, q, labels, t_c, None, q_res)
    np.testing.assert_allclose(outs[q_res]['seg'], seg, rtol=1e-5)
  assert abs(float(outs['grid']['seg'] - outs['native']['seg'])) > 1e-3
  np.testing.assert_allclose(outs['grid']['aff'], outs['native']['aff'], rtol=1e-6)
  with pytest.raises(ValueError, match='q_res'):
    calc.branch_losses(*_as_f32(f, q), jnp.asarray(labels), grid=GRID, q_res='full')


def test_fuse_predictions_and_dar_predict(heads):
  f1, q1, _, _, _, _, _, _ = heads
  p = RNG.normal(size=(2, 4, 4, 3))
  q = RNG.normal(size=(2, 4, 4, 3))
  fused = jcas.fuse_predictions(*_as_f32(p, q))
  np.testing.assert_allclose(fused, np_softmax(p) + np_softmax(q), rtol=1e-5)
  # Resizing the sum equals the reference's sum of resized softmaxes.
  np.testing.assert_allclose(jcas.fuse_predictions(*_as_f32(p, q), size=(7, 9)),
                             np_bilinear(np_softmax(p), (7, 9)) + np_bilinear(np_softmax(q),
                                                                            (7, 9)),
                             rtol=1e-5, atol=1e-6)
  scores = jcas.dar_predict(*_as_f32(f1, q1), (16, 20), grid=GRID)
  qg = np_bilinear(q1, GRID)
  pg = np_dar(np_bilinear(f1, GRID).reshape(2, 64, -1), qg.reshape(2, 64, 3)).reshape(qg.shape)
  want = np_bilinear(np_softmax(pg) + np_softmax(qg), (16, 20))
  np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jcas.dar_predict(*_as_f32(f1, q1), (16, 20), grid=GRID, block=24),
                             scores, rtol=1e-5, atol=1e-6)
  # 'native': softmax(Q) resized from the head's own grid, not from the DAR grid.
  want = np_bilinear(np_softmax(pg), (16, 20)) + np_bilinear(np_softmax(q1), (16, 20))
  np.testing.assert_allclose(jcas.dar_predict(*_as_f32(f1, q1), (16, 20), grid=GRID,
                                              q_res='native'), want, rtol=1e-5, atol=1e-6)
