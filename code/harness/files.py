"""Files written atomically: a crash, a kill or a full disk never leaves a half-written file in place.

Every file the harness writes goes through atomic_write, which also turns the reasons a write fails
into one line naming the file: cli.DiskFull (exit 5) when the disk is full, with the bytes needed and
free, else a UserError (a read-only folder, a folder where the file should be).
"""
import io
import json
import os
import shutil
from pathlib import Path

from . import cli


def atomic_write(path, write_fn, size=None):
    """Call write_fn(binary file) on a temporary file next to `path`, then rename it into place.

    size: the bytes it will write, when known; the free space is checked before anything is written.
    A crash or a kill during the write leaves the previous file intact and no temporary behind
    (except after SIGKILL, which leaves a dot-file that the next write replaces).
    Raises cli.DiskFull when the disk is full, cli.UserError when `path` cannot be written otherwise.
    """
    path = Path(path)
    if size is not None:
        check_room(path, size)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.errno in cli.NO_SPACE:
            raise cli.disk_full(path, size) from None
        other = f"{exc.filename}: " if exc.filename and Path(exc.filename) not in (path, tmp) else ""
        raise cli.UserError(f"cannot write {path} ({other}{exc.strerror or cli.one_line(exc)})") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp):
    """Remove a temporary file; a failure to do so (a read-only folder) never hides the first error."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def check_room(path, size):
    """Raise cli.DiskFull when `size` bytes do not fit on the disk that holds `path`'s folder."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        return  # the folder is missing or unreadable: the write itself says why
    if size > free:
        raise cli.disk_full(path, size)


def write_bytes(path, data):
    """Write `data` (bytes) atomically, its size checked against the free space first."""
    atomic_write(path, lambda f: f.write(data), size=len(data))


def write_text(path, text):
    """Write `text` (UTF-8) atomically."""
    write_bytes(path, text.encode())


def write_json(obj, path):
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_figure(fig, path, dpi=120):
    """Save a matplotlib figure as a PNG file, atomically, and close it."""
    import matplotlib.pyplot as plt  # matplotlib is slow to import and only the report tools plot

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
