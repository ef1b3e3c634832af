"""K networks of one architecture with their parameters stacked on a leading axis.

Co-teaching, TriNet and HQPM's phase 2 train several copies of the segmentation network from
different keys. Stacking keeps them one pytree (one optimiser state, one checkpoint) and lets
`map_networks` run them unrolled or vmapped.
"""
import jax
import jax.numpy as jnp

from nsegjax import models
from nsegjax.methods.base import Method

PARALLEL_CHOICES = ('loop', 'vmap')


def init_stacked(method: Method, rng, model, images, k: int) -> dict:
  """{'params', 'batch_stats'} of `k` networks from `k` keys split from `rng`, stacked."""
  return jax.vmap(lambda key: Method.init_variables(method, key, model, images))(
      jax.random.split(rng, k))


def map_networks(fn, parallel: str, *stacked):
  """fn over the K stacked networks (leading axis of every leaf), outputs stacked.

  `vmap` batches the K networks' convolutions into grouped convolutions, which XLA:CPU runs
  ~8× slower than K separate ones (measured, 128² U-Net, batch 8); `loop` unrolls over K."""
  if parallel == 'vmap':
    return jax.vmap(fn)(*stacked)
  k = jax.tree.leaves(stacked)[0].shape[0]
  outs = [fn(*jax.tree.map(lambda x, i=i: x[i], stacked)) for i in range(k)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def network(tree, i: int):
  """Network i of a stacked pytree."""
  return jax.tree.map(lambda x: x[i], tree)


def stack_copies(tree, k: int):
  return jax.tree.map(lambda x: jnp.stack([x] * k), tree)


def train_forward(model, params, batch_stats, images, rng, parallel: str):
  """Training-mode logits [K, B, H, W, C] of every network and their new BatchNorm stats."""
  k = jax.tree.leaves(params)[0].shape[0]
  return map_networks(lambda p, s, key: Method.apply_train(model, p, s, images, key), parallel,
                      params, batch_stats, jax.random.split(rng, k))


def predict_stacked(model, nets: dict, images, mode: str, parallel: str):
  """Test-time probabilities: the first network's (`first`) or the K networks' mean (`mean`)."""
  if mode == 'first':
    return jax.nn.softmax(model.apply(network(nets, 0), images, train=False), axis=-1)
  probs = map_networks(lambda v: jax.nn.softmax(model.apply(v, images, train=False), axis=-1),
                       parallel, nets)
  return jnp.mean(probs, axis=0)


def load_into_every_network(path: str, nets: dict, k: int) -> tuple[dict, dict]:
  """A user's weights file copied into each of the K stacked networks: (stacked, report)."""
  first = network(nets, 0)
  variables, report = models.load_npz_weights(first, path)
  print(f'loaded {report["loaded"]} arrays from {path} into each of the {k} networks; '
        f'shape mismatches: {len(report["skipped"])}', flush=True)
  return {'params': stack_copies(variables['params'], k),
          'batch_stats': stack_copies(variables.get('batch_stats', first['batch_stats']), k)}, report


class StackedNetworks(Method):
  """Base of methods whose `params` / `batch_stats` are K stacked networks and nothing else."""

  num_networks = 2

  @property
  def parallel(self) -> str:
    return self.config[self.name].get('parallel', 'loop')

  def init_variables(self, rng, model, images):
    return init_stacked(self, rng, model, images, self.num_networks)

  def net_params(self, params):
    return network(params, 0)

  def load_weights(self, state):
    path = self.config.model.get('weights', '')
    if not path:
      return state
    stacked, _ = load_into_every_network(
        path, {'params': state.params, 'batch_stats': state.batch_stats}, self.num_networks)
    return state.replace(params=stacked['params'], batch_stats=stacked['batch_stats'])

  def predict(self, model, variables, method_state, images):
    del method_state
    return predict_stacked(model, variables, images, self.config[self.name].eval, self.parallel)
