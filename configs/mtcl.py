"""MTCL: mean teacher + confident learning (METHODS §4) on a dataset preset of
`configs/default.py`. The reference: SGD 0.01 (momentum 0.9, wd 1e-4), 8000 iterations of
batch 4 (2 HQ + 2 LQ); the CPU profile keeps the default job's optimiser and budget."""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'mtcl'
  config.mtcl = dict(clean_fraction=0.1,  # HQ subset D_c, drawn from config.seed
                     hq_share=0.5,  # of every batch, from D_c
                     intensity=0.1,  # intensity augmentation of the HQ draws
                     ema=0.99, input_noise=0.1, input_noise_clip=0.2,
                     weak_weight=5.0, w_cons=0.1,
                     cons_rampup=0.75,  # sigmoid ramp over this share of training (40 of 53.3)
                     cl_prune='both',  # both | by_noise_rate | by_class
                     fix='flip',  # flip | smooth (0.8 on the teacher's class)
                     eval_model='student')  # student | teacher
  return config
