"""Raw image/mask folders: pair files by stem, read them with PIL, and fail with one-line errors.

A dataset folder holds `images/` and one or more mask folders (`masks/` by default), with the same
file stem on both sides (`a.jpg` <-> `a.png`); hidden files and files without an image extension
are ignored. Images come back as uint8 [H, W, C] (grey C=1, colour C=3); masks as uint8 [H, W]
class ids. The rules for odd files (mixed grey and colour, alpha, palettes, 16-bit data, masks
saved as 0/255 or as JPEG) are in `read_image` and `read_mask`. Every problem raises `DataError`
with one line that names the offending file or folder, because a builder that fails after minutes
of work must say exactly what to fix. Nothing here ever writes to the user's folders.
"""
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from nsegjax.errors import DataError

CLASSES_FILE = 'classes.txt'
IMAGE_EXTENSIONS = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.gif', '.webp'})
# Pillow picks a decoder by content, not extension: without this list an EPS file named .png
# would be handed to Ghostscript, i.e. a data folder could make us run a PostScript program.
PIL_FORMATS = ('PNG', 'JPEG', 'BMP', 'TIFF', 'GIF', 'WEBP')
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


def _open(path: str, what: str) -> tuple[Image.Image, Optional[str]]:
  """Opens and fully decodes `path`, so truncated files fail here, naming the file.

  Returns:
    The decoded image and its file format ('PNG', 'JPEG', ...), which `copy` does not keep.
  """
  try:
    with Image.open(path, formats=PIL_FORMATS) as opened:
      opened.load()
      return opened.copy(), opened.format
  except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
    raise DataError(f'cannot read {what} {path}: {_first_line(error)}') from None


def read_image(path: str, num_channels: Optional[int] = None) -> np.ndarray:
  """Reads an image as uint8 [H, W, C].

  Grey modes (1, L, LA, grey palettes, 16-bit I;16, 32-bit I, float F) give one grey channel,
  repeated to `num_channels`; colour modes become RGB (alpha dropped, colour palettes looked up)
  or, with num_channels 1, their luminance. 16-bit and float grey is scaled to 8 bits by the
  image's own minimum and maximum (see `_high_depth_to_uint8`). 16-bit colour PNGs reach us as
  8-bit RGB: Pillow keeps the high byte of each channel.

  Args:
    path: image file.
    num_channels: 1 or 3 to convert to grey or RGB; None keeps grey as 1 and colour as 3.

  Raises:
    DataError: the file cannot be decoded.
  """
  image, _ = _open(path, 'image')
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
  """16-bit, 32-bit or float grey (X-ray, CT, microscopy) -> uint8 by the image's own min and max.

  Not by the dtype's range: X-ray PNGs often hold 12-bit data in 16 bits (0..4095), which that
  would squeeze into 16 grey levels. The network sees every image standardised by its own mean
  and std (pipeline.normalize_images), so any per-image linear map gives it the same input, and
  min-max is the one that keeps the most grey levels. A flat image becomes 0.
  """
  array = array.astype(np.float64)
  low, high = array.min(), array.max()
  return np.rint((array - low) * (255 / ((high - low) or 1))).astype(np.uint8)


def read_mask(path: str, num_classes: int = 2) -> np.ndarray:
  """Reads a mask as uint8 [H, W] class ids in [0, num_classes).

  Binary masks (num_classes 2) are read by grey level (colour and palette masks by luminance,
  16-bit and 32-bit masks by their raw values):
    * if any value is >= 128 (0/255 masks, anti-aliased edges, JPEG artefacts such as 0..12 and
      243..255, 16-bit 0/65535), >= 128 is foreground;
    * else a lossless mask of 0s and 1s is kept as ids (thresholding it would erase it); JPEG is
      lossy, so its faint values are never taken for ids;
    * else (0/1/2 class ids, a dark palette colour, a soft 0..1 mask) the mask is ambiguous and
      rejected.
  Multi-class masks must hold the ids themselves, as grey values (any depth) or palette indices;
  any other value is rejected, and so is a colour mask whose channels differ.

  Raises:
    DataError: the file cannot be decoded or holds values that are not class ids; the message
      names the file and the values.
  """
  image, file_format = _open(path, 'mask')
  if num_classes == 2:
    return _binary_mask(image, lossy=file_format == 'JPEG', path=path)
  ids = _mask_ids(image, path)
  if (bad := np.setdiff1d(np.unique(ids), np.arange(num_classes))).size:
    raise DataError(f'mask {path} has values {_list_values(bad)} that are not class ids '
                    f'0..{num_classes - 1}')
  return ids.astype(np.uint8)


def _binary_mask(image: Image.Image, lossy: bool, path: str) -> np.ndarray:
  grey = np.asarray(image) if image.mode in _HIGH_DEPTH_MODES else np.asarray(image.convert('L'))
  values = np.unique(grey)
  if values.max() >= 128:
    return (grey >= 128).astype(np.uint8)
  if np.isin(values, (0,) if lossy else (0, 1)).all():
    return grey.astype(np.uint8)
  if lossy:
    raise DataError(f'mask {path} has values {_list_values(values)} and none >= 128: a JPEG mask '
                    f'must be 0/255 (>= 128 is foreground), since JPEG cannot keep 0/1 ids exact')
  raise DataError(f'mask {path} has values {_list_values(values)}: a binary mask holds 0/1, or '
                  f'0/255 where >= 128 is foreground (for multi-class masks use the folder '
                  f'dataset with a {CLASSES_FILE})')


def _mask_ids(image: Image.Image, path: str) -> np.ndarray:
  """The stored values of a multi-class mask: palette indices, grey values, or one of R = G = B."""
  if image.mode in ('LA', 'La', 'PA'):
    image = image.getchannel(0)
  array = np.asarray(image)
  if array.ndim == 3:
    if np.ptp(array[..., :3], axis=-1).any():
      raise DataError(f'mask {path} is a colour image (mode {image.mode}); multi-class masks hold '
                      f'their class ids as grey values or palette indices')
    array = array[..., 0]
  return array


def _list_values(values: np.ndarray, limit: int = 8) -> str:
  shown = ', '.join(str(value) for value in values[:limit].tolist())
  return shown + (f' (and {len(values) - limit} more)' if len(values) > limit else '')


def read_class_names(folder: str) -> Optional[tuple[str, ...]]:
  """The class names listed in `folder`/classes.txt (one per line, line i is id i), or None.

  Raises:
    DataError: the file lists fewer than 2 or more than 256 classes, or a name twice.
  """
  path = os.path.join(folder, CLASSES_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as file:
    names = tuple(line.strip() for line in file if line.strip())
  if not 2 <= len(names) <= 256:  # Masks store ids as uint8.
    raise DataError(f'{path} must list 2 to 256 class names, one per line; found {len(names)}')
  if len(set(names)) < len(names):
    twice = sorted({name for name in names if names.count(name) > 1})
    raise DataError(f'{path} lists the class name {twice[0]!r} more than once')
  return names


def read_pair(pair: Pair, num_channels: Optional[int] = None,
              num_classes: int = 2) -> tuple[np.ndarray, list[np.ndarray]]:
  """Reads an image and all its masks, checking that every mask has the image's size.

  Raises:
    DataError: a file cannot be decoded, a mask holds values that are not class ids, or a mask's
      size differs from its image's.
  """
  image = read_image(pair.image, num_channels)
  masks = [read_mask(path, num_classes) for path in pair.masks]
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
    return Image.open(path, formats=PIL_FORMATS)
  except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
    raise DataError(f'cannot read {what} {path}: {_first_line(error)}') from None


def _first_line(error: Exception) -> str:
  return (str(error).splitlines() or [type(error).__name__])[0]


def _is_colour(image: Image.Image) -> bool:
  if image.mode == 'P':
    return _is_colour_palette(image)
  return image.mode not in _GREY_MODES
