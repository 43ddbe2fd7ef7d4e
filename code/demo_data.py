"""A small synthetic MiniPlaces in the official layout, for tests and `python code/main.py --demo`.

Ten classes of procedurally drawn 128x128 "scenes" that differ in structure (a horizon, a diagonal
cliff, vertical trunks, horizontal furrows, a tower, a sun disc, dunes, a skyline, a checkerboard
market, a mountain peak), never in colour: every region takes an independent random colour, so the mean
colour of an image carries no class information, while a CNN can learn the shapes. Positions, sizes,
counts and noise are random too. Everything derives from one seed (NumPy's generator), so the same seed
writes the same files.

Run `python code/demo_data.py [folder]` to write it (default data/miniplaces_demo).
"""
import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import utils

DEFAULT_DEMO_DIR = utils.DEFAULT_DATA_DIR / "miniplaces_demo"
DEMO_NUM_CLASSES = 10
IMAGE_SIZE = 128
DEFAULT_TRAIN_PER_CLASS = 250
DEFAULT_VAL_PER_CLASS = 30
DEFAULT_TEST_COUNT = 100
NOISE_STD = 10.0  # grey levels of Gaussian pixel noise
JPEG_QUALITY = 90
MARKER = ".demo_complete.json"  # written last: a folder without it is incomplete
FORMAT_VERSION = 2


# ---------------------------------------------------------------------------------------------------
# One drawing function per class: (draw, rng, fg) -> None, where fg() returns a random colour that
# contrasts with the (random) background. Colours never depend on the class.
# ---------------------------------------------------------------------------------------------------
MIN_CONTRAST = 120  # Euclidean RGB distance between a shape and the background


def _color(rng):
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _contrasting_color(rng, background):
    """A random colour at least MIN_CONTRAST from `background`, so that every scene shows its shapes.
    The rule commutes with c -> 255 - c, so every colour stays symmetric about mid-grey and each class's
    average colour is mid-grey whatever its layout: the mean colour tells nothing about the class."""
    for _ in range(50):
        color = _color(rng)
        if sum((a - b) ** 2 for a, b in zip(color, background)) >= MIN_CONTRAST ** 2:
            return color
    return tuple(255 - v for v in background)


def _draw_beach(draw, rng, fg):
    """A near-horizontal horizon: sky above, sea/sand below."""
    s = IMAGE_SIZE
    y = rng.uniform(0.3, 0.7) * s
    tilt = rng.uniform(-4, 4)
    draw.polygon([(0, y - tilt), (s, y + tilt), (s, s), (0, s)], fill=fg())


def _draw_cliff(draw, rng, fg):
    """A steep diagonal split from one side to the other."""
    s = IMAGE_SIZE
    y1, y2 = rng.uniform(-0.1, 0.25) * s, rng.uniform(0.75, 1.1) * s
    if rng.random() < 0.5:
        y1, y2 = y2, y1
    draw.polygon([(0, y1), (s, y2), (s, s), (0, s)], fill=fg())


def _draw_forest(draw, rng, fg):
    """Several full-height vertical trunks."""
    s = IMAGE_SIZE
    trunk = fg()
    for _ in range(rng.integers(5, 10)):
        x, w = rng.uniform(0, s), rng.uniform(4, 11)
        draw.rectangle([x, 0, x + w, s], fill=trunk if rng.random() < 0.7 else fg())


def _draw_field(draw, rng, fg):
    """Horizontal furrows: bands of two alternating colours."""
    s = IMAGE_SIZE
    other = fg()
    y = rng.uniform(-10, 0)
    while y < s:
        h = rng.uniform(6, 16)
        draw.rectangle([0, y, s, y + h / 2], fill=other)
        y += h


def _draw_tower(draw, rng, fg):
    """One tall narrow block standing on the bottom edge."""
    s = IMAGE_SIZE
    w, h = rng.uniform(14, 28), rng.uniform(70, 115)
    x = rng.uniform(10, s - 10 - w)
    draw.rectangle([x, s - h, x + w, s], fill=fg())
    draw.rectangle([x - 3, s - h - 6, x + w + 3, s - h], fill=fg())  # a cap


def _draw_sun(draw, rng, fg):
    """A single large disc."""
    s = IMAGE_SIZE
    r = rng.uniform(18, 34)
    cx, cy = rng.uniform(r, s - r), rng.uniform(r, s - r)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg())


def _draw_desert(draw, rng, fg):
    """Rolling dunes: a sinusoidal boundary."""
    s = IMAGE_SIZE
    base, amp = rng.uniform(0.35, 0.65) * s, rng.uniform(8, 16)
    period, phase = rng.uniform(40, 80), rng.uniform(0, 2 * math.pi)
    top = [(x, base + amp * math.sin(2 * math.pi * x / period + phase)) for x in range(0, s + 4, 4)]
    draw.polygon(top + [(s, s), (0, s)], fill=fg())


def _draw_skyline(draw, rng, fg):
    """Adjacent buildings of random heights along the bottom."""
    s = IMAGE_SIZE
    x, fill = 0.0, fg()
    while x < s:
        w, h = rng.uniform(10, 24), rng.uniform(30, 95)
        draw.rectangle([x, s - h, x + w - 2, s], fill=fill)
        x += w


def _draw_market(draw, rng, fg):
    """A checkerboard of stalls."""
    s = IMAGE_SIZE
    cell, other = rng.uniform(10, 20), fg()
    x0, y0 = rng.uniform(-cell, 0), rng.uniform(-cell, 0)
    for i in range(int(s / cell) + 2):
        for j in range(int(s / cell) + 2):
            if (i + j) % 2:
                x, y = x0 + i * cell, y0 + j * cell
                draw.rectangle([x, y, x + cell, y + cell], fill=other)


def _draw_mountain(draw, rng, fg):
    """One or two triangular peaks rising from the bottom."""
    s = IMAGE_SIZE
    fill = fg()
    for _ in range(rng.integers(1, 3)):
        peak_x, peak_y = rng.uniform(0.2, 0.8) * s, rng.uniform(0.1, 0.45) * s
        half = rng.uniform(0.35, 0.6) * s
        draw.polygon([(peak_x - half, s), (peak_x, peak_y), (peak_x + half, s)], fill=fill)


# (category as in categories.txt, drawing function); the index is the label.
CLASSES = (
    ("/b/beach", _draw_beach),
    ("/c/cliff", _draw_cliff),
    ("/d/desert", _draw_desert),
    ("/f/field", _draw_field),
    ("/f/forest", _draw_forest),
    ("/m/market", _draw_market),
    ("/m/mountain", _draw_mountain),
    ("/s/skyline", _draw_skyline),
    ("/s/sun", _draw_sun),
    ("/t/tower", _draw_tower),
)
assert len(CLASSES) == DEMO_NUM_CLASSES


def make_noise_bank(rng, size=3 * IMAGE_SIZE):
    """A (size, size, 3) int16 field of Gaussian noise; scenes take random windows of it, because
    drawing fresh normal samples for every image costs more than everything else together."""
    return np.round(rng.normal(0.0, NOISE_STD, (size, size, 3))).astype(np.int16)


def render_scene(label, rng, noise_bank):
    """One (128, 128, 3) uint8 scene of class `label`: random background, the class's shapes, noise."""
    background = _color(rng)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    CLASSES[label][1](ImageDraw.Draw(image), rng, lambda: _contrasting_color(rng, background))
    y, x = rng.integers(0, noise_bank.shape[0] - IMAGE_SIZE + 1, 2)
    noise = noise_bank[y:y + IMAGE_SIZE, x:x + IMAGE_SIZE]  # (128, 128, 3)
    pixels = np.asarray(image, dtype=np.int16) + noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Writing the official layout
# ---------------------------------------------------------------------------------------------------
def _save(pixels, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=JPEG_QUALITY)


def _write_split(folder, rng, train_per_class, val_per_class, test_count):
    """Draw every image into `folder` (official layout) and write the label files."""
    images = folder / "images"
    noise_bank = make_noise_bank(rng)
    train_lines = []
    for label, (category, _) in enumerate(CLASSES):
        for i in range(1, train_per_class + 1):
            rel = f"train{category}/{i:08d}.jpg"
            _save(render_scene(label, rng, noise_bank), images / rel)
            train_lines.append(f"{rel} {label}")
    # Val and test images are numbered in a shuffled class order, as in MiniPlaces.
    val_labels = rng.permutation(np.repeat(np.arange(DEMO_NUM_CLASSES), val_per_class))
    val_lines = []
    for i, label in enumerate(val_labels, 1):
        rel = f"val/{i:08d}.jpg"
        _save(render_scene(int(label), rng, noise_bank), images / rel)
        val_lines.append(f"{rel} {label}")
    (images / "test").mkdir(parents=True, exist_ok=True)
    for i in range(1, test_count + 1):
        _save(render_scene(int(rng.integers(DEMO_NUM_CLASSES)), rng, noise_bank), images / f"test/{i:08d}.jpg")
    (folder / "train.txt").write_text("\n".join(train_lines) + "\n")
    (folder / "val.txt").write_text("\n".join(val_lines) + "\n")
    (folder / "categories.txt").write_text(
        "".join(f"{category} {label}\n" for label, (category, _) in enumerate(CLASSES)))


def _settings(seed, train_per_class, val_per_class, test_count):
    return {"version": FORMAT_VERSION, "seed": seed, "train_per_class": train_per_class,
            "val_per_class": val_per_class, "test_count": test_count}


def _read_marker(root):
    try:
        return json.loads((Path(root) / MARKER).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None


def _remove_stale_partials(root):
    """Delete `.<name>.partial-<pid>` siblings left by generations that were killed."""
    for partial in root.parent.glob(f".{root.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def make_demo_dataset(root, seed=0, train_per_class=DEFAULT_TRAIN_PER_CLASS,
                      val_per_class=DEFAULT_VAL_PER_CLASS, test_count=DEFAULT_TEST_COUNT):
    """Write the demo dataset into `root` and return it as a Path.

    The files are drawn into a hidden sibling folder that replaces `root` only when complete, so an
    interrupted run never leaves a half-written dataset behind. An existing `root` is replaced only if
    it is empty or an earlier demo dataset.
    """
    root = Path(root).expanduser().resolve()
    if root.exists() and not (root.is_dir() and (_read_marker(root) is not None or not any(root.iterdir()))):
        raise utils.UserError(f"{root}: exists and is not a demo dataset; choose another folder")
    for count, name in ((train_per_class, "train_per_class"), (val_per_class, "val_per_class"),
                        (test_count, "test_count")):
        if count < 1:
            raise utils.UserError(f"{name} must be at least 1, got {count}")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_split(partial, np.random.default_rng(seed), train_per_class, val_per_class, test_count)
        settings = _settings(seed, train_per_class, val_per_class, test_count)
        (partial / MARKER).write_text(json.dumps(settings, indent=1) + "\n")
        if root.exists():
            # A directory rename cannot overwrite a non-empty one: move the old one aside first.
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
            os.replace(partial, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def _is_complete(root, settings):
    """The marker matches `settings` and the label files and image counts are all there."""
    if _read_marker(root) != settings:
        return False
    try:
        train = (root / "train.txt").read_text(encoding="utf-8-sig").split()
        val = (root / "val.txt").read_text(encoding="utf-8-sig").split()
        categories = (root / "categories.txt").read_text(encoding="utf-8-sig").split()
        tests = list((root / "images" / "test").iterdir())
    except OSError:
        return False
    return (len(train) == 2 * DEMO_NUM_CLASSES * settings["train_per_class"]
            and len(val) == 2 * DEMO_NUM_CLASSES * settings["val_per_class"]
            and len(categories) == 2 * DEMO_NUM_CLASSES and len(tests) == settings["test_count"]
            and all((root / "images" / rel).is_file() for rel in (train[-2], val[-2])))


def ensure_demo_dataset(root=DEFAULT_DEMO_DIR, seed=0):
    """Return `root`, generating the default-size demo dataset first if it is absent or incomplete."""
    root = Path(root).expanduser().resolve()
    wanted = _settings(seed, DEFAULT_TRAIN_PER_CLASS, DEFAULT_VAL_PER_CLASS, DEFAULT_TEST_COUNT)
    if _is_complete(root, wanted):
        return root
    print(f"generating the demo dataset in {root} ...", file=sys.stderr, flush=True)
    return make_demo_dataset(root, seed, DEFAULT_TRAIN_PER_CLASS, DEFAULT_VAL_PER_CLASS, DEFAULT_TEST_COUNT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("root", nargs="?", default=str(DEFAULT_DEMO_DIR),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS,
                        help="train images per class (default: %(default)s)")
    parser.add_argument("--val-per-class", type=int, default=DEFAULT_VAL_PER_CLASS,
                        help="val images per class (default: %(default)s)")
    parser.add_argument("--test-count", type=int, default=DEFAULT_TEST_COUNT,
                        help="test images (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        root = make_demo_dataset(args.root, args.seed, args.train_per_class, args.val_per_class,
                                 args.test_count)
    except utils.UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote the demo dataset to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
