"""'rater': real multi-annotator noise (METHODS.md §2.9), read from the dataset.

Train on one rater's masks, evaluate against another rater or against a consensus of all raters:

  params: train  rater whose masks are the training labels ỹ (required, e.g. 'hs');
          eval   rater name or 'consensus': the truth y of the noise log and of evaluation;
          consensus  majority | intersection | union | staple (default majority);
          noisy_thresh  is_noisy = Dice(train rater, consensus) < noisy_thresh (default 0.9).

Unlike the simulators, ỹ is not a function of y, so the protocol cannot `corrupt` a mask: its
`from_dataset` hook builds the (truth, label) pairs from the rater masks a dataset stores (the
`oocytes` builder stores AR, HS and SG), and `generate.apply_dataset_noise` logs them like any
other protocol. `is_noisy` compares the train rater with the consensus, as METHODS.md states, also
when `eval` names a rater; the record's params carry that Dice as `consensus_dice`.

Consensus rules, on binary masks (any rater's 255 = ignore stays ignore):
  * majority: strict majority, 2·Σ_j d_j > R, so with two raters it is the intersection;
  * intersection / union: all / any rater;
  * staple: binary STAPLE (Warfield et al., IEEE TMI 2004): EM over each rater's sensitivity p_j and
    specificity q_j with a fixed foreground prior (the raters' mean foreground fraction),
    estimated per image; the consensus is posterior > 0.5.
All host-side NumPy (float64 for STAPLE): this runs once per split, and float64 keeps the
consensus identical on every backend.
"""
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from nsegjax.errors import ConfigError, DataError
from nsegjax.noise import geometry
from nsegjax.noise.base import NoiseProtocol, register

NAME = 'rater'
IGNORE = 255
CONSENSUS_RULES = ('majority', 'intersection', 'union', 'staple')
EVAL_CONSENSUS = 'consensus'

DEFAULT_PARAMS: dict[str, Any] = {
    'train': None,  # required: the rater whose masks are trained on
    'eval': EVAL_CONSENSUS,  # a rater name, or 'consensus'
    'consensus': 'majority',  # majority | intersection | union | staple
    'noisy_thresh': 0.9,  # is_noisy = Dice(train rater, consensus) < noisy_thresh
}

# STAPLE's starting sensitivity and specificity (Warfield 2004 starts near-perfect raters), its
# stopping rule, and the clip that keeps log(p), log(1 - p) finite for a perfect rater.
_STAPLE_INIT = 0.99
_STAPLE_TOL = 1e-8
_STAPLE_MAX_ITER = 200
_STAPLE_EPS = 1e-10


# ------------------------------------------------------------------------------------------------
# Consensus
# ------------------------------------------------------------------------------------------------


def staple_posterior(decisions: np.ndarray, sensitivity: np.ndarray, specificity: np.ndarray,
                     prior: float) -> np.ndarray:
  """STAPLE's E-step: P(truth = 1 | decisions) per pixel.

  Args:
    decisions: bool (R, P), rater j's decision on pixel i.
    sensitivity, specificity: (R,) p_j and q_j.
    prior: P(truth = 1), in (0, 1).

  Returns:
    float64 (P,) W_i = a_i / (a_i + b_i), with a_i = f Π_j p_j^d (1 - p_j)^(1-d) and
    b_i = (1 - f) Π_j q_j^(1-d) (1 - q_j)^d, computed in the log domain.
  """
  d = decisions.astype(np.float64)
  p = np.clip(np.asarray(sensitivity, np.float64), _STAPLE_EPS, 1 - _STAPLE_EPS)[:, None]
  q = np.clip(np.asarray(specificity, np.float64), _STAPLE_EPS, 1 - _STAPLE_EPS)[:, None]
  log_a = np.log(prior) + np.sum(d * np.log(p) + (1 - d) * np.log1p(-p), axis=0)
  log_b = np.log1p(-prior) + np.sum((1 - d) * np.log(q) + d * np.log1p(-q), axis=0)
  return 1.0 / (1.0 + np.exp(np.clip(log_b - log_a, -700.0, 700.0)))


def staple(decisions: np.ndarray, max_iter: int = _STAPLE_MAX_ITER, tol: float = _STAPLE_TOL
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Binary STAPLE over the pixels of one image (Warfield, Zou & Wells, IEEE TMI 2004).

  Args:
    decisions: bool (R, P): R raters' foreground decisions on P pixels.
    max_iter: EM iterations at most.
    tol: stop when no sensitivity or specificity moves by more than this.

  Returns:
    (posterior W (P,), sensitivity p (R,), specificity q (R,)), float64.
  """
  decisions = np.asarray(decisions, bool)
  num_raters = decisions.shape[0]
  prior = float(decisions.mean()) if decisions.size else 0.0
  if prior in (0.0, 1.0):  # every rater says the same everywhere: nothing to estimate
    return np.full(decisions.shape[1], prior), np.ones(num_raters), np.ones(num_raters)
  d = decisions.astype(np.float64)
  p = np.full(num_raters, _STAPLE_INIT)
  q = np.full(num_raters, _STAPLE_INIT)
  for _ in range(max_iter):
    w = staple_posterior(decisions, p, q, prior)
    # M-step: expected true positives / expected foreground, and the same for background.
    new_p = (d @ w) / max(w.sum(), _STAPLE_EPS)
    new_q = ((1 - d) @ (1 - w)) / max((1 - w).sum(), _STAPLE_EPS)
    converged = max(np.abs(new_p - p).max(), np.abs(new_q - q).max()) < tol
    p, q = new_p, new_q
    if converged:
      break
  return staple_posterior(decisions, p, q, prior), p, q


def consensus(stack: np.ndarray, rule: str) -> np.ndarray:
  """The per-pixel consensus of R raters' binary masks.

  Args:
    stack: (R, ..., H, W) masks in {0, 1, 255}; 255 = ignore.
    rule: one of CONSENSUS_RULES.

  Returns:
    uint8 (..., H, W) in {0, 1, 255}: 255 wherever any rater ignores the pixel.

  Raises:
    ConfigError: unknown rule.
    DataError: a label other than 0, 1 or 255 (the rules are defined for binary masks).
  """
  geometry.as_choice(NAME, 'consensus', rule, CONSENSUS_RULES)
  stack = np.asarray(stack)
  if stack.size and (bad := np.setdiff1d(np.unique(stack), (0, 1, IGNORE))).size:
    raise DataError(f'{NAME}: a consensus needs binary rater masks (0/1, 255 = ignore), found '
                    f'label {int(bad[0])}')
  foreground = stack == 1
  ignored = np.any(stack == IGNORE, axis=0)
  num_raters = stack.shape[0]
  if rule == 'majority':
    agreed = 2 * foreground.sum(axis=0) > num_raters
  elif rule == 'intersection':
    agreed = foreground.all(axis=0)
  elif rule == 'union':
    agreed = foreground.any(axis=0)
  else:
    agreed = _staple_masks(foreground, ignored)
  return np.where(ignored, IGNORE, agreed).astype(np.uint8)


def _staple_masks(foreground: np.ndarray, ignored: np.ndarray) -> np.ndarray:
  """STAPLE per image (H, W) of an (R, ..., H, W) stack, over the pixels no rater ignores."""
  num_raters, image_shape = foreground.shape[0], foreground.shape[-2:]
  flat = foreground.reshape(num_raters, -1, *image_shape)
  flat_ignored = ignored.reshape(-1, *image_shape)
  agreed = np.zeros(flat.shape[1:], bool)
  for n in range(flat.shape[1]):
    valid = ~flat_ignored[n]
    posterior, _, _ = staple(flat[:, n][:, valid])
    agreed[n][valid] = posterior > 0.5
  return agreed.reshape(foreground.shape[1:])


def dice(label: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """Per-sample foreground Dice of (N, H, W) masks, over pixels not ignored in `truth`.

  1 where both are empty, as in `generate.label_noise_metrics`.
  """
  valid = truth != IGNORE
  pred = (label >= 1) & (label != IGNORE) & valid
  gold = (truth >= 1) & valid
  overlap = (pred & gold).sum(axis=(-2, -1))
  total = pred.sum(axis=(-2, -1)) + gold.sum(axis=(-2, -1))
  return np.where(total > 0, 2 * overlap / np.maximum(total, 1), 1.0)


# ------------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------------


def resolve_params(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """Defaults filled in and checked; rater names are checked against the dataset later."""
  del max_label  # the labels come from the raters, not from a clean mask
  geometry.check_keys(NAME, params, DEFAULT_PARAMS)
  resolved = {**DEFAULT_PARAMS, **params}
  for key in ('train', 'eval'):
    if not isinstance(resolved[key], str) or not resolved[key]:
      raise ConfigError(f'{NAME}: params.{key} must name a rater of the dataset (e.g. \'hs\')'
                        f'{" or be consensus" if key == "eval" else ""}, got {resolved[key]!r}')
  geometry.as_choice(NAME, 'consensus', resolved['consensus'], CONSENSUS_RULES)
  resolved['noisy_thresh'] = geometry.as_number(NAME, 'noisy_thresh', resolved['noisy_thresh'],
                                                0.0, 1.0)
  return resolved


def _check_rater(key: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ConfigError(f'{NAME}: params.{key}={value!r} is not a rater of this dataset; '
                      f'valid choices: {", ".join(choices)}')


def from_dataset(raters: Mapping[str, np.ndarray], params: Mapping[str, Any]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
  """The (truth, label) pairs of a split from its raters' masks.

  Args:
    raters: rater name -> uint8 (N, H, W) masks, the same samples in the same order.
    params: resolved params.

  Returns:
    (truth (N, H, W): the eval rater's masks or the consensus; label (N, H, W): the train rater's;
     is_noisy bool (N,): Dice(label, consensus) < noisy_thresh; per-sample logs for `describe`).

  Raises:
    ConfigError: params.train or params.eval names no rater of the dataset.
  """
  names = tuple(raters)
  _check_rater('train', params['train'], names)
  _check_rater('eval', params['eval'], names + (EVAL_CONSENSUS,))
  agreed = consensus(np.stack([raters[name] for name in names]), params['consensus'])
  label = np.array(raters[params['train']], np.uint8)
  truth = agreed if params['eval'] == EVAL_CONSENSUS else np.array(raters[params['eval']],
                                                                     np.uint8)
  consensus_dice = dice(label, agreed)
  logs = [{'consensus_dice': value} for value in consensus_dice]
  return truth, label, consensus_dice < params['noisy_thresh'], logs


def describe(log: Mapping[str, Any], params: Mapping[str, Any]
             ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  return NAME, {'train': params['train'], 'eval': params['eval'],
                'consensus': params['consensus'],
                'consensus_dice': float(log['consensus_dice'])}, []


def _needs_dataset(*args, **kwargs):
  del args, kwargs
  raise ConfigError(f'noise protocol {NAME!r} reads the raters\' masks from the dataset and '
                    f'cannot corrupt a given mask; use it in training (data.name=oocytes) or '
                    f'through generate.apply_dataset_noise')


PROTOCOL = register(NoiseProtocol(
    name=NAME,
    version=1,
    corrupt=_needs_dataset,
    select_noisy=_needs_dataset,
    resolve_params=resolve_params,
    describe=describe,
    default_params=MappingProxyType(DEFAULT_PARAMS),
    corrupt_selected=_needs_dataset,
    from_dataset=from_dataset,
))
