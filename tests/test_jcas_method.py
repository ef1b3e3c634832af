"""The `jcas` method: parameter groups, the stage flag, the stage switch and an end-to-end run."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import jcas as jcas_config
from nsegjax import methods, models, optim, sharding, train
from nsegjax.data import pipeline
from nsegjax.jcas import calc
from nsegjax.methods import jcas


def tiny_config(tmp_path, **train_overrides):
  config = jcas_config.get_config()
  config.data.update(variant='parts_tiny', data_dir=str(tmp_path / 'data'), num_workers=0)
  config.model.update(depth=2, base_width=4, embedding_dim=8)
  config.jcas.update(grid=8, test_grid=8, block=16, stage1_epochs=1)
  config.train.update(batch_size=4, num_epochs=2, log_every=3, **train_overrides)
  config.eval.batch_size = 4
  return config


def test_empirical_transition_by_hand():
  clean = np.array([[[0, 0, 1, 1], [2, 2, 255, 0]]], np.uint8)
  noisy = np.array([[[0, 1, 1, 1], [2, 0, 0, 255]]], np.uint8)
  # Valid in both: (0→0), (0→1), (1→1), (1→1), (2→2), (2→0); the ignore pixels drop out.
  expected = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
  np.testing.assert_allclose(jcas.empirical_transition(clean, noisy, 3), expected)


def test_keep_schedule_counts_restarts_moments_but_not_schedules():
  tx = optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(lambda c: 1.0 / (1 + c)))
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  for _ in range(5):
    _, state = tx.update({'w': jnp.full(3, 2.0)}, state, params)
  merged = optim.keep_schedule_counts(tx.init(params), state)
  adam, schedule = merged
  assert int(adam.count) == 0 and not np.asarray(adam.mu['w']).any()
  assert int(schedule.count) == 5


def test_resnet_parameter_groups(tmp_path):
  config = tiny_config(tmp_path)
  config.model = dict(name='resnet', depth=18, width_multiplier=0.125, aux_embedding_dim=4,
                      embedding_dim=8, dtype='float32', weights='')
  config.jcas.freeze = 'code'
  config.train.lr_schedule = 'constant'  # a warm-up would make every first update zero
  method = jcas.JCAS(config)
  model = models.create_model(config.model, 4)
  variables = method.init_variables(jax.random.PRNGKey(0), model, jnp.zeros((1, 32, 32, 1)))
  tx, _ = method.make_optimizer(num_steps=10, steps_per_epoch=5)
  params = variables['params']
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  net = updates['net']
  frozen = [net['conv1'], net['bn1'], net['layer1_0'], net['layer2_1'],
            net['layer3_0']['bn1']]  # stem, layer1, layer2, and every BatchNorm γ/β
  assert all(not np.asarray(leaf).any() for leaf in jax.tree.leaves(frozen))
  assert np.asarray(net['layer3_0']['conv1']['kernel']).any()
  assert np.asarray(net['class_head']['conv_d6']['kernel']).any()
  assert np.asarray(updates['transition']['class']).any()


def test_stage_flag_switches_the_loss_without_recompiling(tmp_path):
  config = tiny_config(tmp_path)

  class Counting(jcas.JCAS):
    traces = 0

    def loss(self, *args):
      Counting.traces += 1
      return super().loss(*args)

  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    method = Counting(config)
    model = models.create_model(config.model, 4)
    tx, _ = method.make_optimizer(10, 5)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (4, 16, 16)).astype(np.uint8)
    batch = sharding.shard_batch({
        'image': rng.integers(0, 255, (4, 16, 16, 1)).astype(np.uint8), 'mask': labels,
        'noisy_mask': labels, 'index': np.arange(4)}, mesh)
    state = train.create_train_state(jax.random.PRNGKey(0), model, method, tx, batch, mesh)
    step = train.make_train_step(model, method, tx, mesh)
    schedule = train.make_schedule(0, 5, 10)
    state, stage1 = step(state, batch, schedule)
    t_after_stage1 = np.asarray(state.params['transition']['class'])  # the state is donated next
    stage2_state = state.replace(method_state=dict(state.method_state,
                                                   stage=jnp.ones((), jnp.int32)))
    stage2_state, stage2 = step(stage2_state, batch, schedule)
  assert Counting.traces == 1
  assert float(stage1['stage']) == 0.0 and float(stage2['stage']) == 1.0
  # Stage 1 never moves T (its gradient is zero); stage 2 does, through vol and CACR.
  np.testing.assert_array_equal(t_after_stage1, np.asarray(calc.init_transition_logits(4)))
  assert not np.array_equal(np.asarray(stage2_state.params['transition']['class']),
                            t_after_stage1)


def test_two_stage_run_end_to_end(tmp_path):
  config = tiny_config(tmp_path)
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  assert 0.0 <= results['test']['dice'] <= 1.0
  with open(os.path.join(workdir, 'transitions.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  assert [r['stage'] for r in records] == [1, 2]  # epoch 1 in stage 1, then the final T
  for record in records:
    t_class = np.asarray(record['T_C'])
    assert t_class.shape == (4, 4)
    np.testing.assert_allclose(t_class.sum(axis=1), 1.0, atol=1e-4)
    assert (np.diag(t_class) > t_class.max(axis=1, initial=0, where=~np.eye(4, dtype=bool))).all()
  assert os.path.getsize(os.path.join(workdir, 'transitions.png')) > 0
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    stages = [r['stage'] for r in map(json.loads, f) if 'stage' in r]
  assert stages[0] == 0.0 and stages[-1] == 1.0


def test_predict_fuses_dar_and_plain_probabilities(tmp_path):
  config = tiny_config(tmp_path)
  method = methods.create_method(config)
  model = models.create_model(config.model, 4)
  images = pipeline.normalize_images(
      np.random.default_rng(0).integers(0, 255, (2, 16, 16, 1)).astype(np.uint8))
  variables = method.init_variables(jax.random.PRNGKey(0), model, images)
  probs = method.predict(model, variables, {}, images)
  assert probs.shape == (2, 16, 16, 4)
  np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)


def test_bad_jcas_options_name_the_key(tmp_path):
  config = tiny_config(tmp_path)
  config.jcas.cacr_index = 'both'
  with pytest.raises(Exception, match='jcas.cacr_index'):
    jcas.JCAS(config)
