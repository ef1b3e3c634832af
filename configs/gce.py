"""GCE baseline (Zhang & Sabuncu 2018; METHODS §4) on a dataset preset of `configs/default.py`."""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'gce'
  config.gce = dict(q=0.7,
                    truncate=0.0,  # k > 0: the truncated L_q with k (paper: 0.5)
                    dice_weight=0.0)  # + soft Dice as in ce_noisy (0: the loss alone)
  return config
