"""Datasets by name, and `load_split`: the one way the training code gets (image, mask, index).

    source = load_split(config.data, 'train')   # builds on first use, then reads the cache
    example = source[i]  # {'index': i, 'image': uint8 [S, S, C], 'mask': uint8 [S, S]}
    raters = load_all_raters(source)  # {'ar': uint8 [N, S, S], ...} where the dataset has raters

`config.data` fields (ml_collections ConfigDict or any object with these attributes):
  name        one of DATASETS.names(): synthetic_lesion, kvasir_seg, jsrt, oocytes, folder.
  variant     BuilderConfig name ('' = the dataset's default), e.g. jsrt 'heart', oocytes 'hs'.
  manual_dir  raw files of a real dataset ('' = $NSEGJAX_MANUAL_DIR); unused by synthetic_lesion.
  data_dir    TFDS cache ('' = $NSEGJAX_DATA_DIR, else ~/.cache/nsegjax/tfds).
  image_size  working resolution S (0 = native size); images bilinear, masks nearest.
  train_limit train on the first N training examples only (0 = all); read by the trainer.

The cache is keyed by dataset, variant and version, not by the raw files' contents: after editing
raw files, delete data_dir/<name>/<variant>/ to rebuild.
"""
import contextlib
import copy
import fcntl
import logging
import os
import sys
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

from nsegjax.data.builders import FolderSegmentation, Jsrt, KvasirSeg, Oocytes, empty_mask_notice
from nsegjax.data.synthetic import SyntheticLesion, make_lesion_sample
from nsegjax.errors import ConfigError, DataError
from nsegjax.registry import Registry

SPLITS = ('train', 'validation', 'test')
MANUAL_DIR_ENV = 'NSEGJAX_MANUAL_DIR'
DATA_DIR_ENV = 'NSEGJAX_DATA_DIR'
DEFAULT_DATA_DIR = os.path.join('~', '.cache', 'nsegjax', 'tfds')

DATASETS = Registry('dataset')
DATASETS.register('synthetic_lesion')(SyntheticLesion)
DATASETS.register('kvasir_seg')(KvasirSeg)
DATASETS.register('jsrt')(Jsrt)
DATASETS.register('oocytes')(Oocytes)
DATASETS.register('folder')(FolderSegmentation)

# Datasets generated in code; every other one reads raw files from manual_dir.
_GENERATED = frozenset({'synthetic_lesion'})


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, C] -> uint8 [size, size, C], bilinear (PIL); size 0 keeps the native size."""
  if size == 0 or image.shape[:2] == (size, size):
    return image
  channels = [Image.fromarray(image[..., c]).resize((size, size), Image.Resampling.BILINEAR)
              for c in range(image.shape[-1])]
  return np.stack([np.asarray(channel) for channel in channels], axis=-1)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W] class ids -> [size, size], nearest neighbour so no new ids appear."""
  if size == 0 or mask.shape == (size, size):
    return mask
  return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


class SegmentationSource:
  """Random access to one split at the working resolution.

  Attributes:
    name: dataset name (with variant, e.g. 'jsrt/heart').
    split: 'train', 'validation' or 'test'.
    image_size: working size S, or 0 for native.
    class_names: class id -> name; `num_classes` is its length.
    num_channels: C of every image.
    rater_names: the raters whose masks every example stores (`raters`); () if none.
  """

  def __init__(self, records: Any, *, name: str, split: str, image_size: int,
               class_names: Sequence[str], num_channels: Optional[int] = None,
               rater_names: Sequence[str] = ()):
    self._records = records  # A TFDS data source: len() and [i] -> dict of NumPy arrays.
    self._masks: Optional[np.ndarray] = None  # Set by `with_masks`: replaces the stored masks.
    self._limit = len(records)  # Lowered by `head`.
    self.name = name
    self.split = split
    self.image_size = image_size
    self.class_names = tuple(class_names)
    self.num_classes = len(self.class_names)
    self.num_channels = num_channels or (
        int(records[0]['image'].shape[-1]) if len(records) else 0)
    self.rater_names = tuple(rater_names)

  def __len__(self) -> int:
    return self._limit

  def _record(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(f'index {index} out of range for {self.name}/{self.split} of {len(self)}')
    return self._records[index % len(self)]

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._record(int(index))
    return {
        'index': int(record['index']),
        'image': resize_image(record['image'], self.image_size),
        'mask': self._mask_of(int(index), record),
    }

  def _mask_of(self, index: int, record: dict[str, Any]) -> np.ndarray:
    if self._masks is not None:
      return self._masks[index % len(self)]
    return resize_mask(record['mask'], self.image_size)

  def mask(self, index: int) -> np.ndarray:
    """Only the mask of example `index`, at the working resolution."""
    return self._mask_of(int(index), self._record(int(index)))

  def raters(self, index: int) -> np.ndarray:
    """Every rater's mask of example `index`, uint8 [R, S, S] in `rater_names` order.

    Raises:
      ConfigError: the dataset stores no rater masks.
    """
    if not self.rater_names:
      raise ConfigError(f'dataset {self.name} stores no rater masks; valid choices: '
                        f'{", ".join(datasets_with_raters())}')
    stack = self._record(int(index))['raters']
    return np.stack([resize_mask(mask, self.image_size) for mask in stack])

  def with_masks(self, masks: np.ndarray) -> 'SegmentationSource':
    """This split with `masks[i]` (working resolution) as example i's `mask`.

    For noise protocols that take the evaluation truth from the dataset (a rater, a consensus):
    training, validation and test code keep reading `mask` and score against that truth.
    """
    masks = np.asarray(masks)
    if len(masks) != len(self):
      raise DataError(f'{self.name}/{self.split} has {len(self)} examples but {len(masks)} '
                      f'replacement masks')
    relabelled = copy.copy(self)
    relabelled._masks = masks  # pylint: disable=protected-access
    return relabelled

  def head(self, count: int) -> 'SegmentationSource':
    """The first `count` examples of this split (a smaller training set; same indices)."""
    if not 0 < count <= len(self):
      raise ConfigError(f'{self.name}/{self.split} has {len(self)} examples; cannot keep the '
                        f'first {count}')
    kept = copy.copy(self)
    kept._limit = count  # pylint: disable=protected-access
    if self._masks is not None:
      kept._masks = self._masks[:count]  # pylint: disable=protected-access
    return kept

  def example_name(self, index: int) -> str:
    """The file stem (or generated name) of example `index`, for logs and noise reports."""
    name = self._record(int(index))['name']
    return name.decode() if isinstance(name, bytes) else str(name)

  def __repr__(self) -> str:
    return (f'SegmentationSource({self.name}/{self.split}: {len(self)} examples, '
            f'size={self.image_size or "native"}, channels={self.num_channels}, '
            f'classes={self.class_names})')


def load_all_masks(source: SegmentationSource) -> np.ndarray:
  """Every mask of a split as uint8 [N, S, S], in index order (the noise generator's input).

  Raises:
    DataError: native-size masks of different shapes cannot be stacked.
  """
  masks = [source.mask(i) for i in range(len(source))]
  if len({mask.shape for mask in masks}) > 1:
    raise DataError(f'{source.name} masks differ in size; set config.data.image_size to stack them')
  return np.stack(masks) if masks else np.zeros((0, 0, 0), np.uint8)


def load_all_raters(source: SegmentationSource) -> dict[str, np.ndarray]:
  """Every rater's masks of a split: rater name -> uint8 [N, S, S], in index order.

  Raises:
    ConfigError: the dataset stores no rater masks.
    DataError: native-size masks of different shapes cannot be stacked.
  """
  stacks = [source.raters(i) for i in range(len(source))]
  if len({stack.shape for stack in stacks}) > 1:
    raise DataError(f'{source.name} masks differ in size; set config.data.image_size to stack them')
  if not stacks:
    return {name: np.zeros((0, 0, 0), np.uint8) for name in source.rater_names}
  stacked = np.stack(stacks, axis=1)  # [R, N, S, S]
  return dict(zip(source.rater_names, stacked))


def datasets_with_raters() -> list[str]:
  """Names of the registered datasets whose examples store several raters' masks."""
  return [name for name in DATASETS.names()
          if any(getattr(config, 'rater_names', ())
                 for config in getattr(DATASETS.get(name), 'BUILDER_CONFIGS', []))]


def require_raters(data_cfg: Any, user: str) -> tuple[str, ...]:
  """The rater names the configured dataset variant stores, read from its config, not its files.

  Args:
    data_cfg: `config.data`.
    user: what needs them, for the message (e.g. "noise protocol 'rater'").

  Raises:
    ConfigError: unknown dataset or variant, or a dataset without rater masks (the message names
      it and the datasets that have them).
  """
  name = _field(data_cfg, 'name', '')
  builder_cls = DATASETS.get(name)
  raters = ()
  if name in datasets_with_raters():  # checked first: `folder` needs files to name its config
    config = builder_cls.config_for(_field(data_cfg, 'variant', ''), resolve_manual_dir(data_cfg))
    raters = tuple(getattr(config, 'rater_names', ()))
  if not raters:
    raise ConfigError(f'{user} needs a dataset that stores rater masks, and {name!r} stores none; '
                      f'valid choices: {", ".join(datasets_with_raters())}')
  return raters


def _field(data_cfg: Any, key: str, default: Any) -> Any:
  value = getattr(data_cfg, key, default)
  return default if value is None else value


def resolve_data_dir(data_cfg: Any) -> str:
  """config.data.data_dir, else $NSEGJAX_DATA_DIR, else ~/.cache/nsegjax/tfds."""
  data_dir = _field(data_cfg, 'data_dir', '') or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
  return os.path.abspath(os.path.expanduser(data_dir))


def resolve_manual_dir(data_cfg: Any) -> str:
  """config.data.manual_dir, else $NSEGJAX_MANUAL_DIR, else ''."""
  manual_dir = _field(data_cfg, 'manual_dir', '') or os.environ.get(MANUAL_DIR_ENV, '')
  return os.path.abspath(os.path.expanduser(manual_dir)) if manual_dir else ''


class _DropTfdsChatter(logging.Filter):
  """Drops TFDS's warnings about custom configs and missing dataset_info.json, which every build
  of a `folder` dataset triggers and which would bury the one line that says what is wrong."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.ERROR or
            f'{os.sep}tensorflow_datasets{os.sep}' not in record.pathname)


@contextlib.contextmanager
def _quiet_tfds():
  """TFDS without its absl warnings and progress bars on stderr, restored afterwards."""
  absl_logger = logging.getLogger('absl')
  chatter = _DropTfdsChatter()
  progress_bars = tqdm_utils._active  # pylint: disable=protected-access  (no public getter)
  absl_logger.addFilter(chatter)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(progress_bars)
    absl_logger.removeFilter(chatter)


def prepare_builder(data_cfg: Any) -> tfds.core.DatasetBuilder:
  """The dataset's builder, with its ArrayRecord files written if they were not yet.

  Raises:
    ConfigError: unknown dataset or variant.
    DataError: raw files needed but not configured, missing or inconsistent.
  """
  with _quiet_tfds():
    return _prepare_builder(data_cfg)


def _prepare_builder(data_cfg: Any) -> tfds.core.DatasetBuilder:
  name = _field(data_cfg, 'name', '')
  builder_cls = DATASETS.get(name)
  manual_dir = resolve_manual_dir(data_cfg)
  config = builder_cls.config_for(_field(data_cfg, 'variant', ''), manual_dir)
  data_dir = resolve_data_dir(data_cfg)
  builder = builder_cls(config=config, data_dir=data_dir, file_format='array_record')
  if builder.is_prepared():
    return builder  # A built cache needs no raw files.
  # Sweep cells run side by side would build the same files at once (and TFDS's final rename
  # fails for all but one): one builder at a time per dataset, the others then find it built.
  os.makedirs(data_dir, exist_ok=True)
  lock_path = os.path.join(data_dir, f'.prepare-{name}-{config.name}.lock')
  with open(lock_path, 'a', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder = builder_cls(config=config, data_dir=data_dir, file_format='array_record')
      if builder.is_prepared():
        return builder
      return _download_and_prepare(builder, name, manual_dir)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _download_and_prepare(builder, name: str, manual_dir: str):
  if name in _GENERATED:
    manual_dir = ''  # A stale $NSEGJAX_MANUAL_DIR must not break a dataset that reads no files.
  elif not manual_dir:
    raise DataError(f'dataset {name!r} needs its raw files: set config.data.manual_dir or '
                    f'${MANUAL_DIR_ENV} to the folder holding images/ and masks/')
  elif not os.path.isdir(manual_dir):
    raise DataError(f'missing folder {manual_dir} (config.data.manual_dir or ${MANUAL_DIR_ENV})')
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  builder.download_and_prepare(download_config=download_config)
  if notice := empty_mask_notice(builder):
    print(notice, file=sys.stderr, flush=True)
  return builder


def load_split(data_cfg: Any, split: str) -> SegmentationSource:
  """Builds the dataset on first use and returns one split at the working resolution.

  Args:
    data_cfg: `config.data` (see the module docstring for its fields).
    split: 'train', 'validation' or 'test'.

  Raises:
    ConfigError: unknown dataset, variant or split, or a negative image_size.
    DataError: raw files needed but not configured, missing or inconsistent.
  """
  if split not in SPLITS:
    raise ConfigError(f'unknown split {split!r}; valid choices: {", ".join(SPLITS)}')
  image_size = int(_field(data_cfg, 'image_size', 0))
  if image_size < 0:
    raise ConfigError(f'config.data.image_size must be >= 0 (0 = native), got {image_size}')
  builder = prepare_builder(data_cfg)
  config = builder.builder_config
  with _quiet_tfds():
    records = builder.as_data_source(split=split)
  return SegmentationSource(
      records,
      name=f'{builder.name}/{config.name}',
      split=split,
      image_size=image_size,
      class_names=config.class_names,
      num_channels=builder.NUM_CHANNELS,
      rater_names=getattr(config, 'rater_names', ()),
  )


__all__ = [
    'DATASETS', 'SPLITS', 'SegmentationSource', 'datasets_with_raters', 'load_split',
    'load_all_masks', 'load_all_raters', 'make_lesion_sample', 'prepare_builder', 'require_raters',
    'resize_image', 'resize_mask',
]
