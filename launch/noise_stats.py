"""Achieved noise of each protocol over a whole split:

  python -m launch.noise_stats --config=configs/default.py[:preset] [--config.k=v ...] \\
      [--protocols=abn,none] [--split=train] [--json]

For each protocol (default: every registered one) runs `generate.apply_noise` over the split
with the training keys and prints a markdown table: fraction of corrupted samples, mean
Dice(noisy, clean), mean ρ_pix, mean ρ_fg over the corrupted samples, the labelled fraction of
the pixels and the Dice on labelled pixels (METHODS §2.8's score of weak labels: a scribble
leaves most pixels unlabelled, 255, which the plain Dice and ρ_pix count as wrong), the type
counts and the params. The configured protocol uses config.noise.params (α included); the others their
defaults. `--json` prints one JSON object per protocol instead.
"""
import json
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Experiment config file.',
                                lock_config=True)
flags.DEFINE_list('protocols', None, 'Protocols to summarise (default: every simulated one).')
flags.DEFINE_enum('split', 'train', ['train', 'validation', 'test'], 'Split to corrupt.')
flags.DEFINE_bool('json', False, 'Print JSON lines instead of a markdown table.')


def protocol_stats(config, name: str, masks, split: str) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nsegjax.noise import generate  # pylint: disable=g-import-not-at-top
  params = dict(config.noise.params) if name == config.noise.name else {}
  _, resolved = generate.resolve(name, params, masks)
  _, records = generate.apply_noise(masks, np.arange(len(masks)), name, params,
                                    int(config.noise.seed))
  summary = generate.summarize_noise_log(records)
  return {'protocol': name, 'split': split, 'seed': int(config.noise.seed), **summary,
          'params': resolved}


def _fmt(value) -> str:
  return 'n/a' if value is None else f'{value:.4f}'


def markdown_table(rows) -> str:
  lines = ['| protocol | samples | fraction noisy | mean Dice | mean ρ_pix | mean ρ_fg (noisy) '
           '| labelled px | Dice on labelled px | types | params |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    types = ', '.join(f'{k}: {v}' for k, v in r['type_counts'].items())
    params = ', '.join(f'{k}={v}' for k, v in r['params'].items())
    lines.append(f'| {r["protocol"]} | {r["num_samples"]} | {_fmt(r["fraction_noisy"])} | '
                 f'{_fmt(r["mean_dice"])} | {_fmt(r["mean_rho_pix"])} | '
                 f'{_fmt(r["mean_rho_fg_noisy"])} | {_fmt(r["mean_known_fraction"])} | '
                 f'{_fmt(r["mean_dice_known"])} | {types} | {params} |')
  return '\n'.join(lines)


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from nsegjax import data  # pylint: disable=g-import-not-at-top
  from nsegjax.errors import NsegError  # pylint: disable=g-import-not-at-top
  from nsegjax.noise import PROTOCOLS, simulated_protocols  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    names = FLAGS.protocols or simulated_protocols()
    for name in names:
      PROTOCOLS.get(name)
    masks = data.load_all_masks(data.load_split(config.data, FLAGS.split))
    rows = [protocol_stats(config, name, masks, FLAGS.split) for name in names]
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if FLAGS.json:
    for row in rows:
      print(json.dumps(_jsonable(row)))
  else:
    print(markdown_table(rows))


if __name__ == '__main__':
  app.run(main)
