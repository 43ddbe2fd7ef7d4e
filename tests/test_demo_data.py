"""The synthetic demo dataset: layout, determinism, atomic generation, and that its classes differ in
structure (an edge-profile classifier separates them) but not in mean colour."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import demo_data as demo_data_tool  # tools/demo_data.py, the CLI
from harness import demo_data
import student_code
from harness.cli import UserError


@pytest.fixture(scope="module")
def demo(demo_dataset):
    return demo_dataset(train_per_class=20, val_per_class=10, test_count=4)


def read_split(root, split):
    """(images (N, 128, 128, 3) float32, labels (N,)) from a label file."""
    images, labels = [], []
    for line in (root / f"{split}.txt").read_text().splitlines():
        rel, label = line.split()
        images.append(np.asarray(Image.open(root / "images" / rel), dtype=np.float32))
        labels.append(int(label))
    return np.stack(images), np.array(labels)


def nearest_centroid_accuracy(train_x, train_y, val_x, val_y):
    centroids = np.stack([train_x[train_y == c].mean(0) for c in range(demo_data.DEMO_NUM_CLASSES)])
    distances = ((val_x[:, None, :] - centroids[None]) ** 2).sum(-1)  # (N_val, classes)
    return float((distances.argmin(1) == val_y).mean())


def edge_profiles(images):
    """Where the edges are: mean |horizontal| and |vertical| grey differences along rows and along
    columns, pooled into 16 bins each and divided by the image's overall edge strength; (N, 64)."""
    gray = images.mean(-1)  # (N, 128, 128)
    dx = np.abs(np.diff(gray, axis=2, append=gray[:, :, -1:]))  # (N, 128, 128), last column 0
    dy = np.abs(np.diff(gray, axis=1, append=gray[:, -1:, :]))
    profiles = [dx.mean(2), dx.mean(1), dy.mean(2), dy.mean(1)]  # each (N, 128)
    features = np.concatenate([p.reshape(len(images), 16, 8).mean(2) for p in profiles], 1)
    return features / (features.mean(1, keepdims=True) + 1e-6)


def test_official_layout(demo):
    categories = (demo / "categories.txt").read_text().splitlines()
    assert len(categories) == demo_data.DEMO_NUM_CLASSES and categories[0] == "/b/beach 0"
    train = (demo / "train.txt").read_text().splitlines()
    assert len(train) == 200 and train[0] == "train/b/beach/00000001.jpg 0"
    val = [line.split() for line in (demo / "val.txt").read_text().splitlines()]
    assert [rel for rel, _ in val[:2]] == ["val/00000001.jpg", "val/00000002.jpg"]
    assert np.bincount([int(label) for _, label in val]).tolist() == [10] * 10
    assert sorted(p.name for p in (demo / "images/test").iterdir()) == [f"{i:08d}.jpg" for i in range(1, 5)]
    with Image.open(demo / "images/val/00000001.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 128)


def test_mean_colour_does_not_separate_classes_but_structure_does(demo):
    train_x, train_y = read_split(demo, "train")
    val_x, val_y = read_split(demo, "val")
    chance = 1 / demo_data.DEMO_NUM_CLASSES
    colour = nearest_centroid_accuracy(train_x.mean((1, 2)), train_y, val_x.mean((1, 2)), val_y)
    structure = nearest_centroid_accuracy(edge_profiles(train_x), train_y, edge_profiles(val_x), val_y)
    assert colour < chance + 0.12, colour
    assert structure > 3 * chance, structure


def test_shapes_take_a_tint_on_the_other_side_of_mid_grey():
    # The ranges mirror each other about mid-grey (c -> 255 - c), with a gap of at least 96 levels.
    assert demo_data.DARK_LEVELS == (0, 80) and demo_data.LIGHT_LEVELS == (176, 256)
    rng = np.random.default_rng(0)
    dark_backgrounds = sum(max(demo_data._background_color(rng)) < 128 for _ in range(4000))
    assert 1900 < dark_backgrounds < 2100  # half and half: the class averages stay mid-grey
    for _ in range(200):
        background = np.array(demo_data._background_color(rng))
        shape = np.array(demo_data._contrasting_color(rng, background))
        dark, light = (background, shape) if background.max() < 128 else (shape, background)
        assert dark.max() < demo_data.DARK_LEVELS[1] and light.min() >= demo_data.LIGHT_LEVELS[0]
        assert (light - dark).min() >= demo_data.LIGHT_LEVELS[0] - demo_data.DARK_LEVELS[1] + 1


def between_class_share(root):
    """Share of the variance of an untrained SimpleNet's pooled features (N, 512) over val images that
    lies between the class means: how much the classes, not the colours, move them."""
    images, labels = read_split(root, "val")
    x = torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0  # (N, 3, 128, 128)
    x = (x - 0.45) / 0.225
    labels = torch.from_numpy(labels)
    torch.manual_seed(0)
    model = student_code.SimpleNet(num_classes=demo_data.DEMO_NUM_CLASSES).eval()
    model.fc = torch.nn.Identity()  # any SimpleNet with the 2019 names: its pooled features
    with torch.no_grad():
        features = model(x)  # (N, 512)
    means = torch.stack([features[labels == c].mean(0) for c in range(demo_data.DEMO_NUM_CLASSES)])
    return float(means.var(0).sum() / features.var(0).sum())


def test_untrained_simplenet_features_follow_the_class_not_the_colours(demo, tmp_path, monkeypatch):
    # Why the tints (format version 3): with colours from the whole RGB cube (version 2, here without
    # its minimum contrast) the features moved mostly with the colours, and the demo learned slowly.
    tinted = between_class_share(demo)

    def any_color(rng, background=None):
        return tuple(int(v) for v in rng.integers(0, 256, 3))

    monkeypatch.setattr(demo_data, "_background_color", any_color)
    monkeypatch.setattr(demo_data, "_contrasting_color", any_color)
    whole_cube = between_class_share(demo_data.make_demo_dataset(tmp_path / "cube", seed=0, train_per_class=1,
                                                                 val_per_class=10, test_count=1))
    assert tinted > 0.5 and whole_cube < 0.35, (tinted, whole_cube)


def test_same_seed_same_files_other_seed_differs(tmp_path):
    kwargs = dict(train_per_class=1, val_per_class=1, test_count=1)
    a = demo_data.make_demo_dataset(tmp_path / "a", seed=3, **kwargs)
    b = demo_data.make_demo_dataset(tmp_path / "b", seed=3, **kwargs)
    c = demo_data.make_demo_dataset(tmp_path / "c", seed=4, **kwargs)
    rel = "images/train/s/sun/00000001.jpg"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / rel).read_bytes() != (c / rel).read_bytes()
    assert (a / "val.txt").read_text() == (b / "val.txt").read_text()


@pytest.fixture
def tiny_defaults(monkeypatch):
    monkeypatch.setattr(demo_data, "DEFAULT_TRAIN_PER_CLASS", 1)
    monkeypatch.setattr(demo_data, "DEFAULT_VAL_PER_CLASS", 1)
    monkeypatch.setattr(demo_data, "DEFAULT_TEST_COUNT", 1)


def test_ensure_generates_once_and_redoes_incomplete(tmp_path, tiny_defaults):
    root = demo_data.ensure_demo_dataset(tmp_path / "demo")
    marker = root / demo_data.MARKER
    stamp = marker.stat().st_mtime_ns
    assert demo_data.ensure_demo_dataset(tmp_path / "demo") == root
    assert marker.stat().st_mtime_ns == stamp  # complete: left alone
    (root / "train.txt").unlink()  # incomplete: regenerated
    demo_data.ensure_demo_dataset(tmp_path / "demo")
    assert (root / "train.txt").is_file()
    demo_data.ensure_demo_dataset(tmp_path / "demo", seed=1)  # other settings: regenerated
    assert '"seed": 1' in marker.read_text()
    marker.write_text(marker.read_text().replace(f'"version": {demo_data.FORMAT_VERSION}', '"version": 2'))
    demo_data.ensure_demo_dataset(tmp_path / "demo", seed=1)  # an older format: regenerated
    assert f'"version": {demo_data.FORMAT_VERSION}' in marker.read_text()


def test_interrupted_generation_leaves_nothing(tmp_path, tiny_defaults, monkeypatch):
    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_data, "_write_split", fail)
    with pytest.raises(KeyboardInterrupt):
        demo_data.ensure_demo_dataset(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"mine: exists and is not a demo dataset"):
        demo_data.make_demo_dataset(tmp_path / "mine", train_per_class=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_rejects_empty_counts(tmp_path):
    with pytest.raises(UserError, match="--val-per-class must be at least 1, got 0"):
        demo_data.make_demo_dataset(tmp_path / "d", val_per_class=0)
    with pytest.raises(UserError, match="--seed must be at least 0, got -1"):
        demo_data.make_demo_dataset(tmp_path / "d", seed=-1)
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(UserError, match="a_file/sub: cannot create its folder"):
        demo_data.make_demo_dataset(tmp_path / "a_file" / "sub")


def test_only_a_demo_marker_makes_a_folder_replaceable(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / demo_data.MARKER).write_text("[]")  # valid JSON, not a demo dataset's settings
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a demo dataset"):
        demo_data.ensure_demo_dataset(folder)
    assert "generating" not in capsys.readouterr().err  # refused before announcing anything
    assert (folder / "notes.txt").read_text() == "keep me"
    assert demo_data_tool.main([str(folder), "--train-per-class", "1"]) == 2


def test_a_dataset_moved_aside_by_a_killed_run_is_put_back(tmp_path, tiny_defaults):
    root = demo_data.ensure_demo_dataset(tmp_path / "demo")
    stamp = (root / demo_data.MARKER).stat().st_mtime_ns
    dead_pid = 2 ** 22 + 1  # above Linux's pid_max: no such process
    os.replace(root, tmp_path / f".demo.old-{dead_pid}")
    assert demo_data.ensure_demo_dataset(tmp_path / "demo") == root
    assert (root / demo_data.MARKER).stat().st_mtime_ns == stamp  # put back, not drawn again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_cli_writes_dataset(tmp_path, capsys):
    code = demo_data_tool.main([str(tmp_path / "cli"), "--train-per-class", "1", "--val-per-class", "1",
                           "--test-count", "1"])
    assert code == 0 and "wrote the demo dataset" in capsys.readouterr().out
    assert len((tmp_path / "cli" / "train.txt").read_text().splitlines()) == 10
