"""CLI: python -m nsegjax.main --config=configs/default.py[:arg] --workdir=DIR [--config.k=v ...]

Exit codes: 0 done; 2 a one-line error (bad config or data, a non-finite step); 143 SIGTERM
ended training after saving a checkpoint: run the same command again to resume.
"""
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

# 128 + SIGTERM: what a shell reports for a process that SIGTERM killed outright, so a requeue
# wrapper's test (e.g. `[ $? -eq 143 ] && scontrol requeue $SLURM_JOB_ID`) holds whether or not
# the run had time to save, and never confuses a pre-emption with a failure (1, 2).
EXIT_TERMINATED = 143


_MAIN_STARTED = []  # non-empty once flags parsed: later KeyErrors are bugs, not bad overrides


def main(argv):
  _MAIN_STARTED.append(True)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # keep library INFO chatter out of the progress lines
  import jax  # pylint: disable=g-import-not-at-top  (jax is slow)
  from nsegjax import config_checks, sharding, train  # pylint: disable=g-import-not-at-top
  try:
    sharding.maybe_initialize_distributed()  # before jax.device_count() starts a backend
    config_checks.validate(FLAGS.config, num_devices=jax.device_count())
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except NsegError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except train.TrainingTerminated as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(EXIT_TERMINATED)
  test = results['test']
  summary = '  '.join(f'{k} {test[k]:.4f}' if test[k] is not None else f'{k} n/a'
                      for k in ('dice', 'iou', 'hd95', 'assd'))
  print(f'test {summary}  → {FLAGS.workdir}/results.json')


def run():
  try:
    app.run(main)
  except (ValueError, KeyError, AttributeError) as e:  # config_flags errors on bad overrides
    if _MAIN_STARTED:
      raise
    if 'config' in str(e).lower() or isinstance(e, (KeyError, AttributeError)):
      from nsegjax import config_checks  # pylint: disable=g-import-not-at-top
      print(f'error: {config_checks.unknown_key_message(e, sys.argv)}', file=sys.stderr)
      sys.exit(2)
    raise


if __name__ == '__main__':
  run()
