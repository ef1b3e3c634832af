"""U-Net and dilated ResNet shapes, dtypes, dropout, heads and registry errors."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nsegjax import models, resize
from nsegjax.models import resnet
from nsegjax.errors import ConfigError, DataError


def make(**kw):
  cfg = ml_collections.ConfigDict(dict(name='unet', depth=2, base_width=4, dropout=0.0,
                                       dtype='float32'))
  cfg.update(kw)
  return models.create_model(cfg, num_classes=3)


def test_unet_output_shape_and_batch_stats():
  model = make()
  x = jnp.ones((2, 16, 16, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  chex.assert_shape(logits, (2, 16, 16, 3))
  assert logits.dtype == jnp.float32
  assert jax.tree.leaves(updates['batch_stats'])


def test_unet_default_widths():
  model = models.create_model(ml_collections.ConfigDict(dict(name='unet')), num_classes=2)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 1)))
  bottleneck = variables['params']['ConvBlock_4']['Conv_0']['kernel']
  assert bottleneck.shape == (3, 3, 128, 256)  # 16·2^3 → 16·2^4 at depth 4


def test_bf16_compute_returns_float32_logits():
  model = make(dtype='bfloat16')
  x = jnp.ones((1, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert model.apply(variables, x).dtype == jnp.float32


def test_dropout_is_active_only_in_training():
  model = make(dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 16, 16, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  a = model.apply(variables, x)
  b = model.apply(variables, x)
  chex.assert_trees_all_equal(a, b)
  t1, _ = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)},
                      mutable=['batch_stats'])
  t2, _ = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(3)},
                      mutable=['batch_stats'])
  assert not jnp.allclose(t1, t2)


def test_upsample_by_matmul_equals_the_transposed_convolution():
  """Same parameters, initial values, outputs and gradients as nn.ConvTranspose."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  nets = [models.UNet(num_classes=3, depth=3, base_width=4, upsample=u)
          for u in ('conv_transpose', 'matmul')]
  variables = [n.init(jax.random.key(0), x) for n in nets]
  chex.assert_trees_all_equal(*variables)

  def loss(params, net):
    out, _ = net.apply({'params': params, 'batch_stats': variables[0]['batch_stats']}, x,
                       train=True, mutable=['batch_stats'])
    return jnp.mean(out ** 2)

  params = variables[0]['params']
  np.testing.assert_allclose(nets[1].apply(variables[0], x), nets[0].apply(variables[0], x),
                             atol=1e-5)
  chex.assert_trees_all_close(jax.grad(loss)(params, nets[1]), jax.grad(loss)(params, nets[0]),
                              atol=1e-5)
  with pytest.raises(ValueError, match='model.upsample'):
    models.UNet(num_classes=3, depth=3, upsample='bilinear').init(jax.random.key(0), x)


def test_unknown_model_and_dtype_name_choices():
  with pytest.raises(ConfigError, match='valid choices:.*unet'):
    make(name='resnet9000')
  with pytest.raises(ConfigError, match='bfloat16'):
    make(dtype='float8')


def test_size_not_divisible_by_depth_fails_clearly():
  model = make()
  with pytest.raises(ValueError, match='divisible by 4'):
    model.init(jax.random.PRNGKey(0), jnp.ones((1, 18, 18, 1)))


def test_unet_embedding_head_branch_format():
  model = make(embedding_dim=8)
  x = jnp.ones((2, 16, 16, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  out = model.apply(variables, x, heads=True)
  chex.assert_shape(out['logits'], [(2, 16, 16, 3)])
  chex.assert_shape(out['embeddings'], [(2, 16, 16, 8)])
  chex.assert_trees_all_equal(out['logits'][0], model.apply(variables, x))
  with pytest.raises(ValueError, match='embedding_dim'):
    make().apply(make().init(jax.random.PRNGKey(0), x), x, heads=True)


@pytest.mark.parametrize('size,expected', [(64, 33), (128, 65), (160, 81), (7, 4), (8, 5)])
def test_ceil_mode_pool_length_matches_pytorch(size, expected):
  # PyTorch MaxPool2d(3, 2, padding=1, ceil_mode=True) output lengths, computed by hand from
  # its documented formula: ceil((L + 2 − 3) / 2) + 1, minus one if the last window starts in
  # the right padding.
  low, high = resnet.ceil_mode_padding(size, 3, 2, 1)
  assert (size + low + high - 3) // 2 + 1 == expected


def test_resnet101_matches_deeplab_v2_geometry_and_size():
  model = models.create_model(ml_collections.ConfigDict(dict(name='resnet', depth=101)), 4)
  x = jnp.zeros((1, 256, 320, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = jax.eval_shape(lambda v: model.apply(v, x, heads=True), variables)
  assert [a.shape for a in out['logits']] == [(1, 33, 41, 4)] * 2  # output stride 8, ceil pool
  assert [a.shape for a in out['embeddings']] == [(1, 33, 41, 128), (1, 33, 41, 256)]
  backbone = {k: v for k, v in variables['params'].items() if 'head' not in k}
  # torchvision's ResNet-101 has 44,549,160 parameters, 2,049,000 of them in the fc layer.
  count = sum(a.size for a in jax.tree.leaves(backbone))
  bn = sum(a.size for k, v in backbone.items() for name, layer in v.items() if 'bn' in name
           for a in jax.tree.leaves(layer))
  assert count == 44_549_160 - 2_049_000 and bn > 0


def test_small_resnet_trains_and_returns_input_size_logits():
  model = models.create_model(ml_collections.ConfigDict(
      dict(name='resnet', depth=18, width_multiplier=0.125, aux_embedding_dim=4,
           embedding_dim=8)), 3)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 48, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  chex.assert_shape(logits, (2, 32, 48, 3))
  heads = model.apply(variables, x, heads=True)
  chex.assert_shape(heads['logits'], [(2, 5, 7, 3)] * 2)
  # The default output is the main head resized with align_corners (corners coincide).
  np.testing.assert_allclose(model.apply(variables, x)[:, [0, -1]][:, :, [0, -1]],
                             heads['logits'][1][:, [0, -1]][:, :, [0, -1]], rtol=1e-5, atol=1e-6)
  assert jax.tree.leaves(updates['batch_stats'])


def test_resize_bilinear_align_corners_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  out = np.asarray(resize.resize_bilinear(jnp.asarray(x), (9, 4)))
  expected = np.zeros((2, 9, 4, 3), np.float32)
  for i in range(9):
    for j in range(4):
      r, c = i * 4 / 8, j * 6 / 3  # dst · (in − 1) / (out − 1)
      r0, c0 = int(np.floor(r)), int(np.floor(c))
      r1, c1 = min(r0 + 1, 4), min(c0 + 1, 6)
      fr, fc = r - r0, c - c0
      expected[:, i, j] = ((1 - fr) * (1 - fc) * x[:, r0, c0] + (1 - fr) * fc * x[:, r0, c1]
                           + fr * (1 - fc) * x[:, r1, c0] + fr * fc * x[:, r1, c1])
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_resize_labels_nearest_takes_floor_indices():
  labels = jnp.arange(256 * 320).reshape(1, 256, 320)
  out = np.asarray(resize.resize_nearest(labels, (64, 64)))
  # METHODS §3.1: 256×320 → 64×64 takes rows 0, 4, 8, … and columns 0, 5, 10, ….
  np.testing.assert_array_equal(out[0], np.asarray(labels[0])[::4, ::5])


def test_weights_file_round_trip_by_name_and_shape(tmp_path):
  model = make()
  x = jnp.ones((1, 16, 16, 1))
  source = model.init(jax.random.PRNGKey(0), x)
  target = model.init(jax.random.PRNGKey(1), x)
  path = str(tmp_path / 'w.npz')
  models.save_npz_weights(source, path)
  loaded, report = models.load_npz_weights(target, path)
  chex.assert_trees_all_equal(loaded, dict(source))
  assert report['skipped'] == [] and report['unused'] == []
  # A wider model: only arrays of matching shape are copied, the rest are reported.
  wider = make(base_width=8).init(jax.random.PRNGKey(1), x)
  _, report = models.load_npz_weights(wider, path)
  assert report['skipped'] and report['loaded'] < len(jax.tree.leaves(source))


def test_weights_file_errors_name_the_file(tmp_path):
  variables = make().init(jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 1)))
  with pytest.raises(DataError, match='does not exist'):
    models.load_npz_weights(variables, str(tmp_path / 'missing.npz'))
  pickled = tmp_path / 'pickled.npz'
  np.savez(pickled, **{'params/Conv_0/kernel': np.array([{'evil': 1}], dtype=object)})
  with pytest.raises(DataError, match='pickled.npz'):  # never unpickled
    models.load_npz_weights(variables, str(pickled))
  unrelated = tmp_path / 'unrelated.npz'
  np.savez(unrelated, other=np.zeros(3))
  with pytest.raises(DataError, match='no array matches'):
    models.load_npz_weights(variables, str(unrelated))
