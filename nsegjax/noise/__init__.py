"""Label-noise and weak-label simulators (METHODS.md §2), found by name in `PROTOCOLS`.

A protocol is a `NoiseProtocol`: a per-sample JAX `corrupt` function plus the host-side pieces the
generator needs (parameter checking, the choice of the noisy subset, the noise-log description).
`nsegjax.noise.generate` runs any registered protocol over a dataset, so a new simulator (pixel
flips, ellipses, radius / edge, ADELE, polygons, boxes and scribbles, raters) only has to register
one entry here.

Protocols:
- 'none': identity, every sample clean. Accepts no parameters.
- 'abn': α/β dilate / erode / affine (§2.3); parameters and defaults in `abn.DEFAULT_PARAMS`.
- 'flip' (§2.1), 'ellipse' (§2.2), 'radius' (§2.4), 'adele' (§2.5), 'polygon' and 'mstfal' (§2.7),
  'box', 'coarse_polygon' and 'scribble' (§2.8 weak labels). Each module's DEFAULT_PARAMS
  lists its keys.
- 'rater' (§2.9): real multi-annotator noise. Its labels are read from the dataset's rater masks
  (`NoiseProtocol.from_dataset`, run by `generate.apply_dataset_noise`), not drawn from a clean
  mask; see `rater.DEFAULT_PARAMS`.
"""
from nsegjax.noise.base import (PROTOCOLS, NoiseProtocol, alpha_subset, dataset_rng,
                                protocol_id, register)
# Importing a protocol module registers its protocols.
from nsegjax.noise import (identity, abn, flips, ellipse, polygon, weak_shapes, radius, adele,  # pylint: disable=g-bad-import-order
                           scribble, rater)


def simulated_protocols() -> list[str]:
  """Names of the protocols that corrupt a clean mask (every one but the dataset-sourced)."""
  return [name for name in PROTOCOLS.names() if PROTOCOLS.get(name).from_dataset is None]
