"""End-to-end tests of launch.noise_gallery / noise_stats / bench_noise on the tiny synthetic set,
and of the SciPy reference the benchmark times against."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from launch import scipy_noise_reference
from nsegjax.noise import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tiny_flags(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tiny')
  return ['--config=configs/default.py', '--config.data.variant=tiny',
          f'--config.data.data_dir={data_dir}', '--config.data.image_size=32']


def run_tool(module, *flags):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-m', module, *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_gallery_writes_png(tiny_flags, tmp_path):
  out = tmp_path / 'gallery.png'
  stdout = run_tool('launch.noise_gallery', *tiny_flags, '--protocols=abn,none', '--num=3',
                    f'--out={out}')
  assert str(out) in stdout
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_stats_table_and_json(tiny_flags):
  table = run_tool('launch.noise_stats', *tiny_flags, '--protocols=abn,none')
  assert '| protocol |' in table and '| abn |' in table and '| none |' in table
  lines = run_tool('launch.noise_stats', *tiny_flags, '--protocols=abn,none', '--json')
  rows = [json.loads(line) for line in lines.splitlines() if line.startswith('{')]
  assert [r['protocol'] for r in rows] == ['abn', 'none']
  for row in rows:
    assert {'fraction_noisy', 'mean_dice', 'mean_rho_pix', 'mean_rho_fg_noisy',
            'params', 'num_samples'} <= set(row)
  assert rows[0]['fraction_noisy'] == pytest.approx(16 / 24)  # config α = 0.7 of 24 samples
  assert rows[0]['params']['beta'] == 0.5 and rows[1]['fraction_noisy'] == 0.0


def test_bench_prints_one_json_line_per_protocol(tiny_flags):
  stdout = run_tool('launch.bench_noise', *tiny_flags, '--protocols=abn', '--reps=1',
                    '--num=16')
  (line,) = [line for line in stdout.splitlines() if line.startswith('{')]
  result = json.loads(line)
  assert {'masks_per_sec_jax', 'masks_per_sec_scipy', 'speedup', 'num_masks', 'image_size',
          'device'} <= set(result)
  assert result['num_masks'] == 16 and result['image_size'] == 32


def _ellipses(rng, count, size):
  yy, xx = np.mgrid[:size, :size]
  out = np.zeros((count, size, size), np.uint8)
  for i in range(count):
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    a, b = rng.uniform(0.1, 0.3, 2) * size
    out[i] = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1
  return out


def test_scipy_reference_equals_jax_on_dilate_and_erode():
  rng = np.random.default_rng(0)
  masks = _ellipses(rng, 12, 40)
  params = {'alpha': 1.0, 'beta': 0.5}
  noisy, records = generate.apply_noise(masks, np.arange(12), 'abn', params, seed=1, chunk=12)
  _, resolved = generate.resolve('abn', params, masks)
  morph = [i for i, r in enumerate(records) if r['type'] in ('dilate', 'erode')]
  assert morph
  for i in morph:
    np.testing.assert_array_equal(
        scipy_noise_reference.REFERENCES['abn'](masks[i], records[i], resolved), noisy[i])
  for i in range(12):  # affine resamples differently; only its shape and labels are checked
    out = scipy_noise_reference.REFERENCES['abn'](masks[i], records[i], resolved)
    assert out.shape == masks[i].shape and set(np.unique(out)) <= {0, 1}
