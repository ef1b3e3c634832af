"""TriNet per pixel (METHODS §4) on a dataset preset of `configs/default.py`."""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'trinet'
  config.trinet = dict(rate_source='oracle',  # τ_c from the noise log | fixed: forget_rate
                       forget_rate=0.2,
                       rampup_epochs=2,  # as Co-teaching's (METHODS: 5 of 200 epochs)
                       criterion='absdiff',  # absdiff | sum (consensus)
                       eval='mean',
                       parallel='loop')
  return config
