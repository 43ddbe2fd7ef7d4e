"""A small synthetic MiniPlaces in the official layout, for tests and `python code/main.py --demo`.

Ten classes of 128x128 images, each a faintly textured disc on a plain grey background. The class is
the disc's texture, a luminance pattern of +-20 grey levels (beach: fine horizontal ripples; cliff:
diagonal strata; desert: wavy dunes; field: broad horizontal furrows; forest: fine vertical trunks;
market: a checkerboard of stalls; mountain: zigzag ridges; skyline: a grid of lit windows; sun:
concentric rings; tower: broad vertical stripes). Everything else is class-independent: the
background's colours (a vertical blend of two random near-greys), the disc's place and size (40-70%
of the image), the texture's tilt, phase and scale. So the mean colour tells nothing about the class;
a network must learn textures, as it leans on them in natural images, the saliency maps of a trained
one light up the disc, and a faint cue is one that a perturbation of 6 grey levels can erase: the
course's attack takes the demo's network from 60-99% to 19-30% top-1 (docs/measurements.md).
Everything derives from one seed (NumPy's generator), so the same seed writes the same files.

`python tools/demo_data.py [folder]` writes it (default data/miniplaces_demo).
"""
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from . import cli, paths


DEFAULT_DEMO_DIR = paths.DEFAULT_DATA_DIR / "miniplaces_demo"
DEMO_NUM_CLASSES = 10
IMAGE_SIZE = 128
DEFAULT_TRAIN_PER_CLASS = 300  # a faint cue needs the steps: with 150, +-24 reached 52% (seed 0)
DEFAULT_VAL_PER_CLASS = 10  # 100 val images: -e and the attack see them all
DEFAULT_TEST_COUNT = 100
TEXTURE_AMPLITUDE = 20.0  # grey levels: the texture spans background +- 20
BACKGROUND_LEVELS = (118, 139)  # [low, high) per channel of the background's two colours: near-greys
JPEG_QUALITY = 90
MARKER = ".demo_complete.json"  # written last: a folder without it is incomplete
# 5: faint textured discs on near-grey, no pixel noise, 300 train images a class; 4: the same textures at
# +-70 on random colours with pixel noise (the attack moved it by 1-5 points); 3: dark/light tinted shapes;
# 2: shapes in colours from the whole RGB cube. docs/measurements.md#the-demo has why.
FORMAT_VERSION = 5


# ---------------------------------------------------------------------------------------------------
# The textures: one function per class, (u, v, k, rng) -> pattern in [-1, 1] of shape (128, 128), where
# u runs along the (tilted) rows and v down the columns, in pixels, and k scales every period.
# ---------------------------------------------------------------------------------------------------
# Why textures. Versions 2 and 3 drew high-contrast shapes: SimpleNet learned them in 2 epochs and
# the default attack (epsilon 0.1, about 6 grey levels) barely moved it (80% -> 80%). Textures are
# what networks lean on in natural images; here the class is nothing else. Each class pair differs
# in orientation (rows, columns, diagonals; a horizontal flip maps each class onto itself), in
# period (5-7 px fine, 16 px broad: the training crops zoom by 1-2x, so the two never meet) or in
# layout (checkerboard, grid, rings, waves, zigzags).
# Why faint. At +-70 (version 4) the texture outweighed a 6-grey-level perturbation and the attack
# moved the network by 1-5 points. At +-20 on a quiet background (nothing else varies much, so a
# faint cue is still the clearest thing in the image) the network learns it in the demo's 2 epochs
# from 3,000 images, and the attack takes half or more of its accuracy.
_GRID = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)  # (2, 128, 128): y, x


def _grating(t, period):
    return np.sin((2 * np.pi / period) * t)


def _beach(u, v, k, rng):
    return _grating(v, 5 * k)


def _cliff(u, v, k, rng):
    diagonal = (u + v) if rng.random() < 0.5 else (u - v)  # rising either way
    return _grating(diagonal / math.sqrt(2), 6 * k)


def _desert(u, v, k, rng):
    return _grating(v + 3 * np.sin(2 * np.pi * u / (20 * k)), 7 * k)


def _field(u, v, k, rng):
    return _grating(v, 16 * k)


def _forest(u, v, k, rng):
    return _grating(u, 5 * k)


def _market(u, v, k, rng):
    return np.sign(_grating(u, 10 * k) * _grating(v, 10 * k))


def _mountain(u, v, k, rng):
    zigzag = 2 * np.abs((u / (12 * k)) % 1 - 0.5)  # a triangle wave along the rows, 0..1
    return _grating(v + 6 * zigzag, 7 * k)


def _skyline(u, v, k, rng):
    lit = (_grating(u, 8 * k) > 0) & (_grating(v, 8 * k) > 0)  # a quarter of the disc
    return np.where(lit, 1.0, -1 / 3)  # zero mean, as every texture's


def _sun(u, v, k, rng):
    cy, cx = rng.uniform(20, IMAGE_SIZE - 20, 2)
    return _grating(np.hypot(_GRID[1] - cx, _GRID[0] - cy), 6 * k)


def _tower(u, v, k, rng):
    return _grating(u, 16 * k)


# (category as in categories.txt, texture function); the index is the label.
CLASSES = (
    ("/b/beach", _beach),
    ("/c/cliff", _cliff),
    ("/d/desert", _desert),
    ("/f/field", _field),
    ("/f/forest", _forest),
    ("/m/market", _market),
    ("/m/mountain", _mountain),
    ("/s/skyline", _skyline),
    ("/s/sun", _sun),
    ("/t/tower", _tower),
)
assert len(CLASSES) == DEMO_NUM_CLASSES


def texture(label, rng):
    """(128, 128) float32 pattern in [-1, 1] of class `label`: tilted by up to 10 degrees either way,
    at a random phase and with every period scaled by 0.9-1.1."""
    angle = math.radians(rng.uniform(-10, 10))
    y0, x0 = rng.uniform(0, IMAGE_SIZE / 2, 2)
    y, x = _GRID[0] - y0, _GRID[1] - x0
    u = math.cos(angle) * x - math.sin(angle) * y
    v = math.sin(angle) * x + math.cos(angle) * y
    return CLASSES[label][1](u, v, rng.uniform(0.9, 1.1), rng).astype(np.float32)


def disc_mask(rng):
    """(128, 128) float32 weights in [0, 1]: an ellipse (centre within the middle 40 px, radii 48-64
    px) with a soft rim, 40-70% of the image; the part of the image that carries the class."""
    cy, cx = rng.uniform(44, IMAGE_SIZE - 44, 2)
    ry, rx = rng.uniform(48, 64, 2)
    distance = ((_GRID[0] - cy) / ry) ** 2 + ((_GRID[1] - cx) / rx) ** 2
    return np.clip((1.0 - distance) * 4, 0, 1)


def background(rng):
    """(128, 128, 3) float32: a vertical blend of two random colours, whatever the class."""
    top, bottom = rng.integers(*BACKGROUND_LEVELS, (2, 3)).astype(np.float32)
    t = (_GRID[0][..., None] / IMAGE_SIZE)  # (128, 128, 1), 0 at the top
    return top * (1 - t) + bottom * t


def draw_scene(label, rng):
    """(pixels (128, 128, 3) uint8, disc (128, 128) float32 in [0, 1]): one image of class `label` and
    where its texture is. JPEG's rounding is the only noise."""
    pixels = background(rng)
    disc = disc_mask(rng)
    pixels += (TEXTURE_AMPLITUDE * texture(label, rng) * disc)[..., None]  # luminance: all channels alike
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), disc


def render_scene(label, rng):
    """One (128, 128, 3) uint8 image of class `label`."""
    return draw_scene(label, rng)[0]


# ---------------------------------------------------------------------------------------------------
# Writing the official layout
# ---------------------------------------------------------------------------------------------------
def _save(pixels, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=JPEG_QUALITY)


def _write_split(folder, rng, train_per_class, val_per_class, test_count):
    """Draw every image into `folder` (official layout) and write the label files."""
    images = folder / "images"
    train_lines = []
    for label, (category, _) in enumerate(CLASSES):
        for i in range(1, train_per_class + 1):
            rel = f"train{category}/{i:08d}.jpg"
            _save(render_scene(label, rng), images / rel)
            train_lines.append(f"{rel} {label}")
    # Val and test images are numbered in a shuffled class order, as in MiniPlaces.
    val_labels = rng.permutation(np.repeat(np.arange(DEMO_NUM_CLASSES), val_per_class))
    val_lines = []
    for i, label in enumerate(val_labels, 1):
        rel = f"val/{i:08d}.jpg"
        _save(render_scene(int(label), rng), images / rel)
        val_lines.append(f"{rel} {label}")
    (images / "test").mkdir(parents=True, exist_ok=True)
    for i in range(1, test_count + 1):
        _save(render_scene(int(rng.integers(DEMO_NUM_CLASSES)), rng), images / f"test/{i:08d}.jpg")
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


def _default_settings(seed):
    return _settings(seed, DEFAULT_TRAIN_PER_CLASS, DEFAULT_VAL_PER_CLASS, DEFAULT_TEST_COUNT)


def is_ready(root=DEFAULT_DEMO_DIR, seed=0):
    """Whether `root` holds the complete default-size demo dataset of this version and seed (then
    ensure_demo_dataset generates nothing)."""
    return _is_complete(Path(root).expanduser().resolve(), _default_settings(seed))


def ensure_demo_dataset(root=DEFAULT_DEMO_DIR, seed=0):
    """Return `root`, generating the default-size demo dataset first if it is absent or incomplete."""
    root = Path(root).expanduser().resolve()
    wanted = _default_settings(seed)
    if root.parent.is_dir():
        _remove_stale_partials(root)
    if _is_complete(root, wanted):
        return root
    check_target(root)
    print(f"generating the demo dataset in {root} ...", file=sys.stderr, flush=True)
    return make_demo_dataset(root, seed, DEFAULT_TRAIN_PER_CLASS, DEFAULT_VAL_PER_CLASS, DEFAULT_TEST_COUNT)
