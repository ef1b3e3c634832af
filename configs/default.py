"""The main job: `ce_noisy` on the embedded synthetic-lesion set under α/β noise.

get_config(arg) takes an optional dataset preset: `configs/default.py:kvasir`, `:jsrt_lungs`,
`:jsrt_heart`, `:jsrt_clavicles`, `:oocytes`, `:synthetic` (the default), `:parts` (the embedded
4-class tool-part set, for multi-class methods such as JCAS), and after a comma an optional noise
protocol with its default parameters (`configs/default.py:kvasir,box`), whose keys the command
line can then set (`--config.noise.params.<key>`): it cannot add keys the config lacks.
Other method configs start from this one and change only what differs.
"""
import ml_collections
from ml_collections import config_dict

# dataset preset → (data.name, data.variant, working image size)
DATASET_PRESETS = {
    'synthetic': ('synthetic_lesion', '', 128),
    'parts': ('synthetic_lesion', 'parts', 128),
    'kvasir': ('kvasir_seg', '', 128),
    'jsrt_lungs': ('jsrt', 'lungs', 256),
    'jsrt_heart': ('jsrt', 'heart', 256),
    'jsrt_clavicles': ('jsrt', 'clavicles', 256),
    'oocytes': ('oocytes', 'ar', 0),
}


def get_config(arg: str = 'synthetic') -> ml_collections.ConfigDict:
  preset, _, protocol = (arg or 'synthetic').partition(',')
  if preset not in DATASET_PRESETS:
    raise ValueError(f'unknown config argument {preset!r}; valid choices: '
                     f'{", ".join(DATASET_PRESETS)}')
  name, variant, size = DATASET_PRESETS[preset]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = 'ce_noisy'
  c.ce = dict(dice_weight=1.0, fg_weight='none')  # loss of ce_noisy / clean

  c.model = dict(name='unet', depth=4, base_width=16, dropout=0.0, dtype='float32',
                 upsample='matmul')  # U-Net up-convolutions: matmul | conv_transpose (same maths)

  c.data = dict(name=name, variant=variant, image_size=size,
                manual_dir='',  # raw files of a real dataset; '' → $NSEGJAX_MANUAL_DIR
                data_dir='',    # TFDS + noise cache; '' → $NSEGJAX_DATA_DIR or ~/.cache/nsegjax
                num_workers=2,
                train_limit=0,  # > 0: train on the first N training examples only
                augment=dict(flip=True, rot90=True, min_scale=0.75))

  c.noise = dict(name='abn', seed=0, params=dict(alpha=0.7, beta=0.5))
  if protocol:
    c.noise.name, c.noise.params = protocol, noise_defaults(protocol)

  c.train = dict(batch_size=8, num_epochs=6, num_steps=0,  # num_steps > 0 overrides epochs
                 optimizer='adam', lr=2e-3, momentum=0.9, weight_decay=0.0, grad_clip=0.0,
                 lr_schedule='cosine', warmup_steps=50, final_lr_fraction=0.01,
                 log_every=25, eval_every_epochs=1, checkpoint_every_steps=0,
                 nonfinite='stop')  # a NaN/inf step: stop (keep the last checkpoint) | skip it

  c.eval = dict(batch_size=20,
                val_labels='noisy',  # 'clean' only when a clean validation set is granted
                empty='standard',  # metrics.empty: standard | present_only | nan
                agg='per_image', include_bg=False, hd95_mode='concat', empty_surface='nan',
                num_overlays=6)
  return c


def noise_defaults(protocol: str) -> dict:
  """A protocol's default noise.params, each settable from the command line."""
  # Imported here: the protocols import jax, which a config without one need not load.
  from nsegjax import noise  # pylint: disable=g-import-not-at-top
  # An unknown name: the registry's one-line error, with the choices.
  # A None default gets a placeholder: the command line can set it (it cannot override None).
  return {key: config_dict.placeholder(object) if value is None else value
          for key, value in noise.PROTOCOLS.get(protocol).default_params.items()}
