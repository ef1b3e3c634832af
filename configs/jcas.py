"""JCAS on the embedded 4-class tool-part set under symmetric 50% pixel flips (METHODS §3.1).

CPU profile: the U-Net with a 32-d embedding head (one branch), a 32×32 affinity grid in
training and 64×64 at test time, Adam.
The reference's setting (`--config=configs/jcas.py:reference`): DeepLab-v2 ResNet-101 (aux +
main branch), 64×64 training grid, 32×32 test grid, SGD 1e-4 poly with heads at 10× lr, 256×320
inputs; give it pretrained weights with --config.model.weights=FILE.npz.
"""
from configs import default


def get_config(arg: str = 'cpu'):
  if arg not in ('cpu', 'reference'):
    raise ValueError(f'unknown config argument {arg!r}; valid choices: cpu, reference')
  config = default.get_config('parts')
  config.method = 'jcas'
  config.noise = dict(name='flip', seed=0, params=dict(kind='symmetric', rate=0.5, alpha=1.0))
  config.train.num_epochs = 8
  config.jcas = dict(
      stage1_epochs=4,  # then stage 2 from the best stage-1 checkpoint, same run
      grid=32,  # DAR / affinity token grid side in training (reference: 64)
      # DAR grid at test time (reference code: 32). 64 scored higher than 32 on the noisy
      # validation labels for each of training seeds 0, 1, 2 (README, JCAS).
      test_grid=64,
      block=256,  # affinity row-block size (0 = materialise the N×N matrix)
      lambda_seg=0.1, aff_weights=[1.0, 0.1], w_vol=0.5, w_cacr=0.01,
      cacr_index='code',  # code | math
      prior='noisy',  # π of C2A from the noisy (code) or clean labels
      head_lr_mult=1.0,  # reference: 10
      t_lr='code',  # code: T at the network's lr | nominal: 10× that
      freeze='auto',  # auto: freeze stem/layer1/layer2 only with pretrained weights | code | none
      bn='code',  # code: BatchNorm γ/β frozen (ResNet) | train
      # The reference's heads (output stride 8) are coarser than its DAR grid, so its Q is
      # only ever upsampled; a full-resolution U-Net's Q would be downsampled onto the grid
      # ('grid') and lose its resolution in the loss and the test fusion. 'native' keeps it.
      q_res='native',  # native | grid (code)
  )
  config.model.embedding_dim = 32
  if arg == 'reference':
    config.model = dict(name='resnet', depth=101, aux_embedding_dim=128, embedding_dim=256,
                        head_dilations=(6, 12), width_multiplier=1.0, dtype='float32', weights='')
    config.data.image_size = 256
    config.data.augment = dict(flip=True, rot90=False, min_scale=1.0)
    config.train.update(batch_size=4, num_epochs=400, optimizer='sgd', lr=1e-4, momentum=0.9,
                        weight_decay=5e-4, lr_schedule='poly', warmup_steps=0)
    config.jcas.update(stage1_epochs=200, grid=64, test_grid=32, head_lr_mult=10.0, q_res='grid')
  return config
