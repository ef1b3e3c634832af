"""launch.sweep / launch.report: grids, cell configs, emission, a real resumable sweep, report."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import sweep_cell
from launch import grid as grids
from launch import report
from nsegjax import config_checks
from nsegjax.errors import ConfigError

REPO = grids.REPO_ROOT


def tiny_grid(data_dir, **changes):
  grid = dict(
      name='tiny', methods=['ce_noisy', 'clean'], datasets=['synthetic'],
      noises={'a7b5': {'name': 'abn', 'params': {'alpha': 0.7, 'beta': 0.5}}}, seeds=[0, 1],
      overrides={'data.variant': 'tiny', 'data.image_size': 0, 'data.data_dir': str(data_dir),
                 'data.num_workers': 0, 'model.depth': 2, 'model.base_width': 4,
                 'train.batch_size': 4, 'train.num_steps': 4, 'train.num_epochs': 0,
                 'train.log_every': 2, 'eval.batch_size': 4, 'eval.num_overlays': 0})
  grid.update(changes)
  return grid


def write_grid(tmp_path, grid, suffix='.py'):
  path = tmp_path / f'grid{suffix}'
  if suffix == '.py':
    path.write_text(f'def get_grid():\n  return {grid!r}\n')
  else:
    import yaml  # pylint: disable=g-import-not-at-top
    path.write_text(yaml.safe_dump(grid))
  return str(path)


@pytest.mark.parametrize('suffix', ['.py', '.yaml'])
def test_grid_files_load_and_expand_to_cells(tmp_path, suffix):
  grid = grids.load_grid(write_grid(tmp_path, tiny_grid(tmp_path), suffix))
  assert grid['methods'] == {'ce_noisy': 'configs/default.py', 'clean': 'configs/clean.py'}
  ids = [c.id for c in grids.cells(grid)]
  assert ids == ['synthetic__a7b5__ce_noisy__s0', 'synthetic__a7b5__clean__s0',
                 'synthetic__a7b5__ce_noisy__s1', 'synthetic__a7b5__clean__s1']


@pytest.mark.parametrize('change,match', [
    ({'methodz': ['x']}, 'unknown grid keys'), ({'seeds': []}, 'non-empty seeds'),
    ({'methods': ['no_such_method']}, 'no config file configs/no_such_method.py'),
    ({'noises': {'bad': {'params': {}}}}, "noise setting 'bad'"),
    ({'method_overrides': {'des': {}}}, 'not in the grid'), ({'val_labels': 'test'}, 'val_labels')])
def test_bad_grids_name_the_file_and_key(tmp_path, change, match):
  path = write_grid(tmp_path, tiny_grid(tmp_path, **change))
  with pytest.raises(ConfigError, match=match) as info:
    grids.load_grid(path)
  assert path in str(info.value)


def test_cell_config_applies_preset_noise_and_overrides(tmp_path):
  grid = grids.check_grid(tiny_grid(tmp_path, methods=['hqpm'], datasets=['kvasir'],
                                    noises={'box': {'name': 'box', 'params': {}}},
                                    method_overrides={'hqpm': {'hqpm.revise_grid': [1.0, 0.9]}}))
  sweep = grids.SweepDir(str(tmp_path / 'sweep'))
  cell = sweep.write(grid)[1]
  config = sweep_cell.get_config(sweep.cell_file(cell))
  assert (config.method, config.seed, config.data.name) == ('hqpm', 1, 'kvasir_seg')
  assert config.noise.name == 'box' and dict(config.noise.params) == {}
  assert config.train.num_steps == 4 and config.hqpm.revise_grid == (1.0, 0.9)
  assert config.eval.val_labels == 'noisy'
  config_checks.validate(config)
  spec = json.load(open(sweep.cell_file(cell), encoding='utf-8'))
  spec['overrides']['train.no_such_key'] = 1
  with open(sweep.cell_file(cell), 'w', encoding='utf-8') as f:
    json.dump(spec, f)
  with pytest.raises(KeyError, match='train.no_such_key'):
    sweep_cell.get_config(sweep.cell_file(cell))


@pytest.mark.parametrize('grid_file', sorted(
    os.path.join('launch', 'grids', f) for f in os.listdir(os.path.join(REPO, 'launch', 'grids'))
    if f.endswith(('.py', '.yaml')) and not f.startswith('_')))
def test_every_committed_grid_builds_valid_cell_configs(tmp_path, grid_file):
  grid = grids.load_grid(os.path.join(REPO, grid_file))
  sweep = grids.SweepDir(str(tmp_path / 'sweep'))
  cells = sweep.write(grid)
  assert len(cells) == (len(grid['methods']) * len(grid['datasets']) * len(grid['noises']) *
                        len(grid['seeds']))
  for cell in cells:
    config = sweep_cell.get_config(sweep.cell_file(cell))
    assert (config.method, config.seed) == (cell.method, cell.seed)
    config_checks.validate(config)


def run_sweep(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-m', 'launch.sweep', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, check=False)


def test_emit_commands_and_slurm(tmp_path):
  path = write_grid(tmp_path, tiny_grid(tmp_path))
  sweep_dir = str(tmp_path / 'sweep')
  out = run_sweep(f'--grid={path}', f'--sweep_dir={sweep_dir}', '--emit=commands')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 4 and all('-m nsegjax.main' in line for line in lines)
  assert f'--workdir={sweep_dir}/runs/synthetic__a7b5__clean__s1' in lines[-1]
  out = run_sweep(f'--grid={path}', f'--sweep_dir={sweep_dir}', '--emit=slurm',
                  '--slurm_options=--gres=gpu:1 --time=02:00:00')
  assert out.returncode == 0, out.stderr
  script = open(os.path.join(sweep_dir, 'sweep.slurm'), encoding='utf-8').read()
  assert '#SBATCH --array=1-4' in script and '#SBATCH --gres=gpu:1' in script
  assert 'SLURM_ARRAY_TASK_ID' in script
  commands = open(os.path.join(sweep_dir, 'commands.txt'), encoding='utf-8').read().splitlines()
  assert commands == lines
  bad = run_sweep(f'--grid={tmp_path}/missing.py', f'--sweep_dir={sweep_dir}')
  assert bad.returncode == 2 and 'missing.py: no such grid file' in bad.stderr


def test_a_real_sweep_resumes_and_reports(tmp_path):
  path = write_grid(tmp_path, tiny_grid(tmp_path / 'tfds'))
  sweep_dir = str(tmp_path / 'sweep')
  out = run_sweep(f'--grid={path}', f'--sweep_dir={sweep_dir}', '--parallel=2')
  assert out.returncode == 0, out.stderr + out.stdout
  assert out.stdout.count('done ') == 4
  again = run_sweep(f'--grid={path}', f'--sweep_dir={sweep_dir}', '--dry-run')
  assert again.returncode == 0 and again.stdout.strip() == ''
  assert '4 finished, 0 to run' in again.stderr

  result = report.report(sweep_dir)
  by_method = {s['method']: s for s in result['summaries']}
  dice = {m: [json.load(open(os.path.join(sweep_dir, 'runs', f'synthetic__a7b5__{m}__s{s}',
                                          'results.json'), encoding='utf-8'))['test']['dice']
              for s in (0, 1)] for m in ('ce_noisy', 'clean')}
  for method, values in dice.items():
    assert by_method[method]['dice_mean'] == pytest.approx(np.mean(values))
    assert by_method[method]['dice_std'] == pytest.approx(np.std(values, ddof=1))
  if by_method['clean']['dice_mean'] > by_method['ce_noisy']['dice_mean']:
    assert by_method['ce_noisy']['gap_recovered'] == pytest.approx(0.0)
    assert by_method['clean']['gap_recovered'] == pytest.approx(1.0)
  else:  # no gap to recover
    assert by_method['ce_noisy']['gap_recovered'] is None
    assert by_method['clean']['gap_recovered'] is None
  text = open(os.path.join(sweep_dir, 'report.md'), encoding='utf-8').read()
  assert '| ce_noisy | 2 |' in text and 'noisy labels (no clean validation set' in text
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                        check=True).stdout.strip()
  assert re.search(rf'Code: commit {head[:12]}(\+dirty)? \(4 cells\)', text), text[:600]
  assert sorted(os.path.basename(f) for f in result['figures']) == [
      'bars_synthetic_a7b5.png', 'curves_synthetic_a7b5.png']
  with open(os.path.join(sweep_dir, 'report.csv'), encoding='utf-8') as f:
    assert len(f.read().strip().splitlines()) == 3  # header + two methods


def test_report_lists_missing_cells(tmp_path):
  sweep = grids.SweepDir(str(tmp_path / 'sweep'))
  sweep.write(grids.check_grid(tiny_grid(tmp_path)))
  result = report.report(sweep.root)
  assert result['summaries'] == [] and len(result['missing']) == 4
  text = open(os.path.join(sweep.root, 'report.md'), encoding='utf-8').read()
  assert 'Missing cells (4):\n\n- synthetic · a7b5: ce_noisy (s0, s1), clean (s0, s1)\n' in text


def test_code_label_names_the_commit_and_local_changes():
  assert report.code_label({'commit': 'a' * 40, 'dirty': False}) == 'a' * 12
  assert report.code_label({'commit': 'b' * 40, 'dirty': True}) == 'b' * 12 + '+dirty'
  assert report.code_label(None) == 'unknown'


def test_gap_recovered_needs_clean_above_ce_noisy():
  grid = {'datasets': ['d'], 'noises': {'n': {}}, 'methods': ['ce_noisy', 'clean', 'm']}

  def rows(dice):
    return [dict({k: None for k in report.METRICS}, dataset='d', noise='n', method=m,
                 dice=v, dice_best_val=v) for m, v in dice.items()]

  by_method = {s['method']: s for s in report.summarize(
      grid, rows({'ce_noisy': 0.5, 'clean': 0.9, 'm': 0.6}))}
  assert by_method['m']['gap_recovered'] == pytest.approx((0.6 - 0.5) / (0.9 - 0.5))
  by_method = {s['method']: s for s in report.summarize(
      grid, rows({'ce_noisy': 0.5, 'clean': 0.49, 'm': 0.6}))}
  assert by_method['m']['gap_recovered'] is None


def test_one_seed_is_reported_without_a_spread():
  assert report.mean_std([0.5, None, float('nan')]) == (0.5, None, 1)
  mean, std, n = report.mean_std([0.2, 0.4, 0.9])
  assert (mean, n) == (pytest.approx(0.5), 3)
  assert std == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
  assert report._fmt(0.5, None) == '0.5000'  # pylint: disable=protected-access
  assert report._fmt(0.5, 0.01, 2) == '0.50 ± 0.01'  # pylint: disable=protected-access
