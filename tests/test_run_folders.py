"""One run per run folder (issue 22, kinds 3 and 5): a run holds its folder while it runs; a second run
with the same --run-name, or a --resume of a run still going, is refused in one line; -e/-a take a new
folder instead; a crashed run leaves nothing stuck; default names never collide; a folder name that is
not UTF-8 is one line, with no empty folder left."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from harness import checkpoints, runs
from helpers import finish, run_main, start_main, train_argv, wait_for


@pytest.fixture
def running(tiny_data, tmp_path):
    """A long training run in logs/run, past its first epoch's checkpoint; SIGKILLed at the end."""
    logdir = tmp_path / "logs"
    proc = start_main(train_argv(tiny_data, logdir, "run", epochs=100, print_freq=1))
    wait_for(proc, r"^Epoch: \[1\]")
    yield logdir, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_a_second_run_in_the_same_folder_is_refused_and_a_crashed_one_leaves_it_free(running, tiny_data, capsys):
    logdir, proc = running
    code, _, err = run_main(train_argv(tiny_data, logdir, "run"), capsys)
    assert code == 2
    assert err.strip() == (f"error: --run-name run: {logdir / 'run'} is in use by another run (pid {proc.pid}: "
                           f"{err.split(': ', 3)[3].split(')')[0]}); choose another --run-name, or wait for that run "
                           "to end")
    checkpoint = logdir / "run" / checkpoints.CHECKPOINT_NAME
    code, _, err = run_main(train_argv(tiny_data, logdir, None, "--resume", checkpoint, epochs=100), capsys)
    assert code == 2 and f"the run in {logdir / 'run'} is still running (pid {proc.pid}" in err

    # -e and -a write elsewhere while the run holds its folder
    code, out, err = run_main([tiny_data, "--resume", checkpoint, "-e", "--gpu", -1, "-j", 0, "--logdir", logdir],
                              capsys)
    assert code == 0 and f"note: {logdir / 'run'} is in use by a running run" in err + out
    assert not (logdir / "run" / "evaluation.json").exists()

    os.killpg(proc.pid, signal.SIGKILL)  # a crash: the kernel drops the lock with the process
    proc.communicate()
    epochs = checkpoints.read(checkpoint).epoch + 1  # one more epoch
    code, _, err = run_main(train_argv(tiny_data, logdir, "run", "--resume", checkpoint, epochs=epochs), capsys)
    assert code == 0, err


def test_one_process_may_hold_a_folder_again_and_let_it_go(tmp_path):
    def held_by_another_process():  # asked with flock itself, as another run's kernel call would
        other = subprocess.run([sys.executable, "-c", "import fcntl, sys\n"
                                f"lock = open({str(tmp_path / runs.LOCK_NAME)!r}, 'a')\n"
                                "try: fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                                "except BlockingIOError: sys.exit(1)"], capture_output=True, text=True)
        assert other.returncode in (0, 1), other.stderr
        return other.returncode == 1

    assert runs.hold(tmp_path) and runs.hold(tmp_path)  # --demo: training, then -e and -a in one folder
    assert held_by_another_process()
    runs.release_run_folders()
    assert not held_by_another_process()


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    made = [runs.create_run_dir(tmp_path, "simplenet_conv2d_20261203-120000") for _ in range(3)]
    assert [p.name for p in made] == ["simplenet_conv2d_20261203-120000", "simplenet_conv2d_20261203-120000-1",
                                      "simplenet_conv2d_20261203-120000-2"]


@pytest.mark.parametrize("flag", ["--run-name", "--logdir"])
def test_a_name_that_is_not_utf8_is_one_line_and_leaves_no_folder(flag, tiny_data, tmp_path, capsys):
    bad = os.fsdecode(b"journ\xe9")  # Latin-1 bytes, as Python decodes them from a Latin-1 terminal's argv
    argv = train_argv(tiny_data, tmp_path / "logs", "run")
    argv[argv.index(flag) + 1] = str(tmp_path / bad) if flag == "--logdir" else bad
    code, out, err = run_main(argv, capsys)
    assert code == 2 and err.strip().startswith(f"error: {flag}: b'") and len(err.strip().splitlines()) == 1
    assert "is not valid UTF-8" in err
    assert not (tmp_path / bad).exists() and not (tmp_path / "logs" / bad).exists()


def test_a_data_folder_that_is_not_utf8_trains_and_prints(tiny_data, tmp_path):
    data = tmp_path / os.fsdecode(b"donn\xe9es")
    shutil.copytree(tiny_data, data)
    code, out = finish(start_main(train_argv(data, tmp_path / "logs", "run")))
    assert code == 0 and "Traceback" not in out
    assert (tmp_path / "logs" / "run" / checkpoints.CHECKPOINT_NAME).is_file()
