"""Real inter-rater noise (METHODS.md §2.9): train on one Ghent-oocyte rater, score on a consensus.

  python -m nsegjax.main --config=configs/oocytes_rater.py:hs --workdir=workdirs/oocytes_hs \\
      --config.data.manual_dir=/path/to/oocytes_gent

get_config(arg) takes the training rater: `ar`, `hs` (the default) or `sg`. Evaluation truth is
the strict-majority consensus of all three; switch with `--config.noise.params.eval=ar` (a rater)
or `--config.noise.params.consensus=staple|intersection|union`.
"""
from configs import default

RATERS = ('ar', 'hs', 'sg')


def get_config(arg: str = 'hs'):
  arg = arg or 'hs'
  if arg not in RATERS:
    raise ValueError(f'unknown config argument {arg!r}; valid choices: {", ".join(RATERS)}')
  config = default.get_config('oocytes')
  # The variant's stored mask is unused under this protocol (the truth comes from the raters);
  # `majority` names the default truth, so a plain load of the dataset agrees with the run.
  config.data.variant = 'majority'
  config.noise.name = 'rater'
  config.noise.params = dict(train=arg, eval='consensus', consensus='majority', noisy_thresh=0.9)
  return config
