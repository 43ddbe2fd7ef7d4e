"""Run folders: their default names and creation."""
from datetime import datetime
from pathlib import Path

from .cli import UserError


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
