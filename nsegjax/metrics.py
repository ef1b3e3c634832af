"""Host-side segmentation and noise-identification metrics (METHODS.md §5.1–§5.3).

Everything here runs in numpy/scipy on argmax predictions at label resolution, after the
device step; nothing is traced by JAX.

- Overlap: per-image, per-class Dice and IoU with the `metrics.empty` policies
  ('standard', 'present_only', 'nan'); ignore pixels (label 255) are excluded.
- Surface distances: S(M) = M ∧ ¬erode(M) with the face-connected (4 in 2-D, 6 in 3-D) element,
  distances from the Euclidean distance transform, HD95 (MedPy 'concat' convention or
  'max_of_directed') and ASSD; empty masks follow `metrics.empty_surface` ('nan', 'diagonal').
- Noise identification against the noise log: sample-level accuracy / precision / recall / F1 /
  AUROC, pixel-level precision / recall (micro and per image), revised-label Dice and error
  reduction.
- `SegmentationMetrics` accumulates batches and returns a JSON-serialisable summary with
  per-class means, means over the evaluated classes and per-image lists for significance tests.
"""
import math
from typing import Iterable, NamedTuple, Optional, Sequence

import numpy as np
from scipy import ndimage, stats

from nsegjax.errors import ConfigError

IGNORE_INDEX = 255
EMPTY_POLICIES = ('standard', 'present_only', 'nan')
AGG_MODES = ('per_image', 'global')
HD95_MODES = ('concat', 'max_of_directed')
EMPTY_SURFACE_POLICIES = ('nan', 'diagonal')

# Surface-distance status of one (image, class) pair.
SURFACE_OK = 'ok'
SURFACE_SKIP = 'skip'  # both masks empty: nothing to measure, excluded from every mean
SURFACE_ONE_EMPTY = 'one_empty'  # counted and reported; NaN or the image diagonal


def _check_choice(knob: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ConfigError(f'{knob}={value!r}; valid choices: {", ".join(choices)}')


def _nanmean(values, axis=None):
  """nanmean that returns NaN for all-NaN or empty slices instead of warning."""
  values = np.asarray(values, dtype=np.float64)
  finite = ~np.isnan(values)
  total = np.where(finite, values, 0.0).sum(axis=axis)
  count = finite.sum(axis=axis)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ----------------------------------------------------------------------------------------------
# Overlap (§5.1)
# ----------------------------------------------------------------------------------------------


class OverlapCounts(NamedTuple):
  """Per-class pixel counts of one image (or summed over a dataset), each [C] int64."""
  intersection: np.ndarray  # |P_c ∩ G_c|
  pred_size: np.ndarray  # |P_c|
  target_size: np.ndarray  # |G_c|


def overlap_counts(pred: np.ndarray, target: np.ndarray, num_classes: int,
                   ignore_index: int = IGNORE_INDEX) -> OverlapCounts:
  """Counts |P∩G|, |P| and |G| per class over the pixels whose target is not `ignore_index`."""
  pred = np.asarray(pred)
  target = np.asarray(target)
  if pred.shape != target.shape:
    raise ValueError(f'pred shape {pred.shape} != target shape {target.shape}')
  valid = target != ignore_index
  p = pred[valid].astype(np.int64)
  t = target[valid].astype(np.int64)
  for name, labels in (('pred', p), ('target', t)):
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(f'{name} has labels outside [0, {num_classes}) on valid pixels: '
                       f'min {labels.min()}, max {labels.max()}')
  return OverlapCounts(
      intersection=np.bincount(t[p == t], minlength=num_classes),
      pred_size=np.bincount(p, minlength=num_classes),
      target_size=np.bincount(t, minlength=num_classes))


def sum_counts(counts: Iterable[OverlapCounts]) -> OverlapCounts:
  """Dataset totals, for the confusion-matrix ('global') Dice and IoU."""
  counts = list(counts)
  return OverlapCounts(*(np.sum([c[i] for c in counts], axis=0) for i in range(3)))


def dice_iou_from_counts(counts: OverlapCounts,
                         empty: str = 'standard') -> tuple[np.ndarray, np.ndarray]:
  """Dice and IoU per class from counts, with the `metrics.empty` policy for empty classes.

  Args:
    counts: per-class counts of one image or of a whole dataset.
    empty: 'standard' (|P|+|G| = 0 scores 1; |G| = 0 < |P| scores 0), 'present_only' (NaN where
      |G| = 0, so the class is averaged only over images that contain it) or 'nan' (NaN where
      |P|+|G| = 0).

  Returns:
    (dice, iou), each float64 [C]; NaN marks a value to leave out of later means.
  """
  _check_choice('metrics.empty', empty, EMPTY_POLICIES)
  inter = counts.intersection.astype(np.float64)
  target_size = counts.target_size.astype(np.float64)
  total = counts.pred_size + target_size
  union = total - inter
  with np.errstate(invalid='ignore', divide='ignore'):
    dice = 2.0 * inter / total
    iou = inter / union
  both_empty = total == 0
  if empty == 'standard':
    dice[both_empty] = 1.0
    iou[both_empty] = 1.0
  elif empty == 'present_only':
    dice[target_size == 0] = np.nan
    iou[target_size == 0] = np.nan
  # 'nan': 0/0 already gave NaN exactly where |P|+|G| = 0.
  return dice, iou


def dice_iou_per_class(pred: np.ndarray, target: np.ndarray, num_classes: int,
                       ignore_index: int = IGNORE_INDEX,
                       empty: str = 'standard') -> tuple[np.ndarray, np.ndarray]:
  """Per-class Dice and IoU of one image; see `dice_iou_from_counts` for the empty policies.

  Args:
    pred: integer label map, any shape, values in [0, num_classes).
    target: integer label map of the same shape; `ignore_index` pixels are excluded.
    num_classes: C, background included.
    ignore_index: label of pixels that count neither for P nor for G.
    empty: `metrics.empty` policy.

  Returns:
    (dice, iou), each float64 [C].
  """
  return dice_iou_from_counts(overlap_counts(pred, target, num_classes, ignore_index), empty)


# ----------------------------------------------------------------------------------------------
# Surface distances (§5.2)
# ----------------------------------------------------------------------------------------------


def surface(mask: np.ndarray) -> np.ndarray:
  """S(M) = M ∧ ¬erode(M) with the face-connected element (4-conn in 2-D, 6-conn in 3-D).

  Outside the array counts as background (scipy's default border_value=0, as in MedPy), so a
  mask that touches the image edge has surface along that edge.
  """
  mask = np.asarray(mask, dtype=bool)
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _as_spacing(spacing: Optional[Sequence[float]], ndim: int) -> np.ndarray:
  if spacing is None:
    return np.ones(ndim)
  spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (ndim,)).copy()
  if np.any(spacing <= 0):
    raise ValueError(f'spacing must be positive, got {spacing}')
  return spacing


def image_diagonal(shape: Sequence[int], spacing: Optional[Sequence[float]] = None) -> float:
  """Physical extent of the image diagonal: the fill value of `empty_surface='diagonal'`."""
  extent = np.asarray(shape, dtype=np.float64) * _as_spacing(spacing, len(shape))
  return float(np.sqrt(np.sum(extent**2)))


def _distances_to(target_surface: np.ndarray, query_surface: np.ndarray,
                  spacing: np.ndarray) -> np.ndarray:
  """Distance from every query-surface voxel to the nearest target-surface voxel."""
  edt = ndimage.distance_transform_edt(~target_surface, sampling=spacing)
  return edt[query_surface]


def directed_surface_distances(
    pred_mask: np.ndarray, gt_mask: np.ndarray,
    spacing: Optional[Sequence[float]] = None) -> tuple[np.ndarray, np.ndarray]:
  """Directed distances S_P→S_G and S_G→S_P of two non-empty masks, in spacing units.

  Returns:
    (d_pred_to_gt [|S_P|], d_gt_to_pred [|S_G|]).
  """
  pred_mask = np.asarray(pred_mask, dtype=bool)
  gt_mask = np.asarray(gt_mask, dtype=bool)
  if pred_mask.shape != gt_mask.shape:
    raise ValueError(f'pred shape {pred_mask.shape} != gt shape {gt_mask.shape}')
  if not pred_mask.any() or not gt_mask.any():
    raise ValueError('directed_surface_distances needs two non-empty masks')
  spacing = _as_spacing(spacing, pred_mask.ndim)
  s_pred = surface(pred_mask)
  s_gt = surface(gt_mask)
  # Surfaces come from the full image (cropping first would invent surface at the crop edge);
  # the transforms then only need the bounding box of both surfaces, where every nearest
  # surface voxel lies, which is exact and much cheaper for small structures.
  coords = np.nonzero(s_pred | s_gt)
  box = tuple(slice(c.min(), c.max() + 1) for c in coords)
  s_pred, s_gt = s_pred[box], s_gt[box]
  return _distances_to(s_gt, s_pred, spacing), _distances_to(s_pred, s_gt, spacing)


class SurfaceDistances(NamedTuple):
  """HD95 and ASSD of one mask pair, with how empty masks were handled."""
  hd95: float
  assd: float
  status: str  # SURFACE_OK, SURFACE_SKIP or SURFACE_ONE_EMPTY


def surface_distances(pred_mask: np.ndarray, gt_mask: np.ndarray,
                      spacing: Optional[Sequence[float]] = None, hd95_mode: str = 'concat',
                      empty_surface: str = 'nan') -> SurfaceDistances:
  """HD95 and ASSD of one binary mask pair (2-D or N-D).

  Args:
    pred_mask: boolean prediction mask.
    gt_mask: boolean reference mask of the same shape.
    spacing: voxel size per axis (e.g. mm); None measures in pixels.
    hd95_mode: 'concat' is the 95th percentile of S_P→S_G and S_G→S_P pooled (MedPy);
      'max_of_directed' is the larger of the two directed 95th percentiles.
    empty_surface: when exactly one mask is empty, 'nan' returns NaN and 'diagonal' returns the
      image diagonal for both metrics. Two empty masks always give NaN with status 'skip'.

  Returns:
    SurfaceDistances(hd95, assd, status).
  """
  _check_choice('metrics.hd95', hd95_mode, HD95_MODES)
  _check_choice('metrics.empty_surface', empty_surface, EMPTY_SURFACE_POLICIES)
  pred_mask = np.asarray(pred_mask, dtype=bool)
  gt_mask = np.asarray(gt_mask, dtype=bool)
  pred_empty, gt_empty = not pred_mask.any(), not gt_mask.any()
  if pred_empty and gt_empty:
    return SurfaceDistances(math.nan, math.nan, SURFACE_SKIP)
  if pred_empty or gt_empty:
    fill = image_diagonal(pred_mask.shape, spacing) if empty_surface == 'diagonal' else math.nan
    return SurfaceDistances(fill, fill, SURFACE_ONE_EMPTY)
  d_pg, d_gp = directed_surface_distances(pred_mask, gt_mask, spacing)
  if hd95_mode == 'concat':
    hd = np.percentile(np.concatenate([d_pg, d_gp]), 95)
  else:
    hd = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
  return SurfaceDistances(float(hd), float(0.5 * (d_pg.mean() + d_gp.mean())), SURFACE_OK)


def hd95(pred_mask: np.ndarray, gt_mask: np.ndarray,
         spacing: Optional[Sequence[float]] = None, mode: str = 'concat',
         empty_surface: str = 'nan') -> float:
  """95th-percentile Hausdorff distance; see `surface_distances`."""
  return surface_distances(pred_mask, gt_mask, spacing, mode, empty_surface).hd95


def assd(pred_mask: np.ndarray, gt_mask: np.ndarray,
         spacing: Optional[Sequence[float]] = None, empty_surface: str = 'nan') -> float:
  """ASSD = ½(mean S_P→S_G + mean S_G→S_P); see `surface_distances`."""
  return surface_distances(pred_mask, gt_mask, spacing, 'concat', empty_surface).assd


# ----------------------------------------------------------------------------------------------
# Noise identification (§5.3), scored against the noise log
# ----------------------------------------------------------------------------------------------


def _ratio(num, den) -> float:
  return float(num) / float(den) if den else float('nan')


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
  """Area under the ROC curve of `score` for the `positive` samples (ties count one half):
  the Mann–Whitney U over n₊·n₋ from tie-averaged ranks. NaN when a class is missing."""
  score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
  num_pos, num_neg = int(positive.sum()), int((~positive).sum())
  if not num_pos or not num_neg:
    return float('nan')
  ranks = stats.rankdata(score)
  return float((ranks[positive].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def sample_identification_scores(flagged: np.ndarray, is_noisy: np.ndarray,
                                 score: Optional[np.ndarray] = None) -> dict:
  """Accuracy, precision, recall and F1 of the samples a method flags as noisy against the
  noise log's `is_noisy`, and the AUROC of its continuous `score` (higher = more likely noisy).
  All NaN (reported "n/a") where every sample, or none, is noisy: there is nothing to tell
  apart."""
  flagged, is_noisy = np.asarray(flagged, bool), np.asarray(is_noisy, bool)
  if flagged.shape != is_noisy.shape:
    raise ValueError(f'flagged {flagged.shape} and is_noisy {is_noisy.shape} differ in shape')
  nan = float('nan')
  if is_noisy.all() or not is_noisy.any():
    return {'accuracy': nan, 'precision': nan, 'recall': nan, 'f1': nan, 'auroc': nan,
            'num_flagged': int(flagged.sum()), 'num_noisy': int(is_noisy.sum())}
  hits = int((flagged & is_noisy).sum())
  precision, recall = _ratio(hits, flagged.sum()), _ratio(hits, is_noisy.sum())
  f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {'accuracy': float((flagged == is_noisy).mean()), 'precision': precision,
          'recall': recall, 'f1': float(f1),
          'auroc': auroc(score, is_noisy) if score is not None else nan,
          'num_flagged': int(flagged.sum()), 'num_noisy': int(is_noisy.sum())}


def pixel_identification_scores(detected: np.ndarray, clean: np.ndarray,
                                noisy: np.ndarray) -> dict:
  """Precision and recall of detected noisy pixels Ê against E = 1[ỹ ≠ y] on valid pixels
  ([N, H, W] each), micro-averaged over the set and as the mean of per-image values (images
  without a detection or without an error are left out of the respective per-image mean)."""
  valid = np.asarray(clean) != IGNORE_INDEX
  truth = (np.asarray(noisy) != np.asarray(clean)) & valid
  detected = np.asarray(detected, bool) & valid
  axes = tuple(range(1, truth.ndim))
  hits = (detected & truth).sum(axis=axes)
  num_detected, num_true = detected.sum(axis=axes), truth.sum(axis=axes)
  with np.errstate(invalid='ignore', divide='ignore'):
    per_precision = np.where(num_detected > 0, hits / np.maximum(num_detected, 1), np.nan)
    per_recall = np.where(num_true > 0, hits / np.maximum(num_true, 1), np.nan)
  return {'precision': _ratio(hits.sum(), num_detected.sum()),
          'recall': _ratio(hits.sum(), num_true.sum()),
          'precision_per_image': float(_nanmean(per_precision)),
          'recall_per_image': float(_nanmean(per_recall))}


def revised_label_quality(revised: np.ndarray, noisy: np.ndarray, clean: np.ndarray,
                          num_classes: int) -> dict:
  """Per foreground class, Dice over the whole set of the revised labels ŷ and of the noisy
  ones ỹ against the clean y (pixels ignored in y excluded; unlabelled pixels of a weak label
  count as background), and the error reduction
  1 − (1 − Dice(ŷ, y)) / (1 − Dice(ỹ, y)) (NaN where ỹ was already perfect)."""
  def set_dice(labels):
    labels = np.where(labels == IGNORE_INDEX, 0, labels)  # unlabelled (scribbles): not foreground
    counts = sum_counts(overlap_counts(p, t, num_classes) for p, t in zip(labels, clean))
    with np.errstate(invalid='ignore', divide='ignore'):
      dice = 2 * counts.intersection / (counts.pred_size + counts.target_size)
    return dice[1:]

  after, before = set_dice(np.asarray(revised)), set_dice(np.asarray(noisy))
  with np.errstate(invalid='ignore', divide='ignore'):
    reduction = np.where(before < 1, 1 - (1 - after) / (1 - before), np.nan)
  return {'dice_before': before.tolist(), 'dice_after': after.tolist(),
          'error_reduction': reduction.tolist()}


# ----------------------------------------------------------------------------------------------
# Dataset accumulator
# ----------------------------------------------------------------------------------------------


def json_safe(value):
  """Nested lists/dicts of python scalars, with NaN and ±inf as None (strict JSON has neither)."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, np.ndarray):
    return json_safe(value.tolist())
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


class SegmentationMetrics:
  """Accumulates per-image Dice, IoU, HD95 and ASSD over batches; `summary()` reports them.

  Means are taken per class first (over images, NaN excluded) and then over the evaluated classes,
  i.e. mDice/mIoU as in the JCAS tables. Per-image values are means over the evaluated classes.

  Ignore pixels are removed from the prediction mask as well as from the reference before the
  surface is taken, so both masks see the same region.
  """

  def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX,
               include_bg: bool = False, empty: str = 'standard', agg: str = 'per_image',
               hd95_mode: str = 'concat', empty_surface: str = 'nan',
               spacing: Optional[Sequence[float]] = None, with_surface: bool = True):
    """Configures the metrics.

    Args:
      num_classes: C, background (class 0) included.
      ignore_index: target label excluded from every metric.
      include_bg: also evaluate class 0 (`metrics.include_bg`).
      empty: `metrics.empty` policy for Dice/IoU.
      agg: `metrics.agg`; 'per_image' averages per-image scores, 'global' sums intersections
        and unions over the dataset first. Per-image lists are reported either way.
      hd95_mode: `metrics.hd95`.
      empty_surface: `metrics.empty_surface`.
      spacing: default voxel size per axis; None measures surface distances in pixels.
      with_surface: compute HD95/ASSD (the costly part); False reports them as None.
    """
    _check_choice('metrics.empty', empty, EMPTY_POLICIES)
    _check_choice('metrics.agg', agg, AGG_MODES)
    _check_choice('metrics.hd95', hd95_mode, HD95_MODES)
    _check_choice('metrics.empty_surface', empty_surface, EMPTY_SURFACE_POLICIES)
    if num_classes < 2 and not include_bg:
      raise ConfigError(f'num_classes={num_classes} leaves no foreground class to evaluate')
    self.num_classes = num_classes
    self.ignore_index = ignore_index
    self.include_bg = include_bg
    self.empty = empty
    self.agg = agg
    self.hd95_mode = hd95_mode
    self.empty_surface = empty_surface
    self.spacing = spacing
    self.with_surface = with_surface
    self.classes = list(range(0 if include_bg else 1, num_classes))
    self.reset()

  def reset(self) -> None:
    self._counts: list[OverlapCounts] = []
    self._dice: list[np.ndarray] = []  # each [K] over self.classes
    self._iou: list[np.ndarray] = []
    self._hd95: list[np.ndarray] = []
    self._assd: list[np.ndarray] = []
    self._surface_status: dict[str, int] = {SURFACE_OK: 0, SURFACE_SKIP: 0, SURFACE_ONE_EMPTY: 0}

  @property
  def num_images(self) -> int:
    return len(self._counts)

  def update(self, pred: np.ndarray, target: np.ndarray,
             spacing: Optional[Sequence[float]] = None) -> None:
    """Adds a batch.

    Args:
      pred: integer label maps [B, *spatial] (e.g. [B, H, W]); argmax of the logits.
      target: integer label maps of the same shape, `ignore_index` for unlabelled pixels.
      spacing: voxel size for this batch; falls back to the constructor's spacing.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
      raise ValueError(f'pred shape {pred.shape} != target shape {target.shape}')
    if pred.ndim < 2:
      raise ValueError(f'expected batched label maps [B, *spatial], got shape {pred.shape}')
    spacing = self.spacing if spacing is None else spacing
    for p, t in zip(pred, target):
      self._add_image(p, t, spacing)

  def _add_image(self, pred: np.ndarray, target: np.ndarray, spacing) -> None:
    counts = overlap_counts(pred, target, self.num_classes, self.ignore_index)
    dice, iou = dice_iou_from_counts(counts, self.empty)
    self._counts.append(counts)
    self._dice.append(dice[self.classes])
    self._iou.append(iou[self.classes])
    if not self.with_surface:
      return
    valid = target != self.ignore_index
    hd = np.full(len(self.classes), np.nan)
    sd = np.full(len(self.classes), np.nan)
    for k, c in enumerate(self.classes):
      result = surface_distances((pred == c) & valid, target == c, spacing, self.hd95_mode,
                                 self.empty_surface)
      hd[k], sd[k] = result.hd95, result.assd
      self._surface_status[result.status] += 1
    self._hd95.append(hd)
    self._assd.append(sd)

  def _stack(self, rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows) if rows else np.full((0, len(self.classes)), np.nan)

  def _per_class_overlap(self) -> tuple[np.ndarray, np.ndarray]:
    if self.agg == 'global' and self._counts:
      dice, iou = dice_iou_from_counts(sum_counts(self._counts), self.empty)
      return dice[self.classes], iou[self.classes]
    return _nanmean(self._stack(self._dice), axis=0), _nanmean(self._stack(self._iou), axis=0)

  def summary(self) -> dict:
    """JSON-serialisable report; NaN (nothing to average) becomes None.

    Returns:
      {'dice', 'iou', 'hd95', 'assd': means over the evaluated classes,
       'per_class': {metric: [K] aligned with 'classes'},
       'per_image': {metric: [N] means over the evaluated classes},
       'classes', 'num_images', 'surface_nan_count' (one-empty pairs left as NaN),
       'surface_one_empty_count', 'surface_skip_count', 'settings'}.
    """
    per_class = dict(zip(('dice', 'iou'), self._per_class_overlap()))
    per_image = {'dice': _nanmean(self._stack(self._dice), axis=1),
                 'iou': _nanmean(self._stack(self._iou), axis=1)}
    for name, rows in (('hd95', self._hd95), ('assd', self._assd)):
      if self.with_surface:
        per_class[name] = _nanmean(self._stack(rows), axis=0)
        per_image[name] = _nanmean(self._stack(rows), axis=1)
      else:
        per_class[name] = np.full(len(self.classes), np.nan)
        per_image[name] = np.full(self.num_images, np.nan)
    one_empty = self._surface_status[SURFACE_ONE_EMPTY]
    report = {name: _nanmean(values) for name, values in per_class.items()}
    report.update({
        'per_class': per_class,
        'per_image': per_image,
        'classes': self.classes,
        'num_images': self.num_images,
        'surface_nan_count': one_empty if self.empty_surface == 'nan' else 0,
        'surface_one_empty_count': one_empty,
        'surface_skip_count': self._surface_status[SURFACE_SKIP],
        'settings': {
            'empty': self.empty, 'agg': self.agg, 'include_bg': self.include_bg,
            'hd95_mode': self.hd95_mode, 'empty_surface': self.empty_surface,
            'with_surface': self.with_surface, 'ignore_index': self.ignore_index,
        },
    })
    return json_safe(report)


def summarize(pred: np.ndarray, target: np.ndarray, num_classes: int, *, surface: bool = True,
              **kwargs) -> dict:
  """One-shot `SegmentationMetrics` summary of whole-split arrays.

  Args:
    pred: integer label maps [N, *spatial].
    target: integer label maps [N, *spatial], `ignore_index` for unlabelled pixels.
    num_classes: C, background included.
    surface: compute HD95/ASSD (False for cheap validation passes).
    **kwargs: any other `SegmentationMetrics` constructor argument (empty, agg, include_bg,
      hd95_mode, empty_surface, spacing, ignore_index).

  Returns:
    `SegmentationMetrics.summary()`.
  """
  metrics = SegmentationMetrics(num_classes, with_surface=surface, **kwargs)
  metrics.update(pred, target)
  return metrics.summary()
