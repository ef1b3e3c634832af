"""CPU profile: every method on Kvasir-SEG at 128×128 with the default U-Net, 3 seeds.

  NSEGJAX_MANUAL_DIR=../shared/data/kvasir_seg python -m launch.sweep --grid=launch/grids/cpu_kvasir.py \
      --sweep_dir=results/cpu_kvasir --parallel=1
  python -m launch.report --sweep=results/cpu_kvasir

Noise: the α/β dilate/erode/affine protocol at its headline level a3b5 (α 0.3, β 0.5) and a
heavy a7b7, plus box labels (every training mask replaced by its box). One step budget for all:
400 steps of batch 8 (4 epochs of the 800-image training split), Adam 2e-3 on a cosine-decayed
lr for every method; a ce_noisy cell takes ~4 min on 2 cores, DES and HQPM (several networks
per step) up to ~15.
Validation uses the noisy labels: no clean validation set is granted.
"""
METHODS = ('ce_noisy', 'clean', 'gce', 'sce', 'sparsereg', 'volmin', 'coteach', 'trinet',
           'mtcl', 'adele', 'jcas', 'des', 'gt_correct', 'hqpm')


def get_grid():
  return dict(
      name='cpu_kvasir',
      methods=list(METHODS),
      datasets=['kvasir'],
      noises={
          'a3b5': dict(name='abn', params=dict(alpha=0.3, beta=0.5)),
          'a7b7': dict(name='abn', params=dict(alpha=0.7, beta=0.7)),
          'box': dict(name='box', params={}),
      },
      seeds=[0, 1, 2],
      overrides={'train.num_steps': 400, 'train.lr_schedule': 'cosine',
                 'train.batch_size': 8, 'data.image_size': 128},
      method_overrides={
          # Stages and phases in epochs of 100 steps: keep each method's split of the budget.
          'jcas': {'jcas.stage1_epochs': 2},
          'volmin': {'jcas.stage1_epochs': 2},
          'hqpm': {'hqpm.nin_epochs': 2},
          # One optimiser for every cell: DES's SGD 0.01 (its config default) would compare
          # optimisers as much as methods at this budget.
          'des': {'train.optimizer': 'adam', 'train.lr': 2e-3, 'train.weight_decay': 0.0,
                  'train.warmup_steps': 50},
      },
      val_labels='noisy',
  )
