"""Shared fixtures. `code/` is on sys.path through pytest.ini's `pythonpath`."""
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MINIPLACES = REPO_ROOT.parent / "shared" / "miniplaces"
SHARED_TEAM = REPO_ROOT.parent / "shared" / "team"


@pytest.fixture
def shared_miniplaces():
    """The real MiniPlaces subset next to the project; tests that need it skip without it."""
    if not (SHARED_MINIPLACES / "train.txt").is_file():
        pytest.skip("../shared/miniplaces is absent")
    return SHARED_MINIPLACES


@pytest.fixture(scope="session")
def shared_team():
    """The team's published logs and checkpoints next to the project; tests that need them skip without."""
    if not (SHARED_TEAM / "README.md").is_file():
        pytest.skip("../shared/team is absent")
    return SHARED_TEAM
