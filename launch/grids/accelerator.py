"""Accelerator profile: the papers' sizes and epochs (METHODS.md §6), 3 seeds.

  python -m launch.sweep --grid=launch/grids/accelerator.py --emit=slurm

Kvasir-SEG and JSRT lungs at 256×256, the U-Net at base width 32 (METHODS' 32→512), 100
epochs of batch 8 with a cosine-decayed lr, α/β a3b5 and a7b7 plus box labels; JCAS and VolMin
in their two stages (half the epochs each), HQPM's NIN for 100 epochs of its clean subset.
"""
from launch.grids import cpu_kvasir


def get_grid():
  grid = cpu_kvasir.get_grid()
  grid.update(
      name='accelerator',
      datasets=['kvasir', 'jsrt_lungs'],
      overrides={'train.num_steps': 0, 'train.num_epochs': 100, 'train.batch_size': 8,
                 'train.lr_schedule': 'cosine', 'data.image_size': 256, 'model.base_width': 32},
      method_overrides={
          'jcas': {'jcas.stage1_epochs': 50},
          'volmin': {'jcas.stage1_epochs': 50},
          'hqpm': {'hqpm.nin_epochs': 50, 'hqpm.nin.base_width': 32, 'hqpm.nin_lr': 1e-4},
          'coteach': {'coteach.rampup_epochs': 5},
          'trinet': {'trinet.rampup_epochs': 5},
      })
  return grid
