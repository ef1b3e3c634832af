"""Sweep grids: a grid file (Python `get_grid()` or YAML) → cells, each an ordinary run.

A grid is a dict:

  name: the sweep's name (its default directory: sweeps/<name>)
  methods: method names (each runs `configs/<name>.py`; `ce_noisy` runs configs/default.py), or
           a {name: config file} dict
  datasets: dataset presets of `configs/default.py` (synthetic, kvasir, jsrt_lungs, ...)
  noises: {setting name: {'name': protocol, 'params': {...}}}
  seeds: [0, 1, 2]
  overrides: {dotted config key: value} for every cell (the step budget, the lr schedule, ...)
  method_overrides: {method: {dotted key: value}} on top, for one method's cells
  val_labels: 'noisy' (default) or 'clean' when the grid grants a clean validation set

A cell is written to <sweep>/cells/<cell id>.json and run as
`python -m nsegjax.main --config=configs/sweep_cell.py:<cell file> --workdir=<sweep>/runs/<id>`;
`configs/sweep_cell.py` builds its config from the JSON (data, not code).
"""
import dataclasses
import importlib.util
import json
import os
import shlex
import sys

from configs import sweep_cell
from nsegjax.errors import ConfigError

GRID_KEYS = ('name', 'methods', 'datasets', 'noises', 'seeds', 'overrides', 'method_overrides',
             'val_labels')
REQUIRED = ('name', 'methods', 'datasets', 'noises', 'seeds')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_grid(path: str) -> dict:
  """The grid dict of a .py (`get_grid()`) or .yaml/.yml file, checked."""
  if not os.path.isfile(path):
    raise ConfigError(f'{path}: no such grid file')
  if path.endswith(('.yaml', '.yml')):
    import yaml  # pylint: disable=g-import-not-at-top
    with open(path, encoding='utf-8') as f:
      grid = yaml.safe_load(f)
  elif path.endswith('.py'):
    spec = importlib.util.spec_from_file_location('nsegjax_grid', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a grid file is code the user chose to run
    if not hasattr(module, 'get_grid'):
      raise ConfigError(f'{path}: a Python grid file must define get_grid()')
    grid = module.get_grid()
  else:
    raise ConfigError(f'{path}: a grid file is .py or .yaml')
  return check_grid(grid, path)


def method_config_file(method: str) -> str:
  return 'configs/default.py' if method == 'ce_noisy' else f'configs/{method}.py'


def check_grid(grid, path: str = 'grid') -> dict:
  if not isinstance(grid, dict):
    raise ConfigError(f'{path}: the grid must be a dict, got {type(grid).__name__}')
  unknown = sorted(set(grid) - set(GRID_KEYS))
  if unknown:
    raise ConfigError(f'{path}: unknown grid keys {unknown}; valid keys: {", ".join(GRID_KEYS)}')
  missing = [k for k in REQUIRED if not grid.get(k)]
  if missing:
    raise ConfigError(f'{path}: the grid needs non-empty {", ".join(missing)}')
  grid = dict(grid)
  if not isinstance(grid['methods'], dict):
    grid['methods'] = {m: method_config_file(m) for m in grid['methods']}
  for method, config_file in grid['methods'].items():
    if not os.path.isfile(os.path.join(REPO_ROOT, config_file)):
      raise ConfigError(f'{path}: method {method!r}: no config file {config_file}')
    try:
      sweep_cell.resolve_config_file(config_file)  # what the cells will accept
    except ValueError as e:
      raise ConfigError(f'{path}: method {method!r}: {e}') from None
  for name, setting in grid['noises'].items():
    if not isinstance(setting, dict) or 'name' not in setting:
      raise ConfigError(f"{path}: noise setting {name!r} must be {{'name': protocol, "
                        f"'params': {{...}}}}")
  grid.setdefault('overrides', {})
  grid.setdefault('method_overrides', {})
  grid.setdefault('val_labels', 'noisy')
  if grid['val_labels'] not in ('noisy', 'clean'):
    raise ConfigError(f"{path}: val_labels must be 'noisy' or 'clean', got {grid['val_labels']!r}")
  stray = sorted(set(grid['method_overrides']) - set(grid['methods']))
  if stray:
    raise ConfigError(f'{path}: method_overrides for methods not in the grid: {stray}')
  return grid


@dataclasses.dataclass(frozen=True)
class Cell:
  method: str
  dataset: str
  noise: str
  seed: int

  @property
  def id(self) -> str:
    return f'{self.dataset}__{self.noise}__{self.method}__s{self.seed}'


def cells(grid: dict) -> list[Cell]:
  # Seeds outermost: a sweep stopped part-way already holds whole tables for its first seeds.
  return [Cell(m, d, n, int(s)) for s in grid['seeds'] for d in grid['datasets']
          for n in grid['noises'] for m in grid['methods']]


def cell_spec(grid: dict, cell: Cell) -> dict:
  """What configs/sweep_cell.py needs to rebuild the cell's config."""
  overrides = dict(grid['overrides'])
  overrides.update(grid['method_overrides'].get(cell.method, {}))
  overrides.update({'seed': cell.seed, 'eval.val_labels': grid['val_labels']})
  return {'cell': dataclasses.asdict(cell), 'config_file': grid['methods'][cell.method],
          'method': cell.method, 'dataset': cell.dataset, 'noise': grid['noises'][cell.noise],
          'overrides': overrides}


class SweepDir:
  """<root>/grid.json, cells/<id>.json, runs/<id>/ (an ordinary workdir), logs/<id>.log."""

  def __init__(self, root: str):
    self.root = os.path.abspath(root)

  def cell_file(self, cell: Cell) -> str:
    return os.path.join(self.root, 'cells', f'{cell.id}.json')

  def workdir(self, cell: Cell) -> str:
    return os.path.join(self.root, 'runs', cell.id)

  def log_file(self, cell: Cell) -> str:
    return os.path.join(self.root, 'logs', f'{cell.id}.log')

  def is_done(self, cell: Cell) -> bool:
    return os.path.isfile(os.path.join(self.workdir(cell), 'results.json'))

  def write(self, grid: dict) -> list[Cell]:
    """grid.json and every cell file (rewritten: the grid is the truth); the cells."""
    for sub in ('cells', 'runs', 'logs'):
      os.makedirs(os.path.join(self.root, sub), exist_ok=True)
    _write_json(os.path.join(self.root, 'grid.json'), grid)
    todo = cells(grid)
    for cell in todo:
      _write_json(self.cell_file(cell), cell_spec(grid, cell))
    return todo

  def command(self, cell: Cell, python: str = sys.executable) -> list[str]:
    return [python, '-m', 'nsegjax.main',
            f'--config={os.path.join(REPO_ROOT, "configs", "sweep_cell.py")}:{self.cell_file(cell)}',
            f'--workdir={self.workdir(cell)}']


def shell_line(argv: list[str]) -> str:
  return ' '.join(shlex.quote(a) for a in argv)


def _write_json(path: str, value) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
