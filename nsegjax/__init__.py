"""nsegjax: medical image segmentation learned from noisy or weak labels, in JAX."""
import os

__version__ = '0.1.0'

# XLA:CPU hands convolutions to YNNPACK by default; the U-Net's 3×3 convolutions, above all
# their weight gradients, take ~2.5× as long there as on Eigen (`python -m launch.bench
# --profile`), so a train step is ~1.4× faster on Eigen (YNNPACK keeps the matmuls). This only
# fills in a default: a user's own `xla_cpu_experimental_ynn_fusion_type` is kept, and it has
# no effect once JAX has started a backend, or on GPU/TPU.
_YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
_xla_flags = os.environ.get('XLA_FLAGS', '')
if _YNN_FLAG not in _xla_flags:
  os.environ['XLA_FLAGS'] = f'{_xla_flags} {_YNN_FLAG}=-individual_convolution'.strip()
