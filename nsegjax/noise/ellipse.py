"""Ellipse replacement (JCAS, METHODS.md §2.2), as pure JAX on one sample.

Every 8-connected component of every foreground class with at least `min_area` pixels becomes
the filled ellipse of its second moments: centred on the centroid, semi-axes scale·2√λ₁ and
scale·2√λ₂ along the eigenvectors of the pixel-coordinate covariance (a filled ellipse with
semi-axes a, b has variances a²/4, b²/4, so scale = 1 reproduces an elliptical component).
Classes are painted in ascending order. The draw is deterministic: the key is unused.

Deviations: each eigenvalue gets +1/12 (the variance of a unit pixel square, see
`geometry.covariance_ellipse`), which keeps one-pixel-wide components from collapsing to an empty
ellipse and is negligible for large ones. At most `max_components` components per class (the
largest) are replaced; the others stay as they are and are counted in the log ('dropped').
"""
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nsegjax.errors import ConfigError
from nsegjax.noise import geometry
from nsegjax.noise.base import NoiseProtocol, alpha_subset, register

NAME = 'ellipse'

DEFAULT_PARAMS: dict[str, Any] = {
    'alpha': 1.0,  # fraction of images corrupted; JCAS corrupts every training image
    'scale': 1.0,  # semi-axes = scale · 2√λ
    'min_area': 10,  # components with fewer pixels stay unchanged
    'connectivity': 8,  # 4 | 8
    'max_components': 16,  # per class; the largest are replaced, the rest stay unchanged
    'num_classes': None,  # None: inferred from the clean masks (largest label + 1, at least 2)
}


def _ellipses(scale: float):
  """The `replace` callback of `geometry.replace_components` for moment ellipses."""

  def replace(key, ids, moments, selected):
    del key
    semi_axes, angle = geometry.covariance_ellipse(moments.covariance, scale)
    shapes = jax.vmap(geometry.fill_ellipse, in_axes=(None, 0, 0, 0))(
        ids.shape, moments.centroid, semi_axes, angle)
    union = jnp.any(shapes & selected[:, None, None], axis=0)
    # The largest component's ellipse, as a readable summary of the class in the log.
    return union, {'semi_axes': semi_axes[0], 'angle': jnp.rad2deg(angle[0])}

  return replace


def corrupt(key: jax.Array, mask: jax.Array, *, scale: float = 1.0, min_area: int = 10,
            connectivity: int = 8, max_components: int = 16, num_classes: int = 2
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Replaces the components of one label map by their moment ellipses.

  Args:
    key: per-sample PRNG key (unused: the protocol is deterministic).
    mask: (H, W) class map, 255 = ignore (never modified).
    scale, min_area, connectivity, max_components: see `DEFAULT_PARAMS`; static.
    num_classes: K including background.

  Returns:
    (noisy mask, log): the `geometry.replace_components` log plus per class 'semi_axes' (2,)
    and 'angle' (degrees) of the largest component's ellipse.
  """
  if mask.ndim != 2:
    raise ConfigError(f'{NAME}.corrupt expects one (H, W) mask, got shape {mask.shape}')
  return geometry.replace_components(
      key, mask, _ellipses(float(scale)), num_classes=num_classes, connectivity=connectivity,
      max_components=max_components, min_area=min_area)


def resolve_params(params: Mapping[str, Any], max_label: int) -> dict[str, Any]:
  """Defaults filled in and every value checked; ConfigError on an unknown key or bad value."""
  resolved = geometry.resolve_common(NAME, params, DEFAULT_PARAMS, max_label)
  resolved['scale'] = geometry.as_number(NAME, 'scale', resolved['scale'], 0.0)
  if resolved['scale'] <= 0:
    raise ConfigError(f'{NAME}: scale must be > 0, got {resolved["scale"]}')
  return resolved


def describe(log: Mapping[str, np.ndarray], params: Mapping[str, Any]
             ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
  """('ellipse' | 'empty' | 'too_small', settings, per-class entries)."""
  settings = {'scale': params['scale'], 'min_area': params['min_area']}
  classes = geometry.class_entries(log, ('semi_axes', 'angle'), NAME, settings)
  status = geometry.STATUS_NAMES[int(log['status'])]
  return (NAME if status == 'ok' else status), settings, classes


PROTOCOL = register(NoiseProtocol(
    name=NAME,
    version=1,
    corrupt=lambda key, mask, params: corrupt(
        key, mask, **{k: v for k, v in params.items() if k != 'alpha'}),
    select_noisy=lambda seed, num_samples, params: alpha_subset(seed, num_samples,
                                                                params['alpha'], NAME),
    resolve_params=resolve_params,
    describe=describe,
    default_params=MappingProxyType(DEFAULT_PARAMS),
))
