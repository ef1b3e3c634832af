"""nsegjax: medical image segmentation learned from noisy or weak labels, in JAX."""

__version__ = '0.1.0'
