"""Co-teaching per pixel (METHODS §4) on a dataset preset of `configs/default.py`."""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'coteach'
  config.coteach = dict(rate_source='oracle',  # τ_c from the noise log | fixed: forget_rate
                        forget_rate=0.2,
                        rampup_epochs=2,  # METHODS: 5 of 200 epochs; the CPU profile has 6
                        eval='first',  # first | mean of the two networks
                        parallel='loop')  # loop | vmap over the networks
  return config
