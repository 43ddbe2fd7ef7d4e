"""A full disk (issue 22, kind 2): wherever the product writes, one line naming the file and saying that
the disk is full (with the bytes needed when known), exit 5, the previous file intact, no empty or
temporary leftovers. A real full disk (a small tmpfs in a mount namespace of its own, where the machine
allows one) and an injected ENOSPC for every writer."""
import errno
import shutil
import subprocess
import sys

import matplotlib
import pytest
import torch

from harness import checkpoints, cli, files
from harness.runlog import RunLog
from helpers import MAIN_PY, train_argv

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)


def _can_mount_tmpfs():
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_mount_tmpfs(), reason="no mount namespace with tmpfs here (not root?)")


@needs_tmpfs
# 4 KiB: the events file fills it (TensorBoard's writer thread); a checkpoint larger than the free space
# is test_a_write_larger_than_the_free_space_is_refused_before_it_starts.
@pytest.mark.parametrize("size", ["4k"])
def test_training_on_a_full_disk_ends_in_one_line(size, tiny_data, tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    command = " ".join(map(str, [sys.executable, MAIN_PY, *train_argv(tiny_data, logdir, "run", epochs=2)]))
    script = (f"mount -t tmpfs -o size={size} tmpfs {logdir} || exit 99; {command}; code=$?; "
              f"find {logdir} -type f -printf '%s %f\\n'; exit $code")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == cli.EXIT_DISK_FULL, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {logdir / 'run'}/") and "the disk is full" in line
    left = [entry.split(" ", 1) for entry in result.stdout.strip().splitlines()[-10:] if " " in entry]
    assert not [name for bytes_, name in left if bytes_ == "0" or name.startswith(".") and name != ".lock"]


def _no_space(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def _checkpoint_state():
    model = torch.nn.Linear(2, 2)
    return {"epoch": 1, "state_dict": model.state_dict(), "optimizer": {"state": {}}}


WRITERS = {
    "text": lambda folder: files.write_text(folder / "a.txt", "new"),
    "json": lambda folder: files.write_json({"new": 1}, folder / "a.txt"),
    "bytes": lambda folder: files.write_bytes(folder / "a.txt", b"new"),
    "figure": lambda folder: files.save_figure(plt.figure(), folder / "a.txt"),
    "checkpoint": lambda folder: checkpoints.save(_checkpoint_state(), folder),
    "model_best": lambda folder: checkpoints.copy_to_best(folder),
    "PNG grid": lambda folder: RunLog(folder, active=True).image("Image/a", torch.zeros(3, 4, 4), 0),
}
TARGETS = {"checkpoint": checkpoints.CHECKPOINT_NAME, "model_best": checkpoints.BEST_NAME, "PNG grid": "a_0000.png"}


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_says_the_disk_is_full_and_keeps_the_previous_file(writer, tmp_path, monkeypatch):
    target = tmp_path / TARGETS.get(writer, "a.txt")
    target.write_bytes(b"previous")
    if writer == "model_best":
        (tmp_path / checkpoints.CHECKPOINT_NAME).write_bytes(b"checkpoint")
    monkeypatch.setattr(files.os, "fsync", _no_space)  # the write reaches the disk at fsync
    with pytest.raises(cli.DiskFull, match=rf"cannot write {target}: the disk is full"):
        WRITERS[writer](tmp_path)
    assert target.read_bytes() == b"previous"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def test_a_write_larger_than_the_free_space_is_refused_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(files.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    opened = []
    monkeypatch.setattr(files, "open", lambda *a, **k: opened.append(a), raising=False)
    with pytest.raises(cli.DiskFull, match=r"the disk is full \(1000 bytes needed, 100 bytes free"):
        files.write_bytes(tmp_path / "a.bin", bytes(1000))
    assert opened == [] and not (tmp_path / "a.bin").exists()


def test_the_cleanup_never_hides_the_first_error(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.Path, "unlink", read_only)
    with pytest.raises(cli.DiskFull, match="the disk is full"):
        files.atomic_write(tmp_path / "a.txt", lambda f: _no_space())


def test_a_folder_in_place_of_the_file_is_one_line(tmp_path):
    (tmp_path / "a.txt").mkdir()
    with pytest.raises(cli.UserError, match=r"cannot write .*a\.txt \(Is a directory\)"):
        files.write_text(tmp_path / "a.txt", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_full_disk_anywhere_else_is_one_line_and_exit_5(capsys):
    def body(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/cache/x.npy")

    assert cli.run(body) == cli.EXIT_DISK_FULL
    assert capsys.readouterr().err.startswith("error: cannot write /data/cache/x.npy: the disk is full")
