"""HQPM (Huang et al. 2025; METHODS §3.4) on a dataset preset of `configs/default.py`:

  python -m nsegjax.main --config=configs/hqpm.py[:kvasir|:jsrt_lungs|...] --workdir=...

Weak labels instead of α/β noise: `configs/hqpm.py:<preset>,box` (or `,coarse_polygon`,
`,scribble`; any protocol, as for `configs/default.py`): every training label becomes that weak
label.
Every `hqpm.*` value is METHODS' assumed default except the NIN's budget and size: METHODS trains
a 32→512 NIN for 100 epochs of D_c at Adam 1e-4; the CPU profile keeps `ce_noisy`'s 6 epochs in
all, gives the first 2 (200 steps, ~20 passes over a 10% D_c) to the NIN at 16→256 and lr 2e-3.
The reference NIN: --config.hqpm.nin.base_width=32 --config.hqpm.nin_lr=1e-4 (and the epochs).
"""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'hqpm'
  config.hqpm = dict(
      clean_fraction=0.1,  # D_c: this share of the training set, with its clean masks
      nin_epochs=2,  # phase 1 (NIN on D_c) length; phase 2 gets the remaining epochs
      nin=dict(depth=4, base_width=16),  # shared encoder + three decoders (fp / fn / ref)
      nin_lr=2e-3,  # Adam, on train.lr_schedule over phase 1
      nin_w=1.0,  # weight of Σ_b BCE + Dice
      nin_fresh_noise=True,  # corrupt D_c afresh every step (False: its fixed labels)
      nin_intensity=0.1,  # intensity augmentation of the NIN's batches
      revise_thresh=0.5,
      # fp / fn branch thresholds: revise_thresh (fixed) | the grid pair best on D_c (clean_subset)
      revise_select='fixed', revise_grid=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
      k=2,  # parallel segmentation networks, parameters stacked
      parallel='loop',  # loop | vmap over the K networks (vmap: grouped convs, ~8× slower on CPU)
      soften='slsr', eps=0.25,  # slsr: |ŷ − ε| on doubtful pixels | ensemble (λ below)
      sampling='proportional',  # D_c and D_n as drawn | balanced: each half the batch loss
      seg_loss='ce_dice',  # soft CE + soft Dice | ce
      eval='mean',  # mean of the K probability maps | first
  )
  config.hqpm['lambda'] = 0.3  # ensemble softening weight
  return config
