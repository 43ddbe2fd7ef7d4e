"""Resumed runs keep their settings and their TensorBoard history clean; flags are checked against the
run's context (issue 13, items 5, 6 and 8).

Runs call main.main([...]) in-process on a tiny generated dataset on the CPU; a run is "interrupted"
after its first epoch by a KeyboardInterrupt from engine.train_one_epoch, as Ctrl-C would.
Run: python -m pytest tests/test_resume.py -q
"""
import json
import os
import shutil
import types
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from harness import checkpoints, devices, engine, loaders, runs, training
import main
import helpers
from helpers import run_main, run_torchrun

ITERS = 5  # conftest's tiny_data: 20 training images, batch 4


def argv(data, logdir, run_name, *extra, epochs=3, batch_size=4):
    return helpers.train_argv(data, logdir, run_name, *extra, epochs=epochs, batch_size=batch_size, lr=0.05,
                              print_freq=2)


def interrupted_after(epochs_done, monkeypatch):
    """Make engine.train_one_epoch raise KeyboardInterrupt when it reaches epoch `epochs_done`."""
    real = engine.train_one_epoch

    def stop(*args, **kwargs):
        if kwargs["epoch"] == epochs_done:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", stop)
    return real


@pytest.fixture(scope="module")
def custom_conv_run(tiny_data, tmp_path_factory):
    """A --use-custom-conv run stopped after its first epoch: (logdir, run folder)."""
    logdir = tmp_path_factory.mktemp("logs")
    with pytest.MonkeyPatch.context() as monkeypatch:
        interrupted_after(1, monkeypatch)
        assert main.main(argv(tiny_data, logdir, "custom", "--use-custom-conv", "--no-channels-last")) == 130
    return logdir, logdir / "custom"


def test_resume_keeps_the_runs_settings(custom_conv_run, tiny_data, tmp_path, capsys):
    logdir, run_dir = custom_conv_run
    copy = tmp_path / "custom"
    shutil.copytree(run_dir, copy)
    # Nothing but the data and the checkpoint: the conv op, lr and epochs come from the run; a network
    # built with the custom conv runs NCHW by default, as the run did, so nothing is said.
    code, out, err = run_main([str(tiny_data), "--resume", str(copy / checkpoints.CHECKPOINT_NAME), "-j", "0",
                               "--gpu", "-1"], capsys)
    assert code == 0, err
    assert "=> simplenet (CustomConv2d) on cpu (NCHW)" in out and "epochs 1..2" in out
    args = json.loads((copy / "args.json").read_text())
    assert (args["use_custom_conv"], args["channels_last"], args["lr"], args["epochs"], args["batch_size"]) == \
        (True, False, 0.05, 3, 4)
    assert checkpoints.read(copy / checkpoints.CHECKPOINT_NAME).conv_op == "CustomConv2d"
    # (A CPU with native bf16 says what --amp would give: about the machine, not the resume.)
    assert [line for line in out.splitlines() if line.startswith("note:") and "bf16" not in line] == []


@pytest.mark.parametrize("trained, now, given, expected", [
    (False, True, set(), "note: the run trained in NCHW; it continues in NHWC, the default on cpu "
                         "(--no-channels-last keeps the run's)"),
    (True, False, set(), "note: the run trained in NHWC; it continues in NCHW, the default on cpu "
                         "(--channels-last keeps the run's)"),
    (False, True, {"channels_last"}, None),  # asked for: nothing to say
    (True, True, set(), None),
])
def test_a_resumed_run_in_another_memory_format_says_so(trained, now, given, expected):
    checkpoint = checkpoints.Checkpoint(Path("c.pth"), "main.py", {}, args={"channels_last": trained})
    config = types.SimpleNamespace(channels_last=now)
    assert runs.memory_format_note(config, given, devices.Context(torch.device("cpu")), checkpoint) == expected


def test_a_flag_given_again_with_another_value_is_applied_and_said(custom_conv_run, tiny_data, tmp_path, capsys):
    _, run_dir = custom_conv_run
    copy = tmp_path / "custom"
    shutil.copytree(run_dir, copy)
    code, out, err = run_main([str(tiny_data), "--resume", str(copy / checkpoints.CHECKPOINT_NAME), "-j", "0",
                               "--gpu", "-1", "--lr", "0.02", "--amp", "--channels-last", "--epochs", "2",
                               "--no-use-custom-conv"],
                              capsys)
    assert code == 0, err
    assert "note: --epochs 2 replaces the run's 3 from here on" in out  # one epoch left: bf16 is slow on AVX2
    assert "note: --lr 0.02 replaces the run's 0.05 from here on" in out
    assert "note: --amp switches mixed precision on for the rest of the run, with a fresh GradScaler" in out
    assert "it continues in" not in out  # asked for, so nothing to say
    args = json.loads((copy / "args.json").read_text())
    assert "note: --use-custom-conv is off from here on (the run started with it on)" in out
    assert "=> simplenet (Conv2d)" in out  # one state_dict serves both conv ops
    assert (args["lr"], args["amp"], args["channels_last"], args["use_custom_conv"]) == (0.02, True, True, False)


def test_switching_amp_on_starts_a_fresh_grad_scaler():
    # On a GPU --amp means an enabled GradScaler; the run it resumes saved a disabled one's empty state.
    model = torch.nn.Linear(2, 2)
    run = types.SimpleNamespace(config=types.SimpleNamespace(epochs=3, seed=0), start_epoch=0, best_acc1=0.0,
                                optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                scaler=torch.amp.GradScaler("cpu", enabled=True), pending=None)
    disabled = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert disabled == {}  # what loading into an enabled scaler used to die on
    checkpoint = checkpoints.Checkpoint(Path("c.pth"), "main.py", {}, epoch=1, optimizer=run.optimizer.state_dict(),
                                        scaler=disabled, rng=None, args={"seed": 0})
    said = []
    training.restore_training_state(run, checkpoint, said.append)
    assert run.scaler.get_scale() == 65536.0 and run.start_epoch == 1
    assert said == ["=> c.pth (a main.py checkpoint, epoch 1) lacks RNG states: continuing with RNGs seeded "
                    "from --seed 0"]


def test_an_arch_given_against_the_checkpoint_is_refused(custom_conv_run, tiny_data, capsys):
    _, run_dir = custom_conv_run
    code, _, err = run_main([str(tiny_data), "--resume", str(run_dir / checkpoints.CHECKPOINT_NAME), "-j", "0",
                             "--arch", "customnet2"], capsys)
    assert code == 2
    assert err.strip() == (f"error: --resume: {run_dir / checkpoints.CHECKPOINT_NAME} holds a 'simplenet' "
                           "checkpoint, not --arch 'customnet2'")


def series_steps(logdir):
    """{(run, tag): [steps]} of every scalar series TensorBoard shows under `logdir`."""
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return {(run, tag): [event.step for event in multiplexer.Scalars(run, tag)]
            for run, tags in multiplexer.Runs().items() for tag in tags["scalars"]}


def test_tensorboard_shows_each_step_once_after_resuming_twice(tiny_data, tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "logs"
    interrupted_after(2, monkeypatch)
    assert main.main(argv(tiny_data, logdir, "run")) == 130
    saved = tmp_path / "after_epoch_2.pth.tar"
    shutil.copy(logdir / "run" / checkpoints.CHECKPOINT_NAME, saved)
    monkeypatch.undo()
    for _ in range(2):  # resume twice from the same earlier checkpoint
        assert main.main(argv(tiny_data, logdir, "run", "--resume", saved)) == 0
    capsys.readouterr()

    steps = series_steps(logdir)
    assert steps[("run/data_top1_accuracy_val", "data/top1_accuracy")] == [1, 2, 3]
    assert steps[("run/data_top5_accuracy_train", "data/top5_accuracy")] == [1, 2, 3]
    assert steps[("run", "data/validation_loss")] == [ITERS - 1, 2 * ITERS - 1, 3 * ITERS - 1]
    assert steps[("run", "data/training_loss")] == [s for s in range(3 * ITERS) if s % ITERS % 2 == 0]
    for key, values in steps.items():
        assert values == sorted(set(values)), key
    metrics = json.loads((logdir / "run" / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [0, 1, 2]


def test_a_checkpoint_written_before_validation_is_validated_on_resume(tiny_data, tmp_path, monkeypatch, capsys):
    # Validation crashes after epoch 0's training: the epoch is on disk and its record completes on resume.
    logdir = tmp_path / "logs"
    real_validate = engine.validate

    def crash(*args, **kwargs):
        raise RuntimeError("a validation image broke the batch")

    monkeypatch.setattr(engine, "validate", crash)
    with pytest.raises(RuntimeError, match="broke the batch"):
        main.main(argv(tiny_data, logdir, "run", epochs=2))
    checkpoint = checkpoints.read(logdir / "run" / checkpoints.CHECKPOINT_NAME)
    assert (checkpoint.epoch, checkpoint.validated) == (1, False)
    assert checkpoint.pending_record["epoch"] == 0 and "val_top1" not in checkpoint.pending_record

    monkeypatch.setattr(engine, "validate", real_validate)
    code, out, err = run_main(argv(tiny_data, logdir, "run", "--resume", logdir / "run" / checkpoints.CHECKPOINT_NAME,
                                   epochs=2), capsys)
    assert code == 0, err
    assert " * Epoch 0:" in out and " * Epoch 1:" in out
    metrics = json.loads((logdir / "run" / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert metrics[0]["train_loss"] == checkpoint.pending_record["train_loss"]
    assert all("val_top1" in m for m in metrics)


@pytest.mark.parametrize("cores, processes, workers, expected", [(2, 1, 8, 2), (2, 1, 2, 2), (8, 4, 4, 2)])
def test_more_workers_than_cores_are_cut_down(cores, processes, workers, expected, monkeypatch, capsys):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert loaders.cap_workers(workers) == expected
    out = capsys.readouterr().out
    assert ("using" in out) == (workers > expected)


def test_torchrun_refuses_a_batch_that_does_not_split(tiny_data, tmp_path):
    # Under 2 processes -b 5 would have trained at 4 while args.json said 5.
    code, _, err = run_torchrun(argv(tiny_data, tmp_path, "odd", epochs=1, batch_size=5))
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines == ["error: -b/--batch-size 5 does not split evenly over the 2 processes of this torchrun: "
                     "give a multiple of 2 (e.g. 4 or 6)"]
    assert not (tmp_path / "odd").exists()  # refused before any work
