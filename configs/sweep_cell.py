"""One cell of a sweep (`launch.sweep`): `--config=configs/sweep_cell.py:<cells/ID.json>`.

The JSON (data, never executed) names the method's config file, the dataset preset, the noise
setting and dotted overrides; the config is that file's `get_config()` with the preset's data
fields, the noise replaced whole, then the overrides.
"""
import importlib.util
import json
import os

from configs import default

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
CONFIG_DIR = os.path.join(_REPO_ROOT, 'configs')


def resolve_config_file(path: str) -> str:
  """The real path of a config file named by a grid or a cell: one of configs/*.py.

  A cell file is data, and a sweep directory may come from anyone (or sit inside the
  repository): it may pick one of the repository's config files, never run code from elsewhere.

  Raises:
    ValueError: `path` (absolute or repository-relative) resolves outside configs/ or is no .py.
  """
  full = os.path.realpath(os.path.join(_REPO_ROOT, path))
  if os.path.commonpath([full, CONFIG_DIR]) != CONFIG_DIR or not full.endswith('.py'):
    raise ValueError(f'config file {path!r} is not a .py file in {CONFIG_DIR}')
  return full


def load_config_file(path: str):
  path = resolve_config_file(path)
  spec = importlib.util.spec_from_file_location(f'nsegjax_cell_{os.path.basename(path)[:-3]}',
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def set_dotted(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split('.')
  node = config
  for part in parents:
    if part not in node:
      raise KeyError(f'sweep override {dotted!r}: the config has no {part!r}')
    node = node[part]
  if leaf not in node:
    raise KeyError(f'sweep override {dotted!r}: the config has no {leaf!r}')
  if isinstance(node[leaf], tuple) and isinstance(value, list):  # JSON has no tuples
    value = tuple(value)
  node[leaf] = value


def get_config(cell_file: str):
  if not cell_file or not os.path.isfile(cell_file):
    raise ValueError(f'configs/sweep_cell.py needs a cell file argument; {cell_file!r} is not one')
  with open(cell_file, encoding='utf-8') as f:
    spec = json.load(f)
  config = load_config_file(spec['config_file'])
  if spec['dataset'] not in default.DATASET_PRESETS:
    raise ValueError(f'{cell_file}: unknown dataset preset {spec["dataset"]!r}; valid choices: '
                     f'{", ".join(default.DATASET_PRESETS)}')
  name, variant, size = default.DATASET_PRESETS[spec['dataset']]
  config.data.update(name=name, variant=variant, image_size=size)
  config.noise = dict(name=spec['noise']['name'], seed=int(spec['noise'].get('seed', 0)),
                      params=dict(spec['noise'].get('params', {})))
  for dotted, value in spec['overrides'].items():
    set_dotted(config, dotted, value)
  return config
