"""Tests for nsegjax.data: synthetic samples, folder reading, builders and load_split.

The real-dataset tests read $NSEGJAX_SHARED_DATA (default <repo>/../shared/data) and are skipped
when it is absent; nothing from it is ever copied into the repository.
"""
import os
import pickle
import types

import numpy as np
from scipy import ndimage
from PIL import Image
import pytest

from nsegjax import data
from nsegjax.data import builders, folders, synthetic
from nsegjax.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get('NSEGJAX_SHARED_DATA', os.path.join(REPO, '..', 'shared', 'data'))

needs_shared_data = pytest.mark.skipif(
    not os.path.isdir(SHARED_DATA), reason=f'no shared data at {SHARED_DATA}')


def data_config(**fields):
  defaults = dict(name='synthetic_lesion', variant='', manual_dir='', data_dir='', image_size=0)
  return types.SimpleNamespace(**{**defaults, **fields})


@pytest.fixture(autouse=True)
def _no_env_dirs(monkeypatch):
  """Tests must not read or fill the user's cache or raw-data folders."""
  monkeypatch.delenv(data.MANUAL_DIR_ENV, raising=False)
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_sample_is_a_pure_function_of_split_and_index():
  image_a, mask_a = synthetic.make_lesion_sample(synthetic.sample_rng('train', 7))
  image_b, mask_b = synthetic.make_lesion_sample(synthetic.sample_rng('train', 7))
  assert image_a.tobytes() == image_b.tobytes()
  assert mask_a.tobytes() == mask_b.tobytes()


def test_synthetic_samples_have_the_documented_format_and_vary():
  samples = [synthetic.make_lesion_sample(synthetic.sample_rng(split, index))
             for split in ('train', 'test') for index in range(6)]
  for image, mask in samples:
    assert image.shape == (128, 128, 1) and image.dtype == np.uint8
    assert mask.shape == (128, 128) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}  # Every image has a lesion and background.
    assert 0.001 < mask.mean() < 0.5
    assert image.std() > 5  # Textured, not flat.
  images = {image.tobytes() for image, _ in samples}
  masks = {mask.tobytes() for _, mask in samples}
  assert len(images) == len(samples) and len(masks) == len(samples)


def test_synthetic_sample_size_is_a_parameter():
  image, mask = synthetic.make_lesion_sample(np.random.default_rng(0), size=64)
  assert image.shape == (64, 64, 1) and mask.shape == (64, 64)


def test_tool_parts_are_adjacent_classes_that_touch():
  rng = synthetic.sample_rng('train', 3)
  image, mask = synthetic.make_tool_sample(rng, size=64)
  assert image.shape == (64, 64, 1) and image.dtype == np.uint8
  assert mask.shape == (64, 64) and mask.dtype == np.uint8
  assert set(np.unique(mask)) == {0, 1, 2, 3}
  # Parts are adjacent: each part's 1-pixel dilation reaches the next part along the tool.
  for part, neighbour in ((1, 2), (2, 3)):
    grown = ndimage.binary_dilation(mask == part, structure=np.ones((3, 3), bool))
    assert (grown & (mask == neighbour)).any(), (part, neighbour)
  again = synthetic.make_tool_sample(synthetic.sample_rng('train', 3), size=64)
  np.testing.assert_array_equal(again[1], mask)


def test_parts_variant_loads_four_classes(tmp_path):
  source = data.load_split(data_config(variant='parts_tiny', data_dir=str(tmp_path)), 'train')
  assert (len(source), source.num_classes) == (24, 4)
  assert source.class_names == synthetic.PART_NAMES
  masks = data.load_all_masks(source)
  assert masks.shape == (24, 32, 32) and masks.max() == 3


def test_synthetic_builder_round_trip(tmp_path):
  sizes = {'train': 6, 'validation': 2, 'test': 3}
  config = synthetic.SyntheticLesionConfig(name='test_tiny', split_sizes=sizes, image_size=32)
  builder = synthetic.SyntheticLesion(config=config, data_dir=str(tmp_path),
                                      file_format='array_record')
  builder.download_and_prepare()
  for split, count in sizes.items():
    records = builder.as_data_source(split=split)
    assert len(records) == count
    for index in range(count):
      image, mask = synthetic.make_lesion_sample(synthetic.sample_rng(split, index), 32)
      assert records[index]['index'] == index
      np.testing.assert_array_equal(records[index]['image'], image)
      np.testing.assert_array_equal(records[index]['mask'], mask)


def test_load_split_synthetic_resizes_and_reuses_the_cache(tmp_path, monkeypatch):
  tiny = synthetic.SyntheticLesionConfig(
      name='test_tiny', split_sizes={'train': 4, 'validation': 1, 'test': 1})
  monkeypatch.setattr(synthetic.SyntheticLesion, 'config_for',
                      classmethod(lambda cls, variant, manual_dir: tiny))
  cfg = data_config(data_dir=str(tmp_path), image_size=48)
  source = data.load_split(cfg, 'train')
  assert len(source) == 4
  assert (source.num_classes, source.num_channels) == (2, 1)
  assert source.class_names == ('background', 'lesion')
  example = source[2]
  assert example['index'] == 2
  assert example['image'].shape == (48, 48, 1) and example['image'].dtype == np.uint8
  assert example['mask'].shape == (48, 48) and set(np.unique(example['mask'])) <= {0, 1}
  masks = data.load_all_masks(source)
  assert masks.shape == (4, 48, 48) and masks.dtype == np.uint8
  np.testing.assert_array_equal(masks[2], example['mask'])
  with pytest.raises(IndexError):
    source[4]
  # A second load reads the cache (no regeneration) and survives pickling (grain workers).
  again = pickle.loads(pickle.dumps(data.load_split(cfg, 'train')))
  np.testing.assert_array_equal(again[2]['image'], example['image'])


def test_load_split_rejects_bad_names(tmp_path):
  with pytest.raises(ConfigError, match='valid choices'):
    data.load_split(data_config(name='nope', data_dir=str(tmp_path)), 'train')
  with pytest.raises(ConfigError, match='valid choices'):
    data.load_split(data_config(data_dir=str(tmp_path), variant='nope'), 'train')
  with pytest.raises(ConfigError, match='valid choices'):
    data.load_split(data_config(data_dir=str(tmp_path)), 'training')


def test_real_dataset_without_manual_dir_says_what_to_set(tmp_path):
  with pytest.raises(DataError, match='NSEGJAX_MANUAL_DIR') as error:
    data.load_split(data_config(name='kvasir_seg', data_dir=str(tmp_path)), 'train')
  assert 'manual_dir' in str(error.value) and '\n' not in str(error.value)


# ----------------------------------------------------------------------------- folders


def write_folder(root, count=10, size=(20, 16), mode='RGB'):
  """A dataset folder of `count` PNG pairs; returns its path."""
  rng = np.random.default_rng(0)
  (root / 'images').mkdir(parents=True)
  (root / 'masks').mkdir()
  width, height = size
  for i in range(count):
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(root / 'images' / f'case{i:02d}.png')
    mask = np.zeros((height, width), np.uint8)
    mask[: i + 2, : i + 3] = 255
    Image.fromarray(mask).save(root / 'masks' / f'case{i:02d}.png')
  return root


def test_read_image_modes(tmp_path):
  rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
  Image.fromarray(rgb).save(tmp_path / 'rgb.png')
  Image.fromarray(rgb).convert('RGBA').save(tmp_path / 'rgba.png')
  Image.fromarray(rgb[..., 0]).save(tmp_path / 'grey.png')
  np.testing.assert_array_equal(folders.read_image(str(tmp_path / 'rgb.png')), rgb)
  np.testing.assert_array_equal(folders.read_image(str(tmp_path / 'rgba.png')), rgb)
  grey = folders.read_image(str(tmp_path / 'grey.png'))
  assert grey.shape == (4, 5, 1)
  assert folders.read_image(str(tmp_path / 'grey.png'), num_channels=3).shape == (4, 5, 3)


def test_read_mask_binarises_0_255_and_keeps_0_1(tmp_path):
  Image.fromarray(np.array([[0, 255, 128, 127]], np.uint8)).save(tmp_path / 'a.png')
  Image.fromarray(np.array([[0, 1, 1, 0]], np.uint8)).save(tmp_path / 'b.png')
  np.testing.assert_array_equal(folders.read_mask(str(tmp_path / 'a.png')), [[0, 1, 1, 0]])
  np.testing.assert_array_equal(folders.read_mask(str(tmp_path / 'b.png')), [[0, 1, 1, 0]])


def test_folder_builder_round_trip(tmp_path):
  root = write_folder(tmp_path / 'my data')
  cfg = data_config(name='folder', manual_dir=str(root), data_dir=str(tmp_path / 'cache'))
  sources = {split: data.load_split(cfg, split) for split in data.SPLITS}
  assert {split: len(s) for split, s in sources.items()} == {
      'train': 8, 'validation': 1, 'test': 1}
  seen = []
  for source in sources.values():
    assert source.num_channels == 3 and source.num_classes == 2
    for i in range(len(source)):
      example = source[i]
      assert example['index'] == i
      name = source.example_name(i)
      seen.append(name)
      expected = np.asarray(Image.open(root / 'images' / f'{name}.png'))
      np.testing.assert_array_equal(example['image'], expected)
      np.testing.assert_array_equal(
          example['mask'], np.asarray(Image.open(root / 'masks' / f'{name}.png')) // 255)
  assert sorted(seen) == [f'case{i:02d}' for i in range(10)]
  # The cache of each folder lives under a name keyed by the folder's path.
  cache = os.listdir(tmp_path / 'cache' / 'folder')
  assert cache == [builders.folder_cache_name(str(root))]
  assert cache[0].startswith('my_data-')


def test_folder_split_is_seeded_and_stable():
  stems = [f's{i:03d}' for i in range(50)]
  split = builders.split_by_fraction(stems)
  assert [len(split[s]) for s in data.SPLITS] == [40, 5, 5]
  assert sorted(sum(split.values(), [])) == stems
  assert builders.split_by_fraction(list(reversed(stems))) == split
  grown = builders.split_by_fraction(stems + ['s999'])
  assert set(split['test']) <= set(grown['test']) | set(grown['validation']) | set(grown['train'])


def one_line_data_error(cfg, *fragments):
  with pytest.raises(DataError) as error:
    data.load_split(cfg, 'train')
  message = str(error.value)
  assert '\n' not in message
  for fragment in fragments:
    assert fragment in message, message


@pytest.mark.parametrize('problem', [
    'corrupt_image', 'mask_size', 'image_without_mask', 'mask_without_image',
    'empty_folder', 'missing_folder', 'missing_manual_dir'])
def test_folder_problems_raise_one_line_data_errors(tmp_path, problem):
  root = write_folder(tmp_path / 'set', count=4)
  cfg = data_config(name='folder', manual_dir=str(root), data_dir=str(tmp_path / 'cache'))
  if problem == 'corrupt_image':
    path = root / 'images' / 'case01.png'
    path.write_bytes(path.read_bytes()[:60])  # Header survives, pixel data does not.
    one_line_data_error(cfg, str(path))
  elif problem == 'mask_size':
    path = root / 'masks' / 'case02.png'
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(path)
    one_line_data_error(cfg, str(path), '9x7')
  elif problem == 'image_without_mask':
    (root / 'masks' / 'case03.png').unlink()
    one_line_data_error(cfg, str(root / 'images' / 'case03.png'), 'no mask')
  elif problem == 'mask_without_image':
    (root / 'images' / 'case03.png').unlink()
    one_line_data_error(cfg, str(root / 'masks' / 'case03.png'), 'no image')
  elif problem == 'empty_folder':
    for path in (root / 'masks').iterdir():
      path.unlink()
    one_line_data_error(cfg, str(root / 'masks'))
  elif problem == 'missing_folder':
    (root / 'images').rename(root / 'pictures')
    one_line_data_error(cfg, str(root / 'images'))
  elif problem == 'missing_manual_dir':
    one_line_data_error(data_config(name='folder', manual_dir=str(tmp_path / 'absent'),
                                    data_dir=str(tmp_path / 'cache')), str(tmp_path / 'absent'))
  assert not list((tmp_path / 'cache').rglob('dataset_info.json'))  # Nothing half-built kept.


def test_unreadable_file_is_named(tmp_path):
  path = tmp_path / 'x.png'
  path.write_bytes(b'not an image')
  with pytest.raises(DataError, match='x.png'):
    folders.read_image(str(path))


# ----------------------------------------------------------------------------- real data


@needs_shared_data
def test_jsrt_lungs_splits_and_shapes(tmp_path):
  cfg = data_config(name='jsrt', variant='lungs', data_dir=str(tmp_path),
                    manual_dir=os.path.join(SHARED_DATA, 'jsrt_scr'))
  sources = {split: data.load_split(cfg, split) for split in data.SPLITS}
  assert {s: len(src) for s, src in sources.items()} == {'train': 177, 'validation': 20, 'test': 50}
  with open(os.path.join(SHARED_DATA, 'jsrt_scr', 'splits', 'validation.txt')) as file:
    listed = sorted(line.strip() for line in file if line.strip())
  test = sources['test']
  assert [test.example_name(i) for i in range(len(test))] == listed
  example = test[3]
  assert example['index'] == 3
  assert example['image'].shape == (256, 256, 1) and example['mask'].shape == (256, 256)
  assert test.num_channels == 1 and test.class_names == ('background', 'lungs')
  assert 0.1 < example['mask'].mean() < 0.6
  assert data.load_all_masks(sources['validation']).shape == (20, 256, 256)


@needs_shared_data
def test_oocytes_majority_splits_and_shapes(tmp_path):
  # manual_dir may be the parent of all datasets: the builder finds oocytes_gent/ itself.
  cfg = data_config(name='oocytes', variant='majority', data_dir=str(tmp_path),
                    manual_dir=SHARED_DATA, image_size=64)
  sources = {split: data.load_split(cfg, split) for split in data.SPLITS}
  assert {s: len(src) for s, src in sources.items()} == {'train': 90, 'validation': 5, 'test': 5}
  native = data.load_split(data_config(name='oocytes', variant='majority', data_dir=str(tmp_path),
                                       manual_dir=SHARED_DATA), 'test')
  example = native[0]
  assert example['image'].shape == (192, 256, 3) and example['mask'].shape == (192, 256)
  name = native.example_name(0)
  raters = [folders.read_mask(os.path.join(SHARED_DATA, 'oocytes_gent', folder, f'{name}.png'))
            for folder in ('masks', 'masks_rater2_HS', 'masks_rater3_SG')]
  np.testing.assert_array_equal(example['mask'], (sum(raters) >= 2).astype(np.uint8))
  # Every variant also stores the three raters' masks, for the `rater` noise protocol.
  assert native.rater_names == ('ar', 'hs', 'sg')
  np.testing.assert_array_equal(native.raters(0), np.stack(raters))
  small = sources['test'][0]
  assert small['image'].shape == (64, 64, 3) and small['mask'].shape == (64, 64)
  assert sources['test'].raters(0).shape == (3, 64, 64)


@needs_shared_data
def test_kvasir_split_sizes():
  stems = sorted(os.path.splitext(f)[0]
                 for f in os.listdir(os.path.join(SHARED_DATA, 'kvasir_seg', 'images')))
  split = builders.split_by_fraction(stems)
  assert {s: len(v) for s, v in split.items()} == {'train': 800, 'validation': 100, 'test': 100}
