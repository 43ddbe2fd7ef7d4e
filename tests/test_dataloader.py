"""MiniPlacesLoader on tiny generated datasets: layout, test split, image modes, every bad input, cache,
images of several sizes in one split, and seeded reproducibility across DataLoader workers."""
import io
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import custom_transforms
from harness import demo_data
from custom_dataloader import MiniPlacesLoader, SizeGroupedBatchSampler, image_sizes
from harness.cli import DataError
from harness.cli import UserError

CLASSES = ["abbey", "bakery/shop", "canyon"]
CATEGORIES = "/a/abbey 0\n/b/bakery/shop 1\n/c/canyon 2\n"


def solid_jpeg(path, color, size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG", quality=95)


def make_root(tmp_path, train_lines=None, val_lines=None, categories=CATEGORIES):
    """A 3-class dataset: 2 train images per class, 3 val images, 2 test images (solid colours)."""
    root = tmp_path / "mp"
    images = root / "images"
    default_train = []
    for label, name in enumerate(CLASSES):
        for i in (1, 2):
            rel = f"train/{name[0]}/{name}/{i:08d}.jpg"
            solid_jpeg(images / rel, (80 * label, 10 * i, 200))
            default_train.append(f"{rel} {label}")
    for i, label in enumerate([2, 0, 1], 1):
        solid_jpeg(images / f"val/{i:08d}.jpg", (10, 80 * label, 50))
    for i in (2, 1):
        solid_jpeg(images / f"test/{i:08d}.jpg", (i * 100, 0, 0))
    (root / "train.txt").write_text("\n".join(train_lines or default_train) + "\n")
    (root / "val.txt").write_text("\n".join(val_lines or ["val/00000001.jpg 2", "val/00000002.jpg 0",
                                                          "val/00000003.jpg 1"]) + "\n")
    if categories is not None:
        (root / "categories.txt").write_text(categories)
    return root


@pytest.fixture
def root(tmp_path):
    return make_root(tmp_path)


# ---------------------------------------------------------------------------------------------------
# Layout and splits
# ---------------------------------------------------------------------------------------------------
def test_train_split_yields_images_and_labels(root):
    dataset = MiniPlacesLoader(root, num_classes=3, split="train")
    assert dataset.classes == CLASSES
    assert len(dataset) == 6
    assert dataset.samples[2] == ("train/b/bakery/shop/00000001.jpg", 1)
    image, label = dataset[2]
    assert label == 1 and isinstance(label, int)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert np.abs(np.asarray(image, dtype=int)[16, 16] - (80, 10, 200)).max() <= 3  # JPEG rounding


def test_val_split_and_transforms(root):
    dataset = MiniPlacesLoader(root, num_classes=3, split="val",
                               transforms=custom_transforms.get_val_transforms())
    assert [label for _, label in dataset.samples] == [2, 0, 1]
    tensor, label = dataset[0]
    assert tensor.shape == (3, 160, 160) and label == 2


def test_indexing_as_a_sequence(root):
    dataset = MiniPlacesLoader(root, num_classes=3, split="val")
    assert [label for _, label in dataset] == [2, 0, 1]  # iteration stops at the end
    assert dataset[-1][1] == 1
    with pytest.raises(IndexError, match="index 3 is out of range for 3 val images"):
        dataset[3]


def test_test_split_lists_images_in_name_order(root):
    dataset = MiniPlacesLoader(root, num_classes=3, split="test")
    assert dataset.samples == [("test/00000001.jpg", None), ("test/00000002.jpg", None)]
    image, name = dataset[1]
    assert name == "test/00000002.jpg"
    assert np.asarray(image)[0, 0, 0] > 150  # the red 200 image


def test_classes_from_folders_without_categories(tmp_path):
    root = make_root(tmp_path, categories=None)
    assert MiniPlacesLoader(root, num_classes=3).classes == sorted(CLASSES)


def test_label_file_relative_to_root_and_blank_lines(root):
    (root / "subset.txt").write_text("\n\ntrain/a/abbey/00000001.jpg 0\n   \ntrain/c/canyon/00000002.jpg 2")
    dataset = MiniPlacesLoader(root, label_file="subset.txt", num_classes=3)
    assert dataset.samples == [("train/a/abbey/00000001.jpg", 0), ("train/c/canyon/00000002.jpg", 2)]


def with_bom_and_crlf(path):
    """Rewrite a text file as Windows editors save it: "UTF-8 with BOM", CRLF line ends."""
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))


def test_label_files_and_categories_with_bom_and_crlf(root):
    for name in ("train.txt", "val.txt", "categories.txt"):
        with_bom_and_crlf(root / name)
    train = MiniPlacesLoader(root, num_classes=3)
    val = MiniPlacesLoader(root, num_classes=3, split="val")
    assert train.classes == CLASSES  # not '\ufeff/a/abbey'
    assert train.samples == MiniPlacesLoader(make_root(root.parent / "plain"), num_classes=3).samples
    assert val.samples[0] == ("val/00000001.jpg", 2) and len(val) == 3
    (root / "val.txt").write_text("val/00000001.jpg 2\nval/00000002.jpg two\n")
    with_bom_and_crlf(root / "val.txt")
    with pytest.raises(DataError, match=r"val\.txt:2: label 'two' is not an integer$"):
        MiniPlacesLoader(root, num_classes=3, split="val")


def test_utf16_label_file_is_refused_in_one_line(root):
    (root / "val.txt").write_text("val/00000001.jpg 2\n", encoding="utf-16")  # Notepad's "Unicode"
    with pytest.raises(DataError, match=r"val\.txt: not a UTF-8 text file$"):
        MiniPlacesLoader(root, num_classes=3, split="val")


def test_demo_dataset_loads_with_all_splits(demo_dataset):
    root = demo_dataset(train_per_class=1, val_per_class=1, test_count=2)
    train = MiniPlacesLoader(root, num_classes=demo_data.DEMO_NUM_CLASSES)
    assert len(train) == 10 and train.classes[0] == "beach"
    assert len(MiniPlacesLoader(root, num_classes=10, split="val")) == 10
    assert len(MiniPlacesLoader(root, num_classes=10, split="test")) == 2


# ---------------------------------------------------------------------------------------------------
# Image formats
# ---------------------------------------------------------------------------------------------------
def _save_as(path, image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("mode,fmt,expected", [
    ("L", "JPEG", (120, 120, 120)),
    ("CMYK", "JPEG", None),
    ("P", "PNG", (200, 30, 40)),
    ("RGBA", "PNG", (200, 30, 40)),
    ("RGB", "PNG", (200, 30, 40)),  # a PNG saved under a .jpg name
])
def test_image_modes_load_as_rgb(root, mode, fmt, expected):
    rgb = Image.new("RGB", (32, 32), (200, 30, 40))
    image = {"L": Image.new("L", (32, 32), 120), "CMYK": rgb.convert("CMYK"),
             "P": rgb.convert("P", palette=Image.ADAPTIVE), "RGBA": rgb.convert("RGBA"), "RGB": rgb}[mode]
    _save_as(root / "images/train/a/abbey/00000001.jpg", image, fmt)
    loaded, _ = MiniPlacesLoader(root, num_classes=3)[0]
    assert loaded.mode == "RGB" and loaded.size == (32, 32)
    if expected is not None:
        assert np.abs(np.asarray(loaded, dtype=int)[5, 5] - expected).max() <= 2
    else:  # CMYK JPEGs round-trip only approximately
        assert np.asarray(loaded, dtype=int)[5, 5, 0] > 150


# ---------------------------------------------------------------------------------------------------
# Bad input: one line naming the file (and line)
# ---------------------------------------------------------------------------------------------------
def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: dataset folder not found"):
        MiniPlacesLoader(tmp_path / "nowhere")


def test_missing_label_file(root):
    (root / "val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt: file not found"):
        MiniPlacesLoader(root, num_classes=3, split="val")


def test_unknown_split(root):
    with pytest.raises(UserError, match="unknown split 'dev'"):
        MiniPlacesLoader(root, split="dev")


def test_categories_count_must_match_num_classes(root):
    with pytest.raises(DataError, match=r"categories\.txt: 3 classes found but num_classes is 100"):
        MiniPlacesLoader(root)


@pytest.mark.parametrize("line,message", [
    ("train/a/abbey/00000001.jpg", r"train\.txt:2: expected '<image path> <label>'"),
    ("train/a/abbey/00000001.jpg 1 extra", r"train\.txt:2: expected '<image path> <label>'"),
    ("train/a/abbey/00000001.jpg one", r"train\.txt:2: label 'one' is not an integer"),
    ("train/a/abbey/00000001.jpg 3", r"train\.txt:2: label 3 is outside 0\.\.2"),
    ("train/a/abbey/00000001.jpg -1", r"train\.txt:2: label -1 is outside 0\.\.2"),
    ("/etc/passwd 0", r"train\.txt:2: image path '/etc/passwd' is absolute"),
    ("../train.txt 0", r"train\.txt:2: image path '\.\./train\.txt' leaves images/"),
    ("train/../../val.txt 0", r"train\.txt:2: image path .* leaves images/"),
    ("train\\..\\..\\val.txt 0", r"train\.txt:2: image path .* leaves images/"),
    ("C:\\data\\x.jpg 0", r"train\.txt:2: image path .* is absolute"),
    ("train/a/abbey/00000009.jpg 0", r"train\.txt:2: image .*00000009\.jpg not found"),
    ("train/a/abbey/00000002.jpg 1", r"train\.txt:2: image train/a/abbey/00000002\.jpg is listed twice "
                                     r"\(first on line 1\)"),
])
def test_bad_label_lines_name_file_and_line(tmp_path, line, message):
    root = make_root(tmp_path, train_lines=["train/a/abbey/00000002.jpg 0", line])
    with pytest.raises(DataError, match=message) as error:
        MiniPlacesLoader(root, num_classes=3)
    assert "\n" not in str(error.value)


def test_empty_label_file(root):
    (root / "train.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"train\.txt: no images listed"):
        MiniPlacesLoader(root, num_classes=3)


def test_missing_images_are_counted(root):
    for i in (1, 2):
        (root / f"images/train/c/canyon/{i:08d}.jpg").unlink()
    with pytest.raises(DataError, match=r"train\.txt:5: .*canyon/00000001\.jpg not found \(1 more missing\)"):
        MiniPlacesLoader(root, num_classes=3)


def _corrupt(root, kind):
    path = root / "images/train/a/abbey/00000001.jpg"
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_text("this is not an image\n")
    return path


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_unreadable_image_raises_on_access(root, kind):
    _corrupt(root, kind)
    dataset = MiniPlacesLoader(root, num_classes=3)
    with pytest.raises(DataError, match=r"abbey/00000001\.jpg: cannot read image") as error:
        dataset[0]
    assert "\n" not in str(error.value)
    assert dataset[1][1] == 0  # other images still load


def test_worker_error_surfaces_as_one_line_data_error(root):
    _corrupt(root, "truncated")
    dataset = MiniPlacesLoader(root, num_classes=3, transforms=custom_transforms.get_val_transforms())
    loader = DataLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(DataError, match=r"^\S*abbey/00000001\.jpg: cannot read image") as error:
        next(iter(loader))
    assert "\n" not in str(error.value) and "worker" in error.value.details


def test_skip_bad_images_warns_and_counts(root):
    (root / "images/train/c/canyon/00000002.jpg").unlink()
    _corrupt(root, "text")
    with pytest.warns(UserWarning, match=r"skipping 1 missing images"):
        dataset = MiniPlacesLoader(root, num_classes=3, skip_bad_images=True)
    assert len(dataset) == 5
    with pytest.warns(UserWarning, match=r"abbey/00000001\.jpg: cannot read image .* skipped \(2 so far"):
        image, label = dataset[0]
    assert dataset.samples[1] == ("train/a/abbey/00000002.jpg", 0) and label == 0  # the next image
    assert dataset.num_skipped == 2


# ---------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------
def test_cache_returns_the_decoded_pixels_and_is_reused(root, tmp_path):
    cache_dir = tmp_path / "cache"
    plain = MiniPlacesLoader(root, num_classes=3, split="val")
    cached = MiniPlacesLoader(root, num_classes=3, split="val", cache=cache_dir)
    files = list(cache_dir.iterdir())
    assert sorted(f.suffix for f in files) == [".json", ".npy"]  # the array and its index
    (index_file,) = cache_dir.glob("*.json")
    assert json.loads(index_file.read_text()) == {"size": [32, 32], "unreadable": [], "other_sizes": []}
    assert cached.image_sizes == plain.image_sizes == [(32, 32)] * 3
    for i in range(len(plain)):
        assert np.array_equal(np.asarray(plain[i][0]), np.asarray(cached[i][0]))
        assert plain[i][1] == cached[i][1]
    stamp = {f: f.stat().st_mtime_ns for f in files}
    again = MiniPlacesLoader(root, num_classes=3, split="val", cache=cache_dir)
    assert again[0][1] == 2
    assert {f: f.stat().st_mtime_ns for f in cache_dir.iterdir()} == stamp  # not rebuilt
    # Workers started with 'spawn' (macOS, Windows) get a pickled copy: the memmap must not travel.
    clone = pickle.loads(pickle.dumps(again))
    assert clone._array is None and np.array_equal(np.asarray(clone[1][0]), np.asarray(plain[1][0]))
    test_split = MiniPlacesLoader(root, num_classes=3, split="test", cache=cache_dir)
    assert test_split[0][1] == "test/00000001.jpg"
    assert len(list(cache_dir.glob("*.npy"))) == 2 and not list(cache_dir.glob(".*"))


def test_cache_holds_the_most_common_size_and_reads_the_others_from_their_files(root, tmp_path):
    solid_jpeg(root / "images/val/00000001.jpg", (200, 0, 0), size=(40, 32))  # the first image
    cached = MiniPlacesLoader(root, num_classes=3, split="val", cache=tmp_path / "cache")
    plain = MiniPlacesLoader(root, num_classes=3, split="val")
    (array_file,) = (tmp_path / "cache").glob("*.npy")
    assert np.load(array_file, mmap_mode="r").shape == (3, 32, 32, 3)
    assert json.loads(array_file.with_suffix(".json").read_text())["other_sizes"] == [[0, 40, 32]]
    assert cached.image_sizes == plain.image_sizes == [(40, 32), (32, 32), (32, 32)]
    for i in range(3):
        assert np.array_equal(np.asarray(cached[i][0]), np.asarray(plain[i][0]))


def test_cache_without_its_index_is_rebuilt(root, tmp_path):
    MiniPlacesLoader(root, num_classes=3, split="val", cache=tmp_path / "cache")
    (index_file,) = (tmp_path / "cache").glob("*.json")
    index_file.unlink()  # as a cache written before the index existed
    solid_jpeg(root / "images/val/00000003.jpg", (0, 0, 0), size=(40, 32))
    cached = MiniPlacesLoader(root, num_classes=3, split="val", cache=tmp_path / "cache")
    assert cached.image_sizes == [(32, 32), (32, 32), (40, 32)] and index_file.is_file()


def test_cache_applies_the_exif_orientation(root, tmp_path):
    # Two phone pictures stored 40x32 and tagged "rotate 90 degrees clockwise" among 32x40 images.
    exif = Image.Exif()
    exif[0x0112] = 6
    for i, color in ((1, (250, 0, 0)), (3, (0, 0, 250))):
        stripes = np.zeros((32, 40, 3), dtype=np.uint8)
        stripes[:, :20] = color  # the left half of the stored pixels: the top of the picture
        Image.fromarray(stripes).save(root / f"images/val/{i:08d}.jpg", quality=95, exif=exif.tobytes())
    solid_jpeg(root / "images/val/00000002.jpg", (0, 250, 0), size=(32, 40))
    cached = MiniPlacesLoader(root, num_classes=3, split="val", cache=tmp_path / "cache")
    (array_file,) = (tmp_path / "cache").glob("*.npy")
    assert np.load(array_file, mmap_mode="r").shape == (3, 40, 32, 3)  # one size: the upright one
    assert cached.image_sizes == [(32, 40)] * 3
    top, bottom = np.asarray(cached[0][0], dtype=int)[[5, 35], 16]
    assert top[0] > 200 and bottom.max() < 30


def test_cache_folder_that_cannot_be_written(root, tmp_path):
    (tmp_path / "not_a_folder").write_text("")
    with pytest.raises(DataError, match=r"not_a_folder/val-3-\w+\.npy: cannot write the cache"):
        MiniPlacesLoader(root, num_classes=3, split="val", cache=tmp_path / "not_a_folder")


def test_cache_with_bad_image(root, tmp_path):
    _corrupt(root, "truncated")
    with pytest.raises(DataError, match=r"abbey/00000001\.jpg: cannot read image"):
        MiniPlacesLoader(root, num_classes=3, cache=tmp_path / "c1")
    with pytest.warns(UserWarning, match="skipping 1 unreadable images"):
        dataset = MiniPlacesLoader(root, num_classes=3, cache=tmp_path / "c2", skip_bad_images=True)
    assert len(dataset) == 5 and dataset.samples[0][0] == "train/a/abbey/00000002.jpg"
    assert dataset[0][1] == 0


# ---------------------------------------------------------------------------------------------------
# Images of several sizes in one split
# ---------------------------------------------------------------------------------------------------
VAL_SIZES = [(128, 128), (128, 128), (97, 131), (128, 128), (128, 128), (131, 97), (128, 128)]


@pytest.fixture
def mixed_root(tmp_path):
    """val.txt: seven images, 128x128 but for a 97x131 one (line 3) and a 131x97 one (line 6)."""
    root = make_root(tmp_path)
    lines = []
    for i, size in enumerate(VAL_SIZES, 1):
        solid_jpeg(root / f"images/val/{i:08d}.jpg", (30 * i, 0, 0), size=size)
        lines.append(f"val/{i:08d}.jpg {i % 3}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


def test_image_sizes_and_the_count_of_other_sizes(mixed_root):
    dataset = MiniPlacesLoader(mixed_root, num_classes=3, split="val")
    assert dataset.image_sizes == VAL_SIZES
    assert dataset.count_other_sizes() == 2 and dataset.count_other_sizes((97, 131)) == 6
    assert dataset.other_sizes_note() == "2 of 7 val images are not 128x128"
    assert MiniPlacesLoader(mixed_root, num_classes=3, split="test").other_sizes_note((32, 32)) is None
    assert image_sizes(torch.utils.data.Subset(dataset, [5, 0])) == [(131, 97), (128, 128)]


def test_size_grouped_batches_stack_and_cover_every_image_once(mixed_root):
    dataset = MiniPlacesLoader(mixed_root, num_classes=3, split="val",
                               transforms=custom_transforms.get_val_transforms())
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        list(DataLoader(dataset, batch_size=7))  # what validation did before

    sampler = SizeGroupedBatchSampler(dataset.image_sizes, batch_size=3)
    assert list(sampler) == [[0, 1, 3], [4, 6], [2], [5]] and len(sampler) == 4
    assert sampler.order == [0, 1, 3, 4, 6, 2, 5]
    batches = list(DataLoader(dataset, batch_sampler=sampler, num_workers=2))
    # Scale(160) keeps the aspect ratio: 97x131 -> 160 x round(160 * 131 / 97) = 160x216.
    assert [tuple(images.shape) for images, _ in batches] == [(3, 3, 160, 160), (2, 3, 160, 160),
                                                              (1, 3, 216, 160), (1, 3, 160, 216)]
    labels = [label for _, label in dataset.samples]
    assert torch.cat([target for _, target in batches]).tolist() == [labels[i] for i in sampler.order]
    for (images, _), indices in zip(batches, sampler):  # each image is its own, not a neighbour
        for image, index in zip(images, indices):
            assert torch.equal(image, dataset[index][0])


def test_size_grouped_shards_split_the_images_between_processes(mixed_root):
    sizes = MiniPlacesLoader(mixed_root, num_classes=3, split="val").image_sizes
    shards = [SizeGroupedBatchSampler(sizes, batch_size=2, rank=rank, world_size=2) for rank in (0, 1)]
    assert [list(shard) for shard in shards] == [[[0, 4], [6], [2]], [[1, 3], [5]]]
    assert sorted(shards[0].order + shards[1].order) == list(range(7))
    assert SizeGroupedBatchSampler(sizes[:2], batch_size=2, rank=3, world_size=4).batches == []


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"batch_size": 2, "rank": 2, "world_size": 2}, r"rank must lie in 0\.\.1, got 2"),
])
def test_size_grouped_sampler_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SizeGroupedBatchSampler([(1, 1)], **kwargs)


def test_skipped_image_stands_in_with_one_of_its_size(mixed_root):
    truncated = mixed_root / "images/val/00000002.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-50])  # the header still reads, the pixels do not
    (mixed_root / "images/val/00000005.jpg").write_text("not an image\n")  # not even a header
    dataset = MiniPlacesLoader(mixed_root, num_classes=3, split="val", skip_bad_images=True)
    # An unreadable header counts with the size of the next readable image, which stands in for it.
    assert dataset.image_sizes == VAL_SIZES[:4] + [(131, 97)] + VAL_SIZES[5:]
    with pytest.warns(UserWarning, match=r"val/00000002\.jpg: cannot read image"):
        image, label = dataset[1]  # not the 97x131 image that follows it, but the 128x128 after that
    assert (image.size, label) == ((128, 128), dataset.samples[3][1])
    assert np.array_equal(np.asarray(image), np.asarray(dataset[3][0]))
    with pytest.warns(UserWarning, match=r"val/00000005\.jpg: cannot read image"):
        image, label = dataset[4]
    assert (image.size, label) == ((131, 97), dataset.samples[5][1])


# ---------------------------------------------------------------------------------------------------
# Reproducibility with workers
# ---------------------------------------------------------------------------------------------------
def _epoch(dataset, seed):
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, persistent_workers=False)
    return [(custom_transforms.resample_batch(images) if isinstance(images, dict) else images, labels)
            for images, labels in loader]


@pytest.mark.parametrize("defer", [False, True], ids=["per-image", "deferred"])
def test_seeded_loading_with_two_workers_is_reproducible(tmp_path, defer):
    root = make_root(tmp_path)
    transforms = custom_transforms.get_train_transforms(defer=defer)
    dataset = MiniPlacesLoader(root, num_classes=3, transforms=transforms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second, other = _epoch(dataset, 1), _epoch(dataset, 1), _epoch(dataset, 2)
    assert len(first) == 2 and first[0][0].shape == (3, 3, 128, 128)
    for (a, la), (b, lb) in zip(first, second):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, other))


# ---------------------------------------------------------------------------------------------------
# The real subset (skipped when ../shared/miniplaces is absent)
# ---------------------------------------------------------------------------------------------------
def test_shared_miniplaces_splits(shared_miniplaces):
    train = MiniPlacesLoader(shared_miniplaces, split="train",
                             transforms=custom_transforms.get_train_transforms())
    val = MiniPlacesLoader(shared_miniplaces, split="val")
    test = MiniPlacesLoader(shared_miniplaces, split="test")
    assert len(train.classes) == 100 and train.classes[0] == "abbey"
    assert len(train) == sum(1 for line in (shared_miniplaces / "train.txt").open() if line.strip())
    assert len(val) == 10_000 and len(test) == 10_000
    tensor, label = train[0]
    assert tensor.shape == (3, 128, 128) and label == 0
    assert val[0][0].size == (128, 128)


def test_shared_miniplaces_deferred_batch_equals_per_image(shared_miniplaces):
    """main.py's training path on real JPEGs: workers' dicts, resampled per batch."""
    per_image = MiniPlacesLoader(shared_miniplaces, split="train",
                                 transforms=custom_transforms.get_train_transforms())
    deferred = MiniPlacesLoader(shared_miniplaces, split="train",
                                transforms=custom_transforms.get_train_transforms(defer=True))
    indices = [0, 150, 4_321, 9_999]
    torch.manual_seed(3)
    expected = torch.stack([per_image[i][0] for i in indices])
    torch.manual_seed(3)
    items = [deferred[i] for i in indices]
    batch = torch.utils.data.default_collate([image for image, _ in items])
    assert [label for _, label in items] == [per_image.samples[i][1] for i in indices]
    torch.testing.assert_close(custom_transforms.resample_batch(batch), expected, atol=1e-5, rtol=0)
