"""PNL's quality-awareness module: a VGG-16-BN scorer of (image, label) pairs, in Flax Linen.

Used by DES's image-level robust learning (METHODS.md §3.2, `des.image_weight='qam'`): it reads
concat(image, one-hot label) and returns one unnormalised quality score per image. The layout is
VGG-16-BN's thirteen 3×3 conv + BatchNorm + ReLU layers in five max-pooled stages, then global
average pooling and one dense unit; `width` scales every stage (64 = VGG-16's 64…512 channels).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# VGG-16 convolutions per stage, as multiples of the first stage's width.
VGG16_STAGES = ((1, 1), (2, 2), (4, 4, 4), (8, 8, 8), (8, 8, 8))


class QualityAwarenessModule(nn.Module):
  """(B, H, W, C_in) → (B,) quality scores g; H and W must be divisible by 32."""
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    for stage in VGG16_STAGES:
      for multiple in stage:
        x = nn.Conv(self.width * multiple, (3, 3), use_bias=False, dtype=self.dtype)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)
