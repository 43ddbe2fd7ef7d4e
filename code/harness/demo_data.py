"""A small synthetic MiniPlaces in the official layout, for tests and `python code/main.py --demo`.

Ten classes of procedurally drawn 128x128 "scenes" that differ in structure (sky, sea and sand;
diagonal strata; rows of dunes; horizontal furrows; vertical trunks; a checkerboard market; a
saw-toothed mountain range; a skyline with windows; a sun with rays; a tower), never in colour: every
region takes a random dark or light tint (the background one, the shapes the other), so every class's
average colour is mid-grey and the hue tells nothing about the class, while a CNN can learn the shapes.
(How far an image's mean colour lies from grey still tells how much of it the shapes cover: a
layout cue.) Positions, sizes, counts
and noise are random too. Everything derives from one seed (NumPy's generator), so the same seed
writes the same files.

`python tools/demo_data.py [folder]` writes it (default data/miniplaces_demo).
"""
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import cli, paths


DEFAULT_DEMO_DIR = paths.DEFAULT_DATA_DIR / "miniplaces_demo"
DEMO_NUM_CLASSES = 10
IMAGE_SIZE = 128
DEFAULT_TRAIN_PER_CLASS = 150
DEFAULT_VAL_PER_CLASS = 30
DEFAULT_TEST_COUNT = 100
NOISE_STD = 10.0  # grey levels of Gaussian pixel noise
JPEG_QUALITY = 90
MARKER = ".demo_complete.json"  # written last: a folder without it is incomplete
FORMAT_VERSION = 3  # 3: dark/light tints, busier scenes; 2 drew colours from the whole RGB cube


# ---------------------------------------------------------------------------------------------------
# One drawing function per class: (draw, rng, fg) -> None, where fg() returns a random colour that
# contrasts with the (random) background. Colours never depend on the class.
# ---------------------------------------------------------------------------------------------------
# Every region is a random tint, either dark (each channel below 80) or light (each at least 176): the
# background takes one at random and the shapes the other. Every edge between a shape and the
# background then has a strong contrast, alike from image to image (two shapes of a scene may share a
# side of grey: sea and sand, windows and walls). With colours drawn from the whole RGB cube (format version 2), an
# untrained SimpleNet's pooled features varied mostly with the colours (a fifth to a quarter of their
# variance lay between the classes, against three quarters with these tints), and 2 epochs of the
# demo reached 45-55% where they now reach 76-98% (docs/measurements.md has the runs).
DARK_LEVELS, LIGHT_LEVELS = (0, 80), (176, 256)  # [low, high) per channel; 255 - c swaps the ranges


def _tint(rng, dark):
    low, high = DARK_LEVELS if dark else LIGHT_LEVELS
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _background_color(rng):
    return _tint(rng, dark=rng.random() < 0.5)


def _contrasting_color(rng, background):
    """A random tint on the other side of mid-grey from `background`. The rule commutes with
    c -> 255 - c, so every colour stays symmetric about mid-grey and each class's average colour is
    mid-grey whatever its layout."""
    return _tint(rng, dark=sum(background) >= 3 * 128)


def _draw_beach(draw, rng, fg):
    """Sky, sea and sand: two near-horizontal boundaries."""
    s = IMAGE_SIZE
    sea = rng.uniform(0.25, 0.5) * s
    sand = sea + rng.uniform(0.2, 0.35) * s
    for y, color in ((sea, fg()), (sand, fg())):
        tilt = rng.uniform(-4, 4)
        draw.polygon([(0, y - tilt), (s, y + tilt), (s, s), (0, s)], fill=color)


def _draw_cliff(draw, rng, fg):
    """Rock strata: parallel bands at 35-55 degrees, rising either way."""
    s = IMAGE_SIZE
    slope = rng.uniform(0.7, 1.4) * rng.choice((-1, 1))
    band, period = fg(), rng.uniform(16, 30)
    reach = s * (1 + abs(slope))  # the band offsets that can cross the image
    offset = -reach + rng.uniform(0, period)
    while offset < reach:
        # the band between y = slope * x + offset and the same line half a period lower
        draw.polygon([(0, offset), (s, slope * s + offset), (s, slope * s + offset + period / 2),
                      (0, offset + period / 2)], fill=band)
        offset += period


def _draw_desert(draw, rng, fg):
    """Rows of dunes: 3 or 4 stacked sinusoidal boundaries."""
    s = IMAGE_SIZE
    sands = (fg(), fg())
    rows, amp = int(rng.integers(3, 5)), rng.uniform(5, 10)
    period, phase = rng.uniform(30, 60), rng.uniform(0, 2 * math.pi)
    for row in range(rows):
        base = (row + 0.5 + rng.uniform(-0.2, 0.2)) * s / rows
        top = [(x, base + amp * math.sin(2 * math.pi * x / period + phase + row)) for x in range(0, s + 4, 4)]
        draw.polygon(top + [(s, s), (0, s)], fill=sands[row % 2])


def _draw_field(draw, rng, fg):
    """Horizontal furrows: bands of two alternating colours."""
    s = IMAGE_SIZE
    other = fg()
    y = rng.uniform(-10, 0)
    while y < s:
        h = rng.uniform(6, 16)
        draw.rectangle([0, y, s, y + h / 2], fill=other)
        y += h


def _draw_forest(draw, rng, fg):
    """Several full-height vertical trunks."""
    s = IMAGE_SIZE
    trunk = fg()
    for _ in range(rng.integers(5, 10)):
        x, w = rng.uniform(0, s), rng.uniform(4, 11)
        draw.rectangle([x, 0, x + w, s], fill=trunk if rng.random() < 0.7 else fg())


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
    """A range: a saw-toothed ridge of 3 to 5 peaks rising from the lower part."""
    s = IMAGE_SIZE
    peaks = int(rng.integers(3, 6))
    width, foot = s / peaks, rng.uniform(0.6, 0.9) * s
    ridge = [(0, s), (0, foot)]
    x = rng.uniform(-width / 2, 0)
    while x < s + width:
        ridge += [(x + width / 2, foot - rng.uniform(0.3, 0.55) * s), (x + width, foot)]
        x += width
    draw.polygon(ridge + [(s, s)], fill=fg())


def _draw_skyline(draw, rng, fg):
    """Adjacent buildings of random heights along the bottom, with rows of windows."""
    s = IMAGE_SIZE
    x, wall, window = 0.0, fg(), fg()
    while x < s:
        w, h = rng.uniform(16, 30), rng.uniform(40, 100)
        draw.rectangle([x, s - h, x + w - 2, s], fill=wall)
        for y in range(int(s - h + 4), s - 6, 9):
            for wx in range(int(x + 3), int(x + w - 6), 7):
                draw.rectangle([wx, y, wx + 3, y + 4], fill=window)
        x += w


def _draw_sun(draw, rng, fg):
    """A disc with 8 to 13 rays running off the image."""
    s = IMAGE_SIZE
    r = rng.uniform(12, 24)
    cx, cy = rng.uniform(r, s - r), rng.uniform(r, s - r)
    color, rays, start = fg(), int(rng.integers(8, 14)), rng.uniform(0, 2 * math.pi)
    for k in range(rays):
        angle = start + 2 * math.pi * k / rays
        end = (cx + 2 * s * math.cos(angle), cy + 2 * s * math.sin(angle))  # beyond the image
        draw.line([(cx, cy), end], fill=color, width=3)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)


def _draw_tower(draw, rng, fg):
    """One tall narrow block standing on the bottom edge."""
    s = IMAGE_SIZE
    w, h = rng.uniform(14, 28), rng.uniform(70, 115)
    x = rng.uniform(10, s - 10 - w)
    draw.rectangle([x, s - h, x + w, s], fill=fg())
    draw.rectangle([x - 3, s - h - 6, x + w + 3, s - h], fill=fg())  # a cap


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
    background = _background_color(rng)
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
    """The settings a demo dataset's marker holds, or None when `root` holds no such marker."""
    try:
        settings = json.loads((Path(root) / MARKER).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    return settings if isinstance(settings, dict) and "version" in settings else None


def _remove_stale_partials(root):
    """Delete `.<name>.partial-<pid>` siblings left by generations that were killed, and put back an
    earlier dataset (`.<name>.old-<pid>`) that one moved aside just before it was killed."""
    leftovers = sorted(root.parent.glob(f".{root.name}.partial-*")) + sorted(root.parent.glob(f".{root.name}.old-*"))
    for leftover in leftovers:
        pid = leftover.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        if leftover.name.startswith(f".{root.name}.old-") and not root.exists():
            os.replace(leftover, root)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def check_target(root):
    """Raise UserError unless `root` is absent, an empty folder or an earlier demo dataset: the only
    folders that generating may replace."""
    if root.exists() and not (root.is_dir() and (_read_marker(root) is not None or not any(root.iterdir()))):
        raise cli.UserError(f"{root}: exists and is not a demo dataset; choose another folder")


def make_demo_dataset(root, seed=0, train_per_class=DEFAULT_TRAIN_PER_CLASS,
                      val_per_class=DEFAULT_VAL_PER_CLASS, test_count=DEFAULT_TEST_COUNT):
    """Write the demo dataset into `root` and return it as a Path.

    The files are drawn into a hidden sibling folder that replaces `root` only when complete, so an
    interrupted run never leaves a half-written dataset behind. An existing `root` is replaced only if
    it is empty or an earlier demo dataset.

    Raises UserError (naming the command-line flag) for a count below 1 or a negative seed, for a
    `root` that is neither, and for one whose folder cannot be created.
    """
    root = Path(root).expanduser().resolve()
    check_target(root)
    for count, name in ((train_per_class, "--train-per-class"), (val_per_class, "--val-per-class"),
                        (test_count, "--test-count")):
        if count < 1:
            raise cli.UserError(f"{name} must be at least 1, got {count}")
    if seed < 0:
        raise cli.UserError(f"--seed must be at least 0, got {seed}")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocker = next((parent for parent in root.parents if parent.exists() and not parent.is_dir()), None)
        reason = f"{blocker} is a file" if blocker else error.strerror
        raise cli.UserError(f"{root}: cannot create its folder ({reason})") from None
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
    if root.parent.is_dir():
        _remove_stale_partials(root)
    if _is_complete(root, wanted):
        return root
    check_target(root)
    print(f"generating the demo dataset in {root} ...", file=sys.stderr, flush=True)
    return make_demo_dataset(root, seed, DEFAULT_TRAIN_PER_CLASS, DEFAULT_VAL_PER_CLASS, DEFAULT_TEST_COUNT)
