"""Checkpoints of every kind users have, through main.py -e, training --resume and predict.py.

Each kind holds the same seeded SimpleNet weights, so every one must give the accuracy that the test
computes itself with the plain network. Written by the tests: ours, the 2019 harness's (legacy
serialization, tensors tagged as saved on a GPU, model_best without optimizer), DataParallel and
torch.compile state_dicts, another script's dict with argparse.Namespace and NumPy values; and the
refusals: pickled objects, non-finite weights, weights that fit no network.
Run: python -m pytest tests/test_checkpoints.py -q
"""
import argparse
import contextlib
import json
import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch import serialization

from harness import checkpoints, demo_data, models
from harness import engine
import predict
import student_code
from helpers import assert_accuracy_of, run_main, val_logits

NUM_CLASSES = demo_data.DEMO_NUM_CLASSES


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return student_code.SimpleNet(num_classes=NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def reference_logits(network, tiny_data):
    """(flip-averaged val logits, labels) of `network`, computed here without the harness's loops."""
    return val_logits(network, tiny_data)


@contextlib.contextmanager
def saved_as_on_a_gpu():
    """torch.save tags every CPU tensor 'cuda:0', as a GPU machine writes it (loading it needs map_location)."""
    def tag(obj):
        return "cuda:0" if getattr(obj, "device", None) is not None and obj.device.type == "cpu" else None

    serialization.register_package(0, tag, lambda obj, location: None)
    try:
        yield
    finally:
        serialization._package_registry[:] = [entry for entry in serialization._package_registry
                                              if entry[1] is not tag]


def sgd_state(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    model.zero_grad()
    return optimizer.state_dict()


def write_kinds(network, folder):
    """{kind: path} of the same weights in every format that must load."""
    folder.mkdir(exist_ok=True)
    state = network.state_dict()
    copy = student_code.SimpleNet(num_classes=NUM_CLASSES)
    copy.load_state_dict(state)
    paths = {}

    paths["ours"] = folder / "ours.pth.tar"
    torch.save({"epoch": 2, "arch": "simplenet", "conv_op": "Conv2d", "num_classes": NUM_CLASSES, "classes": None,
                "state_dict": state, "best_acc1": 10.0, "args": {"seed": 0}}, paths["ours"])
    paths["2019"] = folder / "checkpoint_2019.pth.tar"
    with saved_as_on_a_gpu():  # the 2019 harness saved from the GPU, in the pre-1.6 serialization
        torch.save({"epoch": 3, "model_arch": "simplenet", "state_dict": state, "best_acc1": torch.tensor(12.5),
                    "optimizer": sgd_state(copy)}, paths["2019"], _use_new_zipfile_serialization=False)
    paths["2019 model_best"] = folder / "model_best_2019.pth.tar"
    torch.save({"epoch": 3, "model_arch": "simplenet", "state_dict": state, "best_acc1": torch.tensor(12.5)},
               paths["2019 model_best"])
    paths["DataParallel"] = folder / "dataparallel.pth"
    torch.save(nn.DataParallel(copy).state_dict(), paths["DataParallel"])
    paths["torch.compile"] = folder / "compiled.pth"
    torch.save({"state_dict": torch.compile(copy).state_dict()}, paths["torch.compile"])
    paths["other script"] = folder / "other.pt"
    torch.save({"model_state_dict": state, "epoch": np.int64(7), "best_acc": np.float64(12.5),
                "args": argparse.Namespace(lr=0.1, arch="simplenet"), "history": np.arange(3.0)},
               paths["other script"])
    return paths


@pytest.fixture(scope="module")
def kinds(network, tmp_path_factory):
    return write_kinds(network, tmp_path_factory.mktemp("checkpoints"))


def test_the_formats_really_differ(kinds):
    keys = {kind: set(torch.load(path, map_location="cpu", weights_only=False).keys())
            for kind, path in kinds.items()}
    assert all(key.startswith("module.") for key in keys["DataParallel"])
    assert next(iter(torch.load(kinds["torch.compile"], weights_only=True)["state_dict"])).startswith("_orig_mod.")
    with open(kinds["2019"], "rb") as f:
        assert f.read(2) != b"PK"  # not a zip: the legacy serialization
    with pytest.raises(RuntimeError, match="CUDA"):  # saved as on a GPU: plain loading needs CUDA
        torch.load(kinds["2019"], weights_only=True)
    # Plain weights_only loading refuses the other script's Namespace and NumPy values.
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(kinds["other script"], weights_only=True)


@pytest.mark.parametrize("kind", ["ours", "2019", "2019 model_best", "DataParallel", "torch.compile",
                                  "other script"])
def test_every_kind_evaluates_to_the_same_accuracy(kind, kinds, tiny_data, reference_logits, tmp_path, capsys):
    code, out, err = run_main([tiny_data, "-e", "-j", "0", "--resume", kinds[kind], "--logdir", tmp_path,
                               "--run-name", "eval"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert_accuracy_of(result["top1"], *reference_logits)  # up to near ties, which -e's NHWC may break
    assert "=> " in out and "simplenet trained for" in out


def test_read_normalizes_the_2019_checkpoint(kinds):
    checkpoint = checkpoints.read(kinds["2019"])
    assert (checkpoint.kind, checkpoint.arch, checkpoint.arch_hint) == ("2019 harness", None, "simplenet")
    assert (checkpoint.epoch, checkpoint.best_acc1, checkpoint.num_classes) == (3, 12.5, NUM_CLASSES)
    assert checkpoint.lacks() == ["GradScaler state", "RNG states", "arguments"]
    assert checkpoints.read(kinds["2019 model_best"]).lacks()[0] == "optimizer state"
    other = checkpoints.read(kinds["other script"])
    assert (other.epoch, other.best_acc1, other.args) == (7, 12.5, {"lr": 0.1, "arch": "simplenet"})


def test_training_resumes_a_2019_checkpoint_from_its_epoch(kinds, tiny_data, tmp_path, capsys):
    code, out, err = run_main([tiny_data, "--resume", kinds["2019"], "--epochs", "4", "-b", "10", "-j", "0",
                               "--lr", "0.01", "--seed", "0", "--logdir", tmp_path, "--run-name", "resumed"], capsys)
    assert code == 0, err
    assert "epochs 3..3" in out
    assert re.search(r"a 2019 harness checkpoint, epoch 3\) lacks GradScaler state, RNG states, arguments: "
                     r"continuing with a fresh GradScaler, RNGs seeded from --seed 0, this command line", out)
    resumed = checkpoints.read(tmp_path / "resumed" / checkpoints.CHECKPOINT_NAME)
    assert (resumed.kind, resumed.arch, resumed.epoch) == ("main.py", "simplenet", 4)
    assert [m["epoch"] for m in json.loads((tmp_path / "resumed" / "metrics.json").read_text())] == [3]


def test_a_model_best_without_optimizer_says_so(kinds, tiny_data, tmp_path, capsys):
    code, out, _ = run_main([tiny_data, "--resume", kinds["2019 model_best"], "--epochs", "4", "-b", "10", "-j", "0",
                             "--seed", "0", "--logdir", tmp_path, "--run-name", "best"], capsys)
    assert code == 0
    assert "lacks optimizer state, GradScaler state, RNG states, arguments: continuing with a fresh SGD" in out


@pytest.fixture
def other_network_file(tmp_path):
    """CustomNet-2's weights under the 2019 harness's model_arch 'simplenet'."""
    _, model = models.build_model("customnet2", NUM_CLASSES)
    path = tmp_path / "customnet2_2019.pth.tar"
    torch.save({"epoch": 1, "model_arch": "simplenet", "state_dict": model.state_dict(),
                "best_acc1": torch.tensor(0.0)}, path)
    return path


def test_model_arch_is_not_trusted_when_the_weights_fit_another_network(other_network_file, tiny_data, tmp_path,
                                                                          capsys):
    code, out, err = run_main([tiny_data, "-e", "-j", "0", "--resume", other_network_file, "--logdir", tmp_path],
                              capsys)
    assert code == 0, err
    assert (f"=> {other_network_file}: its model_arch says 'simplenet', but its weights fit --arch customnet2 "
            "(CustomNet2): building that") in out


def test_a_given_arch_that_does_not_fit_names_the_one_that_does(other_network_file, tiny_data, tmp_path, capsys):
    code, _, err = run_main([tiny_data, "-e", "-j", "0", "--resume", other_network_file, "--arch", "simplenet",
                             "--logdir", tmp_path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: --resume: the weights in {other_network_file} do not fit simplenet (SimpleNet): ")
    assert err.strip().endswith("; they fit --arch customnet2")


def test_weights_that_fit_nothing_list_five_problems(tiny_data, tmp_path, capsys):
    path = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3), "fc.weight": torch.zeros(NUM_CLASSES, 7),
                "fc.bias": torch.zeros(NUM_CLASSES)}, path)
    code, _, err = run_main([tiny_data, "-e", "-j", "0", "--resume", path, "--logdir", tmp_path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    problems = err.split("do not fit simplenet (SimpleNet): ")[1].split("; they fit")[0].split("; ")
    assert problems[:5] == ["missing features.0.weight", "missing features.0.bias", "missing features.3.weight",
                            "missing features.3.bias", "missing features.5.weight"]
    assert re.fullmatch(r"and \d+ more", problems[5])
    assert err.strip().endswith("they fit no network of student_code.py or the harness")


def test_pickled_objects_stay_refused(network, tiny_data, tmp_path, capsys):
    # A whole pickled module, and a dict smuggling a callable: loading either would run code.
    torch.save(network, tmp_path / "module.pth")
    torch.save({"state_dict": network.state_dict(), "hook": os.getcwd}, tmp_path / "callable.pth")
    for name in ("module.pth", "callable.pth"):
        code, _, err = run_main([tiny_data, "-e", "-j", "0", "--resume", tmp_path / name, "--logdir", tmp_path],
                                capsys)
        assert code == 2
        assert err.strip() == (f"error: --resume: {tmp_path / name} is not a readable checkpoint (not a torch "
                               "checkpoint, or it holds objects other than tensors and plain data)")


@pytest.fixture
def nan_checkpoint(network, tmp_path):
    state = {k: v.clone() for k, v in network.state_dict().items()}
    state["features.3.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth.tar"
    torch.save({"epoch": 1, "arch": "simplenet", "conv_op": "Conv2d", "num_classes": NUM_CLASSES, "classes": None,
                "state_dict": state, "best_acc1": 0.0, "args": {}}, path)
    return path


@pytest.mark.parametrize("mode", ["-e", "-a"])
def test_non_finite_weights_are_refused_by_eval_and_attack(nan_checkpoint, tiny_data, tmp_path, capsys, mode):
    code, _, err = run_main([tiny_data, mode, "-j", "0", "--resume", nan_checkpoint, "--logdir", tmp_path], capsys)
    assert code == 2
    assert err.strip() == (f"error: --resume: the weights in {nan_checkpoint} are not finite (NaN or inf in "
                           "features.3.weight): the run that wrote it had diverged")


def test_non_finite_weights_are_refused_by_predict(nan_checkpoint, tiny_data, tmp_path, capsys):
    code = predict.main([str(tiny_data), "--resume", str(nan_checkpoint), "--out", str(tmp_path / "results"),
                         "--gpu", "-1", "-j", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "are not finite (NaN or inf in features.3.weight)" in err
    assert not (tmp_path / "results").exists()


def test_save_refuses_non_finite_state_and_keeps_the_last_file(tmp_path):
    checkpoints.save({"epoch": 1, "state_dict": {"w": torch.ones(2)}}, tmp_path, is_best=True)
    momentum = {"state": {0: {"momentum_buffer": torch.tensor([1.0, float("inf")])}}, "param_groups": []}
    for bad in ({"epoch": 2, "state_dict": {"w": torch.tensor([1.0, float("nan")])}},
                {"epoch": 2, "state_dict": {"w": torch.ones(2)}, "optimizer": momentum}):
        with pytest.raises(checkpoints.NonFiniteError, match="not writing a checkpoint of epoch 2: NaN or inf in"):
            checkpoints.save(bad, tmp_path, is_best=True)
    for name in (checkpoints.CHECKPOINT_NAME, checkpoints.BEST_NAME):
        assert checkpoints.read(tmp_path / name).epoch == 1


def test_wrapper_prefixes_are_stripped_in_any_nesting():
    weights = {"fc.weight": torch.zeros(1)}
    for prefix in ("module.", "_orig_mod.", "_orig_mod.module.", "module._orig_mod."):
        wrapped = {prefix + key: value for key, value in weights.items()}
        assert list(checkpoints.strip_wrapper_prefixes(wrapped)) == ["fc.weight"]
    # A prefix that only some keys share is part of the names.
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert checkpoints.strip_wrapper_prefixes(mixed) == mixed


def test_the_team_checkpoint_builds_the_teams_resnet_without_arch(shared_team):
    # The 2019 harness wrote model_arch 'simplenet' for every network; the weights say which one it is.
    path = shared_team / "checkpoints" / "resnet_model_best.pth.tar"
    checkpoint = checkpoints.read(path)
    arch, model, note = models.model_for_checkpoint(checkpoint, None, checkpoint.num_classes)
    assert (arch, type(model).__name__, checkpoint.epoch) == ("resnet", "ResNet", 90)
    assert note == (f"=> {path}: its model_arch says 'simplenet', but its weights fit --arch resnet (ResNet): "
                    "building that")
    checkpoints.load_weights(model, checkpoint)


# ---------------------------------------------------------------------------------------------------
# Where -e, -a and a resumed run write: never over files main.py did not write
# ---------------------------------------------------------------------------------------------------


def fingerprints(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_foreign_checkpoints_folder_is_left_as_it_was(kinds, tiny_data, tmp_path, capsys):
    folder = tmp_path / "from_2019"
    folder.mkdir()
    (folder / checkpoints.CHECKPOINT_NAME).write_bytes(kinds["2019"].read_bytes())
    before = fingerprints(folder)
    logdir = tmp_path / "logs"
    for extra in (["-e"], ["--epochs", "4", "-b", "10", "--seed", "0"]):  # evaluate, then resume training
        code, out, err = run_main([tiny_data, *extra, "-j", "0", "--resume", folder / checkpoints.CHECKPOINT_NAME,
                                   "--logdir", logdir], capsys)
        assert code == 0, err
    assert fingerprints(folder) == before
    assert len(list(logdir.iterdir())) == 2  # a new run folder each time


def test_a_read_only_run_folder_stays_untouched_even_for_root(network, tiny_data, tmp_path, capsys):
    # os.access says every folder is writable to root: the permission bits are honoured anyway.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"epoch": 1, "arch": "simplenet", "conv_op": "Conv2d", "num_classes": NUM_CLASSES, "classes": None,
                "state_dict": network.state_dict(), "best_acc1": 0.0, "args": {"seed": 0}},
               run_dir / checkpoints.CHECKPOINT_NAME)
    (run_dir / "args.json").write_text("{}")
    run_dir.chmod(0o555)
    try:
        code, _, err = run_main([tiny_data, "-e", "-j", "0", "--resume", run_dir / checkpoints.CHECKPOINT_NAME,
                                 "--logdir", tmp_path / "logs"], capsys)
    finally:
        run_dir.chmod(0o755)
    assert code == 0, err
    assert sorted(p.name for p in run_dir.iterdir()) == ["args.json", checkpoints.CHECKPOINT_NAME]
    (new_run,) = (tmp_path / "logs").iterdir()
    assert (new_run / "evaluation.json").is_file()


def test_another_scripts_arguments_are_not_taken_for_ours(network, tiny_data, tmp_path, capsys):
    path = tmp_path / "torchvision_reference.pth"
    torch.save({"model": network.state_dict(), "epoch": 1,
                "args": argparse.Namespace(arch="resnet50", epochs=90, lr=0.5, batch_size=256)}, path)
    code, out, err = run_main([tiny_data, "--resume", path, "--epochs", "2", "-b", "10", "-j", "0", "--seed", "0",
                               "--logdir", tmp_path / "logs", "--run-name", "r"], capsys)
    assert code == 0, err
    assert "resnet50" not in out + err
    assert [line for line in out.splitlines() if line.startswith("note:") and "bf16" not in line] == []
    assert "lacks optimizer state, GradScaler state, RNG states, arguments" in out
    args = json.loads((tmp_path / "logs" / "r" / "args.json").read_text())
    assert (args["arch"], args["epochs"], args["lr"], args["batch_size"]) == ("simplenet", 2, 0.1, 10)


@pytest.mark.parametrize("make, message", [
    (lambda path: torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": -5}, path),
     "'epoch' is -5; it counts finished epochs, so it cannot be negative"),
    (lambda path: path.mkdir(), "is a folder, not a checkpoint file"),
    # A bare state_dict says its classes through its classifier's rows.
    (lambda path: torch.save(student_code.SimpleNet(num_classes=100).state_dict(), path),
     "odd.pth was trained on 100 classes but"),
])
def test_impossible_checkpoints_are_one_line(make, message, tiny_data, tmp_path, capsys):
    path = tmp_path / "odd.pth"
    make(path)
    code, _, err = run_main([tiny_data, "-e", "-j", "0", "--resume", path, "--logdir", tmp_path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_model_best_is_written_even_when_every_epoch_scores_zero(tiny_data, tmp_path, monkeypatch, capsys):
    real_validate = engine.validate

    def zero(*args, **kwargs):
        return {**real_validate(*args, **kwargs), "top1": 0.0}

    monkeypatch.setattr(engine, "validate", zero)
    code, _, err = run_main([tiny_data, "--epochs", "1", "-b", "10", "-j", "0", "--seed", "0", "--logdir", tmp_path,
                             "--run-name", "zero"], capsys)
    assert code == 0, err
    assert checkpoints.read(tmp_path / "zero" / checkpoints.BEST_NAME).epoch == 1
