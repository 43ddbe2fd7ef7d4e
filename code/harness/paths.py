"""The repository's default folders, resolved from this file's location, never the working directory,
so the scripts work from the repository root (`python code/main.py data`) and from `code/`
(`python main.py ../data`)."""
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CODE_DIR.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"
DEFAULT_LOG_DIR = REPO_ROOT / "logs"
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"
