"""U-Net shapes, dtypes, dropout and registry errors."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from nsegjax import models
from nsegjax.errors import ConfigError


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


def test_unknown_model_and_dtype_name_choices():
  with pytest.raises(ConfigError, match='valid choices: unet'):
    make(name='resnet9000')
  with pytest.raises(ConfigError, match='bfloat16'):
    make(dtype='float8')


def test_size_not_divisible_by_depth_fails_clearly():
  model = make()
  with pytest.raises(ValueError, match='divisible by 4'):
    model.init(jax.random.PRNGKey(0), jnp.ones((1, 18, 18, 1)))
