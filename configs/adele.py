"""ADELE (METHODS §4) on a dataset preset of `configs/default.py`. The reference recipe: SGD
momentum 0.99, lr 0.01, batch 5, 100 epochs; the CPU profile keeps the default job's."""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'adele'
  config.adele = dict(r=0.9,  # start when the IoU curve's slope has dropped by this share
                      tau=0.7,  # correction confidence
                      every=10,  # epochs between corrections of a started class (SegTHOR)
                      scales=(0.7, 1.0, 1.5), rho=0.8, lam=1.0)  # multi-scale JSD consistency
  return config
