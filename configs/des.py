"""DES (Shi & Wu, MICCAI 2021; METHODS §3.2) on a dataset preset of `configs/default.py`:

  python -m nsegjax.main --config=configs/des.py[:kvasir|:jsrt_lungs|...] --workdir=...

Every `des.*` value is METHODS' assumed default except `qam_width`: VGG-16-BN's 64 makes the
quality-awareness module cost ~4× the default U-Net per image, so the CPU profile scores images
with the same layout at 1/8 of the width (set 64 for the reference module).
"""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'des'
  config.model.dropout = 0.5  # MC-dropout uncertainty needs dropout in the network
  config.train.update(optimizer='sgd', lr=0.01, momentum=0.9, weight_decay=1e-4,
                      lr_schedule='poly', warmup_steps=0)
  config.des = dict(
      warmup_frac=0.1,  # first 10% of training: CE + Dice on the noisy labels
      mc_passes=8, input_noise=0.1, input_noise_clip=0.2,  # teacher passes per step
      teacher='ema', ema=0.99,  # ema | self
      mask_rule='confident_disagree',  # confident_disagree | uncertain | soft
      pixel_loss='ce_dice',  # ce | ce_dice (soft Dice on the mixed target)
      image_weight='qam',  # qam | loss_stats | none
      qam_width=8,  # VGG-16-BN first-stage width (64 = the reference module)
      w_cons=0.1, cons_rampup=40,  # consistency weight, ramped over this many epochs
      eval_model='student',  # student | teacher
  )
  return config
