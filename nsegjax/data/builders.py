"""TFDS builders for the real datasets and for any `images/` + `masks/` folder.

The raw files are never part of the library: each builder reads them from the folder the user
names (TFDS `manual_dir`, or the folder in the `folder` builder's config) and writes ArrayRecord
files under `data_dir/<name>/<variant>/<version>/`. `manual_dir` may point at the dataset folder
itself (the one holding `images/`) or at a parent holding it under its usual name (`kvasir_seg`,
`jsrt_scr`, `oocytes_gent`), so one directory can serve every dataset.

Splits (fixed, so results are comparable across machines and runs):
  * kvasir_seg: no official split exists. Stems are ranked by SHA-256 of f'{SPLIT_SEED}/{stem}';
    the first 10% (rounded) are validation, the next 10% test, the rest train: 800/100/100.
  * jsrt (lungs | heart | clavicles): test = the 50 cases of splits/validation.txt (the held-out
    set of the PNL and Confident-Learning papers); validation = the 20 cases of
    splits/training.txt ranked first by the same hash; train = the other 177.
  * oocytes (ar | hs | sg | majority): file-name prefix train_ / validate_ / test_ gives
    90 / 5 / 5. `mask` is rater AR, HS or SG, or their per-pixel strict majority; every variant
    also stores all three raters' masks (`raters`, for the `rater` noise protocol).
  * folder: like kvasir_seg (80/10/10 by hash rank), for any folder; binary unless the folder
    holds a classes.txt naming the classes, one per line (line i is class id i).
Hash ranking, unlike a seeded permutation, does not depend on NumPy's random streams, and adding a
file never moves the others between splits. Within a split, examples are sorted by stem and
`index` is their position, so `source[i]['index'] == i`.

Every example: `index` int64, `image` uint8 [H, W, C], `mask` uint8 [H, W] class ids, `name` the
file stem. Datasets with several raters add `raters` uint8 [R, H, W], one mask per rater in the
order of the config's `rater_names`. Image and mask sizes are stored per example (shape
(None, None, C)), so copies of a dataset at other resolutions (e.g. the original, variable-size
Kvasir-SEG) build as well.

Bad files stop the build with a one-line `DataError` naming the file (see `folders`); masks that
are all background are kept, and the build reports how many there are (`empty_mask_notice`).
"""
import dataclasses
import hashlib
import os
import re
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from nsegjax.data import folders
from nsegjax.errors import ConfigError, DataError

SPLIT_SEED = 0
SPLITS = ('train', 'validation', 'test')
_MANUAL_INSTRUCTIONS = (
    'Point manual_dir (config.data.manual_dir or $NSEGJAX_MANUAL_DIR) at the folder holding '
    'images/ and the mask folders, or at its parent.')


def hash_rank(stems: Sequence[str], seed: int = SPLIT_SEED) -> list[str]:
  """Stems in a seeded pseudo-random order that is stable across platforms and library versions."""
  def key(stem: str) -> str:
    return hashlib.sha256(f'{seed}/{stem}'.encode()).hexdigest()
  return sorted(stems, key=key)


def split_by_fraction(stems: Sequence[str], holdout_fraction: float = 0.1,
                      seed: int = SPLIT_SEED) -> dict[str, list[str]]:
  """Seeded train/validation/test split with `holdout_fraction` each for validation and test.

  Raises:
    DataError: fewer than three stems, so some split would be empty.
  """
  if len(stems) < 3:
    raise DataError(f'need at least 3 image/mask pairs to split, found {len(stems)}')
  holdout = max(1, int(len(stems) * holdout_fraction + 0.5))
  ranked = hash_rank(stems, seed)
  return {
      'train': sorted(ranked[2 * holdout:]),
      'validation': sorted(ranked[:holdout]),
      'test': sorted(ranked[holdout:2 * holdout]),
  }


def select_variant(builder_cls: type, variant: str) -> tfds.core.BuilderConfig:
  """The builder's BuilderConfig named `variant`; '' picks the first (default) one.

  Raises:
    ConfigError: no such variant; the message lists the valid ones.
  """
  configs = builder_cls.BUILDER_CONFIGS
  if not variant:
    return configs[0]
  for config in configs:
    if config.name == variant:
      return config
  valid = ', '.join(config.name for config in configs)
  raise ConfigError(
      f'unknown variant {variant!r} of dataset {builder_cls.name!r}; valid choices: {valid}')


def find_dataset_root(manual_dir: str, usual_name: Optional[str]) -> str:
  """`manual_dir` if it holds `images/`, else its `usual_name` subfolder if that does.

  Raises:
    DataError: neither holds an `images/` folder.
  """
  candidates = [manual_dir] + ([os.path.join(manual_dir, usual_name)] if usual_name else [])
  for candidate in candidates:
    if os.path.isdir(os.path.join(candidate, 'images')):
      return candidate
  also = f' (nor {os.path.join(candidates[1], "images")})' if len(candidates) > 1 else ''
  raise DataError(f'missing folder {os.path.join(manual_dir, "images")}{also}')


@dataclasses.dataclass(eq=False)
class SegmentationConfig(tfds.core.BuilderConfig):
  """A variant of a folder-backed dataset: which masks to read and how to combine them.

  Attributes:
    mask_dirs: mask subfolders read for every image.
    combine: which mask becomes `mask`: 'first' the first one; 'majority' the per-pixel strict
      majority of all; a name in `rater_names` that rater's.
    class_names: class id -> name.
    folder: for the `folder` builder, the absolute dataset folder; '' for the named datasets.
    rater_names: when set, one name per mask folder: every example also stores all of them as
      `raters` [R, H, W] in this order, so a run can train on one rater and score on another.
  """
  mask_dirs: tuple[str, ...] = ('masks',)
  combine: str = 'first'
  class_names: tuple[str, ...] = ('background', 'foreground')
  folder: str = ''
  rater_names: tuple[str, ...] = ()


class _FolderBackedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared reading and writing; subclasses say where the files are and how they split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS
  USUAL_FOLDER_NAME: Optional[str] = None
  NUM_CHANNELS: Optional[int] = None  # None: whatever the files hold (1 grey, 3 colour).

  @classmethod
  def config_for(cls, variant: str, manual_dir: Optional[str]) -> SegmentationConfig:
    """The BuilderConfig for a variant name; '' picks the default (first) one."""
    del manual_dir  # The named datasets take their files from TFDS's manual_dir.
    return select_variant(cls, variant)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        'index': tfds.features.Scalar(np.int64),
        'image': tfds.features.Tensor(shape=(None, None, self.NUM_CHANNELS), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.ZLIB),
        'mask': tfds.features.Tensor(shape=(None, None), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.ZLIB),
        'name': tfds.features.Text(),
    }
    if raters := self.builder_config.rater_names:
      features['raters'] = tfds.features.Tensor(shape=(len(raters), None, None), dtype=np.uint8,
                                                encoding=tfds.features.Encoding.ZLIB)
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__class__.__doc__,
        disable_shuffling=True,  # source[i] must be example i: noise is seeded by index.
        features=tfds.features.FeaturesDict(features),
    )

  def _dataset_root(self, dl_manager) -> str:
    try:
      manual_dir = os.fspath(dl_manager.manual_dir)
    except AssertionError:  # TFDS's message is several lines long and names no config key.
      raise DataError(
          f'dataset {self.name!r} needs its raw files: {_MANUAL_INSTRUCTIONS}') from None
    return find_dataset_root(manual_dir, self.USUAL_FOLDER_NAME)

  def _split_generators(self, dl_manager):
    root = self._dataset_root(dl_manager)
    pairs = folders.find_pairs(root, 'images', self.builder_config.mask_dirs)
    # Header checks first: a size mismatch fails in milliseconds, not after half the build.
    num_channels = self.NUM_CHANNELS or folders.inspect_pairs(pairs)
    if self.NUM_CHANNELS:  # Fixed channel count: files are converted, but still checked.
      folders.inspect_pairs(pairs)
    by_stem = {pair.stem: pair for pair in pairs}
    stems_per_split = self._split_stems(root, sorted(by_stem))
    self.mask_census = {}  # split -> (empty masks, examples), filled as each split is written.
    return {split: self._generate_examples(split, [by_stem[stem] for stem in stems], num_channels)
            for split, stems in stems_per_split.items()}

  def _split_stems(self, root: str, stems: list[str]) -> dict[str, list[str]]:
    del root
    return split_by_fraction(stems)

  def _generate_examples(self, split: str, pairs: Sequence[folders.Pair],
                         num_channels: int) -> Iterator:
    num_classes = len(self.builder_config.class_names)
    empty = 0
    for index, pair in enumerate(pairs):
      image, masks = folders.read_pair(pair, num_channels, num_classes)
      example = {'index': index, 'image': image, 'mask': self._combine(masks), 'name': pair.stem}
      if self.builder_config.rater_names:
        example['raters'] = np.stack(masks)
      empty += not example['mask'].any()
      yield index, example
    self.mask_census[split] = (empty, len(pairs))

  def _combine(self, masks: list[np.ndarray]) -> np.ndarray:
    config = self.builder_config
    if config.combine == 'majority':
      return (2 * np.sum(masks, axis=0) > len(masks)).astype(np.uint8)
    if config.combine in config.rater_names:
      return masks[config.rater_names.index(config.combine)]
    return masks[0]


def empty_mask_notice(builder: tfds.core.DatasetBuilder) -> Optional[str]:
  """One line saying how many of the masks a build just wrote are all background, or None.

  Empty masks are legitimate in medical data (a healthy scan), so they are kept; the line makes
  sure a folder of accidentally blank masks does not go unnoticed.
  """
  census = getattr(builder, 'mask_census', None) or {}
  empty = sum(count for count, _ in census.values())
  if not empty:
    return None
  total = sum(size for _, size in census.values())
  per_split = ', '.join(f'{split} {count}' for split, (count, _) in census.items())
  return (f'note: {empty} of {total} masks of {builder.name}/{builder.builder_config.name} are '
          f'empty (all background; {per_split}): kept, and config.eval.empty sets how metrics '
          f'score them')


class KvasirSeg(_FolderBackedBuilder, skip_registration=True):
  """Kvasir-SEG polyps (Jha et al., MMM 2020): RGB colonoscopy frames, 800/100/100 seeded split."""

  name = 'kvasir_seg'
  USUAL_FOLDER_NAME = 'kvasir_seg'
  NUM_CHANNELS = 3
  BUILDER_CONFIGS = [SegmentationConfig(name='polyp', class_names=('background', 'polyp'))]


class Jsrt(_FolderBackedBuilder, skip_registration=True):
  """JSRT chest X-rays with SCR masks: lungs, heart or clavicles; 177/20/50 split (see module)."""

  name = 'jsrt'
  USUAL_FOLDER_NAME = 'jsrt_scr'
  NUM_CHANNELS = 1
  VALIDATION_SIZE = 20
  BUILDER_CONFIGS = [
      SegmentationConfig(name='lungs', mask_dirs=('masks',), class_names=('background', 'lungs')),
      SegmentationConfig(name='heart', mask_dirs=('masks_heart',),
                         class_names=('background', 'heart')),
      SegmentationConfig(name='clavicles', mask_dirs=('masks_clavicle',),
                         class_names=('background', 'clavicles')),
  ]

  def _split_stems(self, root: str, stems: list[str]) -> dict[str, list[str]]:
    available = set(stems)
    training = _read_stem_list(os.path.join(root, 'splits', 'training.txt'), available)
    held_out = _read_stem_list(os.path.join(root, 'splits', 'validation.txt'), available)
    validation = set(hash_rank(training)[:self.VALIDATION_SIZE])
    return {
        'train': sorted(set(training) - validation),
        'validation': sorted(validation),
        'test': sorted(held_out),
    }


def _read_stem_list(path: str, available: set[str]) -> list[str]:
  """Reads one stem per line, checking each has an image/mask pair."""
  if not os.path.isfile(path):
    raise DataError(f'missing split list {path}')
  with open(path) as file:
    stems = [folders.strip_image_extension(line.strip()) for line in file if line.strip()]
  for stem in stems:
    if stem not in available:
      raise DataError(f'split list {path} names {stem!r}, which has no image/mask pair')
  return stems


class Oocytes(_FolderBackedBuilder, skip_registration=True):
  """Ghent oocytes: RGB microscopy with three raters' masks; split by file-name prefix.

  The variant picks `mask` (one rater, or the majority); every variant stores all three raters'
  masks as `raters` (AR, HS, SG), which the `rater` noise protocol reads.
  """

  name = 'oocytes'
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'First release.',
                   '1.1.0': 'Every example also stores the three raters\' masks as `raters`.'}
  USUAL_FOLDER_NAME = 'oocytes_gent'
  NUM_CHANNELS = 3
  PREFIX_TO_SPLIT = {'train_': 'train', 'validate_': 'validation', 'test_': 'test'}
  RATER_NAMES = ('ar', 'hs', 'sg')
  _RATER_DIRS = ('masks', 'masks_rater2_HS', 'masks_rater3_SG')
  _CLASSES = ('background', 'oocyte')
  BUILDER_CONFIGS = [
      SegmentationConfig(name='ar', mask_dirs=_RATER_DIRS, rater_names=RATER_NAMES, combine='ar',
                         class_names=_CLASSES, description='Rater AR (masks/).'),
      SegmentationConfig(name='hs', mask_dirs=_RATER_DIRS, rater_names=RATER_NAMES, combine='hs',
                         class_names=_CLASSES, description='Rater HS (masks_rater2_HS/).'),
      SegmentationConfig(name='sg', mask_dirs=_RATER_DIRS, rater_names=RATER_NAMES, combine='sg',
                         class_names=_CLASSES, description='Rater SG (masks_rater3_SG/).'),
      SegmentationConfig(name='majority', mask_dirs=_RATER_DIRS, rater_names=RATER_NAMES,
                         combine='majority', class_names=_CLASSES,
                         description='Per-pixel majority of 3 raters.'),
  ]

  def _split_stems(self, root: str, stems: list[str]) -> dict[str, list[str]]:
    per_split = {split: [] for split in SPLITS}
    for stem in stems:
      split = next((split for prefix, split in self.PREFIX_TO_SPLIT.items()
                    if stem.startswith(prefix)), None)
      if split is None:
        raise DataError(f'image {os.path.join(root, "images", stem)}.* has none of the '
                        f'prefixes {", ".join(self.PREFIX_TO_SPLIT)} that pick its split')
      per_split[split].append(stem)
    return per_split


class FolderSegmentation(_FolderBackedBuilder, skip_registration=True):
  """Any folder with `images/` and `masks/`; seeded 80/10/10 split.

  Masks are binary unless the folder holds a classes.txt (one class name per line, line i naming
  id i), whose masks then store the ids. The folder is part of the config, and the config name
  carries a short hash of its absolute path (and of the class names, when listed), so two folders
  never share a cache directory under `data_dir/folder/`, and a cache never outlives a change of
  classes.
  """

  name = 'folder'
  BUILDER_CONFIGS = []

  @classmethod
  def config_for(cls, variant: str, manual_dir: Optional[str]) -> SegmentationConfig:
    if variant:
      raise ConfigError(f'dataset {cls.name!r} has no variants; got {variant!r}')
    if not manual_dir:
      raise DataError(f'dataset {cls.name!r} needs a folder: {_MANUAL_INSTRUCTIONS}')
    folder = os.path.abspath(os.path.expanduser(manual_dir))
    class_names = folders.read_class_names(folder)
    return SegmentationConfig(name=folder_cache_name(folder, class_names), folder=folder,
                              description=f'Images and masks from {folder}.',
                              class_names=class_names or ('background', 'foreground'))

  def _dataset_root(self, dl_manager) -> str:
    del dl_manager  # The config names the folder, so the cache key and the files always agree.
    if not self.builder_config.folder:
      raise ConfigError('build `folder` with config=FolderSegmentation.config_for("", folder)')
    return find_dataset_root(self.builder_config.folder, None)


def folder_cache_name(folder: str, class_names: Optional[Sequence[str]] = None) -> str:
  """'<readable base name>-<8 hex of SHA-256 of the absolute path>', a valid config name.

  Listed class names (classes.txt) enter the hash, so editing them builds afresh.
  """
  folder = os.path.abspath(folder)
  readable = re.sub(r'[^A-Za-z0-9_]+', '_', os.path.basename(folder.rstrip(os.sep)))[:40] or 'root'
  key = folder if class_names is None else '\n'.join([folder, *class_names])
  return f'{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}'
