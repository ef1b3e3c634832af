"""CLI: python -m nsegjax.main --config=configs/default.py[:arg] --workdir=DIR [--config.k=v ...]"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from nsegjax.errors import NsegError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, results. Resumed if it '
                    'holds a checkpoint.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # keep library INFO chatter out of the progress lines
  from nsegjax import config_checks, train  # pylint: disable=g-import-not-at-top  (jax is slow)
  try:
    config_checks.validate(FLAGS.config)
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  test = results['test']
  summary = '  '.join(f'{k} {test[k]:.4f}' if test[k] is not None else f'{k} n/a'
                      for k in ('dice', 'iou', 'hd95', 'assd'))
  print(f'test {summary}  → {FLAGS.workdir}/results.json')


def run():
  try:
    app.run(main)
  except (ValueError, KeyError, AttributeError) as e:  # config_flags errors on bad overrides
    if 'config' in str(e).lower() or isinstance(e, (KeyError, AttributeError)):
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    raise


if __name__ == '__main__':
  run()
