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
import hashlib
import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils import data

from harness import files, paths, signals
from harness.cli import NO_SPACE, DataError, UserError, disk_full, one_line
from harness.images import load_rgb_image, read_image_size
from harness.labels import class_names_from_folders, parse_categories, parse_label_file

SPLITS = ("train", "val", "test")
MINIPLACES_SIZE = (128, 128)  # (width, height) of every official MiniPlaces image
CACHE_DIR_NAME = "cache"


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
                            f"tools/download_data.py)")
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
            cache_dir = paths.DEFAULT_DATA_DIR / CACHE_DIR_NAME if cache is True else Path(cache)
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
            # A memory-mapped file that outgrows its disk kills the process with SIGBUS, not ENOSPC:
            # its whole size is checked first.
            files.check_room(path, len(self.samples) * height * width * 3)
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(len(self.samples), height, width, 3))
            for row, (rel, _) in enumerate(self.samples):
                signals.check()  # minutes of decoding: a signal stops it here
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
            files.write_json(index, index_path)
            os.replace(tmp, path)
        except OSError as error:  # a read-only folder; a full disk
            if error.errno in NO_SPACE:
                raise disk_full(path, len(self.samples) * height * width * 3) from None
            raise DataError(f"{path}: cannot write the cache ({one_line(error)})") from None
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

