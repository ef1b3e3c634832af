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


def test_bench_prints_one_json_line_per_protocol_with_a_reference(tiny_flags):
  stdout = run_tool('launch.bench_noise', *tiny_flags, '--reps=1', '--num=8')
  results = [json.loads(line) for line in stdout.splitlines() if line.startswith('{')]
  # The default is every protocol with a SciPy reference.
  assert [r['protocol'] for r in results] == list(scipy_noise_reference.REFERENCES)
  for result in results:
    assert {'masks_per_sec_corrupt', 'masks_per_sec_apply_noise', 'masks_per_sec_scipy',
            'speedup_corrupt', 'speedup_apply_noise', 'num_masks', 'image_size', 'chunk',
            'device', 'rates_scipy'} <= set(result)
    assert result['num_masks'] == 8 and result['image_size'] == 32
    assert result['speedup_corrupt'] == pytest.approx(  # both rounded for printing
        result['masks_per_sec_corrupt'] / result['masks_per_sec_scipy'], rel=0.01, abs=0.01)
  assert 'speedup_branch' in results[-1]  # mstfal: its disk morphology alone too


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


def _generated(name, masks, params, seed=1):
  params = dict(params, **scipy_noise_reference.BENCH_PARAMS.get(name, {}), alpha=1.0)
  noisy, records = generate.apply_noise(masks, np.arange(len(masks)), name, params, seed=seed,
                                        chunk=len(masks))
  _, resolved = generate.resolve(name, params, masks)
  draws_fn = scipy_noise_reference.DRAWS.get(name)
  draws = draws_fn(masks, records, resolved, seed) if draws_fn else [{}] * len(masks)
  return noisy, records, resolved, draws


@pytest.mark.parametrize('name,params', [
    ('radius', {'structure': 'custom', 'r_min': 3, 'r_max': 6, 'scale_radii': False}),
    ('radius', {'structure': 'custom', 'r_min': 3, 'r_max': 6, 'scale_radii': False,
                'edge_detector': 'boundary'}),
    ('mstfal', {'reference_size': 160}),  # disk radii 10–12.5 px on these 40 px masks
])
def test_scipy_reference_equals_jax_exactly(name, params):
  rng = np.random.default_rng(2)
  masks = _ellipses(rng, 12, 40)
  masks[3] = 0
  masks[5, :2] = 255  # ignore pixels are never modified
  noisy, records, resolved, draws = _generated(name, masks, params)
  types = {record['type'] for record in records}
  assert types >= ({'dilate', 'erode', 'edge'} if name == 'radius' else {'dilate', 'erode'})
  for i in range(len(masks)):
    np.testing.assert_array_equal(
        scipy_noise_reference.REFERENCES[name](masks[i], records[i], resolved, **draws[i]),
        noisy[i], err_msg=f'{name} sample {i} ({records[i]["type"]})')


def test_scipy_reference_can_fail():
  """An independent reference: a wrong draw (radius) or a dropped edge disk changes its output."""
  rng = np.random.default_rng(3)
  masks = _ellipses(rng, 8, 40)
  params = {'structure': 'custom', 'r_min': 3, 'r_max': 6, 'scale_radii': False}
  noisy, records, resolved, draws = _generated('radius', masks, params)
  reference = scipy_noise_reference.REFERENCES['radius']
  i = next(i for i, r in enumerate(records) if r['type'] == 'dilate')
  wrong = dict(records[i], params=dict(records[i]['params'],
                                       radius=records[i]['params']['radius'] + 1))
  assert not np.array_equal(reference(masks[i], wrong, resolved), noisy[i])
  i = next(i for i, r in enumerate(records) if r['type'] == 'edge')
  fewer = dict(draws[i], centre=draws[i]['centre'] & (rng.random((40, 40)) < 0.5))
  assert not np.array_equal(reference(masks[i], records[i], resolved, **fewer), noisy[i])


@pytest.mark.parametrize('per,num_classes', [('slice', 2), ('class', 3)])
def test_adele_scipy_reference_equals_jax_up_to_threshold_ties(per, num_classes):
  """The reference resizes back in float64, the protocol in float32 matmuls: pixels may differ
  only where the resized value is within ADELE_TOLERANCE of the threshold (none here)."""
  rng = np.random.default_rng(4)
  masks = _ellipses(rng, 10, 64)
  if num_classes == 3:
    masks[:, 40:, :] *= 2
  masks[7] = 0
  params = {'per': per, 'canvas': 64, 'target_area': 300}
  noisy, records, resolved, _ = _generated('adele', masks, params)
  entries = [e for r in records for e in ([r] if num_classes == 2 else r['classes'])]
  assert {e['type'] for e in entries} >= {'under', 'over', 'empty'}
  thresh = resolved['thresh']
  checked = 0
  for i, record in enumerate(records):
    out = scipy_noise_reference.REFERENCES['adele'](masks[i], record, resolved)
    differ = out != noisy[i]
    if not differ.any():
      checked += 1
      continue
    near = np.zeros(masks[i].shape, bool)
    classes = [record] if num_classes == 2 else record['classes']
    for c, entry in enumerate(classes, start=1):
      if entry['type'] in ('under', 'over'):
        clean = masks[i] >= 1 if num_classes == 2 else masks[i] == c
        values = scipy_noise_reference.adele_values(
            clean, entry['type'] == 'over', entry['params']['iterations'],
            entry['params']['scale'], resolved)
        near |= np.abs(values - thresh) < scipy_noise_reference.ADELE_TOLERANCE
    assert not (differ & ~near).any(), f'sample {i}'
  assert checked >= len(masks) - 2
