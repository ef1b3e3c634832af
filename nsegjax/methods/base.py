"""The method interface: what one noisy-label method adds to the generic training loop.

A method is a small bundle of pure functions bound to its config. The loop in
`nsegjax/train.py` calls, for every method alike:

- `setup_data(data)`: optional host-side look at the run's data before init (label priors,
  label banks, clean subsets);
- `init_variables(rng, model, images)`: the network variables ({'params', 'batch_stats'}),
  e.g. two stacked networks for co-teaching; `load_weights(state)` then copies a user's
  `model.weights` file into the network part (`net_params`);
- `init_state(rng, variables, batch)`: the method's own pytree (transition matrices, EMA
  teacher, label bank, ...), saved in every checkpoint;
- `loss(model, params, batch_stats, method_state, batch, rng, schedule)`, traced inside the
  one jitted step, returning `(loss, LossAux)`;
- `make_optimizer(num_steps, steps_per_epoch)`: (optax transformation, lr schedule); the
  default is one group from `config.train`, methods with parameter groups override it;
- `after_epoch(state, epoch, context)`: optional host-side work between epochs (it runs before
  the next epoch's first step, so it never runs after the last epoch);
- `after_training(state, context)`: optional host-side work once training ends (figures);
- `predict(model, variables, method_state, images)`: the test-time class probabilities;
- `step_variant(state)`: optional hashable the step is compiled for (`schedule['variant']`
  in `loss`, a Python value), for methods whose phases run different networks: one compilation
  per phase instead of a `lax.cond`, whose convolutions XLA:CPU runs ~14× slower.

`batch` holds 'image' (float32, normalised), 'mask' (clean labels), 'noisy_mask' (what the
method may train on) and 'index' (sample ids). `schedule` is a dict of scalar arrays (epoch,
progress, step) that enter the step as traced inputs, so ramps never recompile.
"""
from typing import Any

import flax
import jax

from nsegjax import models, optim


@flax.struct.dataclass
class LossAux:
  """What a method's loss returns besides the scalar loss."""
  metrics: dict            # scalars to log, averaged over the batch
  batch_stats: Any         # updated BatchNorm statistics
  method_state: Any        # updated method state


class Method:
  """Default behaviour: one network, no method state, argmax of softmax at test time."""

  name = 'base'
  # The clean mask is only ever a training target for the upper bound and for methods
  # given an explicit clean subset; the loop checks this flag before handing it over.
  trains_on_clean_labels = False

  def __init__(self, config):
    self.config = config

  def setup_data(self, data) -> None:
    del data

  def init_variables(self, rng, model, images):
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init({'params': params_rng, 'dropout': dropout_rng}, images, train=False)
    return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}

  def init_state(self, rng, variables, batch) -> Any:
    del rng, variables, batch
    return {}

  def loss(self, model, params, batch_stats, method_state, batch, rng, schedule):
    raise NotImplementedError

  def make_optimizer(self, num_steps: int, steps_per_epoch: int):
    del steps_per_epoch
    return optim.make_optimizer(self.config.train, num_steps)

  def step_variant(self, state) -> Any:
    del state
    return None

  def after_epoch(self, state, epoch: int, context) -> Any:
    del epoch, context
    return state

  def after_training(self, state, context) -> None:
    del state, context

  # Methods that keep more than the network in `params` (JCAS's transition matrices) say where
  # the network is, so weights files and feature tools find it.
  def net_params(self, params):
    return params

  def with_net_params(self, params, net):
    del params
    return net

  def load_weights(self, state):
    """`state` with `config.model.weights` (if set) copied into the network by name and shape."""
    path = self.config.model.get('weights', '')
    if not path:
      return state
    variables, report = models.load_npz_weights(
        {'params': self.net_params(state.params), 'batch_stats': state.batch_stats}, path)
    print(f'loaded {report["loaded"]} arrays from {path}; shape mismatches: '
          f'{len(report["skipped"])}; not in the model: {len(report["unused"])}', flush=True)
    return state.replace(params=self.with_net_params(state.params, variables['params']),
                         batch_stats=variables.get('batch_stats', state.batch_stats))

  def predict(self, model, variables, method_state, images):
    del method_state
    logits = model.apply(variables, images, train=False)
    return jax.nn.softmax(logits, axis=-1)

  @staticmethod
  def apply_train(model, params, batch_stats, images, rng):
    """Training-mode forward pass: returns (logits, updated batch_stats)."""
    logits, updates = model.apply(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        rngs={'dropout': rng}, mutable=['batch_stats'])
    return logits, updates['batch_stats']
