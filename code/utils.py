"""Shared helpers: the 2019 starter's (resize_image, load_image, save_image, AverageMeter), repository
paths and the error type for user mistakes.

Default paths are resolved from this file's location, never the working directory, so the scripts
work both from the repository root (`python code/main.py data`) and from `code/` (`python main.py ../data`).

The second half holds the training helpers that main.py, engine.py and bench/ share: AverageMeter and
accuracy, atomic file writes and checkpoints, RNG states, run folders, peak memory and PNG grids.
"""
import argparse
import io
import json
import math
import os
import random
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CODE_DIR = Path(__file__).resolve().parent
REPO_ROOT = CODE_DIR.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"
DEFAULT_LOG_DIR = REPO_ROOT / "logs"
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a flag).

    Scripts catch it and print its message as one line (print_user_error), with a non-zero exit,
    instead of a traceback.
    """


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, exit code 2) instead of printing the usage block."""

    def error(self, message):
        raise UserError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' except where X is None or a switch's False (their help says it)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def print_user_error(exc):
    """The one line every script prints for a UserError, on stderr."""
    print(f"error: {exc}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# The 2019 starter's image helpers, on Pillow instead of OpenCV (student files import them)
# ---------------------------------------------------------------------------------------------------

# OpenCV's interpolation codes, which 2019 code passes (cv2.INTER_NEAREST ... cv2.INTER_LANCZOS4), as
# Pillow filters. Pillow's BOX filter averages the source pixels each output pixel covers, which is what
# INTER_AREA does when shrinking.
CV2_INTERPOLATIONS = {0: Image.NEAREST, 1: Image.BILINEAR, 2: Image.BICUBIC, 3: Image.BOX, 4: Image.LANCZOS}


def load_image(filename):
    """The image in `filename` as an (H, W, 3) uint8 RGB array, as the dataset reads it: upright (EXIF
    orientation applied), every pixel mode converted to 8-bit RGB (custom_dataloader.load_rgb_image).

    As the 2019 helper (which used cv2.imread and turned BGR into RGB). Raises custom_dataloader's
    DataError (a UserError), one line naming the file, when it is missing or not a readable image.
    """
    import custom_dataloader  # a cycle at import time: custom_dataloader imports this module

    return np.asarray(custom_dataloader.load_rgb_image(filename))


def resize_image(img, new_size, interpolation):
    """Resize an (H, W[, C]) uint8 array to new_size = (width, height), as the 2019 helper (cv2.resize).

    interpolation: an OpenCV code (cv2.INTER_NEAREST = 0, INTER_LINEAR = 1, INTER_CUBIC = 2,
    INTER_AREA = 3, INTER_LANCZOS4 = 4). Returns an (height, width[, C]) uint8 array.
    Raises ValueError for another code or a size that is not two positive ints.
    """
    if interpolation not in CV2_INTERPOLATIONS:
        raise ValueError(f"interpolation must be an OpenCV code 0-4 (cv2.INTER_NEAREST ... INTER_LANCZOS4), "
                         f"got {interpolation!r}")
    width, height = (int(v) for v in new_size)
    if width < 1 or height < 1:
        raise ValueError(f"new_size must be (width, height) of positive ints, got {new_size!r}")
    image = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    return np.asarray(image.resize((width, height), CV2_INTERPOLATIONS[interpolation]))


def save_image(filename, img):
    """Write an (H, W[, 3]) uint8 RGB array to `filename` (format from its suffix), atomically."""
    path = Path(filename)
    image = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    file_format = Image.registered_extensions().get(path.suffix.lower())
    if file_format is None:
        raise ValueError(f"{path}: unknown image file suffix '{path.suffix}'")
    atomic_write(path, lambda f: image.save(f, format=file_format))


# ---------------------------------------------------------------------------------------------------
# Training helpers (main.py, engine.py, bench/)
# ---------------------------------------------------------------------------------------------------

class AverageMeter:
    """The current value and running average of a metric, printed as `name val (avg)` (the 2019 helper).

    `update` accepts Python numbers or 0-d tensors. A tensor stays on its device until the meter is
    read or printed, so a GPU run syncs with the host only when it logs, not every iteration.
    """

    def __init__(self, name="", fmt=":f"):
        self.name = name
        self.fmt = fmt
        self.reset()

    def reset(self):
        self.val = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = val.detach() if isinstance(val, torch.Tensor) else val
        self.sum = self.sum + self.val * n
        self.count += n

    @property
    def avg(self):
        return float(self.sum) / self.count if self.count else 0.0

    def __str__(self):
        fmtstr = "{name} {val" + self.fmt + "} ({avg" + self.fmt + "})"
        return fmtstr.format(name=self.name, val=float(self.val), avg=self.avg)


def accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent of logits `output` (N, C) against labels `target` (N,).

    Returns one 0-d tensor per k, on the output's device. k is capped at C, so top-5 of a 3-class
    problem is 100%.
    """
    with torch.no_grad():
        batch_size = target.shape[0]
        maxk = min(max(topk), output.shape[1])
        _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)  # (N, maxk)
        correct = pred.eq(target.view(-1, 1))  # (N, maxk); at most one True per row
        return [correct[:, :min(k, maxk)].sum(dtype=torch.float32) * (100.0 / batch_size) for k in topk]


def atomic_write(path, write_fn):
    """Call write_fn(binary file) on a temporary file next to `path`, then rename it into place.

    A crash or a kill during the write leaves the previous file intact and no temporary behind
    (except after SIGKILL, which leaves a dot-file that the next write replaces).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text):
    """Write `text` (UTF-8) atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(obj, path):
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_figure(fig, path, dpi=120):
    """Save a matplotlib figure as a PNG file, atomically, and close it."""
    import matplotlib.pyplot as plt  # matplotlib is slow to import and only the report tools plot

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def get_rng_state():
    """Every RNG a training run draws from, as a dict of tensors (loadable with weights_only=True)."""
    _, py_internal, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_internal, dtype=torch.int64),  # 624 words + position
        "python_gauss": torch.tensor([math.nan if py_gauss is None else py_gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),  # 624 uint32 words
        "numpy_pos": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())  # (devices, state bytes)
    return state


def set_rng_state(state):
    """Restore the RNGs saved by get_rng_state."""
    torch.set_rng_state(state["torch"])
    gauss = state["python_gauss"].item()
    random.setstate((3, tuple(state["python"].tolist()), None if math.isnan(gauss) else gauss))
    pos, has_gauss = state["numpy_pos"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, state["numpy_gauss"].item())
    )
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def seed_everything(seed):
    """Seed Python's, NumPy's and PyTorch's RNGs (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_run_name(arch, conv_name, now=None):
    """Default run folder name: arch, conv op and a timestamp, e.g. `simplenet_conv2d_20190301-142501`."""
    now = now or datetime.now()
    return f"{arch}_{conv_name.lower()}_{now:%Y%m%d-%H%M%S}"


def create_run_dir(logdir, run_name, reuse=False):
    """Create logdir/run_name; when it exists and `reuse` is False, append -1, -2, ... instead."""
    base = Path(logdir) / run_name
    run_dir, suffix = base, 0
    while run_dir.exists() and not reuse:
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--logdir: cannot create the run folder {run_dir} ({exc.strerror})") from None
    return run_dir


def reset_peak_memory(device):
    """Start a new peak-memory window (CUDA only: the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    """Peak memory in MiB: CUDA's max allocated on a GPU; the process's peak resident size on the CPU.

    The CPU figure is the peak since the process started (getrusage cannot be reset); NaN where the
    `resource` module does not exist (Windows).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 2**10


PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels -> Pillow mode


def encode_png(image, compress_level=1):
    """PNG bytes of a (C, H, W) float image in [0, 1], C = 1 (grey), 3 (RGB) or 4 (RGBA), rounded to
    8 bits as torchvision's save_image does. zlib level 1 by default: a 10x10 grid of 160-pixel images
    took 0.5 s against 1.8 s at Pillow's default 6, for a 9% larger file (2-core CPU).
    Raises ValueError for any other shape."""
    if image.dim() != 3 or image.shape[0] not in PNG_MODES:
        raise ValueError(f"an image grid must be (C, H, W) with C in 1, 3, 4, got {tuple(image.shape)}")
    pixels = image.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()  # (H, W, C)
    mode = PNG_MODES[image.shape[0]]
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if mode == "L" else array, mode).save(buffer, format="png",
                                                                          compress_level=compress_level)
    return buffer.getvalue()
