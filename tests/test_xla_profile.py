"""launch.xla_profile: kernels of a compiled step sorted into what they compute; and the XLA:CPU
convolution default that importing nsegjax sets."""
import collections
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from launch import xla_profile


class TinyNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), use_bias=False)(x)
    x = nn.Conv(4, (3, 3), use_bias=False)(x)  # its input needs a gradient: grad-input
    x = nn.BatchNorm(use_running_average=False)(x)
    x = nn.relu(nn.max_pool(x, (2, 2), strides=(2, 2)))
    return nn.Dense(3)(x)


def _compiled_step():
  net = TinyNet()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 2)), jnp.float32)
  variables = net.init(jax.random.key(0), x)

  def loss(params):
    out, _ = net.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                       mutable=['batch_stats'])
    return jnp.mean(out ** 2)

  def step(params):
    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), value

  step = jax.jit(step)
  return step, variables['params'], step.lower(variables['params']).compile().as_text()


def test_every_convolution_direction_and_the_other_kinds_are_recognised():
  _, _, text = _compiled_step()
  instructions, computations = xla_profile._parse_hlo(text)
  kinds = collections.Counter(xla_profile.categorize(line, computations)
                              for name, line in instructions.items() if ' fusion(' in line
                              or ' convolution(' in line or ' dot(' in line)
  for kind in ('conv fwd', 'conv grad-input', 'conv grad-weight', 'matmul', 'batchnorm',
               'pool fwd', 'pool bwd'):
    assert kinds[kind] >= 1, (kind, kinds)


def test_profile_accounts_for_the_traced_time():
  step, params, text = _compiled_step()
  result = xla_profile.profile(lambda p: step(p), (params,), text, steps=3, top=3)
  assert result['wall_ms_per_step'] > 0
  assert abs(sum(result['by_category_ms'].values()) - result['kernel_ms_per_step']) < 0.5
  assert len(result['top_kernels']) <= 3
  assert all(k['ms'] <= result['kernel_ms_per_step'] + 0.1 for k in result['top_kernels'])


def test_import_moves_convolutions_to_eigen_unless_the_user_chose():
  show = 'import os, nsegjax; print(os.environ["XLA_FLAGS"])'
  flag = '--xla_cpu_experimental_ynn_fusion_type'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  for given, expected in (('', f'{flag}=-individual_convolution'),
                          ('--xla_backend_optimization_level=0',
                           f'--xla_backend_optimization_level=0 {flag}=-individual_convolution'),
                          (f'{flag}=', f'{flag}=')):
    out = subprocess.run([sys.executable, '-c', show], env=dict(env, XLA_FLAGS=given),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected
