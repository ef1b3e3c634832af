"""The U-Net every 2-D baseline shares (Ronneberger et al. 2015), in Flax Linen."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

UPSAMPLE_CHOICES = ('matmul', 'conv_transpose')


class ConvBlock(nn.Module):
  """Two 3×3 conv + BatchNorm + ReLU."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    for _ in range(2):
      x = nn.Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
      x = nn.relu(x)
    return x


class Upsample2x(nn.Module):
  """`nn.ConvTranspose(features, (2, 2), strides=(2, 2))` computed as one matmul and a
  reshape: the same parameters (kernel [2, 2, in, out], bias), initial values and outputs. The
  2×2 stride-2 windows do not overlap, so each input pixel fills its own 2×2 output block; the
  transposed convolution's kernel runs flipped, hence `kernel[::-1, ::-1]`."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (2, 2, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    batch, height, width, _ = x.shape
    y = jnp.einsum('bhwc,pqco->bhpwqo', x, kernel[::-1, ::-1])
    return y.reshape(batch, 2 * height, 2 * width, self.features) + bias


class UNet(nn.Module):
  """U-Net: `depth` 2×2 max-pool levels, widths base_width·2^level.

  Returns per-pixel class logits [B, H, W, num_classes] in float32 whatever the
  compute dtype, so losses are always computed in full precision. With
  `embedding_dim` > 0 it also has a 3×3 conv embedding head on the last decoder
  features, and `heads=True` returns the one branch in the format of
  `DilatedResNet`: {'logits': (logits,), 'embeddings': (embedding,)} (JCAS).
  """
  num_classes: int
  depth: int = 4
  base_width: int = 16
  dropout: float = 0.0
  embedding_dim: int = 0
  # matmul: the decoder's 2×2 up-convolutions as `Upsample2x` (same parameters and outputs;
  # XLA:CPU runs the strided transposed convolution much slower) | conv_transpose
  upsample: str = 'matmul'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, heads: bool = False,
               dropout_on: bool | None = None):
    """`dropout_on` (default: `train`) lets Monte-Carlo dropout run with BatchNorm in eval mode
    (DES's uncertainty passes)."""
    deterministic = not (train if dropout_on is None else dropout_on)
    if self.upsample not in UPSAMPLE_CHOICES:
      raise ValueError(f'unknown model.upsample {self.upsample!r}; valid choices: '
                       f'{", ".join(UPSAMPLE_CHOICES)}')
    if any(s % 2**self.depth for s in x.shape[1:3]):
      raise ValueError(f'U-Net of depth {self.depth} needs H and W divisible by '
                       f'{2**self.depth}, got {x.shape[1:3]}')
    x = x.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      x = ConvBlock(self.base_width * 2**level, self.dtype)(x, train)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = ConvBlock(self.base_width * 2**self.depth, self.dtype)(x, train)
    x = nn.Dropout(self.dropout, deterministic=deterministic)(x)
    for level in reversed(range(self.depth)):
      width = self.base_width * 2**level
      name = f'ConvTranspose_{self.depth - 1 - level}'  # one parameter tree for both choices
      if self.upsample == 'matmul':
        x = Upsample2x(width, self.dtype, name=name)(x)
      else:
        x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), dtype=self.dtype, name=name)(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = ConvBlock(width, self.dtype)(x, train)
    features = x
    x = nn.Dropout(self.dropout, deterministic=deterministic)(x)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x).astype(jnp.float32)
    if heads and self.embedding_dim <= 0:
      raise ValueError('U-Net heads=True needs model.embedding_dim > 0')
    if not (heads or (self.embedding_dim > 0 and self.is_initializing())):
      return logits
    embedding = nn.Conv(self.embedding_dim, (3, 3), dtype=self.dtype,
                        name='embedding_head')(features).astype(jnp.float32)
    if not heads:
      return logits
    return {'logits': (logits,), 'embeddings': (embedding,)}
