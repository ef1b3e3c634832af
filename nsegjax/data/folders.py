"""Raw image/mask folders: pair files by stem, read them with PIL, and fail with one-line errors.

A dataset folder holds `images/` and one or more mask folders (`masks/` by default), with the same
file stem on both sides (`a.jpg` <-> `a.png`). Images come back as uint8 [H, W, C] (grey C=1,
colour C=3); masks as uint8 [H, W] class ids. Every problem raises `DataError` with one line that
names the offending file or folder, because a builder that fails after minutes of work must say
exactly what to fix.
"""
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from nsegjax.errors import DataError

IMAGE_EXTENSIONS = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.gif', '.webp'})
_HIGH_DEPTH_MODES = frozenset({'I', 'I;16', 'I;16B', 'I;16L', 'F'})
_GREY_MODES = frozenset({'1', 'L', 'LA', 'La'}) | _HIGH_DEPTH_MODES


@dataclasses.dataclass(frozen=True)
class Pair:
  """One image and its mask file(s), matched by file stem."""
  stem: str
  image: str
  masks: tuple[str, ...]  # One path per mask folder, in the order the folders were asked for.


def find_pairs(root: str, image_dir: str = 'images',
               mask_dirs: Sequence[str] = ('masks',)) -> list[Pair]:
  """Lists the image/mask pairs under `root`, sorted by stem.

  Args:
    root: the dataset folder.
    image_dir: image subfolder name.
    mask_dirs: mask subfolder names; every image needs a mask of the same stem in each.

  Raises:
    DataError: a folder is missing or empty, a stem appears twice in one folder, or an image has
      no mask or a mask no image.
  """
  images = _files_by_stem(os.path.join(root, image_dir))
  masks_per_dir = [_files_by_stem(os.path.join(root, name)) for name in mask_dirs]
  for name, masks in zip(mask_dirs, masks_per_dir):
    if unmasked := sorted(images.keys() - masks.keys()):
      raise DataError(f'image {images[unmasked[0]]} has no mask {unmasked[0]}.* in '
                      f'{os.path.join(root, name)}{_and_more(unmasked)}')
    if orphans := sorted(masks.keys() - images.keys()):
      raise DataError(f'mask {masks[orphans[0]]} has no image {orphans[0]}.* in '
                      f'{os.path.join(root, image_dir)}{_and_more(orphans)}')
  return [Pair(stem, images[stem], tuple(masks[stem] for masks in masks_per_dir))
          for stem in sorted(images)]


def _and_more(stems: Sequence[str]) -> str:
  return f' (and {len(stems) - 1} more)' if len(stems) > 1 else ''


def strip_image_extension(file_name: str) -> str:
  """'a.png' -> 'a', but 'test_1.16' stays whole: only image extensions are removed."""
  stem, extension = os.path.splitext(file_name)
  return stem if extension.lower() in IMAGE_EXTENSIONS else file_name


def _files_by_stem(folder: str) -> dict[str, str]:
  """Maps stem -> path for the image files in `folder` (hidden and non-image files ignored)."""
  if not os.path.isdir(folder):
    raise DataError(f'missing folder {folder}')
  by_stem = {}
  for entry in sorted(os.listdir(folder)):
    stem, extension = os.path.splitext(entry)
    if entry.startswith('.') or extension.lower() not in IMAGE_EXTENSIONS:
      continue
    path = os.path.join(folder, entry)
    if stem in by_stem:
      raise DataError(f'two files share the stem {stem!r}: {by_stem[stem]} and {path}')
    by_stem[stem] = path
  if not by_stem:
    raise DataError(f'no image files ({", ".join(sorted(IMAGE_EXTENSIONS))}) in folder {folder}')
  return by_stem


def _open(path: str, what: str) -> Image.Image:
  """Opens and fully decodes `path`, so truncated files fail here, naming the file."""
  try:
    with Image.open(path) as opened:
      opened.load()
      return opened.copy()
  except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
    raise DataError(f'cannot read {what} {path}: {_first_line(error)}') from None


def read_image(path: str, num_channels: Optional[int] = None) -> np.ndarray:
  """Reads an image as uint8 [H, W, C].

  Args:
    path: image file.
    num_channels: 1 or 3 to convert to grey or RGB; None keeps grey as 1 and colour as 3.

  Raises:
    DataError: the file cannot be decoded.
  """
  image = _open(path, 'image')
  if not _is_colour(image):
    if image.mode in _HIGH_DEPTH_MODES:
      grey = _high_depth_to_uint8(np.asarray(image))
    else:
      grey = np.asarray(image.convert('L'))
    return np.repeat(grey[..., None], num_channels or 1, axis=-1)
  if num_channels == 1:
    return np.asarray(image.convert('L'))[..., None]
  return np.asarray(image.convert('RGB'))  # RGBA loses alpha; CMYK, YCbCr, P become RGB.


def _is_colour_palette(image: Image.Image) -> bool:
  """Whether a palette image uses any non-grey colour; reads the palette, not the pixels."""
  palette = np.asarray(image.getpalette() or [], dtype=np.int32).reshape(-1, 3)
  return bool(np.any(palette != palette[:, :1]))


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
  """16-bit or float grey (e.g. X-ray) -> uint8, stretched by the image's own maximum."""
  array = array.astype(np.float64)
  peak = array.max()
  if peak <= 255:
    return np.clip(array, 0, 255).astype(np.uint8)
  return np.clip(np.rint(array / peak * 255), 0, 255).astype(np.uint8)


def read_mask(path: str) -> np.ndarray:
  """Reads a binary mask as uint8 [H, W] in {0, 1}.

  Masks saved as 0/255 (or anti-aliased grey) are thresholded at > 127; masks already saved as
  0/1 are kept, since thresholding them would silently erase the foreground.

  Raises:
    DataError: the file cannot be decoded.
  """
  mask = np.asarray(_open(path, 'mask').convert('L'))
  if mask.max() <= 1:
    return mask.astype(np.uint8)
  return (mask > 127).astype(np.uint8)


def read_pair(pair: Pair,
              num_channels: Optional[int] = None) -> tuple[np.ndarray, list[np.ndarray]]:
  """Reads an image and all its masks, checking that every mask has the image's size.

  Raises:
    DataError: a file cannot be decoded or a mask's size differs from its image's.
  """
  image = read_image(pair.image, num_channels)
  masks = [read_mask(path) for path in pair.masks]
  for path, mask in zip(pair.masks, masks):
    if mask.shape != image.shape[:2]:
      raise DataError(f'mask {path} is {_size(mask.shape)} but its image {pair.image} is '
                      f'{_size(image.shape)} (width x height)')
  return image, masks


def _size(shape: tuple[int, ...]) -> str:
  return f'{shape[1]}x{shape[0]}'


def inspect_pairs(pairs: Sequence[Pair]) -> int:
  """Checks every file header and mask size before a long build starts; returns the channel count.

  Reads headers only, so it costs milliseconds per thousand files; corrupt pixel
  data is caught later, when `read_pair` decodes the file.

  Returns:
    3 if any image is in colour, else 1.

  Raises:
    DataError: a header cannot be read or a mask's size differs from its image's.
  """
  colour = False
  for pair in pairs:
    with _open_header(pair.image, 'image') as image:
      size = image.size
      colour = colour or _is_colour(image)
    for path in pair.masks:
      with _open_header(path, 'mask') as mask:
        if mask.size != size:
          raise DataError(f'mask {path} is {mask.size[0]}x{mask.size[1]} but its image '
                          f'{pair.image} is {size[0]}x{size[1]} (width x height)')
  return 3 if colour else 1


def _open_header(path: str, what: str) -> Image.Image:
  try:
    return Image.open(path)
  except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
    raise DataError(f'cannot read {what} {path}: {_first_line(error)}') from None


def _first_line(error: Exception) -> str:
  return (str(error).splitlines() or [type(error).__name__])[0]


def _is_colour(image: Image.Image) -> bool:
  if image.mode == 'P':
    return _is_colour_palette(image)
  return image.mode not in _GREY_MODES
