"""HQPM's noise identification network (METHODS.md §3.4): one U-Net encoder, three decoders.

Input: the image concatenated with the one-hot imperfect mask (and, for scribbles, the "known"
channel). Each decoder has its own skips from the shared encoder and ends in one logit per pixel
(sigmoid outside): over-annotation, under-annotation and the refined mask (`fp_fn_ref`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from nsegjax.models.unet import ConvBlock

BRANCHES = ('fp', 'fn', 'ref')


class Decoder(nn.Module):
  depth: int
  base_width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, skips, train: bool):
    for level in reversed(range(self.depth)):
      width = self.base_width * 2**level
      x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), dtype=self.dtype)(x)
      x = ConvBlock(width, self.dtype)(jnp.concatenate([skips[level], x], axis=-1), train)
    return nn.Conv(1, (1, 1), dtype=self.dtype)(x)[..., 0].astype(jnp.float32)


class NoiseIdentificationNet(nn.Module):
  """Returns {branch: [B, H, W] logits} for the branches of `BRANCHES`."""
  depth: int = 4
  base_width: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if any(s % 2**self.depth for s in x.shape[1:3]):
      raise ValueError(f'NIN of depth {self.depth} needs H and W divisible by '
                       f'{2**self.depth}, got {x.shape[1:3]}')
    x = x.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      x = ConvBlock(self.base_width * 2**level, self.dtype, name=f'encoder_{level}')(x, train)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = ConvBlock(self.base_width * 2**self.depth, self.dtype, name='bottleneck')(x, train)
    return {b: Decoder(self.depth, self.base_width, self.dtype, name=f'decoder_{b}')(
        x, skips, train) for b in BRANCHES}
