"""Qualitative figures: image | clean label | noisy label | prediction, one row per sample.

Drawn on a bare `matplotlib.figure.Figure` and saved through the Agg canvas, so no display and
no pyplot global state are touched (safe on headless training hosts and in threads).
"""
import os
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

IGNORE_INDEX = 255


def class_colours(num_classes: int) -> np.ndarray:
  """Distinct RGB colours in [0, 1], [num_classes, 3]; row 0 (background) is never drawn."""
  cmap = colormaps['tab10' if num_classes <= 10 else 'tab20']
  return np.asarray([cmap(c % cmap.N)[:3] for c in range(num_classes)])


def to_rgb_float(image: np.ndarray) -> np.ndarray:
  """[H, W, C] with C = 1 or 3 (or [H, W]) as float RGB in [0, 1].

  uint8 images are divided by 255; other dtypes are min-max scaled, since normalised network
  inputs have no fixed range.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] not in (1, 3):
    raise ValueError(f'expected 1 or 3 channels, got image shape {image.shape}')
  if image.dtype == np.uint8:
    rgb = image.astype(np.float64) / 255.0
  else:
    rgb = image.astype(np.float64)
    lo, hi = rgb.min(), rgb.max()
    rgb = (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)
  return np.broadcast_to(rgb, rgb.shape[:2] + (3,)).copy()


def overlay_mask(image_rgb: np.ndarray, mask: np.ndarray, colours: np.ndarray,
                 alpha: float = 0.45, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
  """Blends foreground classes over the image; ignore pixels are washed out towards white."""
  out = image_rgb.copy()
  for c in range(1, len(colours)):
    region = mask == c
    out[region] = (1 - alpha) * out[region] + alpha * colours[c]
  ignored = mask == ignore_index
  out[ignored] = 0.5 * out[ignored] + 0.5
  return out


def _draw_mask(ax, image_rgb, mask, colours, ignore_index) -> None:
  ax.imshow(overlay_mask(image_rgb, mask, colours, ignore_index=ignore_index),
            interpolation='nearest')
  # Contours keep thin structures and boundary disagreements visible where the fill is faint.
  for c in range(1, len(colours)):
    region = mask == c
    if region.any() and not region.all():
      ax.contour(region.astype(np.float32), levels=[0.5], colors=[colours[c]], linewidths=0.8)


def overlay_figure(images: np.ndarray, clean: Optional[np.ndarray], noisy: Optional[np.ndarray],
                   pred: Optional[np.ndarray], path: str, max_rows: int = 6,
                   num_classes: Optional[int] = None, ignore_index: int = IGNORE_INDEX,
                   titles: Sequence[str] = ('image', 'clean', 'noisy', 'prediction'),
                   dpi: int = 100) -> str:
  """Writes a PNG grid: columns image | clean | noisy | prediction, one row per sample.

  Args:
    images: [B, H, W, C] with C = 1 or 3, uint8 (or float, min-max scaled per image).
    clean: [B, H, W] int clean labels; None leaves the column out (same for noisy, pred).
    noisy: [B, H, W] int noisy or weak labels.
    pred: [B, H, W] int predicted labels.
    path: output PNG path; missing parent folders are created.
    max_rows: at most this many samples (the first ones) are drawn.
    num_classes: C for the colour table; inferred from the masks when None.
    ignore_index: label drawn washed out rather than as a class.
    titles: column titles, in the order image, clean, noisy, prediction.
    dpi: resolution of the saved PNG.

  Returns:
    path.
  """
  images = np.asarray(images)
  columns = [(titles[0], None)]
  for title, masks in zip(titles[1:], (clean, noisy, pred)):
    if masks is not None:
      masks = np.asarray(masks)
      if masks.shape[:3] != images.shape[:3]:
        raise ValueError(f'{title} masks {masks.shape} do not match images {images.shape}')
      columns.append((title, masks))
  if num_classes is None:
    labels = [m[m != ignore_index] for _, m in columns[1:]]
    num_classes = max([int(l.max()) + 1 for l in labels if l.size] + [2])
  colours = class_colours(num_classes)

  rows = max(1, min(max_rows, len(images)))
  height, width = images.shape[1:3]
  cell = 2.2
  fig = Figure(figsize=(cell * len(columns), cell * rows * height / width + 0.3))
  axes = fig.subplots(rows, len(columns), squeeze=False)
  for r in range(rows):
    rgb = to_rgb_float(images[r])
    for col, (title, masks) in enumerate(columns):
      ax = axes[r, col]
      if masks is None:
        ax.imshow(rgb, interpolation='nearest')
      else:
        _draw_mask(ax, rgb, masks[r], colours, ignore_index)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(title, fontsize=9)
  fig.tight_layout(pad=0.3)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format='png', dpi=dpi)
  return path


def transition_figure(matrices: dict, class_names: Sequence[str], path: str) -> str:
  """Heatmaps of K×K transition matrices side by side (rows clean, columns noisy), values
  printed in each cell; `None` entries are skipped. Returns the path of the written PNG."""
  matrices = {title: np.asarray(m) for title, m in matrices.items() if m is not None}
  fig = Figure(figsize=(4.2 * len(matrices), 4.0))
  for i, (title, matrix) in enumerate(matrices.items()):
    ax = fig.add_subplot(1, len(matrices), i + 1)
    ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap='viridis')
    for (row, col), value in np.ndenumerate(matrix):
      ax.text(col, row, f'{value:.2f}', ha='center', va='center',
              color='black' if value > 0.5 else 'white', fontsize=8)
    ticks = range(matrix.shape[0])
    names = list(class_names)[:matrix.shape[0]]
    ax.set_xticks(ticks, names, rotation=45, ha='right')
    ax.set_yticks(ticks, names)
    ax.set_xlabel('noisy')
    ax.set_ylabel('clean')
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path
