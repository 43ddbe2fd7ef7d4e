"""Checkpoints handed over inside archives (harness/archives.py through checkpoints.read): every kind
of archive holding one checkpoint gives the bare file's weights; archives holding none or several,
and damaged ones, are one line.

The archives are made with the command-line tools staff use (zip, tar, gzip, bzip2, xz), not with
the Python modules the reader uses; a kind whose tool is missing skips. The reference is torch.load
of the bare file.
Run: python -m pytest tests/test_archives.py -q
"""
import json
import os
import shutil
import subprocess

import pytest
import torch

from harness import archives, checkpoints, demo_data
from harness.cli import UserError
import student_code
from helpers import assert_accuracy_of, run_main, val_logits

NUM_CLASSES = demo_data.DEMO_NUM_CLASSES


def tool(*argv, cwd):
    """Run a command-line archiver in `cwd` (skip the test when it is not installed); xz and bzip2 at
    their fastest levels, also under tar."""
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    env = {**os.environ, "XZ_OPT": "-0", "BZIP2": "-1"}
    subprocess.run([str(a) for a in argv], cwd=cwd, check=True, capture_output=True, env=env)


@pytest.fixture(scope="module")
def network():
    """The team's GoogLeNet: its checkpoint of 0.24 MB keeps the archivers quick (SimpleNet's takes 5.5)."""
    torch.manual_seed(0)
    return student_code.GoogLeNet(num_classes=NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def bare(network, tmp_path_factory):
    """Two checkpoints in a folder: ours (torch.save's zip format) and the 2019 harness's legacy format."""
    folder = tmp_path_factory.mktemp("bare")
    state = network.state_dict()
    torch.save({"epoch": 2, "arch": "googlenet", "conv_op": "Conv2d", "num_classes": NUM_CLASSES, "classes": None,
                "state_dict": state, "best_acc1": 10.0, "args": {"seed": 0}}, folder / "model_best.pth.tar")
    torch.save({"epoch": 3, "model_arch": "googlenet", "state_dict": state, "best_acc1": torch.tensor(12.5)},
               folder / "legacy.pth.tar", _use_new_zipfile_serialization=False)
    return folder


def pack(kind, source, folder):
    """The archive of `kind` holding the file `source` (as staff make them, with extra files where an
    archive usually has them); returns its path."""
    stage = folder / "stage"
    (stage / "run").mkdir(parents=True)
    shutil.copy(source, stage / "run" / source.name)
    if kind.startswith("zip"):
        # As macOS's Finder zips a folder: a resource-fork twin under __MACOSX/ and a .DS_Store.
        (stage / "README.txt").write_text("The team's best network.\n")
        (stage / "__MACOSX" / "run").mkdir(parents=True)
        (stage / "__MACOSX" / "run" / f"._{source.name}").write_bytes(b"\x00\x05\x16\x07" * 8)
        (stage / "run" / ".DS_Store").write_bytes(b"\x00" * 64)
        archive = folder / "published.zip"
        tool("zip", "-r", "-0" if kind == "zip stored" else "-6", archive, ".", cwd=stage)
    elif kind.startswith("tar") or kind == "tgz":
        suffix, flag = {"tar": ("tar", ""), "tar.gz": ("tar.gz", "z"), "tgz": ("tgz", "z"),
                        "tar.bz2": ("tar.bz2", "j"), "tar.xz": ("tar.xz", "J")}[kind]
        (stage / "README.txt").write_text("The team's best network.\n")
        archive = folder / f"published.{suffix}"
        tool("tar", f"-c{flag}f", archive, "README.txt", "run", cwd=stage)
    else:  # one file compressed alone: gzip, bzip2, xz keep the name and add their suffix
        program, suffix = {"gz": ("gzip", "gz"), "bz2": ("bzip2", "bz2"), "xz": ("xz", "xz")}[kind]
        tool(program, "-k", source.name, cwd=stage / "run")
        archive = folder / f"{source.name}.{suffix}"
        shutil.move(stage / "run" / archive.name, archive)
    shutil.rmtree(stage)
    return archive


def assert_same_weights(state_dict, expected):
    assert state_dict.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(state_dict[name], tensor), name


KINDS = ["zip", "zip stored", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz", "gz", "bz2", "xz"]


@pytest.mark.parametrize("bare_name", ["model_best.pth.tar", "legacy.pth.tar"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_archive_of_one_checkpoint_reads_as_the_bare_file(kind, bare_name, bare, tmp_path):
    archive = pack(kind, bare / bare_name, tmp_path)
    expected = torch.load(bare / bare_name, map_location="cpu", weights_only=True)
    checkpoint = checkpoints.read(archive)
    bare_checkpoint = checkpoints.read(bare / bare_name)
    assert_same_weights(checkpoint.state_dict, expected["state_dict"])
    assert (checkpoint.kind, checkpoint.epoch, checkpoint.best_acc1, checkpoint.path) == \
        (bare_checkpoint.kind, bare_checkpoint.epoch, bare_checkpoint.best_acc1, archive)


def test_a_large_checkpoint_is_unpacked_to_a_temporary_file_removed_afterwards(bare, tmp_path, monkeypatch):
    archive = pack("tar.gz", bare / "model_best.pth.tar", tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(archives, "SPOOL_BYTES", 1)  # every copy goes to disk
    monkeypatch.setattr(archives.tempfile, "tempdir", str(scratch))
    seen = []
    real = archives.tempfile.SpooledTemporaryFile

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(archives.tempfile, "SpooledTemporaryFile", spy)
    expected = torch.load(bare / "model_best.pth.tar", map_location="cpu", weights_only=True)
    assert_same_weights(checkpoints.read(archive).state_dict, expected["state_dict"])
    (copy,) = seen
    assert copy._rolled and copy.closed  # it was on disk, and is closed (an unnamed file: gone)
    assert list(scratch.iterdir()) == []


def test_torch_saves_own_zip_is_not_taken_for_an_archive(bare):
    with archives.unpacked(bare / "model_best.pth.tar") as (source, member):
        assert (source, member) == (bare / "model_best.pth.tar", None)


def zip_of(folder, name, members):
    """A zip made with the zip tool of `members` {name in the zip: bytes}."""
    stage = folder / f"{name}.stage"
    for member, data in members.items():
        (stage / member).parent.mkdir(parents=True, exist_ok=True)
        (stage / member).write_bytes(data)
    tool("zip", "-r", folder / name, *members, cwd=stage)
    shutil.rmtree(stage)
    return folder / name


def tar_of(folder, name, members, flag="z"):
    stage = folder / f"{name}.stage"
    for member, data in members.items():
        (stage / member).parent.mkdir(parents=True, exist_ok=True)
        (stage / member).write_bytes(data)
    tool("tar", f"-c{flag}f", folder / name, *members, cwd=stage)
    shutil.rmtree(stage)
    return folder / name


def test_archives_holding_no_checkpoint_or_several_say_what_they_hold(bare, tmp_path):
    model = (bare / "model_best.pth.tar").read_bytes()
    legacy = (bare / "legacy.pth.tar").read_bytes()
    notes = b"epoch 90: 43.97\n"
    cases = [
        (zip_of(tmp_path, "notes.zip", {"README.md": notes, "logs/run.txt": notes}),
         r"notes\.zip is a zip archive holding no checkpoint \(README\.md, logs/run\.txt\): extract it with "
         r"`unzip .*notes\.zip` and give --resume a checkpoint$"),
        (zip_of(tmp_path, "both.zip", {"best.pth.tar": model, "last/weights.bin": legacy, "README.md": notes}),
         r"both\.zip is a zip archive holding 2 checkpoints \(best\.pth\.tar, last/weights\.bin\): extract it "
         r"with `unzip .*both\.zip` and give --resume one of them$"),
        (tar_of(tmp_path, "runs.tar.gz", {f"run{i}/model_best.pth.tar": model for i in range(7)}),
         r"runs\.tar\.gz is a gzip-compressed tar archive holding 7 checkpoints \(run0/model_best\.pth\.tar, "
         r".*run4/model_best\.pth\.tar and 2 more\): extract it with `tar -xf .*runs\.tar\.gz`"),
        (tar_of(tmp_path, "notes.tar", {"README.md": notes}, flag=""),
         r"notes\.tar is a tar archive holding no checkpoint \(README\.md\): extract it with `tar -xf "),
    ]
    (tmp_path / "notes.txt").write_bytes(notes)
    tool("gzip", "-k", "notes.txt", cwd=tmp_path)
    cases.append((tmp_path / "notes.txt.gz", r"notes\.txt\.gz is a gzip-compressed file holding no checkpoint "
                                             r"\(notes\.txt\): extract it with `gunzip -k .*notes\.txt\.gz`"))
    empty = tmp_path / "empty.zip"
    empty.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # what `zip` leaves when every file is deleted from it
    cases.append((empty, r"empty\.zip is a zip archive holding no checkpoint \(it is empty\)"))
    for path, message in cases:
        with pytest.raises(UserError, match=r"^--resume: .*" + message) as raised:
            checkpoints.read(path)
        assert "\n" not in str(raised.value)


def test_damaged_archives_are_one_line(bare, tmp_path):
    model = (bare / "model_best.pth.tar").read_bytes()
    crc = zip_of(tmp_path, "crc.zip", {"model.pth.tar": model})
    data = bytearray(crc.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the (stored) member: its CRC-32 no longer matches
    crc.write_bytes(bytes(data))
    tgz = tar_of(tmp_path, "cut.tgz", {"model.pth.tar": model})
    (tmp_path / "cut_early.tgz").write_bytes(tgz.read_bytes()[:16])  # not even a tar header inside
    tgz.write_bytes(tgz.read_bytes()[:-100])
    tar = tar_of(tmp_path, "cut.tar", {"model.pth.tar": model}, flag="")
    tar.write_bytes(tar.read_bytes()[:2000])
    (tmp_path / "model.pth.tar").write_bytes(model)
    tool("gzip", "model.pth.tar", cwd=tmp_path)
    gz = tmp_path / "model.pth.tar.gz"
    gz.write_bytes(gz.read_bytes()[:-4] + b"\x00\x00\x00\x00")  # a wrong length in the trailer
    cut_member = zip_of(tmp_path, "cut_member.zip", {"model.pth.tar": model[:len(model) // 2]})
    cases = [
        (crc, r"crc\.zip is a zip archive that cannot be read \(Bad CRC-32 for file 'model\.pth\.tar'\): "
              r"download it again"),
        (tgz, r"cut\.tgz is a gzip-compressed tar archive that cannot be read \(Compressed file ended"),
        (tmp_path / "cut_early.tgz", r"cut_early\.tgz is a gzip-compressed file that cannot be read \("),
        (tar, r"cut\.tar is a tar archive that cannot be read \("),
        (gz, r"model\.pth\.tar\.gz is a gzip-compressed file that cannot be read \(Incorrect length"),
        # A checkpoint member that is damaged itself gets torch's reason, and its name.
        (cut_member, r"cut_member\.zip \(model\.pth\.tar inside\) is not a readable checkpoint \("),
    ]
    for path, message in cases:
        with pytest.raises(UserError, match=r"^--resume: .*" + message) as raised:
            checkpoints.read(path)
        assert "\n" not in str(raised.value)


def test_main_evaluates_a_zipped_checkpoint(tiny_data, tmp_path, capsys):
    """main.py -e --resume X.zip end to end, with SimpleNet (GoogLeNet's full-resolution inception
    stages take 15 s for -e on 2 cores); the accuracy is the one computed here with the plain network."""
    torch.manual_seed(0)
    network = student_code.SimpleNet(num_classes=NUM_CLASSES).eval()
    bare = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 2, "arch": "simplenet", "conv_op": "Conv2d", "num_classes": NUM_CLASSES, "classes": None,
                "state_dict": network.state_dict(), "best_acc1": 10.0, "args": {"seed": 0}}, bare)
    archive = pack("zip", bare, tmp_path)
    bare.unlink()
    code, out, err = run_main([tiny_data, "-e", "-j", "0", "--resume", archive, "--logdir", tmp_path / "logs",
                               "--run-name", "eval"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "logs" / "eval" / "evaluation.json").read_text())
    assert_accuracy_of(result["top1"], *val_logits(network, tiny_data))
    assert f"=> {archive}: simplenet trained for 2 epochs" in out
