"""Shared fixtures. `code/` and `tools/` are on sys.path through pytest.ini's `pythonpath`; the shared
functions (running main.py, its command line) are in helpers.py."""
import pytest

from helpers import REPO_ROOT, make_tiny_dataset

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


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """demo_dataset(train_per_class=2, val_per_class=1, test_count=2): a tiny demo dataset (seed 0) of those
    sizes, written once per session and shared, so read-only: a test that changes files makes its own
    with helpers.make_tiny_dataset."""
    made = {}

    def get(train_per_class=2, val_per_class=1, test_count=2):
        sizes = (train_per_class, val_per_class, test_count)
        if sizes not in made:
            folder = tmp_path_factory.mktemp("data") / "tiny_{}_{}_{}".format(*sizes)
            made[sizes] = make_tiny_dataset(folder, *sizes)
        return made[sizes]

    return get


@pytest.fixture(scope="session")
def tiny_data(demo_dataset):
    """The end-to-end tests' dataset: 2 train and 1 val image per class (20 and 10), 2 test images.

    Runs at -b 4 take 5 steps an epoch; -b 10, 2."""
    return demo_dataset()
