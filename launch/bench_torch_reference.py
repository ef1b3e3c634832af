"""The default U-Net train step in PyTorch eager, for comparing `launch.bench` against.

Not part of nsegjax and not in requirements.txt: run it from any environment that has PyTorch
(CPU wheel: `pip install torch --index-url https://download.pytorch.org/whl/cpu`):

  python launch/bench_torch_reference.py [--size 128 --batch 8 --channels 1 --classes 2]

The network, loss and optimizer mirror `configs/default.py`: a 4-level U-Net with 16·2^l
channels, two 3×3 conv (no bias) + BatchNorm + ReLU per level, 2×2 max-pool, 2×2 stride-2
transposed convolutions, a 1×1 head; cross-entropy + soft Dice; Adam. Prints one JSON line with
images_per_sec (median of timed repetitions after warm-up) like `launch.bench`.
"""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
  layers = []
  for c in (cin, cout):
    layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=0.1),
               nn.ReLU(inplace=True)]
  return nn.Sequential(*layers)


class UNet(nn.Module):

  def __init__(self, channels: int, classes: int, depth: int = 4, width: int = 16):
    super().__init__()
    widths = [width * 2**level for level in range(depth + 1)]
    self.down = nn.ModuleList(conv_block(c, w) for c, w in zip([channels] + widths, widths[:-1]))
    self.bottom = conv_block(widths[-2], widths[-1])
    self.up = nn.ModuleList(nn.ConvTranspose2d(widths[l + 1], widths[l], 2, stride=2)
                            for l in reversed(range(depth)))
    self.dec = nn.ModuleList(conv_block(2 * widths[l], widths[l]) for l in reversed(range(depth)))
    self.head = nn.Conv2d(width, classes, 1)

  def forward(self, x):
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = F.max_pool2d(x, 2)
    x = self.bottom(x)
    for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
      x = dec(torch.cat([skip, up(x)], dim=1))
    return self.head(x)


def loss_fn(logits, labels, classes: int):
  ce = F.cross_entropy(logits, labels)
  probs = logits.softmax(1)
  onehot = F.one_hot(labels, classes).permute(0, 3, 1, 2).float()
  inter = (probs * onehot).sum((0, 2, 3))  # batch soft Dice, as nsegjax.losses.soft_dice_loss
  dice = (2 * inter + 1) / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
  return ce + 1 - dice[1:].mean()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--classes', type=int, default=2)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--channels_last', action='store_true')
  args = parser.parse_args()

  torch.manual_seed(0)
  model = UNet(args.channels, args.classes)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.uniform(-1, 1, (args.batch, args.channels, args.size, args.size))
                            .astype(np.float32))
  labels = torch.from_numpy(rng.integers(0, args.classes, (args.batch, args.size, args.size)))
  if args.channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.to(memory_format=torch.channels_last)
  opt = torch.optim.Adam(model.parameters(), lr=2e-3)
  model.train()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels, args.classes)
    loss.backward()
    opt.step()
    return loss

  for _ in range(args.warmup):
    step()
  rates = []
  for _ in range(args.reps):
    start = time.perf_counter()
    for _ in range(args.steps):
      step()
    rates.append(args.steps * args.batch / (time.perf_counter() - start))
  print(json.dumps({'images_per_sec': round(float(np.median(rates)), 2),
                    'rates': [round(r, 2) for r in rates], 'device': 'cpu (PyTorch eager)',
                    'threads': torch.get_num_threads(), 'torch': torch.__version__,
                    'image_size': args.size, 'batch': args.batch,
                    'channels_last': args.channels_last}))


if __name__ == '__main__':
  main()
