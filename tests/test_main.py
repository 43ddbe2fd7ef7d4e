"""Tests of the training driver: main.py end to end on a tiny generated dataset, engine.py's loops and
the training helpers of utils.py.

The end-to-end runs call main.main([...]) in-process on demo_data's 128x128 scenes (2 train and 1 val
image per class, 10 classes) on the CPU; one module-scoped 2-epoch run serves as the reference for
the checkpoint, TensorBoard, resume, -e and -a tests. Only the exit-code and torchrun tests start
processes.
Run: python -m pytest tests/test_main.py -q --durations=10
"""
import io
import json
import math
import random
import re
import shlex

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness import checkpoints, demo_data, devices, engine, evaluation, metrics, rng, runs
import custom_dataloader
import custom_transforms
import main
import student_code
from harness.images import encode_png
from helpers import MAIN_PY, assert_accuracy_of, load_model, run_main, run_python, run_torchrun, val_logits
import helpers

TRAIN_PER_CLASS, VAL_PER_CLASS = 2, 1  # conftest's tiny_data
EPOCHS, BATCH, PRINT_FREQ = 2, 4, 2
ITERS = demo_data.DEMO_NUM_CLASSES * TRAIN_PER_CLASS // BATCH  # 5 per epoch (drop_last)
METRIC_KEYS = {"epoch", "lr", "train_loss", "train_top1", "train_top5", "val_top1", "val_top5",
               "epoch_minutes", "images_per_s", "peak_mem_mib", "device"}


def train_argv(data, logdir, run_name, *extra, epochs=EPOCHS, warmup_epochs=1):
    return helpers.train_argv(data, logdir, run_name, *extra, epochs=epochs, warmup_epochs=warmup_epochs,
                              batch_size=BATCH, lr=0.05, print_freq=PRINT_FREQ)


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """The uninterrupted 2-epoch reference run: its folder."""
    logdir = tmp_path_factory.mktemp("logs")
    assert main.main(train_argv(tiny_data, logdir, "full")) == 0
    return logdir / "full"


def scalars(folder, tag):
    """[(step, value)] of a scalar tag in the events files of `folder`."""
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def image_tags(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0})
    accumulator.Reload()
    return set(accumulator.Tags()["images"])


def val_batches(data):
    val_set = custom_dataloader.MiniPlacesLoader(data, num_classes=demo_data.DEMO_NUM_CLASSES, split="val",
                                                 transforms=custom_transforms.get_val_transforms())
    return torch.utils.data.DataLoader(val_set, batch_size=100)


# ---------------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------------


def test_training_writes_a_complete_checkpoint(trained_run, tiny_data):
    checkpoint = torch.load(trained_run / checkpoints.CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert {"epoch", "arch", "conv_op", "num_classes", "classes", "state_dict", "best_acc1", "optimizer",
            "scaler", "rng", "args"} <= checkpoint.keys()
    assert (checkpoint["epoch"], checkpoint["arch"], checkpoint["conv_op"]) == (EPOCHS, "simplenet", "Conv2d")
    assert checkpoint["num_classes"] == len(checkpoint["classes"]) == demo_data.DEMO_NUM_CLASSES
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["rng"].values())
    assert checkpoint["args"]["seed"] == 0 and checkpoint["args"]["data_folder"] == str(tiny_data)
    # SGD keeps one momentum buffer per parameter.
    assert len(checkpoint["optimizer"]["state"]) == len(list(student_code.SimpleNet().parameters()))

    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS))
    assert all(METRIC_KEYS <= m.keys() and m["device"] == "cpu" and m["peak_mem_mib"] > 0 for m in metrics)
    assert checkpoint["best_acc1"] == max(m["val_top1"] for m in metrics)
    best = torch.load(trained_run / checkpoints.BEST_NAME, map_location="cpu", weights_only=True)
    assert metrics[best["epoch"] - 1]["val_top1"] == checkpoint["best_acc1"]
    assert json.loads((trained_run / "args.json").read_text())["epochs"] == EPOCHS
    assert not list(trained_run.glob(".*tmp*"))  # no temporaries left behind


def test_tensorboard_tags_and_steps(trained_run):
    # The assignment's tags, every print-freq iterations at the global iteration.
    expected_steps = [e * ITERS + i for e in range(EPOCHS) for i in range(0, ITERS, PRINT_FREQ)]
    loss = scalars(trained_run, "data/training_loss")
    lr = scalars(trained_run, "data/learning_rate")
    assert [s for s, _ in loss] == [s for s, _ in lr] == expected_steps
    # Warm-up over epoch 0 from 0, then the cosine over all EPOCHS * ITERS iterations.
    total, warm = EPOCHS * ITERS, ITERS
    hand = [0.05 * s / warm if s < warm else 0.5 * 0.05 * (1 + math.cos(math.pi * s / total)) for s in expected_steps]
    assert [v for _, v in lr] == pytest.approx(hand, rel=1e-6, abs=1e-9)
    assert all(math.isfinite(v) for _, v in loss)

    # add_scalars: one folder per series, each holding the original tag.
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for k in ("1", "5"):
        for series in ("train", "val"):
            points = scalars(trained_run / f"data_top{k}_accuracy_{series}", f"data/top{k}_accuracy")
            # x = the 1-based epoch, as the 2019 harness logged it.
            assert points == [(m["epoch"] + 1, pytest.approx(m[f"{series}_top{k}"], rel=1e-6)) for m in metrics]
    # Once per epoch, at the global iteration of the epoch's last step (the training loss's axis).
    for tag in ("data/validation_loss", "perf/epoch_minutes", "perf/images_per_s", "perf/peak_mem_mib"):
        assert [s for s, _ in scalars(trained_run, tag)] == [(e + 1) * ITERS - 1 for e in range(EPOCHS)]


def test_resumed_run_matches_the_uninterrupted_one(trained_run, tiny_data, tmp_path, capsys, monkeypatch):
    # Worth its two short trainings: exact resume (weights, optimizer, RNGs, schedule) is checked
    # nowhere else, and a subtly wrong resume only shows after days of GPU time.
    logdir = tmp_path / "logs"
    real_epoch = engine.train_one_epoch

    def killed_in_epoch_1(*args, **kwargs):
        if kwargs["epoch"] == 1:
            raise KeyboardInterrupt  # as if Ctrl-C arrived after epoch 0's checkpoint
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", killed_in_epoch_1)
    code, _, err = run_main(train_argv(tiny_data, logdir, "resumed"), capsys)
    assert code == 130 and "--resume" in err
    checkpoint_path = logdir / "resumed" / checkpoints.CHECKPOINT_NAME
    assert torch.load(checkpoint_path, weights_only=True)["epoch"] == 1

    monkeypatch.setattr(engine, "train_one_epoch", real_epoch)
    code, out, _ = run_main(train_argv(tiny_data, logdir, "resumed", "--resume", checkpoint_path), capsys)
    assert code == 0 and "epochs 1..1" in out
    resumed = torch.load(checkpoint_path, weights_only=True)
    reference = torch.load(trained_run / checkpoints.CHECKPOINT_NAME, weights_only=True)
    assert resumed["epoch"] == EPOCHS
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    metrics = json.loads((logdir / "resumed" / "metrics.json").read_text())
    reference_metrics = json.loads((trained_run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS))
    assert [m["train_loss"] for m in metrics] == [m["train_loss"] for m in reference_metrics]


# ---------------------------------------------------------------------------------------------------
# -e and -a
# ---------------------------------------------------------------------------------------------------


def test_evaluate_with_saliency_maps(trained_run, tiny_data, tmp_path, capsys):
    logdir = tmp_path / "logs"
    argv = [tiny_data, "-e", "-v", "--resume", trained_run / checkpoints.CHECKPOINT_NAME, "-j", "0",
            "--logdir", logdir, "--run-name", "eval"]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    result = json.loads((logdir / "eval" / "evaluation.json").read_text())
    assert f"Acc@1 {result['top1']:.3f} Acc@5 {result['top5']:.3f}" in out
    assert result["count"] == demo_data.DEMO_NUM_CLASSES * VAL_PER_CLASS

    # Someone else's answer: the flip-averaged logits computed here, outside engine.py (up to near ties,
    # which rounding in another memory format or on another CPU may break either way).
    model = load_model(trained_run / checkpoints.CHECKPOINT_NAME)
    assert_accuracy_of(result["top1"], *val_logits(model, tiny_data))
    assert image_tags(logdir / "eval") == {"Image/Image_Atten"}
    # One PNG serves TensorBoard and the file; it decodes to the grid that the student's code drew.
    png = (logdir / "eval" / "Image_Atten_0000.png").read_bytes()
    accumulator = EventAccumulator(str(logdir / "eval"), size_guidance={"images": 0})
    accumulator.Reload()
    (event,) = accumulator.Images("Image/Image_Atten")
    assert event.encoded_image_string == png and event.step == 0
    images, _ = next(iter(val_batches(tiny_data)))
    saliency = student_code.default_attention(nn.CrossEntropyLoss()).explain(model, images)
    grid = student_code.default_visfunction(images, vis_output=saliency)  # (3, H', W') in [0, 1]
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert decoded.shape == (grid.shape[1], grid.shape[2], 3) and (event.height, event.width) == grid.shape[1:]
    expected = (grid * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    # main.py ran the model channels-last: a saliency value on the threshold may round the other way.
    assert (np.abs(decoded.astype(int) - expected) > 1).mean() < 1e-3


@pytest.mark.parametrize("requested, device, amp, expected", [
    (None, "cpu", False, True), (None, "cpu", True, True), (False, "cpu", False, False),
    (None, "cuda", False, False), (None, "cuda", True, True), (True, "cuda", False, True),
    (False, "cuda", True, False), (None, "meta", False, False),
])
def test_memory_format_is_chosen_per_device_unless_forced(requested, device, amp, expected):
    assert devices.use_channels_last(requested, torch.device(device), amp) is expected


def test_evaluation_is_the_same_in_either_memory_format(trained_run, tiny_data, tmp_path, capsys):
    # Training on the CPU chose channels-last by itself; -e may be forced to either format.
    assert json.loads((trained_run / "args.json").read_text())["channels_last"] is True
    results = {}
    for flag, name in (("--channels-last", "NHWC"), ("--no-channels-last", "NCHW")):
        argv = [tiny_data, "-e", "--resume", trained_run / checkpoints.CHECKPOINT_NAME, "-j", "0",
                "--logdir", tmp_path, "--run-name", name, flag]
        code, out, _ = run_main(argv, capsys)
        assert code == 0 and f"on cpu ({name})" in out
        results[name] = json.loads((tmp_path / name / "evaluation.json").read_text())
    nhwc, nchw = results["NHWC"], results["NCHW"]
    # The same accuracies but for near ties, which the formats' rounding may break either way.
    logits, labels = val_logits(load_model(trained_run / checkpoints.CHECKPOINT_NAME), tiny_data)
    for result in (nhwc, nchw):
        assert_accuracy_of(result["top1"], logits, labels, k=1)
        assert_accuracy_of(result["top5"], logits, labels, k=5)
    assert nhwc["loss"] == pytest.approx(nchw["loss"], rel=1e-5)


def test_png_grids_of_one_three_and_four_channels_decode_to_their_pixels():
    grids = {1: torch.rand(1, 5, 7), 3: torch.rand(3, 5, 7), 4: torch.rand(4, 5, 7)}
    for channels, grid in grids.items():
        decoded = np.asarray(Image.open(io.BytesIO(encode_png(grid))))
        expected = (grid * 255 + 0.5).floor().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(decoded.reshape(expected.shape), expected), channels
    with pytest.raises(ValueError, match=r"must be \(C, H, W\) with C in 1, 3, 4, got \(2, 5, 7\)"):
        encode_png(torch.rand(2, 5, 7))


def test_attack_sweep_with_images(trained_run, tiny_data, capsys, monkeypatch):
    # Worth its ~10 s: the only run of -a, -v and --eps-sweep through main.py. The sweep is cut to two
    # epsilons (the loop is the same for five); each nonzero one costs 10 PGD steps over val.
    monkeypatch.setattr(evaluation, "SWEEP_EPSILONS", (0.0, 0.1))
    argv = [tiny_data, "-a", "-v", "--eps-sweep", "--resume", trained_run / checkpoints.CHECKPOINT_NAME, "-j", "0"]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    result = json.loads((trained_run / "attack.json").read_text())
    # Clean accuracy of the last checkpoint = the last epoch's val accuracy (same model, same images, no
    # flip; batches of other sizes, so up to near ties).
    last_val = json.loads((trained_run / "metrics.json").read_text())[-1]
    logits, labels = val_logits(load_model(trained_run / checkpoints.CHECKPOINT_NAME), tiny_data, flip=False)
    for k in (1, 5):
        assert_accuracy_of(result["clean"][f"top{k}"], logits, labels, k)
        assert_accuracy_of(last_val[f"val_top{k}"], logits, labels, k)
    rows = {row["epsilon"]: row for row in result["attacks"]}
    assert sorted(rows) == list(evaluation.SWEEP_EPSILONS)
    assert rows[0.0]["top1"] == pytest.approx(result["clean"]["top1"])
    assert rows[0.1]["top1"] <= result["clean"]["top1"]
    table = (trained_run / "robustness.md").read_text()
    assert all(f"| {eps} | {rows[eps]['top1']:.2f} |" in table for eps in rows)
    assert (trained_run / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert {"Image/Org_Image", "Image/Adv_Image", "Image/Adv_Perturbation"} <= image_tags(trained_run)
    for name in ("Org_Image_0000.png", "Adv_Image_0000.png", "Adv_Perturbation_0000.png"):
        assert (trained_run / name).is_file(), name
    assert "epsilon 0.1:" in out
    assert re.search(r"Image/Adv_Perturbation: .* magnified x\d+ \(its largest change: \d+\.\d of 255 grey "
                     r"levels\)", out)


def test_the_printed_tensorboard_command_can_be_pasted(tiny_data, tmp_path, capsys):
    logdir = tmp_path / "log dir" / "journaux é"
    code, out, err = run_main([str(tiny_data), "--epochs", "1", "-b", "10", "-j", "0", "--gpu", "-1",
                               "--logdir", logdir, "--run-name", "r"], capsys)
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if "view it with:" in line]
    command = line.split("view it with:", 1)[1].strip()
    assert shlex.split(command) == ["tensorboard", "--logdir", str(logdir)]


def test_demo_runs_training_evaluation_and_attack(tiny_data, tmp_path, capsys, monkeypatch):
    # The README's first command, on the tiny dataset instead of the full demo one, with a 2-step
    # default attack (the attack's own tests cover its 10 steps; here only the wiring counts).
    monkeypatch.setattr(demo_data, "ensure_demo_dataset", lambda *args, **kwargs: tiny_data)
    monkeypatch.setattr(student_code, "default_attack",
                        lambda loss_fn: student_code.PGDAttack(loss_fn, num_steps=2, step_size=0.05))
    logdir = tmp_path / "logs"
    code, out, _ = run_main(["--demo", "--epochs", "1", "--warmup-epochs", "0", "-b", "4", "-j", "0",
                             "--gpu", "-1", "--logdir", logdir], capsys)
    assert code == 0
    (run_dir,) = logdir.iterdir()
    assert f"tensorboard --logdir {logdir}" in out
    for name in (checkpoints.CHECKPOINT_NAME, checkpoints.BEST_NAME, "metrics.json", "evaluation.json", "attack.json",
                 "demo.json", "Image_Atten_0000.png", "Org_Image_0000.png", "Adv_Image_0000.png",
                 "Adv_Perturbation_0000.png"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "args.json").read_text())["epochs"] == 1
    # The table it ends with, and the same figures in demo.json, taken from -e's and -a's own files.
    summary = json.loads((run_dir / "demo.json").read_text())
    evaluated = json.loads((run_dir / "evaluation.json").read_text())
    (attacked,) = json.loads((run_dir / "attack.json").read_text())["attacks"]
    assert summary["clean"]["top1"] == evaluated["top1"] and summary["attack"]["top1"] == attacked["top1"]
    assert summary["attack"]["images"] == demo_data.DEMO_NUM_CLASSES  # every val image of tiny_data
    # 2 steps of 0.05 reach epsilon 0.1 in normalized units: at most 0.1 * 0.229 * 255 grey levels (red's std)
    assert 0 < summary["attack"]["max_change_grey_levels"] <= 0.1 * 0.229 * 255 + 1e-3
    assert set(summary["seconds"]) == {"data", "training", "evaluation", "attack", "total"}
    assert summary["run_dir"] == str(run_dir)
    table = out[out.index("Demo summary"):]
    assert f"{evaluated['top1']:7.2f}" in table and f"{attacked['top1']:7.2f}" in table
    assert f"view it with:  tensorboard --logdir {logdir}" in table


# ---------------------------------------------------------------------------------------------------
# User errors: one line, exit code 2
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def bad_checkpoints(trained_run, tmp_path):
    data = (trained_run / checkpoints.CHECKPOINT_NAME).read_bytes()
    (tmp_path / "truncated.pth.tar").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], r"data folder .*nowhere does not exist"),
    (["{data}", "-e"], r"-e/--evaluate needs --resume"),
    (["{data}", "-a"], r"-a/--attack needs --resume"),
    (["{data}", "-e", "-a", "--resume", "{ckpt}"], r"-e/--evaluate and -a/--attack cannot be combined"),
    (["{data}", "-v"], r"-v/--vis works with -e/--evaluate or -a/--attack"),
    (["{data}", "--eps-sweep"], r"--eps-sweep works with -a/--attack"),
    (["{data}", "-e", "--resume", "{tmp}/absent.pth.tar"], r"--resume: no checkpoint file at .*absent\.pth\.tar"),
    (["{data}", "-e", "--resume", "{tmp}/truncated.pth.tar"], r"--resume: .*truncated\.pth\.tar is not a readable checkpoint"),
    (["{data}", "-e", "--resume", "{tmp}/notes.txt"], r"--resume: .*notes\.txt is not a readable checkpoint"),
    (["{data}", "-e", "--resume", "{ckpt}", "--arch", "customnet2"], r"holds a 'simplenet' checkpoint, not --arch 'customnet2'"),
    (["{data}", "--epochs", "0"], r"--epochs must be at least 1, got 0"),
    (["{data}", "--warmup-epochs", "5", "--epochs", "2"], r"--warmup-epochs \(5\) exceeds --epochs \(2\)"),
    (["{data}", "--lr", "-1"], r"--lr must be positive"),
    (["{data}", "--lr", "1e308"], r"--lr must be a finite number \(float32\), got 1e\+308"),
    (["{data}", "--momentum", "nan"], r"--momentum must be a finite number \(float32\), got nan"),
    (["{data}", "--warmup-epochs", "nan"], r"--warmup-epochs must be a finite number \(float32\), got nan"),
    (["{data}", "--arch", "vgg"], r"argument --arch: invalid choice: 'vgg'"),
    (["{data}", "-b", "ten"], r"argument -b/--batch-size: invalid int value: 'ten'"),
    (["{data}", "-b", "1000", "--gpu", "-1"], r"-b/--batch-size 1000 exceeds the 20 training images"),
])
def test_user_errors_are_one_line(argv, message, tiny_data, trained_run, bad_checkpoints, capsys):
    values = {"data": tiny_data, "missing": bad_checkpoints / "nowhere", "tmp": bad_checkpoints,
              "ckpt": trained_run / checkpoints.CHECKPOINT_NAME}
    code, _, err = run_main([a.format(**values) for a in argv] + ["-j", "0", "--logdir", bad_checkpoints], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err


def test_data_errors_name_the_file(tiny_data, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "images").mkdir()
    (broken / "categories.txt").write_text((tiny_data / "categories.txt").read_text())
    (broken / "train.txt").write_text("train/b/beach/00000001.jpg 0\n")  # listed but absent
    code, _, err = run_main([broken, "-j", "0", "--gpu", "-1", "--logdir", tmp_path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "train.txt:1" in err and "not found" in err


def test_metrics_of_a_resumed_run_read_with_a_bom(tmp_path):
    # metrics.json edited and saved by a Windows editor ("UTF-8 with BOM") still counts.
    records = [{"epoch": 0, "val_top1": 10.0}, {"epoch": 1, "val_top1": 20.0}]
    (tmp_path / "metrics.json").write_text("\ufeff" + json.dumps(records), encoding="utf-8")
    assert runs.load_metrics(tmp_path, epochs_done=1) == records[:1]


def test_script_exit_code_without_traceback(tmp_path):
    # A real process (a few seconds of imports): `python code/main.py` must exit 2 with one line,
    # not a traceback; in-process calls cannot show the interpreter's own exit path.
    code, _, err = run_python(MAIN_PY, tmp_path / "nowhere", timeout=120)
    assert code == 2
    assert err.strip().splitlines() == [f"error: data folder {tmp_path / 'nowhere'} does not exist "
                                                  "(give the MiniPlaces folder, or run --demo)"]


# ---------------------------------------------------------------------------------------------------
# Distributed
# ---------------------------------------------------------------------------------------------------


def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    # Worth its ~20 s: the only check that DDP, gloo, the samplers and the all-reduced metrics work.
    code, out, err = run_torchrun(train_argv(tiny_data, tmp_path, "ddp", epochs=1, warmup_epochs=0))
    assert code == 0, err[-2000:]
    run_dir = tmp_path / "ddp"
    assert out.count("2 process(es)") == 1  # only rank 0 prints
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # only rank 0 logs
    (record,) = json.loads((run_dir / "metrics.json").read_text())
    assert record["world_size"] == 2

    # Each rank validated half of val; the all-reduced accuracy must equal a one-process pass (up to near
    # ties, which the ranks' batches and memory format may break either way).
    model = load_model(run_dir / checkpoints.CHECKPOINT_NAME)
    val = engine.validate(model, val_batches(tiny_data), nn.CrossEntropyLoss(), torch.device("cpu"))
    assert val["count"] == demo_data.DEMO_NUM_CLASSES * VAL_PER_CLASS
    logits, labels = val_logits(model, tiny_data, flip=False)
    for k in (1, 5):
        assert_accuracy_of(record[f"val_top{k}"], logits, labels, k)
        assert_accuracy_of(val[f"top{k}"], logits, labels, k)


# ---------------------------------------------------------------------------------------------------
# engine.py and utils.py units
# ---------------------------------------------------------------------------------------------------


def test_schedule_warm_up_then_cosine():
    # 2 warm-up iterations of 10: lr 0, 0.05 with weight decay 0; then cosine from the global iteration.
    values = [engine.lr_and_weight_decay(s, 10, 2, 0.1, 1e-4) for s in range(10)]
    assert values[0] == (0.0, 0.0) and values[1] == (pytest.approx(0.05), 0.0)
    assert values[2] == (pytest.approx(0.05 * (1 + math.cos(math.pi * 0.2))), 1e-4)
    assert values[5][0] == pytest.approx(0.05)  # half-way: cos(pi / 2) = 0
    assert values[9][0] == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.9)))
    assert engine.lr_and_weight_decay(0, 10, 0, 0.1, 1e-4) == (pytest.approx(0.1), 1e-4)


def test_accuracy_and_average_meter():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]])
    labels = torch.tensor([1, 2, 2, 1])  # top-1 hits rows 0, 2; top-2 also row 3
    top1, top2, top5 = metrics.accuracy(logits, labels, topk=(1, 2, 5))
    assert (top1.item(), top2.item(), top5.item()) == (50.0, 75.0, 100.0)

    meter = metrics.AverageMeter("Loss", ":.2f")
    meter.update(torch.tensor(2.0), n=3)
    meter.update(1.0, n=1)
    assert meter.avg == pytest.approx(7.0 / 4) and meter.count == 4
    assert str(meter) == "Loss 1.00 (1.75)"


def test_validate_averages_the_flipped_image():
    # A model that sees only the left half: flipping changes its logits, so averaging is visible.
    class LeftHalf(nn.Module):
        def forward(self, x):  # (N, 3, H, W) -> (N, 3)
            return x[..., : x.shape[-1] // 2].mean(dim=(2, 3))

    images = torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    model = LeftHalf()
    # The flip brings the right half to the left, so the averaged logits are the whole image's mean.
    averaged = images.mean(dim=(2, 3))  # (12, 3)
    labels = averaged.argmax(1)  # averaging gets every image right ...
    plain = 100.0 * (model(images).argmax(1) == labels).float().mean().item()
    assert plain < 100.0  # ... the left half alone does not
    batches = [(images[:5], labels[:5]), (images[5:], labels[5:])]
    device = torch.device("cpu")
    result = engine.validate(model, batches, nn.CrossEntropyLoss(), device, flip_average=True)
    assert result["top1"] == pytest.approx(100.0) and result["count"] == 12
    assert engine.validate(model, batches, nn.CrossEntropyLoss(), device)["top1"] == pytest.approx(plain)
    expected_loss = nn.functional.cross_entropy(averaged, labels).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_train_step_bf16_autocast_matches_full_precision_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    expected = nn.functional.cross_entropy(model(images), labels).item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    amp_dtype, scaler = devices.amp_settings(True, torch.device("cpu"))
    assert amp_dtype == torch.bfloat16 and not scaler.is_enabled()
    before = [p.detach().clone() for p in model.parameters()]
    loss, output = engine.train_step(model, images, labels, nn.CrossEntropyLoss(), optimizer, scaler, amp_dtype)
    assert output.dtype == torch.bfloat16 and loss.item() == pytest.approx(expected, abs=0.05)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    checkpoints.save({"arch": "simplenet", "state_dict": {"w": torch.ones(2)}}, tmp_path, is_best=True)
    real_save = torch.save

    def dies_half_way(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save({"arch": "simplenet", "state_dict": {"w": torch.zeros(2)}}, tmp_path, is_best=True)
    monkeypatch.setattr(torch, "save", real_save)
    for name in (checkpoints.CHECKPOINT_NAME, checkpoints.BEST_NAME):
        assert torch.equal(checkpoints.load_file(tmp_path / name)["state_dict"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoints.CHECKPOINT_NAME, checkpoints.BEST_NAME]


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    rng.seed_everything(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    torch.save(rng.get_rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3), random.random(), random.gauss(0, 1), np.random.rand(3))
    rng.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (torch.rand(3), random.random(), random.gauss(0, 1), np.random.rand(3))
    assert torch.equal(first[0], second[0]) and first[1:3] == second[1:3]
    np.testing.assert_array_equal(first[3], second[3])


def test_run_names_and_folders(tmp_path):
    from datetime import datetime

    name = runs.make_run_name("simplenet", "CustomConv2d", now=datetime(2019, 3, 1, 14, 25, 1))
    assert name == "simplenet_customconv2d_20190301-142501"
    first = runs.create_run_dir(tmp_path, name)
    second = runs.create_run_dir(tmp_path, name)
    assert (first.name, second.name) == (name, name + "-1")
    assert runs.create_run_dir(tmp_path, name, reuse=True) == first
