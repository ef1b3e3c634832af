"""VolMin baseline (Li et al. 2021, as JCAS's code runs it; METHODS §4) in JCAS's setting.

It runs JCAS's two stages (`jcas.stage1_epochs` of plain CE, then T_C from the best warm-up
checkpoint) with JCAS's optimiser groups (`jcas.head_lr_mult`, `jcas.t_lr`, `jcas.freeze`,
`jcas.bn`); its own loss is set under `volmin`.
"""
from configs import jcas


def get_config(arg: str = 'cpu'):
  config = jcas.get_config(arg)
  config.method = 'volmin'
  config.volmin = dict(branch_w=[0.1, 1.0],  # (layer3, layer4); a U-Net's one branch: the latter
                       w_vol=0.5,
                       refine=arg == 'reference')  # the code's DAR with untrained affinities
  return config
