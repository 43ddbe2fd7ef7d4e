"""MiniPlaces as a torch Dataset, over the official layout:

    <root>/train.txt, <root>/val.txt   lines "train/a/abbey/00000001.jpg 0" (paths relative to images/)
    <root>/categories.txt              lines "/a/abbey 0" (else class names come from images/train/)
    <root>/images/train|val|test/      128x128 JPEGs

`MiniPlacesLoader(root, split='train'|'val')` yields (image, int label); `split='test'` lists
images/test/*.jpg in name order and yields (image, 'test/<name>.jpg') since test labels were never released.
Text files may be saved as UTF-8 with or without a byte-order mark, with LF or CRLF line ends.

Images are read as a viewer shows them: the EXIF orientation applied, then converted to 8-bit RGB
from any pixel mode Pillow opens (16-bit and float grey scaled, transparency composited onto white;
see to_rgb), or refused in one line. They may have any size: `image_sizes` gives each one's size from
the file headers, and `SizeGroupedBatchSampler` makes evaluation batches of one size each.

Every mistake in the input (missing folder, label file or image; malformed line; label out of range; a
path that is absolute or leaves images/; an unreadable image) raises `DataError`, one line naming the file
and, for label files, the line number. Label files and paths are checked eagerly in __init__; images are
decoded lazily, so a bad image raises DataError from __getitem__, which a DataLoader worker passes back to
the main process (`DataError` turns the worker's traceback back into the one-line message).

`cache=True` decodes a split once, when the dataset is built, into a uint8 array of shape (N, H, W, 3)
memory-mapped from data/cache/<split>-<N>-<key>.npy (49 KB per 128x128 image: 4.9 GB for the 100,000
train images), so every epoch skips JPEG decoding. H, W is the most common image size; images of other
sizes are listed in the index next to it (<split>-<N>-<key>.json, with the unreadable ones) and read
from their files, so the cache gives the same pictures as the files. The key hashes the root and the
sample list, and the array is written under a temporary name and renamed after its index, so an
interrupted build is simply redone (images edited in place are not detected: delete data/cache/ after
changing a dataset).
`skip_bad_images=True` warns about missing or unreadable images and skips them instead of raising.
"""
import bisect
import contextlib
import functools
import hashlib
import json
import os
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torch.utils import data

import utils
from utils import UserError

SPLITS = ("train", "val", "test")
MINIPLACES_SIZE = (128, 128)  # (width, height) of every official MiniPlaces image
CACHE_DIR_NAME = "cache"
# What Pillow raises for unreadable, truncated or hostile files.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_WORKER_LAST_LINE = re.compile(r"DataError: (.*)$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNUSUAL_PATH_TOKENS = ("..", "\\", ":", "//", "./")
ORIENTATION_TAG = 0x0112  # EXIF Orientation (ExifTags.Base.Orientation in recent Pillow)
# Orientations 5..8 store the picture turned by 90 degrees: its width and height swap.
_TURNED_ORIENTATIONS = (5, 6, 7, 8)
_ORIENTATION_SOURCES = {"exif", "xmp", "XML:com.adobe.xmp"}  # where Pillow's getexif() looks in image.info
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
# "utf-8-sig" drops the byte-order mark that Windows editors write ("UTF-8 with BOM"), which would
# otherwise stick to the first image path or class name; without a BOM it reads plain UTF-8.
TEXT_ENCODING = "utf-8-sig"


class DataError(UserError):
    """A problem with the dataset on disk, as one line naming the file (and line number).

    When a DataLoader worker fails, PyTorch re-raises the error in the main process as
    `DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback ...")`;
    the constructor keeps only the original one-line message (the full text stays in `.details`).
    """

    def __init__(self, message):
        message = str(message)
        self.details = message
        if message.startswith("Caught DataError") and "Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            found = _WORKER_LAST_LINE.search(last)
            message = found.group(1) if found else last
        super().__init__(message)


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


# ---------------------------------------------------------------------------------------------------
# Images: upright, 8-bit RGB
# ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _opened(path):
    """Image.open(path), lazily (header only); its failures become one-line DataErrors naming the file."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except _IMAGE_ERRORS as error:
        raise DataError(f"{path}: cannot read image ({_one_line(error)})") from None


def _orientation(image):
    """The EXIF orientation of an opened image: 2..8 when the stored pixels must be turned or mirrored
    to be seen upright, 1 when they need nothing (or the tag is absent or not a valid value)."""
    if image.format == "JPEG" and not _ORIENTATION_SOURCES & image.info.keys():
        # A JPEG's metadata is all read by Image.open; getexif() would cost 25 us more per image
        # (6% of decoding a 128x128 MiniPlaces JPEG) to find nothing.
        return 1
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if value in range(1, 9) else 1


def upright_size(image):
    """(width, height) of an opened image once its EXIF orientation is applied, without decoding it."""
    width, height = image.size
    return (height, width) if _orientation(image) in _TURNED_ORIENTATIONS else (width, height)


def read_image_size(path):
    """(width, height) of the image file as load_rgb_image returns it, read from the header.

    Raises DataError naming the file when it is missing or not an image.
    """
    with _opened(path) as image:
        return upright_size(image)


def load_rgb_image(path):
    """Decode an image file into the 8-bit RGB picture that a viewer shows: the EXIF orientation
    applied (a phone's sideways JPEG comes out upright), any pixel mode converted by to_rgb.

    Raises DataError naming the file when it is missing, truncated or not an image, or when to_rgb
    refuses its pixels.
    """
    with _opened(path) as image:
        image.load()
        upright = image if _orientation(image) == 1 else ImageOps.exif_transpose(image)
        rgb = to_rgb(upright, path)
        return rgb.copy() if rgb is image else rgb  # the `with` closes `image`


def to_rgb(image, name):
    """The 8-bit RGB version of a loaded Pillow image of any mode; `name` (the file) is for errors.

    - RGB as it is; 1 (0/1 -> 0/255), L, P, CMYK, YCbCr, RGBX and HSV by Pillow's conversion (CMYK
      by the plain formula, without ICC profiles, like every mode here);
    - transparency (RGBA, LA, PA, RGBa, P or L or RGB with a transparent colour, 16-bit grey with
      one): composited onto white, as a viewer shows it on a white page; opaque pixels are unchanged;
    - 16-bit grey (I;16, I;16L, I;16B, I;16N) and 32-bit integer I (how older Pillow versions open
      16-bit PNGs): 0..65535 scaled to 0..255, rounded; I values outside 0..65535 are refused;
    - 32-bit float F: 0..1 scaled to 0..255, rounded; values outside 0..1, NaN or infinite are
      refused (no scale can be guessed for them);
    - LAB: converted to sRGB by LittleCMS (PIL.ImageCms).
    Raises DataError (one line naming `name`) for refused values and modes Pillow cannot convert.
    """
    mode = image.mode
    transparent = "transparency" in image.info
    if mode == "RGB" and not transparent:
        return image
    if mode.startswith("I") or mode == "F":
        return _gray_to_rgb(_deep_gray_to_8bit(image, name), _deep_gray_alpha(image))
    if mode == "LAB":
        return _lab_to_rgb(image, name)
    try:
        if mode in _ALPHA_MODES or transparent:
            return _composite_on_white(np.asarray(image.convert("RGBA")))
        return image.convert("RGB")
    except ValueError:  # Pillow: "conversion from La to RGB not supported"
        raise DataError(f"{name}: pixel mode {mode} cannot be converted to RGB") from None


def _deep_gray_to_8bit(image, name):
    """(H, W) uint8 grey from an I;16*, I or F image, scaled as to_rgb describes."""
    values = np.asarray(image)  # (H, W): uint16 in the file's byte order, int32 or float32
    if image.mode == "F":
        if not np.isfinite(values).all():
            raise DataError(f"{name}: 32-bit float pixels include NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise DataError(f"{name}: 32-bit float pixels span {low:g}..{high:g}; only 0..1 is read "
                            f"(as 0..255)")
        return np.floor(values.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise DataError(f"{name}: {image.mode} pixels span {low}..{high}; integer pixels are read as "
                        f"16-bit (0..65535)")
    # round(v * 255 / 65535) = round(v / 257): no value lies halfway, since 257 is odd.
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _deep_gray_alpha(image):
    """(H, W) uint8 alpha of a 16-bit grey image with a transparent value (PNG tRNS), else None."""
    if "transparency" not in image.info or image.mode == "F":
        return None
    return np.where(np.asarray(image) == image.info["transparency"], 0, 255).astype(np.uint8)


def _gray_to_rgb(gray, alpha=None):
    """(H, W) uint8 grey [+ (H, W) alpha] -> RGB image (composited onto white when alpha is given)."""
    if alpha is not None:
        return _composite_on_white(np.stack([gray, gray, gray, alpha], axis=-1))
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))


def _composite_on_white(rgba):
    """(H, W, 4) uint8 RGBA -> RGB image over white: round(c * a / 255 + 255 * (1 - a / 255))."""
    rgba = rgba.astype(np.uint32)
    color, alpha = rgba[..., :3], rgba[..., 3:]
    # Integer rounding: (x + 127) // 255 = round(x / 255), with no halfway cases since 255 is odd.
    return Image.fromarray(((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8))


@functools.lru_cache(maxsize=1)
def _lab_to_srgb():
    """A function LAB image -> sRGB image (LittleCMS, built once per process); None when Pillow lacks
    LittleCMS."""
    try:
        from PIL import ImageCms
    except ImportError:
        return None
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                        "LAB", "RGB")
    return functools.partial(ImageCms.applyTransform, transform=transform)


def _lab_to_rgb(image, name):
    convert = _lab_to_srgb()
    if convert is None:
        raise DataError(f"{name}: LAB pixels need Pillow with LittleCMS (PIL.ImageCms) to become RGB")
    return convert(image)


# ---------------------------------------------------------------------------------------------------
# Label files and class names
# ---------------------------------------------------------------------------------------------------
def _read_lines(path):
    """(line number, stripped text) for each non-blank line of a UTF-8 text file, with or without a BOM,
    with LF or CRLF line ends."""
    try:
        text = Path(path).read_text(encoding=TEXT_ENCODING)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({_one_line(error)})") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def check_relative_path(rel_path, where):
    """Reject paths that are absolute or climb out of images/ ('..'); `where` is 'file:line'.

    Returns the path normalised to forward slashes without '.' or empty parts.
    """
    if not any(token in rel_path for token in _UNUSUAL_PATH_TOKENS) and rel_path[0] != "/":
        return rel_path  # the common case (100,000 lines in the full train.txt): nothing to normalise
    if rel_path.startswith(("/", "\\")) or _DRIVE.match(rel_path):
        raise DataError(f"{where}: image path '{rel_path}' is absolute; paths are relative to images/")
    parts = rel_path.replace("\\", "/").split("/")
    if ".." in parts:
        raise DataError(f"{where}: image path '{rel_path}' leaves images/ ('..' is not allowed)")
    return "/".join(part for part in parts if part not in ("", "."))


def parse_label_file(path, num_classes):
    """[(relative image path, label, line number)] from lines '<path> <label>'; blank lines are skipped.

    An image listed twice is refused: it would count twice in every accuracy and prediction file.
    """
    samples = []
    first_line = {}  # image path -> the line that listed it first
    for number, line in _read_lines(path):
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{where}: expected '<image path> <label>', got '{line[:80]}'")
        rel_path, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(f"{where}: label '{label_text}' is not an integer") from None
        if not 0 <= label < num_classes:
            raise DataError(f"{where}: label {label} is outside 0..{num_classes - 1} (num_classes={num_classes})")
        rel_path = check_relative_path(rel_path, where)
        if rel_path in first_line:
            raise DataError(f"{where}: image {rel_path} is listed twice (first on line {first_line[rel_path]})")
        first_line[rel_path] = number
        samples.append((rel_path, label, number))
    if not samples:
        raise DataError(f"{path}: no images listed")
    return samples


def parse_categories(path):
    """Class names by index from lines '/a/abbey 0' (the '/<letter>/' prefix is dropped: 'abbey')."""
    names = {}
    for number, line in _read_lines(path):
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 2 or not fields[1].isdigit():
            raise DataError(f"{where}: expected '<category> <index>', got '{line[:80]}'")
        index = int(fields[1])
        if index in names:
            raise DataError(f"{where}: index {index} is listed twice")
        names[index] = re.sub(r"^/[^/]/", "", fields[0]).lstrip("/")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: indices must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]


def class_names_from_folders(train_dir):
    """Sorted class names from images/train/<letter>/<class...>/ folders that hold files."""
    names = set()
    for folder, _, files in os.walk(train_dir):
        if files:
            parts = Path(folder).relative_to(train_dir).parts
            names.add("/".join(parts[1:]) if len(parts) > 1 else "/".join(parts))
    return sorted(name for name in names if name)


# ---------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------
class MiniPlacesLoader(data.Dataset):
    """MiniPlaces split as a Dataset; see the module docstring for the layout.

    Args:
        root_folder: folder holding images/, train.txt, val.txt and (optionally) categories.txt.
        label_file: label file for 'train'/'val' (default <root>/<split>.txt); a relative path is looked
            up from the working directory, then from root_folder.
        num_classes: labels must lie in 0..num_classes-1.
        split: 'train', 'val' or 'test'.
        transforms: callable applied to the RGB PIL image (e.g. custom_transforms.get_train_transforms()).
        skip_bad_images: warn about and skip missing or unreadable images instead of raising DataError.
        cache: False; True to cache decoded images under data/cache/; or the cache folder itself.

    Indexing yields (image, label) or, for 'test', (image, 'test/<name>.jpg'); `image_sizes` lists each
    image's (width, height) for SizeGroupedBatchSampler, `other_sizes_note()` says how many differ
    from 128x128.
    """

    def __init__(self, root_folder, label_file=None, num_classes=100, split="train", transforms=None,
                 skip_bad_images=False, cache=False):
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        self.root = Path(root_folder).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found (see data/README.md or run "
                            f"code/download_data.py)")
        self.images_dir = self.root / "images"
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: folder not found; expected the MiniPlaces layout "
                            f"images/train|val|test")
        self.split = split
        self.num_classes = num_classes
        self.transforms = transforms
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0  # images skipped by this process (each DataLoader worker counts its own)
        self.classes = self._load_classes()

        if split == "test":
            if label_file is not None:
                raise UserError("split 'test' takes no label file: it lists images/test/*.jpg")
            self.label_file = None
            self.samples = self._list_test_images()
        else:
            self.label_file = self._resolve_label_file(label_file)
            listed = parse_label_file(self.label_file, num_classes)
            self.samples = self._keep_existing(listed)

        self._sizes = None  # (width, height) per sample, read on first use (image_sizes)
        self._cache_path = None
        self._rows = None  # sample index -> row of the cache array
        self._uncached_rows = frozenset()  # rows of another size than the cache's: read from their files
        self._array = None  # opened lazily in each process (a memmap must not be pickled to workers)
        if cache:
            cache_dir = utils.DEFAULT_DATA_DIR / CACHE_DIR_NAME if cache is True else Path(cache)
            self._open_cache(cache_dir)

    # -- construction helpers -----------------------------------------------------------------------
    def _resolve_label_file(self, label_file):
        if label_file is None:
            return self.root / f"{self.split}.txt"
        path = Path(label_file).expanduser()
        if not path.is_absolute() and not path.exists():
            path = self.root / path
        return path

    def _load_classes(self):
        categories = self.root / "categories.txt"
        if categories.is_file():
            names = parse_categories(categories)
            source = categories
        elif (self.images_dir / "train").is_dir():
            names = class_names_from_folders(self.images_dir / "train")
            source = self.images_dir / "train"
        else:
            return [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise DataError(f"{source}: {len(names)} classes found but num_classes is {self.num_classes}")
        return names

    def _list_test_images(self):
        test_dir = self.images_dir / "test"
        if not test_dir.is_dir():
            raise DataError(f"{test_dir}: folder not found")
        names = sorted(entry.name for entry in os.scandir(test_dir)
                       if entry.is_file() and entry.name.lower().endswith(".jpg"))
        if not names:
            raise DataError(f"{test_dir}: no .jpg images")
        return [(f"test/{name}", None) for name in names]

    def _keep_existing(self, listed):
        """Check that every listed image exists; raise on the first missing one or skip them all."""
        listings = {}  # folder -> names in it: one listdir per folder instead of a stat per image

        def exists(rel):
            folder, _, name = rel.rpartition("/")
            if folder not in listings:
                try:
                    listings[folder] = set(os.listdir(self.images_dir / folder))
                except OSError:
                    listings[folder] = set()
            return name in listings[folder]

        missing = [(rel, number) for rel, _, number in listed if not exists(rel)]
        if missing and not self.skip_bad_images:
            rel, number = missing[0]
            more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
            raise DataError(f"{self.label_file}:{number}: image {self.images_dir / rel} not found{more}")
        if missing:
            self.num_skipped += len(missing)
            warnings.warn(f"{self.label_file}: skipping {len(missing)} missing images "
                          f"(first: line {missing[0][1]}, {missing[0][0]})", stacklevel=3)
            absent = {number for _, number in missing}
            listed = [item for item in listed if item[2] not in absent]
            if not listed:
                raise DataError(f"{self.label_file}: none of the listed images exist")
        return [(rel, label) for rel, label, _ in listed]

    # -- image sizes --------------------------------------------------------------------------------
    @property
    def image_sizes(self):
        """(width, height) of each image as __getitem__ loads it (EXIF orientation applied), before
        the transforms: from the cache index, else read from the file headers on first use (about
        0.2 ms an image). With skip_bad_images, an unreadable image has the size of its stand-in."""
        if self._sizes is None:
            self._sizes = self._stand_in_sizes(self._read_sizes())
        return self._sizes

    def count_other_sizes(self, size=MINIPLACES_SIZE):
        """How many images are not `size` (width, height)."""
        return sum(1 for image_size in self.image_sizes if tuple(image_size) != tuple(size))

    def other_sizes_note(self, size=MINIPLACES_SIZE):
        """'N of M <split> images are not WxH' when some are, else None."""
        count = self.count_other_sizes(size)
        if not count:
            return None
        return f"{count} of {len(self)} {self.split} images are not {size[0]}x{size[1]}"

    def _read_sizes(self):
        """Header size of each sample (see read_image_size); None for an unreadable one when skipping."""
        sizes = []
        for rel, _ in self.samples:
            try:
                sizes.append(read_image_size(self.images_dir / rel))
            except DataError:
                if not self.skip_bad_images:
                    raise
                sizes.append(None)
        return sizes

    def _stand_in_sizes(self, sizes):
        """`sizes` with each None replaced by the next readable size, wrapping round, as _load_or_skip
        stands the next readable image in for an unreadable one."""
        known = [index for index, size in enumerate(sizes) if size is not None]
        if not known:
            raise self._nothing_readable()
        # known[bisect_left(known, index)] is the first readable index after `index`.
        return [size if size is not None else sizes[known[bisect.bisect_left(known, index) % len(known)]]
                for index, size in enumerate(sizes)]

    # -- cache ---------------------------------------------------------------------------------------
    def _cache_key(self):
        digest = hashlib.sha1()
        digest.update(f"{self.root.resolve()}|{self.split}|".encode())
        for rel, label in self.samples:
            digest.update(f"{rel} {label}\n".encode())
        return digest.hexdigest()[:16]

    def _open_cache(self, cache_dir):
        path = Path(cache_dir) / f"{self.split}-{len(self.samples)}-{self._cache_key()}.npy"
        index_path = path.with_suffix(".json")
        index = _read_cache_index(index_path) if path.is_file() else None
        if index is None:  # never built, or built by a version without the index: build it (again)
            index = self._build_cache(path, index_path)
        bad = set(index["unreadable"])
        if bad and not self.skip_bad_images:
            raise DataError(f"{self.images_dir / self.samples[min(bad)][0]}: cannot read image "
                            f"(recorded in {index_path})")
        cached_size = tuple(index["size"])
        other_sizes = {row: (width, height) for row, width, height in index["other_sizes"]}
        self._rows = [row for row in range(len(self.samples)) if row not in bad]
        self._uncached_rows = frozenset(other_sizes)
        self._sizes = [other_sizes.get(row, cached_size) for row in self._rows]
        if bad:
            self.num_skipped += len(bad)
            warnings.warn(f"cache {path.name}: skipping {len(bad)} unreadable images", stacklevel=3)
            self.samples = [self.samples[row] for row in self._rows]
        self._cache_path = path

    def _build_cache(self, path, index_path):
        """Decode every image of the most common size once into a (N, H, W, 3) uint8 .npy, written to a
        temporary name then renamed; returns its index, also written to `index_path`:
        {"size": [W, H], "unreadable": [rows], "other_sizes": [[row, w, h], ...]}. The rows of images
        of other sizes stay empty: those images are read from their files (so that a few odd images
        neither stop the cache nor get another picture than without it)."""
        sizes = self._read_sizes()
        readable = [size for size in sizes if size is not None]
        if not readable:
            raise self._nothing_readable()
        width, height = Counter(readable).most_common(1)[0][0]  # ties: the first one listed
        bad = [row for row, size in enumerate(sizes) if size is None]
        other_sizes = [[row, *size] for row, size in enumerate(sizes) if size not in (None, (width, height))]
        count = len(self.samples) - len(bad) - len(other_sizes)
        print(f"caching {count} {self.split} images ({width}x{height}) into {path} ...",
              file=sys.stderr, flush=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(len(self.samples), height, width, 3))
            for row, (rel, _) in enumerate(self.samples):
                if sizes[row] != (width, height):
                    continue
                try:
                    image = load_rgb_image(self.images_dir / rel)
                except DataError:
                    if not self.skip_bad_images:
                        raise
                    bad.append(row)
                    continue
                if image.size != (width, height):  # a format whose header misstates the size
                    other_sizes.append([row, *image.size])
                    continue
                array[row] = np.asarray(image)
            array.flush()
            del array
            index = {"size": [width, height], "unreadable": sorted(bad), "other_sizes": other_sizes}
            utils.write_json(index, index_path)
            os.replace(tmp, path)
        except OSError as error:  # disk full, read-only folder
            raise DataError(f"{path}: cannot write the cache ({_one_line(error)})") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return index

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    # -- access --------------------------------------------------------------------------------------
    def __len__(self):
        return len(self.samples)

    def _load(self, index):
        if self._cache_path is not None and self._rows[index] not in self._uncached_rows:
            if self._array is None:
                self._array = np.load(self._cache_path, mmap_mode="r")
            return Image.fromarray(np.ascontiguousarray(self._array[self._rows[index]]), "RGB")
        return load_rgb_image(self.images_dir / self.samples[index][0])

    def _load_or_skip(self, index):
        """The image at `index`; with skip_bad_images, the next readable one (and its sample index),
        of the same size once image_sizes is known, so that a batch grouped by size still stacks."""
        for offset in range(len(self.samples)):
            current = (index + offset) % len(self.samples)
            if offset and self._sizes is not None and self._sizes[current] != self._sizes[index]:
                continue
            try:
                return self._load(current), current
            except DataError as error:
                if not self.skip_bad_images:
                    raise
                self.num_skipped += 1
                warnings.warn(f"{error} - skipped ({self.num_skipped} so far in this process)")
        raise self._nothing_readable()

    def _nothing_readable(self):
        return DataError(f"{self.images_dir}: no readable {self.split} image")

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            # Without it, _load_or_skip's wrap-around would make `for item in dataset` endless.
            raise IndexError(f"index {index} is out of range for {len(self)} {self.split} images")
        image, index = self._load_or_skip(index % len(self))
        if self.transforms is not None:
            image = self.transforms(image)
        rel_path, label = self.samples[index]
        return image, (rel_path if self.split == "test" else label)

    def __repr__(self):
        return (f"MiniPlacesLoader(root={str(self.root)!r}, split={self.split!r}, "
                f"images={len(self)}, classes={len(self.classes)}, cached={self._cache_path is not None})")


def _read_cache_index(path):
    """The index that _build_cache wrote next to its array, or None when it is absent or unreadable."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        return index if {"size", "unreadable", "other_sizes"} <= index.keys() else None
    except (OSError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------------
# Evaluating images of several sizes
# ---------------------------------------------------------------------------------------------------
def image_sizes(dataset):
    """(width, height) of each item of a MiniPlacesLoader or of a torch Subset of one."""
    if isinstance(dataset, data.Subset):
        sizes = image_sizes(dataset.dataset)
        return [sizes[index] for index in dataset.indices]
    return dataset.image_sizes


class SizeGroupedBatchSampler(data.Sampler):
    """Batches of dataset indices whose images share one size, so that each batch stacks, for evaluation.

    The validation pipeline keeps the aspect ratio (Scale(160) turns 97x131 into 160x216), so an image
    of another size cannot share a batch with the 128x128 ones; images of one size give one output
    size under any deterministic pipeline. Pass `sizes`, one hashable per dataset index (image_sizes()).

    Order, fixed: this process's indices (rank, rank + world_size, ...: unlike DistributedSampler, no
    padding, so each image is evaluated by exactly one process) grouped by size, the groups in order of
    their first index, each group in index order and cut into batches of at most `batch_size`. When
    every image has one size, that is plain dataset order. Iterating yields lists of indices;
    `order` is all of them, flattened (the position in the output of each prediction).
    Raises ValueError for a batch_size below 1 or a rank outside 0..world_size-1.
    """

    def __init__(self, sizes, batch_size, rank=0, world_size=1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
        groups = {}  # size -> indices, in order of first appearance (dicts keep insertion order)
        for index in range(rank, len(sizes), world_size):
            groups.setdefault(sizes[index], []).append(index)
        self.batches = [group[start:start + batch_size] for group in groups.values()
                        for start in range(0, len(group), batch_size)]
        self.order = [index for batch in self.batches for index in batch]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)

