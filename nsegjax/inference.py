"""A finished (or running) run, reloaded for notebooks and scripts: `load_run(workdir)`.

  run = load_run('workdirs/hqpm', which='best')
  probs = run.probabilities(images_uint8)   # [B, H, W, C], the method's own test-time rule

The run's config.json rebuilds the data (from its cache), the model and the method; the
checkpoint (best by validation, or the latest) fills the state. Nothing in the workdir is
unpickled or executed: the config is JSON and the checkpoint is Orbax arrays.
"""
import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from nsegjax import checkpoint, methods, models, sharding, train
from nsegjax.data import pipeline
from nsegjax.errors import NsegError


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  data: Any  # train.RunData: splits, noisy labels, noise records
  model: Any
  method: Any
  state: Any  # train.TrainState
  step: int

  @property
  def variables(self) -> dict:
    return {'params': self.state.params, 'batch_stats': self.state.batch_stats}

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """Test-time class probabilities of uint8 images [B, H, W, C]."""
    probs = self.method.predict(self.model, self.variables, self.state.method_state,
                                pipeline.normalize_images(np.asarray(images)))
    return np.asarray(jax.device_get(probs))

  def predict(self, images: np.ndarray) -> np.ndarray:
    return np.argmax(self.probabilities(images), axis=-1)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise NsegError(f'{path}: missing (not a workdir written by nsegjax.main)')
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))


def load_run(workdir: str, which: str = 'best', devices=None) -> Run:
  """The run in `workdir` at its best-by-validation (`best`) or latest checkpoint."""
  if which not in ('best', 'latest'):
    raise NsegError(f"load_run: which must be 'best' or 'latest', got {which!r}")
  config = load_config(workdir)
  mesh = sharding.make_mesh(devices)
  with jax.set_mesh(mesh):
    data = train.prepare_data(config)
    model = models.create_model(config.model, data.num_classes)
    method = methods.create_method(config)
    method.setup_data(data)
    global_batch = int(config.train.batch_size)
    tx, _ = method.make_optimizer(train.total_steps(config.train, len(data.train)),
                                  train.steps_per_epoch(len(data.train), global_batch))
    dataset = pipeline.make_train_dataset(
        data.train, data.train_noisy, seed=config.seed, global_batch=global_batch, num_steps=1,
        aug_cfg=config.data.augment)
    template = train.create_train_state(jax.random.PRNGKey(config.seed), model, method, tx,
                                        sharding.shard_batch(dataset[0], mesh), mesh)
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'))
    step = checkpointer.best_step() if which == 'best' else checkpointer.latest_step()
    if step is None:
      step = checkpointer.latest_step()
    if step is None:
      raise NsegError(f'{workdir}/checkpoints: no checkpoint to restore')
    state, _ = checkpointer.restore(step, template)
    checkpointer.close()
  return Run(config, data, model, method, state, int(step))
