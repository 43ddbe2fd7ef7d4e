"""MiniPlaces as a torch Dataset, over the official layout:

    <root>/train.txt, <root>/val.txt   lines "train/a/abbey/00000001.jpg 0" (paths relative to images/)
    <root>/categories.txt              lines "/a/abbey 0" (else class names come from images/train/)
    <root>/images/train|val|test/      128x128 JPEGs

`MiniPlacesLoader(root, split='train'|'val')` yields (image, int label); `split='test'` lists
images/test/*.jpg in name order and yields (image, 'test/<name>.jpg') since test labels were never released.
Text files may be saved as UTF-8 with or without a byte-order mark, with LF or CRLF line ends.

Images are read as a viewer shows them: the EXIF orientation applied, then converted to 8-bit RGB
from any pixel mode Pillow opens (16-bit and float grey scaled, transparency composited onto white;
see to_rgb), or refused in one line.

Every mistake in the input (missing folder, label file or image; malformed line; label out of range; a
path that is absolute or leaves images/; an unreadable image) raises `DataError`, one line naming the file
and, for label files, the line number. Label files and paths are checked eagerly in __init__; images are
decoded lazily, so a bad image raises DataError from __getitem__, which a DataLoader worker passes back to
the main process (`DataError` turns the worker's traceback back into the one-line message).

`cache=True` decodes a split once, when the dataset is built, into a uint8 array of shape (N, H, W, 3)
memory-mapped from data/cache/<split>-<N>-<key>.npy (49 KB per 128x128 image: 4.9 GB for the 100,000
train images), so every epoch skips JPEG decoding. The key hashes the root and the sample list, and the
file is written under a temporary name and renamed, so an interrupted build is simply redone (images
edited in place are not detected: delete data/cache/ after changing a dataset).
`skip_bad_images=True` warns about missing or unreadable images and skips them instead of raising.
"""
import contextlib
import functools
import hashlib
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torch.utils import data

import utils
from utils import UserError

SPLITS = ("train", "val", "test")
CACHE_DIR_NAME = "cache"
# What Pillow raises for unreadable, truncated or hostile files.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_WORKER_LAST_LINE = re.compile(r"DataError: (.*)$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNUSUAL_PATH_TOKENS = ("..", "\\", ":", "//", "./")
ORIENTATION_TAG = 0x0112  # EXIF Orientation (ExifTags.Base.Orientation in recent Pillow)
# Orientations 5..8 store the picture turned by 90 degrees: its width and height swap.
_TURNED_ORIENTATIONS = (5, 6, 7, 8)
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
    - 16-bit grey (I;16, I;16L, I;16B, I;16N) and 32-bit integer I, which is how Pillow before 10.3
      opens 16-bit PNGs: 0..65535 scaled to 0..255, rounded; I values outside 0..65535 are refused;
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
            raise DataError(f"{name}: 32-bit float pixels span {low:g}..{high:g}; only 0..1 is read (as 0..255)")
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
    """[(relative image path, label, line number)] from lines '<path> <label>'; blank lines are skipped."""
    samples = []
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
        samples.append((check_relative_path(rel_path, where), label, number))
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

        self._cache_path = None
        self._rows = None  # sample index -> row of the cache array
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

    # -- cache ---------------------------------------------------------------------------------------
    def _cache_key(self):
        digest = hashlib.sha1()
        digest.update(f"{self.root.resolve()}|{self.split}|".encode())
        for rel, label in self.samples:
            digest.update(f"{rel} {label}\n".encode())
        return digest.hexdigest()[:16]

    def _open_cache(self, cache_dir):
        path = Path(cache_dir) / f"{self.split}-{len(self.samples)}-{self._cache_key()}.npy"
        bad_path = path.with_suffix(".bad.txt")
        if not path.is_file():
            self._build_cache(path, bad_path)
        bad = set()
        if bad_path.is_file():
            bad = {int(x) for x in bad_path.read_text().split()}
        if bad and not self.skip_bad_images:
            index = min(bad)
            raise DataError(f"{self.images_dir / self.samples[index][0]}: cannot read image "
                            f"(recorded in {bad_path})")
        self._rows = [row for row in range(len(self.samples)) if row not in bad]
        if bad:
            self.num_skipped += len(bad)
            warnings.warn(f"cache {path.name}: skipping {len(bad)} unreadable images", stacklevel=3)
            self.samples = [self.samples[row] for row in self._rows]
        self._cache_path = path

    def _build_cache(self, path, bad_path):
        """Decode every image once into a (N, H, W, 3) uint8 .npy, written to a temp name then renamed."""
        first = self._first_readable_image()
        height, width = first.size[1], first.size[0]
        print(f"caching {len(self.samples)} {self.split} images ({height}x{width}) into {path} ...",
              file=sys.stderr, flush=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        bad = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(len(self.samples), height, width, 3))
            for row, (rel, _) in enumerate(self.samples):
                try:
                    image = load_rgb_image(self.images_dir / rel)
                except DataError:
                    if not self.skip_bad_images:
                        raise
                    bad.append(row)
                    continue
                if image.size != (width, height):
                    raise DataError(f"{self.images_dir / rel}: is {image.size[0]}x{image.size[1]} but "
                                    f"cache=True needs every image at {width}x{height}")
                array[row] = np.asarray(image)
            array.flush()
            del array
            utils.write_text(bad_path, " ".join(map(str, bad)))
            os.replace(tmp, path)
        except OSError as error:  # disk full, read-only folder
            raise DataError(f"{path}: cannot write the cache ({_one_line(error)})") from None
        finally:
            if tmp.exists():
                tmp.unlink()

    def _first_readable_image(self):
        for rel, _ in self.samples:
            try:
                return load_rgb_image(self.images_dir / rel)
            except DataError:
                if not self.skip_bad_images:
                    raise
        raise DataError(f"{self.images_dir}: no readable {self.split} image")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    # -- access --------------------------------------------------------------------------------------
    def __len__(self):
        return len(self.samples)

    def _load(self, index):
        if self._cache_path is not None:
            if self._array is None:
                self._array = np.load(self._cache_path, mmap_mode="r")
            return Image.fromarray(np.ascontiguousarray(self._array[self._rows[index]]), "RGB")
        return load_rgb_image(self.images_dir / self.samples[index][0])

    def _load_or_skip(self, index):
        """The image at `index`; with skip_bad_images, the next readable one (and its sample index)."""
        for offset in range(len(self.samples)):
            current = (index + offset) % len(self.samples)
            try:
                return self._load(current), current
            except DataError as error:
                if not self.skip_bad_images:
                    raise
                self.num_skipped += 1
                warnings.warn(f"{error} - skipped ({self.num_skipped} so far in this process)")
        raise DataError(f"{self.images_dir}: no readable {self.split} image")

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
