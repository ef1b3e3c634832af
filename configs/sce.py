"""SCE baseline (Wang et al. 2019; METHODS §4) on a dataset preset of `configs/default.py`."""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'sce'
  config.sce = dict(alpha=0.1, beta=1.0,  # CIFAR-10's; CIFAR-100: 6.0 / 0.1
                    log_zero=-4.0,  # A = log 0 of the one-hot label in RCE
                    dice_weight=0.0)  # + soft Dice as in ce_noisy (0: the loss alone)
  return config
