"""DeepLab-v2 dilated ResNet with JCAS's two branches (METHODS.md §3.1), in Flax Linen.

Output stride 8: the stride sits in the first 1×1 conv of a bottleneck (Caffe style), layer3 runs
at dilation 2 and layer4 at dilation 4, and the stem's 3×3/2 max-pool uses PyTorch's ceil mode, so
a 256×320 input gives 33×41 head outputs as in the reference. Each branch has a class head and an
embedding head, both DeepLab-v2 "classifier modules": parallel 3×3 convs with the given dilations,
with bias, summed. The auxiliary branch reads layer3, the main branch layer4.

`__call__(x, train)` returns the main branch's logits resized (bilinear, align_corners) to the
input size, so every method can use this backbone like the U-Net; `heads=True` returns the raw
head outputs at stride 8, {'logits': (aux, main), 'embeddings': (aux, main)}, for JCAS.

Trained from scratch by default (no download is possible); `load_weights` copies a user-supplied
.npz of named arrays into the parameters by name and shape.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nsegjax.resize import resize_bilinear

# depth → (block kind, blocks per layer)
LAYOUTS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
}
# layer → (stride, dilation); output stride 8.
_LAYER_GEOMETRY = ((1, 1), (2, 1), (1, 2), (1, 4))
_WIDTHS = (64, 128, 256, 512)

# The reference initialises every conv weight ~ N(0, 0.01).
conv_init = nn.initializers.normal(0.01)


def ceil_mode_padding(size: int, window: int, stride: int, pad: int) -> tuple[int, int]:
  """(low, high) padding that makes a pool over `size` give PyTorch's ceil_mode output length."""
  out = math.ceil((size + 2 * pad - window) / stride) + 1
  if (out - 1) * stride >= size + pad:  # PyTorch drops a last window that starts in the padding.
    out -= 1
  return pad, (out - 1) * stride + window - size - pad


def _bn(name: str, train: bool, dtype) -> nn.BatchNorm:
  """PyTorch momentum 0.1 = Flax 0.9."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """Two 3×3 convs (ResNet-18/34); the stride in the first, dilation in both."""
  features: int
  stride: int = 1
  dilation: int = 1
  project: bool = False  # 1×1 projection shortcut
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, d, name: nn.Conv(  # noqa: E731
        f, (k, k), (s, s), kernel_dilation=(d, d), padding=d * (k // 2), use_bias=False,
        kernel_init=conv_init, dtype=self.dtype, name=name)
    y = nn.relu(_bn('bn1', train, self.dtype)(
        conv(self.features, 3, self.stride, self.dilation, 'conv1')(x)))
    y = _bn('bn2', train, self.dtype)(conv(self.features, 3, 1, self.dilation, 'conv2')(y))
    return nn.relu(y + _shortcut(x, self.features, self.project, self.stride, train, self.dtype))


class Bottleneck(nn.Module):
  """1×1 (stride) → 3×3 (dilation) → 1×1 ×4, DeepLab-v2's Caffe-style bottleneck."""
  features: int
  stride: int = 1
  dilation: int = 1
  project: bool = False  # 1×1 projection shortcut
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    def conv(f, k, s, d, name):
      return nn.Conv(f, (k, k), (s, s), kernel_dilation=(d, d), padding=d * (k // 2),
                     use_bias=False, kernel_init=conv_init, dtype=self.dtype, name=name)
    y = nn.relu(_bn('bn1', train, self.dtype)(conv(self.features, 1, self.stride, 1, 'conv1')(x)))
    y = nn.relu(_bn('bn2', train, self.dtype)(
        conv(self.features, 3, 1, self.dilation, 'conv2')(y)))
    y = _bn('bn3', train, self.dtype)(conv(self.features * 4, 1, 1, 1, 'conv3')(y))
    return nn.relu(y + _shortcut(x, self.features * 4, self.project, self.stride, train,
                                 self.dtype))


def _shortcut(x, features: int, project: bool, stride: int, train: bool, dtype):
  """Identity, or the 1×1 conv + BN projection of a layer's first block."""
  if not project:
    return x
  y = nn.Conv(features, (1, 1), (stride, stride), use_bias=False, kernel_init=conv_init,
              dtype=dtype, name='downsample_conv')(x)
  return _bn('downsample_bn', train, dtype)(y)


class ClassifierModule(nn.Module):
  """Sum of parallel 3×3 convs with bias at the given dilations (DeepLab-v2 ASPP-style head)."""
  features: int
  dilations: Sequence[int] = (6, 12)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    outputs = [nn.Conv(self.features, (3, 3), kernel_dilation=(d, d), padding=d,
                       kernel_init=conv_init, dtype=self.dtype, name=f'conv_d{d}')(x)
               for d in self.dilations]
    return sum(outputs).astype(jnp.float32)


class DilatedResNet(nn.Module):
  """DeepLab-v2 ResNet (output stride 8) with an auxiliary (layer3) and a main (layer4) branch.

  Attributes:
    num_classes: class-head outputs C.
    depth: 18, 34, 50 or 101.
    aux_embedding_dim / embedding_dim: widths of the layer3 / layer4 embedding heads (JCAS: 128,
      256).
    head_dilations: the classifier modules' dilations; JCAS's forward uses (6, 12).
    width_multiplier: scales every layer's width (e.g. 0.25 for quick CPU runs); 1 = standard.
  """
  num_classes: int
  depth: int = 101
  aux_embedding_dim: int = 128
  embedding_dim: int = 256
  head_dilations: Sequence[int] = (6, 12)
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  def setup(self):
    if self.depth not in LAYOUTS:
      raise ValueError(f'DilatedResNet depth must be one of {sorted(LAYOUTS)}, got {self.depth}')

  @nn.compact
  def __call__(self, x, train: bool = False, heads: bool = False):
    size = x.shape[1:3]
    kind, counts = LAYOUTS[self.depth]
    block = BasicBlock if kind == 'basic' else Bottleneck
    width = lambda w: max(int(round(w * self.width_multiplier)), 1)  # noqa: E731
    x = x.astype(self.dtype)
    x = nn.Conv(width(64), (7, 7), (2, 2), padding=3, use_bias=False, kernel_init=conv_init,
                dtype=self.dtype, name='conv1')(x)
    x = nn.relu(_bn('bn1', train, self.dtype)(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=[ceil_mode_padding(s, 3, 2, 1) for s in x.shape[1:3]])
    features = []
    for layer, (count, base, (stride, dilation)) in enumerate(
        zip(counts, _WIDTHS, _LAYER_GEOMETRY), start=1):
      for index in range(count):
        # DeepLab-v2 projects the shortcut of a layer's first block whenever the stride or width
        # changes, or the layer is dilated (layer3, layer4).
        first = index == 0
        project = first and (stride != 1 or dilation in (2, 4)
                             or x.shape[-1] != width(base) * block.expansion)
        x = block(width(base), stride if first else 1, dilation, project, self.dtype,
                  name=f'layer{layer}_{index}')(x, train)
      features.append(x)
    layer3, layer4 = features[2], features[3]
    head = lambda f, name: ClassifierModule(f, tuple(self.head_dilations), self.dtype,  # noqa: E731
                                            name=name)
    logits = (head(self.num_classes, 'aux_class_head')(layer3),
              head(self.num_classes, 'class_head')(layer4))
    if not (heads or self.is_initializing()):  # init creates every head's parameters
      return resize_bilinear(logits[1], size)
    embeddings = (head(self.aux_embedding_dim, 'aux_embedding_head')(layer3),
                  head(self.embedding_dim, 'embedding_head')(layer4))
    if not heads:
      return resize_bilinear(logits[1], size)
    return {'logits': logits, 'embeddings': embeddings}


def frozen_stem_and_early_layers(path: tuple[str, ...]) -> bool:
  """JCAS never updates conv1/bn1 and layer1–layer2 (sensible only with pretrained weights)."""
  return bool(path) and (path[0] in ('conv1', 'bn1') or path[0].startswith(('layer1_', 'layer2_')))


def is_batchnorm_affine(path: tuple[str, ...]) -> bool:
  """BatchNorm γ/β, which JCAS keeps frozen (running statistics still update)."""
  return len(path) >= 2 and 'bn' in path[-2] and path[-1] in ('scale', 'bias')


def param_paths(params) -> list[tuple[str, ...]]:
  return [tuple(getattr(k, 'key', str(k)) for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
