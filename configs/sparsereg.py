"""SparseReg baseline (Zhou et al. 2021, as JCAS's code runs it; METHODS §4), by default in
JCAS's setting (`configs/jcas.py`: the 4-class tool parts, symmetric 50% flips)."""
from configs import jcas


def get_config(arg: str = 'cpu'):
  config = jcas.get_config(arg)
  config.method = 'sparsereg'
  del config.jcas
  config.sparsereg = dict(tau=0.5, lam=1.0, q=0.01,
                          dice_weight=0.0,  # + soft Dice as in ce_noisy (0: the loss alone)
                          refine=arg == 'reference',  # the code's DAR with untrained affinities
                          test_grid=32)
  return config
