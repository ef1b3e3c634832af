"""The bad-data catalogue (README "Bad data"), built through `data.load_split` as a user builds it.

Every odd input of a raw `images/` + `masks/` folder is either read by a documented rule, checked
here against values worked out by hand, or stops the build with one line naming the file. Each
fixture is a few 16x16 files, so the whole module runs in seconds.
"""
import hashlib
import os
import subprocess
import sys
import types

import numpy as np
from PIL import Image
import pytest

from nsegjax import data
from nsegjax.data import builders
from nsegjax.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16
RULE = ('a binary mask holds 0/1, or 0/255 where >= 128 is foreground (for multi-class masks use '
        'the folder dataset with a classes.txt)')


@pytest.fixture(autouse=True)
def _no_env_dirs(monkeypatch):
  """Tests must not read or fill the user's cache or raw-data folders."""
  monkeypatch.delenv(data.MANUAL_DIR_ENV, raising=False)
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


def folder_config(root, tmp_path):
  return types.SimpleNamespace(name='folder', variant='', manual_dir=str(root),
                               data_dir=str(tmp_path / 'cache'), image_size=0)


def block(i: int) -> np.ndarray:
  """A different rectangle of ones for every example."""
  mask = np.zeros((SIZE, SIZE), np.uint8)
  mask[2:6 + i, 3:9 + i % 3] = 1
  return mask


def write_folder(root, count=4):
  """`count` grey PNG images with 0/255 PNG masks; returns the folder."""
  (root / 'images').mkdir(parents=True)
  (root / 'masks').mkdir()
  rng = np.random.default_rng(0)
  for i in range(count):
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), np.uint8)).save(
        root / 'images' / f'case{i}.png')
    Image.fromarray(block(i) * 255).save(root / 'masks' / f'case{i}.png')
  return root


def load_examples(cfg):
  """{stem: example} over all three splits, and {stem: split}, and the test split's source."""
  examples, split_of = {}, {}
  for split in data.SPLITS:
    source = data.load_split(cfg, split)
    for i in range(len(source)):
      examples[source.example_name(i)] = source[i]
      split_of[source.example_name(i)] = split
  return examples, split_of, source


def snapshot(root):
  """Every path under `root` with its bytes' hash and modification time."""
  state = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      stat = os.lstat(path)
      digest = (hashlib.sha256(open(path, 'rb').read()).hexdigest()
                if os.path.isfile(path) else 'dir')
      state[os.path.relpath(path, root)] = (digest, stat.st_mtime_ns, stat.st_mode)
  return state


def build_error(cfg) -> str:
  with pytest.raises(DataError) as error:
    data.load_split(cfg, 'train')
  message = str(error.value)
  assert '\n' not in message, message
  return message


# ----------------------------------------------------------------------------- read by a rule


def test_grey_colour_alpha_palette_and_16_bit_images_in_one_folder(tmp_path, capfd):
  root = write_folder(tmp_path / 'mixed', count=0)
  rng = np.random.default_rng(1)
  grey = rng.integers(0, 256, (SIZE, SIZE), np.uint8)
  rgb = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
  rgba = rng.integers(0, 256, (SIZE, SIZE, 4), np.uint8)
  colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
  indices = rng.integers(0, 4, (SIZE, SIZE), np.uint8)
  palette = Image.fromarray(indices, mode='P')
  palette.putpalette(colours.ravel().tolist())
  # 12-bit X-ray data in a 16-bit PNG, spanning 100..4180: min-max gives 0..255 exactly.
  ramp = np.arange(SIZE * SIZE).reshape(SIZE, SIZE)
  Image.fromarray((100 + 16 * ramp).astype(np.uint16)).save(root / 'images' / 'xray16.png')
  Image.fromarray(grey).save(root / 'images' / 'grey.png')
  Image.fromarray(grey).convert('LA').save(root / 'images' / 'grey_alpha.png')
  Image.fromarray(rgb).save(root / 'images' / 'rgb.png')
  Image.fromarray(rgba, mode='RGBA').save(root / 'images' / 'rgba.png')
  palette.save(root / 'images' / 'palette.png')
  expected = {
      'xray16': np.repeat(ramp[..., None], 3, -1),  # grey replicated to the dataset's 3 channels
      'grey': np.repeat(grey[..., None], 3, -1),
      'grey_alpha': np.repeat(grey[..., None], 3, -1),  # alpha dropped
      'rgb': rgb,
      'rgba': rgba[..., :3],  # alpha dropped, not composited
      'palette': colours[indices],
  }
  for i, stem in enumerate(expected):
    Image.fromarray(block(i) * 255).save(root / 'masks' / f'{stem}.png')

  examples, _, source = load_examples(folder_config(root, tmp_path))
  assert source.num_channels == 3
  assert sorted(examples) == sorted(expected)
  for i, (stem, image) in enumerate(expected.items()):
    np.testing.assert_array_equal(examples[stem]['image'], image, err_msg=stem)
    np.testing.assert_array_equal(examples[stem]['mask'], block(i), err_msg=stem)
  assert capfd.readouterr().err == ''  # No TFDS chatter and no notice: no mask is empty.


def test_grey_only_folder_keeps_one_channel_and_scales_deep_images_by_their_range(tmp_path):
  root = write_folder(tmp_path / 'grey', count=0)
  rng = np.random.default_rng(2)
  ramp = np.arange(SIZE * SIZE).reshape(SIZE, SIZE)
  indices = rng.integers(0, 256, (SIZE, SIZE), np.uint8)
  palette = Image.fromarray(indices, mode='P')
  palette.putpalette([255 - i for i in range(256) for _ in range(3)])  # a grey, inverted palette
  palette.save(root / 'images' / 'grey_palette.png')
  # Signed 32-bit (CT-like, -1000..20): min-max again gives 0..255 exactly.
  Image.fromarray((-1000 + 4 * ramp).astype(np.int32)).save(root / 'images' / 'ct32.tif')
  flat = np.full((SIZE, SIZE), 3000, np.uint16)
  Image.fromarray(flat).save(root / 'images' / 'flat16.png')
  expected = {'grey_palette': 255 - indices, 'ct32': ramp, 'flat16': np.zeros_like(ramp)}
  for i, stem in enumerate(expected):
    Image.fromarray(block(i) * 255).save(root / 'masks' / f'{stem}.png')

  examples, _, source = load_examples(folder_config(root, tmp_path))
  assert source.num_channels == 1
  for stem, image in expected.items():
    np.testing.assert_array_equal(examples[stem]['image'], image[..., None], err_msg=stem)


def test_binary_masks_of_every_kind_and_empty_ones_are_kept(tmp_path, capfd):
  root = write_folder(tmp_path / 'masks of all kinds', count=0)
  masks = root / 'masks'
  rng = np.random.default_rng(3)
  stems = ['png255', 'png01', 'artefacts', 'jpeg', 'mask16', 'mask16_01', 'palette', 'rgb',
           'empty']
  for i, stem in enumerate(stems):
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), np.uint8)).save(
        root / 'images' / f'{stem}.png')
  Image.fromarray(block(0) * 255).save(masks / 'png255.png')
  Image.fromarray(block(1)).save(masks / 'png01.png')
  # A 0/255 mask that went through JPEG once and was saved as PNG: 0..12 and 243..255.
  noisy = np.where(block(2) == 1, rng.integers(243, 256, (SIZE, SIZE)),
                   rng.integers(0, 13, (SIZE, SIZE))).astype(np.uint8)
  Image.fromarray(noisy).save(masks / 'artefacts.png')
  Image.fromarray(block(3) * 255).save(masks / 'jpeg.jpg', quality=75)
  Image.fromarray(block(4).astype(np.uint16) * 65535).save(masks / 'mask16.png')
  Image.fromarray(block(5).astype(np.uint16)).save(masks / 'mask16_01.png')
  palette = Image.fromarray(block(6), mode='P')
  palette.putpalette([0, 0, 0, 255, 255, 255])
  palette.save(masks / 'palette.png')
  Image.fromarray(np.repeat(block(7)[..., None] * 255, 3, -1)).save(masks / 'rgb.png')
  Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(masks / 'empty.png')
  # Files a user's tools leave behind are not images of the dataset.
  (root / 'images' / '.DS_Store').write_bytes(b'\x00\x01')
  (root / 'images' / '._png255.png').write_bytes(b'AppleDouble')
  (root / 'images' / 'Thumbs.db').write_bytes(b'\x00')
  (masks / 'notes.txt').write_text('rater 2, second pass')
  before = snapshot(root)

  cfg = folder_config(root, tmp_path)
  examples, split_of, source = load_examples(cfg)
  assert sorted(examples) == sorted(stems)
  for i, stem in enumerate(stems[:-1]):
    np.testing.assert_array_equal(examples[stem]['mask'], block(i), err_msg=stem)
  np.testing.assert_array_equal(examples['empty']['mask'], np.zeros((SIZE, SIZE)))
  per_split = {split: int(split_of['empty'] == split) for split in data.SPLITS}
  assert capfd.readouterr().err == (
      f'note: 1 of 9 masks of {source.name} are empty (all background; train '
      f'{per_split["train"]}, validation {per_split["validation"]}, test {per_split["test"]}): '
      f'kept, and config.eval.empty sets how metrics score them\n')
  assert snapshot(root) == before  # Nothing the user made is written, moved or touched.
  data.load_split(cfg, 'train')
  assert capfd.readouterr().err == ''  # Reported once, when built; the cache is silent.


def test_classes_txt_makes_a_multi_class_folder(tmp_path):
  root = write_folder(tmp_path / 'parts', count=0)
  (root / 'classes.txt').write_text('background\nshaft\n\nwrist\n')
  ids = np.zeros((SIZE, SIZE), np.uint8)
  ids[2:8, 2:8], ids[8:14, 5:12] = 1, 2
  variants = {stem: np.roll(ids, shift, axis=1) for shift, stem in enumerate(
      ['grey', 'palette', 'deep', 'rgb'])}
  palette = Image.fromarray(variants['palette'], mode='P')
  palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])  # VOC colours: the indices are the ids.
  palette.save(root / 'masks' / 'palette.png')
  Image.fromarray(variants['grey']).save(root / 'masks' / 'grey.png')
  Image.fromarray(variants['deep'].astype(np.uint16)).save(root / 'masks' / 'deep.png')
  Image.fromarray(np.repeat(variants['rgb'][..., None], 3, -1)).save(root / 'masks' / 'rgb.png')
  for stem in variants:
    Image.fromarray(np.full((SIZE, SIZE), 90, np.uint8)).save(root / 'images' / f'{stem}.png')

  examples, _, source = load_examples(folder_config(root, tmp_path))
  assert source.class_names == ('background', 'shaft', 'wrist') and source.num_classes == 3
  for stem, mask in variants.items():
    np.testing.assert_array_equal(examples[stem]['mask'], mask, err_msg=stem)
  # The class list is part of the cache name: the same folder without it is another dataset.
  assert source.name.split('/')[1] == builders.folder_cache_name(
      str(root), ('background', 'shaft', 'wrist'))
  assert builders.folder_cache_name(str(root)) != source.name.split('/')[1]


# ----------------------------------------------------------------------------- rejected


def corrupt(path, keep=0.5):
  data_bytes = path.read_bytes()
  path.write_bytes(data_bytes[:int(len(data_bytes) * keep)])


@pytest.mark.parametrize('problem', [
    'text_named_png', 'postscript_named_png', 'truncated_png', 'truncated_jpeg', 'text_named_png_mask', 'truncated_mask',
    'mask_size', 'ambiguous_binary_mask', 'faint_jpeg_mask', 'soft_mask', 'multi_class_values',
    'multi_class_colour', 'classes_txt_one_name', 'classes_txt_twice', 'images_folder_empty',
    'masks_folder_missing', 'too_few_pairs', 'two_files_one_stem'])
def test_bad_input_stops_the_build_with_one_line_naming_the_file(tmp_path, problem):
  root = write_folder(tmp_path / 'set', count=4)
  image, mask = root / 'images' / 'case1.png', root / 'masks' / 'case1.png'
  expected = None  # the whole message, where no third-party text is part of it
  suffix = ''
  if problem == 'text_named_png':
    image.write_text('this is not a picture')
    expected = f"cannot read image {image}: cannot identify image file '{image}'"
  elif problem == 'postscript_named_png':  # Never handed to Ghostscript: not a raster format.
    image.write_text('%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n')
    expected = f"cannot read image {image}: cannot identify image file '{image}'"
  elif problem == 'truncated_png':
    corrupt(image)
    prefix = f'cannot read image {image}: '
  elif problem == 'truncated_jpeg':
    image.unlink()
    image = image.with_suffix('.jpg')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)).save(
        image)
    corrupt(image)
    prefix = f'cannot read image {image}: '
  elif problem == 'text_named_png_mask':
    mask.write_text('0 1 1 0')
    expected = f"cannot read mask {mask}: cannot identify image file '{mask}'"
  elif problem == 'truncated_mask':
    corrupt(mask)
    prefix = f'cannot read mask {mask}: '
  elif problem == 'mask_size':
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(mask)
    expected = f'mask {mask} is 9x7 but its image {image} is 16x16 (width x height)'
  elif problem == 'ambiguous_binary_mask':  # Class ids in a binary dataset: 2 would vanish.
    ids = block(1)
    ids[4:6] *= 2
    Image.fromarray(ids).save(mask)
    expected = f'mask {mask} has values 0, 1, 2: {RULE}'
  elif problem == 'faint_jpeg_mask':  # 0/1 ids through JPEG: artefacts and ids look alike.
    mask.unlink()
    mask = mask.with_suffix('.jpg')
    Image.fromarray(block(1)).save(mask, quality=95)
    prefix = f'mask {mask} has values 0, 1'
    suffix = (' and none >= 128: a JPEG mask must be 0/255 (>= 128 is foreground), since JPEG '
              'cannot keep 0/1 ids exact')
  elif problem == 'soft_mask':  # Probabilities saved as float TIFF.
    mask.unlink()
    mask = mask.with_suffix('.tif')
    Image.fromarray(block(1) * np.float32(0.75)).save(mask)
    expected = f'mask {mask} has values 0.0, 0.75: {RULE}'
  elif problem == 'multi_class_values':
    (root / 'classes.txt').write_text('background\nliver\ntumour\n')
    Image.fromarray(np.array([0, 1, 7, 200] * 64, np.uint8).reshape(SIZE, SIZE)).save(mask)
    expected = f'mask {mask} has values 7, 200 that are not class ids 0..2'
  elif problem == 'multi_class_colour':
    (root / 'classes.txt').write_text('background\nliver\ntumour\n')
    colour = np.zeros((SIZE, SIZE, 3), np.uint8)
    colour[4:9, 4:9] = [255, 0, 0]
    Image.fromarray(colour).save(mask)
    expected = (f'mask {mask} is a colour image (mode RGB); multi-class masks hold their class ids '
                f'as grey values or palette indices')
  elif problem == 'classes_txt_one_name':
    (root / 'classes.txt').write_text('lesion\n')
    expected = f'{root / "classes.txt"} must list 2 to 256 class names, one per line; found 1'
  elif problem == 'classes_txt_twice':
    (root / 'classes.txt').write_text('background\nvessel\nvessel\n')
    expected = f"{root / 'classes.txt'} lists the class name 'vessel' more than once"
  elif problem == 'images_folder_empty':
    for path in (root / 'images').iterdir():
      path.unlink()
    (root / 'images' / '.DS_Store').write_bytes(b'\x00')
    (root / 'images' / 'readme.txt').write_text('images go here')
    expected = (f'no image files (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp) in folder '
                f'{root / "images"}')
  elif problem == 'masks_folder_missing':
    (root / 'masks').rename(root / 'labels')
    expected = f'missing folder {root / "masks"}'
  elif problem == 'too_few_pairs':
    for stem in ('case2', 'case3'):
      (root / 'images' / f'{stem}.png').unlink()
      (root / 'masks' / f'{stem}.png').unlink()
    expected = 'need at least 3 image/mask pairs to split, found 2'
  elif problem == 'two_files_one_stem':
    Image.open(image).save(image.with_suffix('.jpg'))
    expected = f"two files share the stem 'case1': {image.with_suffix('.jpg')} and {image}"
  before = snapshot(root)
  message = build_error(folder_config(root, tmp_path))
  if expected is not None:
    assert message == expected
  else:
    assert message.startswith(prefix) and message.endswith(suffix), message
    assert len(message) > len(prefix), message  # PIL's reason (or the values) follows.
  assert snapshot(root) == before
  assert not list((tmp_path / 'cache').rglob('dataset_info.json'))  # Nothing half-built kept.


def test_fixing_the_named_file_lets_the_next_build_succeed(tmp_path):
  root = write_folder(tmp_path / 'set', count=4)
  mask = root / 'masks' / 'case2.png'
  corrupt(mask)
  cfg = folder_config(root, tmp_path)
  assert str(mask) in build_error(cfg)
  Image.fromarray(block(2) * 255).save(mask)
  examples, _, _ = load_examples(cfg)
  np.testing.assert_array_equal(examples['case2']['mask'], block(2))


def test_cli_prints_only_the_one_line_and_exits_2(tmp_path):
  root = write_folder(tmp_path / 'set', count=4)
  image = root / 'images' / 'case3.png'
  image.write_text('<html>404 Not Found</html>')  # A failed download saved under an image name.
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='1')
  env.pop(data.MANUAL_DIR_ENV, None)
  env.pop(data.DATA_DIR_ENV, None)
  out = subprocess.run(
      [sys.executable, '-m', 'nsegjax.main', '--config=configs/default.py',
       f'--workdir={tmp_path / "run"}', '--config.data.name=folder',
       f'--config.data.manual_dir={root}', f'--config.data.data_dir={tmp_path / "cache"}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr == f"error: cannot read image {image}: cannot identify image file '{image}'\n"
