"""Loss baselines (`gce`, `sce`, `sparsereg`) and `volmin` (METHODS §4) in the loop."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gce as gce_config
from configs import sce as sce_config
from configs import sparsereg as sparsereg_config
from configs import volmin as volmin_config
from nsegjax import methods, models, train
from nsegjax.data import pipeline
from nsegjax.errors import ConfigError
from nsegjax.jcas import calc
from nsegjax.methods import volmin


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def tiny(config, data_dir, variant='tiny'):
  config.data.update(variant=variant, data_dir=str(data_dir), num_workers=0)
  if variant == 'tiny':
    config.data.image_size = 0
  config.model.update(depth=2, base_width=4)
  config.train.update(batch_size=4, num_epochs=2, log_every=2)
  config.eval.update(batch_size=4, num_overlays=0)
  return config


def train_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r for r in map(json.loads, f) if r['split'] == 'train']


@pytest.mark.parametrize('module,variant', [(gce_config, 'tiny'), (sce_config, 'tiny'),
                                            (sparsereg_config, 'parts_tiny')])
def test_loss_baselines_end_to_end(tmp_path, data_dir, module, variant):
  config = tiny(module.get_config(), data_dir, variant)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 0.0 <= results['test']['dice'] <= 1.0
  records = train_records(str(tmp_path / 'run'))
  assert records and all(np.isfinite(r[config.method]) for r in records)


def test_sparsereg_refine_goes_through_dar(data_dir):
  config = tiny(sparsereg_config.get_config(), data_dir, 'parts_tiny')
  config.model.embedding_dim = 4
  model = models.create_model(config.model, 4)
  images = pipeline.normalize_images(
      np.random.default_rng(0).integers(0, 255, (2, 16, 16, 1)).astype(np.uint8))
  method = methods.create_method(config)
  variables = method.init_variables(jax.random.key(0), model, images)
  plain = method.predict(model, variables, {}, images)
  config.sparsereg.update(refine=True, test_grid=8)
  refined = methods.create_method(config).predict(model, variables, {}, images)
  heads = model.apply(variables, images, heads=True)
  want = calc.dar_predict(heads['embeddings'][0], heads['logits'][0], (16, 16), grid=(8, 8)) / 2
  np.testing.assert_allclose(refined, want, rtol=1e-5, atol=1e-6)
  z = np.asarray(heads['logits'][0], np.float64)
  norm = np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)  # all-zero logits occur
  z_tilde = z / norm / config.sparsereg.tau
  e = np.exp(z_tilde - z_tilde.max(-1, keepdims=True))
  np.testing.assert_allclose(plain, e / e.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_volmin_loss_equals_numpy_in_both_stages():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  aux = rng.normal(size=(2, 2, 2, 3)).astype(np.float32)  # a coarser branch, upsampled
  labels = rng.integers(0, 3, (2, 4, 4)).astype(np.int32)
  labels[0, 0, 0] = 255
  w = rng.normal(size=(3, 3)).astype(np.float32) - 2
  t = np.eye(3) + (1 / (1 + np.exp(-w))) * (1 - np.eye(3))
  t /= t.sum(1, keepdims=True)
  valid = labels != 255

  def nll(z, matrix):
    e = np.exp(z - z.max(-1, keepdims=True))
    p = (e / e.sum(-1, keepdims=True)) @ matrix
    p_y = np.take_along_axis(np.clip(p, 1e-10, 1), np.where(valid, labels, 0)[..., None], -1)
    return -np.log(p_y[..., 0])[valid].mean()

  up_aux = np.asarray(volmin.resize.resize_bilinear(jnp.asarray(aux), (4, 4)))
  assert up_aux.shape == logits.shape
  branches = (jnp.asarray(aux), jnp.asarray(logits))
  for stage, matrix, vol in ((0, np.eye(3), 0.0), (1, t, np.log(abs(np.linalg.det(t))))):
    loss, terms = volmin.volmin_loss(branches, jnp.asarray(labels), jnp.asarray(w),
                                     jnp.int32(stage), (0.1, 1.0), 0.5)
    want = 0.1 * nll(up_aux, matrix) + nll(logits, matrix) + 0.5 * vol
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(terms['log_det_t']) == pytest.approx(vol, abs=1e-5)
  grad_stage1 = jax.grad(lambda w: volmin.volmin_loss(branches, jnp.asarray(labels), w,
                                                      jnp.int32(0), (0.1, 1.0), 0.5)[0])
  np.testing.assert_array_equal(grad_stage1(jnp.asarray(w)), 0.0)


def test_volmin_two_stages_end_to_end(tmp_path, data_dir):
  config = tiny(volmin_config.get_config(), data_dir, 'parts_tiny')
  config.model.embedding_dim = 0  # VolMin trains no embedding head
  config.jcas.update(stage1_epochs=1)
  workdir = str(tmp_path / 'run')
  results = train.train_and_evaluate(config, workdir)
  assert 0.0 <= results['test']['dice'] <= 1.0
  stages = [r['stage'] for r in train_records(workdir)]
  assert stages[0] == 0.0 and stages[-1] == 1.0
  with open(os.path.join(workdir, 'transitions.jsonl'), encoding='utf-8') as f:
    t_class = [np.asarray(json.loads(line)['T_C']) for line in f]
  initial = np.asarray(calc.transition_matrix(calc.init_transition_logits(4)))
  np.testing.assert_allclose(t_class[0], initial, atol=1e-5)  # the warm-up never moves T
  assert not np.allclose(t_class[-1], initial, atol=1e-5)
  assert os.path.getsize(os.path.join(workdir, 'transitions.png')) > 0


@pytest.mark.parametrize('module,key,value,match', [
    (gce_config, 'q', 0.0, 'gce.q'), (gce_config, 'truncate', 1.0, 'gce.truncate'),
    (sce_config, 'log_zero', 0.0, 'sce.log_zero'), (sparsereg_config, 'tau', 0.0, 'sparsereg.tau'),
    (volmin_config, 'branch_w', [1.0], 'volmin.branch_w')])
def test_bad_options_name_the_key(module, key, value, match):
  config = module.get_config()
  config[config.method][key] = value
  with pytest.raises(ConfigError, match=match):
    methods.create_method(config)
