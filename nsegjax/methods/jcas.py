"""`jcas`: joint class-affinity loss correction (Guo & Yuan, MICCAI 2022; METHODS.md §3.1).

The network gives, per branch, class logits Q and an embedding f (`heads=True`: the dilated
ResNet's layer3 and layer4 branches, or the U-Net's one branch). The loss (`nsegjax.jcas.calc`)
refines Q by differentiated affinity reasoning (DAR) and corrects the class and affinity terms
with the learned transition matrices T_C and T_A.

Two stages in one run: `jcas.stage1_epochs` epochs of warm-up without transition matrices, then,
between epochs, the switch: the best stage-1 state (by validation Dice) is restored, T_C and T_A
are re-initialised, the optimiser's moments restart, and the stage flag in the method state turns
to 1. The flag is a traced input of the one compiled step, so the switch never recompiles, and a
run killed in stage 2 resumes in stage 2.

Parameters: {'net': the network's, 'transition': {'class': w_C [C, C], 'affinity': w_A [2, 2]}}
(VolMin logits; T(w) = rownorm(I + σ(w)⊙(1−I))). The optimiser has four groups: the backbone at
train.lr, the heads at `head_lr_mult`× that, the transition logits with their own SGD (momentum 0.9,
no weight decay) and, with pretrained weights, the frozen stem / layer1 / layer2 (and with
`bn='code'` every BatchNorm γ/β, as in the reference).

Each epoch T_C and T_A are appended to `transitions.jsonl`; at the end `transitions.png` shows
the learned T_C beside the empirical clean→noisy transition of the training labels.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nsegjax import config_checks
from nsegjax import data as datasets
from nsegjax import optim
from nsegjax.errors import ConfigError
from nsegjax.jcas import calc
from nsegjax.methods.base import LossAux, Method
from nsegjax.models import resnet

IGNORE = 255
FIDELITY_CHOICES = {
    'cacr_index': ('code', 'math'),
    'prior': ('noisy', 'clean'),
    't_lr': ('code', 'nominal'),
    'freeze': ('auto', 'code', 'none'),
    'bn': ('code', 'train'),
    'q_res': calc.Q_RES_CHOICES,
}
# The reference's nominal T learning rate is 10× the network's, but its scheduler overwrites it.
_NOMINAL_T_LR_FACTOR = 10.0


def empirical_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
  """Row-stochastic P(noisy = j | clean = i) over the pixels valid in both."""
  valid = (clean != IGNORE) & (noisy != IGNORE) & (clean < num_classes) & (noisy < num_classes)
  counts = np.zeros((num_classes, num_classes))
  np.add.at(counts, (clean[valid], noisy[valid]), 1)
  return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


class JCAS(Method):
  """JCAS behind the method interface."""

  name = 'jcas'

  def __init__(self, config):
    super().__init__(config)
    cfg = config.jcas
    config_checks.check_choices(cfg, 'jcas', FIDELITY_CHOICES)
    if int(cfg.stage1_epochs) < 0:
      raise ConfigError(f'jcas.stage1_epochs must be >= 0, got {cfg.stage1_epochs}')
    if len(cfg.aff_weights) != 2:
      raise ConfigError('jcas.aff_weights must be [layer3 branch, layer4 branch]')
    self.grid = (int(cfg.grid),) * 2
    self.test_grid = (int(cfg.test_grid),) * 2
    self.block = int(cfg.block) or None
    self.prior = None
    self.observed_transition = None
    self.tx = None

  # ---------------------------------------------------------------------------------------- data

  def setup_data(self, data) -> None:
    clean = datasets.load_all_masks(data.train)
    labels = clean if self.config.jcas.prior == 'clean' else data.train_noisy
    self.prior = np.asarray(calc.label_prior(jnp.asarray(labels), data.num_classes))
    self.observed_transition = empirical_transition(clean, data.train_noisy, data.num_classes)

  # ----------------------------------------------------------------------------------- variables

  def init_variables(self, rng, model, images):
    net = super().init_variables(rng, model, images)
    num_classes = model.num_classes
    transition = {'class': calc.init_transition_logits(num_classes),
                  'affinity': calc.init_transition_logits(2)}
    return {'params': {'net': net['params'], 'transition': transition},
            'batch_stats': net['batch_stats']}

  def init_state(self, rng, variables, batch):
    del rng, batch
    num_classes = variables['params']['transition']['class'].shape[0]
    prior = self.prior if self.prior is not None else np.full(num_classes, 1 / num_classes)
    return {'stage': jnp.zeros((), jnp.int32), 'prior': jnp.asarray(prior, jnp.float32)}

  def net_params(self, params):
    return params['net']

  def with_net_params(self, params, net):
    return dict(params, net=net)

  # ---------------------------------------------------------------------------------------- loss

  def _weights(self, num_branches: int) -> calc.JcasWeights:
    cfg = self.config.jcas
    aux_aff, main_aff = (float(w) for w in cfg.aff_weights)
    if num_branches == 1:  # one branch (U-Net): it takes the stronger, layer3, affinity weight
      return calc.JcasWeights(seg_main=1.0, seg_aux=0.0, aff_layer3=0.0, aff_layer4=aux_aff,
                              vol=float(cfg.w_vol), cacr=float(cfg.w_cacr))
    return calc.JcasWeights(seg_main=1.0, seg_aux=float(cfg.lambda_seg), aff_layer3=aux_aff,
                            aff_layer4=main_aff, vol=float(cfg.w_vol), cacr=float(cfg.w_cacr))

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    del schedule
    heads, updates = model.apply(
        {'params': params['net'], 'batch_stats': batch_stats}, batch['image'], train=True,
        heads=True, rngs={'dropout': rng}, mutable=['batch_stats'])
    branches = tuple(zip(heads['embeddings'], heads['logits']))
    loss, terms = calc.jcas_loss(
        branches, batch['noisy_mask'], params['transition']['class'],
        params['transition']['affinity'], method_state['prior'], method_state['stage'],
        weights=self._weights(len(branches)), cacr_index=self.config.jcas.cacr_index,
        grid=self.grid, block=self.block, q_res=self.config.jcas.q_res)
    metrics = {name: value for name, value in terms.items() if jnp.ndim(value) == 0}
    metrics['stage'] = method_state['stage'].astype(jnp.float32)
    return loss, LossAux(metrics=metrics, batch_stats=updates['batch_stats'],
                         method_state=method_state)

  def predict(self, model, variables, method_state, images):
    del method_state
    heads = model.apply({'params': variables['params']['net'],
                         'batch_stats': variables['batch_stats']}, images, heads=True)
    fused = calc.dar_predict(heads['embeddings'][-1], heads['logits'][-1], images.shape[1:3],
                             grid=self.test_grid, q_res=self.config.jcas.q_res)
    return fused / 2  # two softmaxes summed: halve for probabilities

  # ----------------------------------------------------------------------------------- optimiser

  def _group(self, path: tuple[str, ...], frozen_stem: bool) -> str:
    if path[0] == 'transition':
      return 'transition'
    net_path = path[1:]
    is_resnet = self.config.model.name == 'resnet'
    if is_resnet and frozen_stem and resnet.frozen_stem_and_early_layers(net_path):
      return 'frozen'
    if is_resnet and self.config.jcas.bn == 'code' and resnet.is_batchnorm_affine(net_path):
      return 'frozen'
    return 'heads' if 'head' in net_path[0] else 'backbone'

  def make_optimizer(self, num_steps: int, steps_per_epoch: int):
    train, cfg = self.config.train, self.config.jcas
    stage1 = min(int(cfg.stage1_epochs) * steps_per_epoch, num_steps)
    stage2 = num_steps - stage1
    if stage1 and stage2:  # each stage runs its own schedule, as two runs of the reference would
      lr = optax.join_schedules([optim.lr_schedule(train, stage1), optim.lr_schedule(train, stage2)],
                                [stage1])
    else:
      lr = optim.lr_schedule(train, num_steps)
    head_lr = lambda step: lr(step) * float(cfg.head_lr_mult)  # noqa: E731
    t_factor = _NOMINAL_T_LR_FACTOR if cfg.t_lr == 'nominal' else 1.0
    t_lr = lambda step: lr(step) * t_factor  # noqa: E731
    frozen_stem = cfg.freeze == 'code' or (cfg.freeze == 'auto'
                                           and bool(self.config.model.get('weights', '')))

    def labels(params):
      return jax.tree_util.tree_map_with_path(
          lambda path, _: self._group(tuple(getattr(k, 'key', str(k)) for k in path),
                                      frozen_stem), params)

    groups = {
        'backbone': optim.base_optimizer(train, lr),
        'heads': optim.base_optimizer(train, head_lr),
        'transition': optax.sgd(t_lr, momentum=0.9),
        'frozen': optax.set_to_zero(),
    }
    self.tx = optim.with_grad_clip(train, optax.multi_transform(groups, labels))
    return self.tx, lr

  # ------------------------------------------------------------------------------- stage switch

  def after_epoch(self, state, epoch: int, context):
    if jax.process_index() == 0:
      self._log_transitions(state, epoch, context.workdir)
    if epoch == int(self.config.jcas.stage1_epochs) - 1 and int(state.method_state['stage']) == 0:
      state = self._start_stage2(state, context)
      print(f'jcas: stage 2 from the best stage-1 checkpoint after epoch {epoch + 1}', flush=True)
    return state

  def _start_stage2(self, state, context):
    best = context.checkpointer.best_step()
    if best is not None:
      restored, _ = context.checkpointer.restore(best, state)
      state = state.replace(params=restored.params, batch_stats=restored.batch_stats)
    num_classes = state.params['transition']['class'].shape[0]
    params = dict(state.params, transition={'class': calc.init_transition_logits(num_classes),
                                            'affinity': calc.init_transition_logits(2)})
    replicated = jax.tree.map(lambda x: x.sharding, state.params)
    params = jax.device_put(params, replicated)
    opt_state = optim.keep_schedule_counts(jax.jit(self.tx.init)(params), state.opt_state)
    method_state = dict(state.method_state, stage=jnp.ones_like(state.method_state['stage']))
    return state.replace(params=params, opt_state=opt_state, method_state=method_state)

  # ------------------------------------------------------------------------------------ insight

  def transitions(self, params) -> dict:
    return {'T_C': np.asarray(calc.transition_matrix(params['transition']['class'])),
            'T_A': np.asarray(calc.transition_matrix(params['transition']['affinity']))}

  def _log_transitions(self, state, epoch: int, workdir: str):
    record = {'epoch': epoch + 1, 'stage': int(state.method_state['stage']) + 1}
    record.update({k: np.asarray(v, np.float64).round(5).tolist()
                   for k, v in self.transitions(state.params).items()})
    with open(os.path.join(workdir, 'transitions.jsonl'), 'a', encoding='utf-8') as f:
      f.write(json.dumps(record) + '\n')

  def after_training(self, state, context) -> None:
    self._log_transitions(state, int(self.config.train.num_epochs) - 1, context.workdir)
    from nsegjax import plots  # pylint: disable=g-import-not-at-top  (matplotlib is slow)
    plots.transition_figure(
        {'learned T_C': self.transitions(state.params)['T_C'],
         'observed (clean → noisy train labels)': self.observed_transition},
        context.data.train.class_names, os.path.join(context.workdir, 'transitions.png'))
