"""Shared helpers: repository paths and the error type for user mistakes.

Default paths are resolved from this file's location, never the working directory, so the scripts
work both from the repository root (`python code/main.py data`) and from `code/` (`python main.py ../data`).
"""
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent
REPO_ROOT = CODE_DIR.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"
DEFAULT_LOG_DIR = REPO_ROOT / "logs"
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a flag).

    Scripts catch it and print its message as one line, with a non-zero exit, instead of a traceback.
    """
