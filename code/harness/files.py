"""Files written atomically: a crash or a kill never leaves a half-written file in place."""
import io
import json
import os
from pathlib import Path


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
