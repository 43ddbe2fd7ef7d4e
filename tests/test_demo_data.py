"""The synthetic demo dataset: layout, balanced classes, determinism, atomic generation, and that its
classes differ in texture (a classifier of the power spectrum separates them), where the disc is, but
not in mean colour."""
import os

import numpy as np
import pytest
from PIL import Image

import demo_data as demo_data_tool  # tools/demo_data.py, the CLI
import custom_transforms
from harness import demo_data
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


def spectrum_profiles(images):
    """What texture: the grey image's power spectrum (numpy's FFT) summed over 4 orientations (folded
    onto 0-90 degrees, as a horizontal flip maps each class onto itself) times 4 bands of period
    (3-5.5, 5.5-9, 9-13, 13-32 px), divided by its total; (N, 16)."""
    gray = images.mean(-1)
    gray = gray - gray.mean((1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(gray)) ** 2  # (N, 128, 128)
    f = np.fft.fftfreq(gray.shape[1])
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fx, fy)
    angle = np.degrees(np.arctan2(np.abs(fy), np.abs(fx)))  # 0 (columns vary) .. 90 (rows vary)
    period = np.divide(1.0, radius, out=np.full_like(radius, np.inf), where=radius > 0)
    features = []
    for low, high in ((3, 5.5), (5.5, 9), (9, 13), (13, 32)):
        for a in range(4):
            cell = (period >= low) & (period < high) & (angle >= 22.5 * a) & (angle < 22.5 * (a + 1) + 1e-9 * (a == 3))
            features.append(power[:, cell].sum(1))
    features = np.stack(features, 1)
    return features / features.sum(1, keepdims=True)


def test_official_layout_with_balanced_classes(demo):
    categories = (demo / "categories.txt").read_text().splitlines()
    assert len(categories) == demo_data.DEMO_NUM_CLASSES and categories[0] == "/b/beach 0"
    train = (demo / "train.txt").read_text().splitlines()
    assert len(train) == 200 and train[0] == "train/b/beach/00000001.jpg 0"
    assert np.bincount([int(line.split()[1]) for line in train]).tolist() == [20] * 10
    val = [line.split() for line in (demo / "val.txt").read_text().splitlines()]
    assert [rel for rel, _ in val[:2]] == ["val/00000001.jpg", "val/00000002.jpg"]
    assert np.bincount([int(label) for _, label in val]).tolist() == [10] * 10
    assert sorted(p.name for p in (demo / "images/test").iterdir()) == [f"{i:08d}.jpg" for i in range(1, 5)]
    with Image.open(demo / "images/val/00000001.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (128, 128)


def test_mean_colour_does_not_separate_classes_but_texture_does(demo):
    train_x, train_y = read_split(demo, "train")
    val_x, val_y = read_split(demo, "val")
    chance = 1 / demo_data.DEMO_NUM_CLASSES
    colour = nearest_centroid_accuracy(train_x.mean((1, 2)), train_y, val_x.mean((1, 2)), val_y)
    texture = nearest_centroid_accuracy(spectrum_profiles(train_x), train_y, spectrum_profiles(val_x), val_y)
    assert colour < chance + 0.12, colour
    assert texture > 5 * chance, texture


def scene_and_plain(label):
    """(pixels (128, 128, 3) uint8, disc (128, 128), plain (128, 128, 3)): one scene of `label` drawn with
    seed `label`, and its background alone from the same draws (no texture)."""
    pixels, disc = demo_data.draw_scene(label, np.random.default_rng(label))
    rng = np.random.default_rng(label)
    plain = demo_data.background(rng)
    assert np.array_equal(disc, demo_data.disc_mask(rng))  # the draws line up
    return pixels, disc, plain


def test_the_class_is_in_the_disc_and_nowhere_else():
    # The same draws without the texture give the same image outside the disc: there, nothing depends
    # on the class. Inside, the texture moves the pixels by up to the amplitude.
    for label in range(demo_data.DEMO_NUM_CLASSES):
        pixels, disc, plain = scene_and_plain(label)
        outside = disc == 0
        assert 0.15 < 1 - outside.mean() < 0.85  # the disc covers a part of the image, not all of it
        # outside: the background alone, to the rounding
        assert np.abs(pixels[outside].astype(float) - plain[outside]).max() <= 0.5 + 1e-4
        inside = disc == 1
        spread = np.abs(pixels[inside].astype(float) - plain[inside]).mean()
        assert spread > 0.4 * demo_data.TEXTURE_AMPLITUDE, (label, spread)


def test_the_cue_is_faint_against_the_attack_budget():
    # The default attack may move a pixel by epsilon 0.1 of the largest normalisation std: about 5.8
    # grey levels. The class's texture departs from the background by at most 4 times that, so an
    # attack of that size can erase most of it (version 4's +-70 was 12 times, and the attack did not bite).
    budget = 0.1 * max(custom_transforms.IMAGENET_STD) * 255
    for label in range(demo_data.DEMO_NUM_CLASSES):
        pixels, disc, plain = scene_and_plain(label)
        departure = np.abs(pixels.astype(float) - plain)[disc == 1]
        assert departure.max() <= 4 * budget, (label, departure.max())
        assert departure.mean() > 0.25 * budget, (label, departure.mean())  # but it is there


def test_texture_is_luminance_and_zero_mean():
    rng = np.random.default_rng(0)
    for label in range(demo_data.DEMO_NUM_CLASSES):
        patterns = np.stack([demo_data.texture(label, rng) for _ in range(50)])  # (50, 128, 128)
        assert np.abs(patterns).max() <= 1.0 + 1e-6
        assert abs(patterns.mean()) < 0.05, (label, patterns.mean())  # no class brightens or darkens its disc


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
    assert not demo_data.is_ready(tmp_path / "demo")
    root = demo_data.ensure_demo_dataset(tmp_path / "demo")
    assert demo_data.is_ready(root) and not demo_data.is_ready(root, seed=1)
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
