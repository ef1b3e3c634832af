"""Class-affinity loss correction of JCAS (METHODS.md §3.1): losses and transition matrices.

Pure functions; the JCAS method wires them to the DeepLab heads. Conventions:
- T is row-stochastic, rows clean and columns noisy: p̃ = pᵀT.
- Affinity index 0 = dissimilar / 1 = similar in T_A, but index 0 = similar in C2A (as in
  the reference code; `cacr_index` chooses how the two are matched).
- Labels are int maps with 255 = ignore.

Stage switching without recompiling. Stage 1 of the reference code is stage 2 with the
identity in place of T_C and T_A: p·I = p and (1−A)·I[0,1] + A·I[1,1] = A hold exactly in
floating point, and stage 1's class loss is already NLL(log clip(softmax, 1e−10, 1)) (not
log_softmax). So `jcas_loss` takes the stage as a traced 0/1 value and selects
T = where(stage2, T(w), I): one compiled step for both stages, no second evaluation of any
term, and T's parameters get exactly zero gradient in stage 1. L_vol and L_CACR are
multiplied by the stage (they are finite at any T, so 0·term is 0 and has 0 gradient). The
reference stage 1 also adds 0.1·L_vol of T matrices that are re-initialised before stage 2,
which changes nothing downstream, so it is left out.
"""
import dataclasses
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from nsegjax.jcas import affinity as aff
from nsegjax import resize

IGNORE = 255
HIGHEST = jax.lax.Precision.HIGHEST
PROB_MIN = 1e-10     # clamp(min=1e-10, max=1.0) before the log in CrossEntropy2d
BCE_LOG_MIN = -100.0  # torch.nn.BCELoss clamps its logs at −100
BCE_GRAD_EPS = 1e-12  # ... and divides its gradient by max(p(1−p), 1e−12)
T_INIT = -2.0


# ----------------------------------------------------------------------------------------
# Transition matrices
# ----------------------------------------------------------------------------------------
def init_transition_logits(num_classes: int, value: float = T_INIT):
  """VolMin parameters w ∈ ℝ^{K×K}, all equal to `value` (the code's init=2 gives −2)."""
  return jnp.full((num_classes, num_classes), value, jnp.float32)


def transition_matrix(w):
  """T(w) = rownorm_L1(I + σ(w)⊙(1 − I)); the diagonal of w is unused.

  K = 4, w = −2: diagonal 0.7366, off-diagonal 0.0878. K = 2: 0.8935 / 0.1065.
  """
  k = w.shape[-1]
  eye = jnp.eye(k, dtype=w.dtype)
  t = eye + jax.nn.sigmoid(w) * (1.0 - eye)
  return t / aff.l1_row_norm(t)


def log_abs_det(t):
  """log|det T| via slogdet (stable; T is diagonally dominant, so det T > 0)."""
  return jnp.linalg.slogdet(t)[1]


def volume_loss(t_class, t_aff):
  """L_vol = log|det T_C| + log|det T_A|, minimised (VolMin)."""
  return log_abs_det(t_class) + log_abs_det(t_aff)


# ----------------------------------------------------------------------------------------
# Class level
# ----------------------------------------------------------------------------------------
def forward_corrected_nll(logits, labels, t=None, precision=HIGHEST):
  """Mean over valid pixels of −log clip(softmax(logits)·T, 1e−10, 1)[ỹ].

  Args:
    logits: [..., C] class logits at the label resolution.
    labels: [...] int noisy labels; pixels outside [0, C) (255 = ignore) do not count.
    t: [C, C] row-stochastic transition matrix, or None for no correction (stage 1).
    precision: of the p·T matmul (HIGHEST keeps p·I = p exact on GPU/TPU).

  Returns:
    Scalar; 0 when no pixel is valid (the reference returns 0 too).
  """
  num_classes = logits.shape[-1]
  probs = jax.nn.softmax(logits, axis=-1)
  if t is not None:
    probs = jnp.einsum('...c,cd->...d', probs, t, precision=precision)
  log_probs = jnp.log(aff.clamp_like_torch(probs, lo=PROB_MIN, hi=1.0))
  valid = (labels >= 0) & (labels < num_classes)
  safe = jnp.where(valid, labels, 0)
  nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  count = jnp.sum(valid)
  return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(count, 1).astype(nll.dtype)


def fuse_predictions(p_logits, q_logits, size=None):
  """Test-time fusion softmax(P) + softmax(Q), optionally bilinearly resized to `size`.

  The reference resizes each softmax before adding them; resizing is linear, so resizing
  the sum is the same map with one resize instead of two. P and Q may differ in resolution
  (`q_res='native'`); then each is resized on its own.
  """
  p_probs, q_probs = jax.nn.softmax(p_logits, axis=-1), jax.nn.softmax(q_logits, axis=-1)
  if p_probs.shape != q_probs.shape:
    size = size or q_probs.shape[1:3]
    return resize.resize_bilinear(p_probs, size) + resize.resize_bilinear(q_probs, size)
  fused = p_probs + q_probs
  if size is not None:
    fused = resize.resize_bilinear(fused, size)
  return fused


# ----------------------------------------------------------------------------------------
# Affinity level
# ----------------------------------------------------------------------------------------
def affinity_classes(labels, num_classes: int):
  """Class map for affinity labels: ignore (255) becomes an extra class C.

  So two ignore pixels count as "similar", as in the reference code's one-hot over C + 1
  classes. Labels must already be at the affinity grid (see `resize.resize_nearest`).
  """
  return jnp.where(labels == IGNORE, num_classes, labels).astype(jnp.int32)


def affinity_targets(classes):
  """Ỹ′_ij = 1[ỹ_i = ỹ_j] as float32, [B, N] → [B, N, N] (naive path only)."""
  return (classes[:, :, None] == classes[:, None, :]).astype(jnp.float32)


@jax.custom_vjp
def _bce_hard_target(p, similar):
  """Elementwise torch BCELoss for targets in {0, 1}: −max(log(p or 1 − p), −100).

  A hard target needs one log per entry instead of two (this runs on B·N² entries).
  """
  return -jnp.maximum(jnp.log(jnp.where(similar, p, 1.0 - p)), BCE_LOG_MIN)


def _bce_hard_target_fwd(p, similar):
  return _bce_hard_target(p, similar), (p, similar)


def _bce_hard_target_bwd(residuals, g):
  # PyTorch's binary_cross_entropy_backward, (p − y) / max(p(1 − p), 1e−12), rather than
  # the derivative of the clamped log: it is finite where A = 1 with y = 0 (autodiff of
  # max(log 0, −100) gives 0·∞ = NaN) and equal to it everywhere else.
  p, similar = residuals
  y = similar.astype(p.dtype)
  return g * (p - y) / jnp.maximum(p * (1.0 - p), BCE_GRAD_EPS), None


_bce_hard_target.defvjp(_bce_hard_target_fwd, _bce_hard_target_bwd)


def noisy_similarity(a, t_aff=None):
  """P′ = (1 − A)·T_A[0, 1] + A·T_A[1, 1]: P(noisy similar); A itself when T_A is None."""
  if t_aff is None:
    return a
  return (1.0 - a) * t_aff[0, 1] + a * t_aff[1, 1]


def affinity_bce(a, classes, t_aff=None):
  """L_aff = BCE(P′, Ỹ′) averaged over all B·N·N entries, from a materialised A."""
  similar = classes[:, :, None] == classes[:, None, :]
  return jnp.mean(_bce_hard_target(noisy_similarity(a, t_aff), similar))


def _affinity_bce_rows(a_rows, class_rows, classes, row_valid, t_aff):
  """Σ of BCE over rows of A, padding rows excluded; Ỹ′ rows built on the fly."""
  similar = class_rows[:, :, None] == classes[:, None, :]
  bce = _bce_hard_target(noisy_similarity(a_rows, t_aff), similar)
  return jnp.sum(jnp.where(row_valid[None, :, None], bce, 0.0))


def affinity_bce_blocked(xhat, classes, t_aff=None, block: int = 256,
                         precision=HIGHEST):
  """`affinity_bce(affinity_matrix(x̂), ...)` without materialising A or Ỹ′."""

  def block_fn(rows_block, shared, row_valid):
    xhat_rows, class_rows = rows_block
    xhat_all, classes_all, t = shared
    a_rows = aff.affinity_rows(xhat_rows, xhat_all, precision)
    return (), _affinity_bce_rows(a_rows, class_rows, classes_all, row_valid, t)

  _, total = aff.map_row_blocks(block_fn, (xhat, classes), (xhat, classes, t_aff), block)
  b, n = classes.shape
  return total / (b * n * n)


def dar_and_affinity_bce_blocked(xhat, q, classes, t_aff=None, block: int = 256,
                                 precision=HIGHEST):
  """(DAR logits P, L_aff) sharing each row block of A: one x̂x̂ᵀ matmul per block.

  Equal to (`affinity.dar_naive`, `affinity_bce`) in value and gradient; peak memory is
  O(B·block·N).
  """

  def block_fn(rows_block, shared, row_valid):
    xhat_rows, q_rows, class_rows = rows_block
    xhat_all, q_all, classes_all, t = shared
    a_rows = aff.affinity_rows(xhat_rows, xhat_all, precision)
    p_rows = aff.dar_rows(a_rows, q_rows, q_all, precision)
    return p_rows, _affinity_bce_rows(a_rows, class_rows, classes_all, row_valid, t)

  p, total = aff.map_row_blocks(block_fn, (xhat, q, classes),
                                (xhat, q, classes, t_aff), block)
  b, n = classes.shape
  return p, total / (b * n * n)


# ----------------------------------------------------------------------------------------
# Class → affinity consistency (Class2Simi)
# ----------------------------------------------------------------------------------------
def label_prior(labels, num_classes: int):
  """π: pixel histogram of labels in [0, C), normalised as compute_ClassDist.py does."""
  flat = labels.reshape(-1)
  valid = (flat >= 0) & (flat < num_classes)
  counts = jnp.zeros((num_classes,), jnp.float32).at[jnp.where(valid, flat, 0)].add(
      valid.astype(jnp.float32))
  return counts / (jnp.sum(counts) + 1e-9)


def class_to_affinity(t, prior):
  """C2A(T; π), the affinity transition implied by a class transition (index 0 = similar).

  With v_ss = Σ_i π_i² Σ_j T_ij² and v_ds = Σ_j (Σ_i π_i T_ij)² − v_ss:
      C2A = [[v_ss/s_s, 1 − v_ss/s_s], [v_ds/s_d, 1 − v_ds/s_d]],
  s_s = Σ_i π_i² r_i², s_d = (Σ_i π_i r_i)² − s_s, r = row sums of T. These are the
  reference code's denominators (v11 + v10, v01 + v00); for row-stochastic T and Σπ = 1
  they are METHODS' s₂ and 1 − s₂, so the value and the gradient w.r.t. the VolMin
  parameters are the same as METHODS' closed form.

  Args:
    t: [K, K] class transition matrix.
    prior: [K] class prior π, treated as a constant.
  """
  prior = jax.lax.stop_gradient(prior).astype(t.dtype)
  weighted = prior[:, None] * t                              # π_i T_ij
  rows = prior * jnp.sum(t, axis=1)                          # π_i r_i
  v_ss = jnp.sum(weighted * weighted)
  v_ds = jnp.sum(jnp.square(jnp.sum(weighted, axis=0))) - v_ss
  s_s = jnp.sum(rows * rows)
  s_d = jnp.square(jnp.sum(rows)) - s_s
  same = v_ss / s_s
  diff = v_ds / s_d
  return jnp.stack([jnp.stack([same, 1.0 - same]), jnp.stack([diff, 1.0 - diff])])


CACR_INDEX = ('code', 'math')


def cacr_loss(t_class, t_aff, prior, cacr_index: str = 'code'):
  """L_CACR = mean over the 4 entries of (C2A(T_C) − T̃_A)².

  cacr_index='code' matches T̃_A = T_A (so P(s|s) meets T_A[0,0] = P(d|d), as the reference
  does); 'math' swaps T_A's rows and columns so both use index 0 = similar.
  """
  if cacr_index not in CACR_INDEX:
    raise ValueError(f'cacr_index must be one of {CACR_INDEX}, got {cacr_index!r}')
  target = t_aff if cacr_index == 'code' else t_aff[::-1, ::-1]
  return jnp.mean(jnp.square(class_to_affinity(t_class, prior) - target))


# ----------------------------------------------------------------------------------------
# Assembled loss
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class JcasWeights:
  """Loss weights of METHODS.md §3.1 (code defaults).

  Attributes:
    seg_main: weight of L_seg,2 (layer4 branch, the main output).
    seg_aux: `jcas.lambda_seg`, weight of L_seg,1 (layer3 branch).
    aff_layer3: weight of L_aff,1; `jcas.aff_weights` code=[1.0, 0.1], swapped=[0.1, 1.0].
    aff_layer4: weight of L_aff,2.
    vol: stage-2 weight of L_vol (`jcas.w_vol[1]`).
    cacr: stage-2 weight of L_CACR (`jcas.w_cacr`).
  """
  seg_main: float = 1.0
  seg_aux: float = 0.1
  aff_layer3: float = 1.0
  aff_layer4: float = 0.1
  vol: float = 0.5
  cacr: float = 0.01


Q_RES_CHOICES = ('grid', 'native')


def _check_q_res(q_res: str) -> str:
  if q_res not in Q_RES_CHOICES:
    raise ValueError(f'q_res must be one of {Q_RES_CHOICES}, got {q_res!r}')
  return q_res


def _flatten_grid(x):
  return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def branch_losses(embeddings, logits, labels, t_class=None, t_aff=None, *,
                  grid: Tuple[int, int] = (64, 64), block: Optional[int] = 256,
                  q_res: str = 'grid', precision=HIGHEST):
  """L_seg,b and L_aff,b of one branch, from head outputs at any resolution.

  Args:
    embeddings: [B, h, w, D] embedding head output f_b.
    logits: [B, h, w, C] class head output Q_b.
    labels: [B, H, W] int noisy labels (255 = ignore) at the loss resolution.
    t_class: [C, C] T_C, or None (stage 1).
    t_aff: [2, 2] T_A, or None (stage 1).
    grid: the DAR/affinity grid (the code's (H/4, W/5) = 64×64).
    block: row-block size of the memory-linear path; None materialises A.
    q_res: where the Q term reads Q: 'grid' (code: Q resized onto the DAR grid, then up) or
      'native' (Q at the head's own resolution, then up). They differ only for heads finer
      than the grid (a full-resolution U-Net), whose Q 'grid' would downsample.
    precision: matmul precision.

  Returns:
    dict with 'seg' (NLL of up(P) plus NLL of up(Q)), 'aff' (BCE of P′ vs Ỹ′) and
    'dar_logits' (P on the grid, [B, gh, gw, C]).
  """
  batch, num_classes = logits.shape[0], logits.shape[-1]
  out_size = labels.shape[1:3]
  xhat = aff.normalize_embeddings(_flatten_grid(
      resize.resize_bilinear(embeddings, grid, precision)))
  q_grid = resize.resize_bilinear(logits, grid, precision)
  q = _flatten_grid(q_grid)
  classes = _flatten_grid(affinity_classes(resize.resize_nearest(labels, grid), num_classes))
  if block is None:
    a = aff.affinity_matrix(xhat, precision)
    p = aff.dar_from_affinity(a, q, precision)
    l_aff = affinity_bce(a, classes, t_aff)
  else:
    p, l_aff = dar_and_affinity_bce_blocked(xhat, q, classes, t_aff, block, precision)
  p_grid = p.reshape(batch, *grid, num_classes)
  up = lambda z: resize.resize_bilinear(z, out_size, precision)
  q_seg = logits if _check_q_res(q_res) == 'native' else q_grid
  l_seg = (forward_corrected_nll(up(p_grid), labels, t_class, precision)
           + forward_corrected_nll(up(q_seg), labels, t_class, precision))
  return {'seg': l_seg, 'aff': l_aff, 'dar_logits': p_grid}


def jcas_loss(branches: Sequence[Tuple[jax.Array, jax.Array]], labels, t_class_logits,
              t_aff_logits, prior, stage2, *, weights: JcasWeights = JcasWeights(),
              cacr_index: str = 'code', grid: Tuple[int, int] = (64, 64),
              block: Optional[int] = 256, q_res: str = 'grid', precision=HIGHEST):
  """The JCAS training loss of one step, stage 1 or 2 selected by a traced value.

    S1: L_seg,2 + 0.1·L_seg,1 + 1.0·L_aff,1 + 0.1·L_aff,2        (no T: T = I)
    S2: the same with T_C, T_A  + 0.5·L_vol + 0.01·L_CACR

  Args:
    branches: ((f1, Q1), (f2, Q2)): embeddings [B, h, w, D] and logits [B, h, w, C] of the
      layer3 (auxiliary) and layer4 (main) branches; or ((f, Q),), a single main branch
      (e.g. a U-Net), which takes the seg_main and aff_layer4 weights.
    labels: [B, H, W] int noisy labels, 255 = ignore.
    t_class_logits: [C, C] VolMin parameters of T_C (shared by both branches).
    t_aff_logits: [2, 2] VolMin parameters of T_A.
    prior: [C] class prior π of C2A (a constant).
    stage2: scalar bool/0-1 array; traced, so switching stage does not recompile.
    weights: loss weights.
    cacr_index: 'code' or 'math', see `cacr_loss`.
    grid: DAR/affinity grid.
    block: row-block size of the memory-linear affinity; None materialises A.
    q_res: 'grid' | 'native', see `branch_losses`.
    precision: matmul precision.

  Returns:
    (loss, terms): terms holds every weighted-sum ingredient ('seg1', 'seg2', 'aff1',
    'aff2', 'vol', 'cacr'; no '…1' with one branch) plus 'dar_logits1'/'dar_logits2' (P on
    the grid) for logging and refinement.
  """
  if len(branches) not in (1, 2):
    raise ValueError(f'jcas_loss takes 1 or 2 branches, got {len(branches)}')
  stage2 = jnp.asarray(stage2).astype(bool)
  t_class = transition_matrix(t_class_logits)
  t_aff = transition_matrix(t_aff_logits)
  t_class_used = jnp.where(stage2, t_class, jnp.eye(t_class.shape[0], dtype=t_class.dtype))
  t_aff_used = jnp.where(stage2, t_aff, jnp.eye(2, dtype=t_aff.dtype))
  kwargs = dict(grid=grid, block=block, q_res=q_res, precision=precision)
  main = branch_losses(*branches[-1], labels, t_class_used, t_aff_used, **kwargs)
  vol = volume_loss(t_class, t_aff)
  cacr = cacr_loss(t_class, t_aff, prior, cacr_index)
  stage_weight = stage2.astype(vol.dtype)
  loss = (weights.seg_main * main['seg'] + weights.aff_layer4 * main['aff']
          + stage_weight * (weights.vol * vol + weights.cacr * cacr))
  terms = {'seg2': main['seg'], 'aff2': main['aff'], 'vol': vol, 'cacr': cacr,
           'dar_logits2': main['dar_logits']}
  if len(branches) == 2:
    aux = branch_losses(*branches[0], labels, t_class_used, t_aff_used, **kwargs)
    loss = loss + weights.seg_aux * aux['seg'] + weights.aff_layer3 * aux['aff']
    terms.update(seg1=aux['seg'], aff1=aux['aff'], dar_logits1=aux['dar_logits'])
  return loss, terms


def dar_predict(embeddings, logits, out_size, *, grid: Tuple[int, int] = (32, 32),
                block: Optional[int] = None, q_res: str = 'grid', precision=HIGHEST):
  """Test-time JCAS probabilities: up(softmax(P) + softmax(Q)) on a `grid` DAR (code: 32×32).

  Args:
    embeddings: [B, h, w, D] main-branch embeddings f2.
    logits: [B, h, w, C] main-branch logits Q2.
    out_size: (H, W) of the prediction.
    grid: DAR grid, `jcas.test_dar_size`.
    block: None materialises A (cheap at 32×32); an int uses the blocked DAR.
    q_res: 'grid' (code: softmax(Q) on the DAR grid) or 'native' (softmax(Q) at the head's
      resolution, so a full-resolution head is not blurred by the fusion).

  Returns:
    [B, H, W, C] fused scores (sum of two softmaxes: argmax them, or halve for probabilities).
  """
  batch, num_classes = logits.shape[0], logits.shape[-1]
  xhat = aff.normalize_embeddings(_flatten_grid(
      resize.resize_bilinear(embeddings, grid, precision)))
  q_grid = resize.resize_bilinear(logits, grid, precision)
  q = _flatten_grid(q_grid)
  p = (aff.dar_naive(xhat, q, precision) if block is None
       else aff.dar_blocked(xhat, q, block, precision))
  q_fused = logits if _check_q_res(q_res) == 'native' else q_grid
  return fuse_predictions(p.reshape(batch, *grid, num_classes), q_fused, out_size)
