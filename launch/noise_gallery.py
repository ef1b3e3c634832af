"""A PNG grid of what each noise protocol does to training labels:

  python -m launch.noise_gallery --config=configs/default.py[:preset] [--config.k=v ...] \\
      [--protocols=abn,none] [--num=4] [--out=gallery.png]

Rows are the first `--num` training samples. Column 0 is the image with the clean mask; then one
column per protocol (default: every registered protocol except 'none') with its noisy mask over
the image. Each protocol runs with its default params, merged with config.noise.params for the
configured protocol only, and α forced to 1 so every row shows the protocol's effect. The keys
are the training ones (`generate.apply_noise` with the samples' indices and the split size), so
what is drawn is what training gets. Sparse weak labels (scribbles: unknown pixels 255) are drawn
opaque, labelled foreground in its class colour and labelled background in cyan, the strokes
thickened by one pixel for display; unknown pixels are left uncoloured. Pixels ignored in the
clean mask are washed out.
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config file.',
                                lock_config=True)
flags.DEFINE_list('protocols', None, 'Protocols to draw (default: every simulated one but none).')
flags.DEFINE_integer('num', 4, 'Training samples (rows).')
flags.DEFINE_string('out', 'gallery.png', 'Output PNG path.')

IGNORE = 255


def display_params(config, entry) -> dict:
  """Defaults + config.noise.params (configured protocol only), α = 1 where accepted."""
  params = {}
  if entry.name == config.noise.name:
    params = dict(config.noise.params)
  if 'alpha' in entry.default_params:
    params['alpha'] = 1.0
  return params


SCRIBBLE_BACKGROUND = (0.0, 0.85, 1.0)  # labelled background of a sparse label: cyan


def draw_sparse(image, clean, noisy, colours, thicken: int = 1):
  """A sparse weak label (unknown pixels 255 where the clean mask has a label) over the image:
  each labelled class opaque in its colour, labelled background in cyan, unknown pixels left
  as they are. Strokes one to three pixels wide vanish when a 256-pixel panel is drawn at two
  inches, so they are thickened by `thicken` pixels for display only."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  out = image.copy()
  grow = (lambda m: ndimage.binary_dilation(m, iterations=thicken)) if thicken else (lambda m: m)
  labelled = (noisy != IGNORE) & (clean != IGNORE)
  out[grow(labelled & (noisy == 0))] = SCRIBBLE_BACKGROUND
  for c in range(1, len(colours)):
    out[grow(labelled & (noisy == c))] = colours[c]
  return out


def is_sparse(clean, noisy) -> bool:
  """Whether a weak label leaves labelled pixels of the clean mask unknown (255)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(np.any((noisy == IGNORE) & (clean != IGNORE)))


def make_gallery(config, protocols, num: int, out: str) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from nsegjax import data, plots  # pylint: disable=g-import-not-at-top
  from nsegjax.noise import PROTOCOLS, generate, simulated_protocols  # pylint: disable=g-import-not-at-top

  if protocols is None:
    protocols = [name for name in simulated_protocols() if name != 'none']
  entries = [PROTOCOLS.get(name) for name in protocols]
  source = data.load_split(config.data, 'train')
  num = min(num, len(source))
  all_masks = data.load_all_masks(source)
  indices = np.arange(num)
  masks = all_masks[:num]
  images = [plots.to_rgb_float(source[i]['image']) for i in range(num)]
  max_label = int(all_masks[all_masks != IGNORE].max(initial=0))
  colours = plots.class_colours(max(source.num_classes, max_label + 1, 2))

  columns = [('clean', masks)]
  for entry in entries:
    noisy, _ = generate.apply_noise(masks, indices, entry.name, display_params(config, entry),
                                    int(config.noise.seed), num_samples=len(source))
    columns.append((entry.name, noisy))

  fig = Figure(figsize=(2.2 * len(columns), 2.2 * max(num, 1)))
  axes = fig.subplots(max(num, 1), len(columns), squeeze=False)
  for row in range(num):
    for col, (title, labels) in enumerate(columns):
      ax = axes[row, col]
      if col > 0 and is_sparse(masks[row], labels[row]):
        shown = draw_sparse(images[row], masks[row], labels[row], colours)
      else:
        shown = plots.overlay_mask(images[row], labels[row], colours)
      ax.imshow(shown, interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(title, fontsize=9)
      if col == 0:
        ax.set_ylabel(f'#{row}', fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=100)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from nsegjax.errors import NsegError  # pylint: disable=g-import-not-at-top
  try:
    print(make_gallery(FLAGS.config, FLAGS.protocols, FLAGS.num, FLAGS.out))
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
