"""Tests of the hand-in tools: predict.py (challenge files), scoring.py (devkit scorer), report.py
(experiment report) and zip_submission.py.

Two 1-epoch runs of main.main([...]) (nn.Conv2d and CustomConv2d, one SGD step each) on a tiny
generated dataset (10 classes, 1 train and 1 val image per class, 7 test images) provide the
checkpoint and the run folders; everything runs on the CPU.
Run: python -m pytest tests/test_submission.py -q --durations=10
"""
import errno
import json
import os
import re
import shutil
import zipfile

import pytest
import torch
from PIL import Image

from harness import checkpoints, demo_data, engine, files, models, scoring
import custom_dataloader
import custom_transforms
import main
import predict
import score
import report
import student_code
from harness.cli import UserError
from helpers import assert_accuracy_of, load_model, train_argv, val_logits

NUM_CLASSES = demo_data.DEMO_NUM_CLASSES
TEST_COUNT = 7


@pytest.fixture(scope="module")
def tiny_data(demo_dataset):
    """conftest's tiny_data with 1 train image a class (one SGD step at -b 10) and 7 test images."""
    return demo_dataset(train_per_class=1, test_count=TEST_COUNT)


@pytest.fixture(scope="module")
def tiny_runs(tiny_data, tmp_path_factory):
    """logs folder with runs 'conv' (nn.Conv2d) and 'custom' (--use-custom-conv), 1 epoch of 1 step."""
    logdir = tmp_path_factory.mktemp("logs")
    for name, extra in (("conv", []), ("custom", ["--use-custom-conv"])):
        assert main.main(train_argv(tiny_data, logdir, name, *extra, batch_size=10, lr=0.01, print_freq=1)) == 0
    return logdir


@pytest.fixture(scope="module")
def submission(tiny_runs, tiny_data, tmp_path_factory):
    """(out folder, val errors) of predict.py on the nn.Conv2d run's best checkpoint."""
    out = tmp_path_factory.mktemp("results")
    errors = predict.make_submission(tiny_data, tiny_runs / "conv" / checkpoints.BEST_NAME, out, torch.device("cpu"),
                                     batch_size=4, workers=0, log=lambda *a: None)
    return out, errors


def prediction_lines(path):
    return [line.split() for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------
# predict.py
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_name, split", [(predict.TEST_PREDICTIONS, "test"), (predict.VAL_PREDICTIONS, "val")])
def test_prediction_file_format(submission, tiny_data, file_name, split):
    out, _ = submission
    lines = prediction_lines(out / file_name)
    expected_names = sorted(f"{split}/{p.name}" for p in (tiny_data / "images" / split).glob("*.jpg"))
    assert [fields[0] for fields in lines] == expected_names  # one line per image, in name order
    for fields in lines:
        labels = [int(text) for text in fields[1:]]
        assert len(labels) == 5 and len(set(labels)) == 5
        assert all(0 <= label < NUM_CLASSES for label in labels)


def test_val_predictions_agree_with_flip_averaged_validation(submission, tiny_runs, tiny_data):
    """The val error table equals 100 - the accuracy engine.validate (main.py -e) measures: both are the
    flip-averaged accuracy computed here, up to near ties (which NHWC and NCHW may break either way)."""
    _, errors = submission
    checkpoint = torch.load(tiny_runs / "conv" / checkpoints.BEST_NAME, weights_only=True)
    model = student_code.SimpleNet(num_classes=NUM_CLASSES)
    model.load_state_dict(checkpoint["state_dict"])
    val_set = custom_dataloader.MiniPlacesLoader(tiny_data, num_classes=NUM_CLASSES, split="val",
                                                 transforms=custom_transforms.get_val_transforms())
    loader = torch.utils.data.DataLoader(val_set, batch_size=3)
    result = engine.validate(model, loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"), flip_average=True)
    logits, labels = val_logits(model.eval(), tiny_data)
    for k in (1, 5):
        assert_accuracy_of(100 - 100 * errors[k - 1], logits, labels, k)
        assert_accuracy_of(result[f"top{k}"], logits, labels, k)
    assert errors == sorted(errors, reverse=True)


def test_predictions_score_the_same_in_either_memory_format(submission, tiny_runs, tiny_data, tmp_path):
    # Rounding differs between the layouts, so near ties may swap places: the errors must agree but for them.
    _, errors = submission  # the CPU's default: NHWC
    nchw_errors = predict.make_submission(tiny_data, tiny_runs / "conv" / checkpoints.BEST_NAME, tmp_path,
                                          torch.device("cpu"), batch_size=4, workers=0, channels_last=False,
                                          log=lambda *a: None)
    logits, labels = val_logits(load_model(tiny_runs / "conv" / checkpoints.BEST_NAME), tiny_data)
    for k in range(1, 6):
        assert_accuracy_of(100 - 100 * nchw_errors[k - 1], logits, labels, k)
        assert_accuracy_of(100 - 100 * errors[k - 1], logits, labels, k)
    assert len(prediction_lines(tmp_path / predict.TEST_PREDICTIONS)) == TEST_COUNT


def test_challenge_model_drops_the_training_state(submission, tiny_runs):
    out, _ = submission
    original = torch.load(tiny_runs / "conv" / checkpoints.BEST_NAME, weights_only=True)
    model = torch.load(out / predict.MODEL_NAME, weights_only=True)  # as main.py -e loads it
    assert set(checkpoints.TRAINING_ONLY_KEYS) <= original.keys()
    assert model.keys() == original.keys() - set(checkpoints.TRAINING_ONLY_KEYS) - {"pending_record"}
    assert model["arch"] == original["arch"]
    for key, tensor in original["state_dict"].items():
        assert torch.equal(model["state_dict"][key], tensor)
    assert (out / predict.MODEL_NAME).stat().st_size < models.MAX_MODEL_BYTES


def test_model_size_limit_is_ten_megabytes():
    assert models.MAX_MODEL_BYTES == 10_000_000
    models.check_model_size(models.MAX_MODEL_BYTES - 1, "model.pth.tar")
    with pytest.raises(UserError, match=r"model.pth.tar: 10,000,000 bytes .* at or over the challenge's 10 MB"):
        models.check_model_size(models.MAX_MODEL_BYTES, "model.pth.tar")


def test_oversized_model_is_refused_before_anything_is_written(tiny_runs, tiny_data, tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.setattr(models, "MAX_MODEL_BYTES", 1_000_000)  # SimpleNet's weights take about 5 MiB
    out = tmp_path / "results"
    code = predict.main([str(tiny_data), "--resume", str(tiny_runs / "conv" / checkpoints.BEST_NAME),
                         "--out", str(out), "--gpu", "-1", "-j", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "model.pth.tar" in err and "1,000,000 bytes): train a smaller --arch" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--resume", "{missing}"], r"--resume: no checkpoint file at .*missing"),
    (["-b", "0", "--resume", "x"], r"-b/--batch-size must be at least 1"),
    ([], r"the following arguments are required: --resume"),
])
def test_predict_user_errors_are_one_line(argv, message, tiny_data, tmp_path, capsys):
    argv = [a.format(missing=tmp_path / "missing.pth.tar") for a in argv]
    assert predict.main([str(tiny_data), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.search(message, err)


@pytest.fixture
def quick_checkpoint(tmp_path):
    """A seeded SimpleNet in main.py's format: predict.py would run on it to the end."""
    torch.manual_seed(0)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 1, "arch": "simplenet", "conv_op": "Conv2d", "num_classes": NUM_CLASSES, "classes": None,
                "state_dict": student_code.SimpleNet(num_classes=NUM_CLASSES).state_dict(), "best_acc1": 0.0,
                "args": {}}, path)
    return path


def tree(folder):
    """{path: (is a folder, mode, size)} of everything under `folder`: what a refused run must leave alone."""
    return {p: (p.is_dir(), p.stat().st_mode, p.stat().st_size) for p in [folder, *folder.rglob("*")]}


def read_only(folder):
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# Each makes an --out under `place` that cannot take the three files; the message predict.py gives.
# The read-only folders are refused for root too: root's writes ignore the permission bits, so the bits
# are read (as main.py -e leaves a read-only run folder alone), while os.access decides for other users.
BAD_OUTS = {
    "read-only": (lambda place: read_only(place / "results"),
                  r"--out: .*results is read-only \(no write permission\): predict.py cannot write its files "
                  r"there$"),
    "in a read-only folder": (lambda place: read_only(place / "shared") / "results",
                              r"--out: cannot create .*shared/results: .*shared is read-only \(no write "
                              r"permission\)$"),
    "a file": (lambda place: (place / "results.txt", (place / "results.txt").write_text("x"))[0],
               r"--out: .*results\.txt is a file, not a folder$"),
    "below a file": (lambda place: (place / "notes", (place / "notes").write_text("x"))[0] / "results",
                     r"--out: .*notes is a file, not a folder \(cannot create .*notes/results below it\)$"),
    **{f"{name} a folder": (lambda place, name=name: (place / "results" / name).mkdir(parents=True) or
                            place / "results",
                            rf"--out: .*results/{re.escape(name)} is a folder; predict.py writes its "
                            rf"{re.escape(name)} file there \(move the folder away or choose another --out\)$")
       for name in (predict.MODEL_NAME, predict.TEST_PREDICTIONS, predict.VAL_PREDICTIONS)},
}


@pytest.mark.parametrize("case", BAD_OUTS)
def test_an_unwritable_out_is_refused_before_any_work(case, quick_checkpoint, tiny_data, tmp_path, capsys):
    make, message = BAD_OUTS[case]
    place = tmp_path / "place"
    place.mkdir()
    out = make(place)
    before = tree(place)
    try:
        code = predict.main([str(tiny_data), "--resume", str(quick_checkpoint), "--out", str(out), "--gpu", "-1",
                             "-j", "0"])
        after = tree(place)
    finally:
        for folder in place.rglob("*"):
            if folder.is_dir():
                folder.chmod(0o755)
    out_text, err = capsys.readouterr()
    assert code == 2 and out_text == ""  # not even the checkpoint was read
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err.strip().removeprefix("error: ")), err
    assert after == before  # nothing written, created or removed


def test_a_folder_that_refuses_a_real_write_is_refused(quick_checkpoint, tiny_data, tmp_path, monkeypatch, capsys):
    """Permission bits that allow writing on a file system mounted read-only (cloud VMs' images)."""
    def read_only_mount(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(predict.tempfile, "TemporaryFile", read_only_mount)
    out = tmp_path / "results"
    out.mkdir()
    code = predict.main([str(tiny_data), "--resume", str(quick_checkpoint), "--out", str(out), "--gpu", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--out: {out} cannot be written in (Read-only file system): predict.py cannot write its files there" \
        in err
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# scoring.py
# ---------------------------------------------------------------------------------------------------

GROUND_TRUTH = "val/00000001.jpg 3\nval/00000002.jpg 7\nval/00000003.jpg 0\nval/00000004.jpg 9\n"
# The true label is guess 1, guess 3, guess 5 and absent: an image's top-k error is 0 once k
# reaches its true label's position, so top-1..top-5 error = 3/4, 3/4, 2/4, 2/4, 1/4.
PREDICTIONS = ("val/00000004.jpg 1 2 3 4 5\n"  # written out of order: the scorer matches by name
               "val/00000001.jpg 3 1 2 4 5\n"
               "val/00000002.jpg 1 2 7 4 5\n"
               "val/00000003.jpg 1 2 3 4 0\n")
HAND_ERRORS = [0.75, 0.75, 0.5, 0.5, 0.25]


def write(path, text):
    path.write_text(text)
    return path


def test_scorer_against_hand_computed_errors(tmp_path, capsys):
    truth = write(tmp_path / "val.txt", GROUND_TRUTH)
    predictions = write(tmp_path / "predictions_val.txt", PREDICTIONS)
    errors, count = scoring.score_files(predictions, truth)
    assert errors == HAND_ERRORS and count == 4

    assert score.main([str(predictions), str(truth)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("# guesses  vs cls error")
    assert [(int(r.split()[0]), float(r.split()[1])) for r in rows[1:]] == list(enumerate(HAND_ERRORS, 1))


@pytest.mark.parametrize("bad_line, message", [
    ("val/00000001.jpg 3 1 2 4", r"predictions_val.txt:2: expected .* \(5 labels\), got 4 label"),
    ("val/00000001.jpg 3 1 2 4 3", r"predictions_val.txt:2: the 5 labels must be distinct"),
    ("val/00000001.jpg 3 1 2 4 100", r"predictions_val.txt:2: label 100 is outside 0..99"),
    ("val/00000001.jpg 3 1 two 4 5", r"predictions_val.txt:2: labels must be integers"),
    ("val/00000004.jpg 3 1 2 4 5", r"predictions_val.txt:2: image val/00000004.jpg is predicted twice"),
])
def test_scorer_rejects_malformed_predictions(bad_line, message, tmp_path):
    lines = PREDICTIONS.splitlines()
    lines[1] = bad_line
    predictions = write(tmp_path / "predictions_val.txt", "\n".join(lines) + "\n")
    truth = write(tmp_path / "val.txt", GROUND_TRUTH)
    with pytest.raises(UserError, match=message):
        scoring.score_files(predictions, truth)


def test_scorer_needs_every_image_exactly(tmp_path, capsys):
    truth = write(tmp_path / "val.txt", GROUND_TRUTH)
    fewer = write(tmp_path / "fewer.txt", "".join(PREDICTIONS.splitlines(True)[:3]))
    with pytest.raises(UserError, match=r"1 image\(s\) of the ground truth have no prediction "
                                        r"\(first: val/00000003.jpg\)"):
        scoring.score_files(fewer, truth)
    extra = write(tmp_path / "extra.txt", PREDICTIONS + "val/00000005.jpg 1 2 3 4 5\n")
    with pytest.raises(UserError, match=r"1 predicted image\(s\) are not in the ground truth"):
        scoring.score_files(extra, truth)
    assert score.main([str(tmp_path / "nope.txt"), str(truth)]) == 2
    assert capsys.readouterr().err == f"error: predictions: {tmp_path / 'nope.txt'} not found\n"


def test_scorer_reads_the_class_count_from_categories(tmp_path):
    write(tmp_path / "categories.txt", "".join(f"/c/class{i} {i}\n" for i in range(6)))
    truth = write(tmp_path / "val.txt", "val/00000001.jpg 5\n")
    predictions = write(tmp_path / "p.txt", "val/00000001.jpg 0 1 2 3 6\n")
    with pytest.raises(UserError, match=r"label 6 is outside 0..5"):
        scoring.score_files(predictions, truth)


def test_scorer_reads_files_with_bom_and_crlf(tmp_path):
    # As Windows editors save them ("UTF-8 with BOM"): the same errors as the plain files.
    bom = "\ufeff"
    write(tmp_path / "categories.txt", bom + "".join(f"/c/class{i} {i}\r\n" for i in range(10)))
    truth = write(tmp_path / "val.txt", bom + GROUND_TRUTH.replace("\n", "\r\n"))
    predictions = write(tmp_path / "predictions_val.txt", bom + PREDICTIONS.replace("\n", "\r\n"))
    assert scoring.score_files(predictions, truth) == (HAND_ERRORS, 4)
    assert scoring.num_classes_for(truth) == 10


# ---------------------------------------------------------------------------------------------------
# report.py
# ---------------------------------------------------------------------------------------------------


def table_row(text, run_name):
    """The cells of the Markdown row of `run_name` in the runs table."""
    line = next(line for line in text.splitlines() if line.startswith(f"| `{run_name}` |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_on_two_tiny_runs(tiny_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert report.main([str(tiny_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    header = table_row(text.replace("| run |", "| `header` |"), "header")
    for name, conv_op in (("conv", "Conv2d"), ("custom", "CustomConv2d")):
        metrics = json.loads((tiny_runs / name / "metrics.json").read_text())
        row = dict(zip(header, table_row(text, name)))
        assert row["arch"] == "simplenet" and row["conv op"] == conv_op and row["epochs"] == "1"
        assert row["peak train memory (MiB)"] == f"{metrics[0]['peak_mem_mib']:,.0f}"
        assert row["min/epoch"] == f"{metrics[0]['epoch_minutes']:.2f}"
        for key in ("train_top1", "train_top5", "val_top1", "val_top5"):
            assert row[key.replace("_top", " top-")] == f"{metrics[-1][key]:.2f}"
        assert row["train loss"] == f"{metrics[-1]['train_loss']:.3f}"

    conv, custom = (json.loads((tiny_runs / n / "metrics.json").read_text())[0] for n in ("conv", "custom"))
    assert "### simplenet: nn.Conv2d vs CustomConv2d" in text
    memory_row = next(line for line in text.splitlines() if line.startswith("| peak train memory (MiB) |"))
    assert memory_row.endswith(f"| {custom['peak_mem_mib'] / conv['peak_mem_mib']:.2f}x |")
    assert "| train loss after epoch 1 |" in text
    assert (out / "report.md").read_text() in text
    for name in report.PLOT_NAMES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100


def test_report_rebuilds_metrics_from_tensorboard_events(tiny_runs, tmp_path):
    run_dir = tmp_path / "conv"
    shutil.copytree(tiny_runs / "conv", run_dir, ignore=shutil.ignore_patterns("*.pth.tar", "metrics.json"))
    rebuilt = report.load_run(run_dir)
    expected = json.loads((tiny_runs / "conv" / "metrics.json").read_text())
    assert rebuilt.source == "TensorBoard events" and len(rebuilt.metrics) == len(expected)
    for key in ("val_top1", "train_top5", "epoch_minutes", "peak_mem_mib"):
        assert rebuilt.metrics[0][key] == pytest.approx(expected[0][key], rel=1e-6)


def test_report_reads_attack_results_and_rejects_empty_folders(tiny_runs, tmp_path):
    run_dir = tmp_path / "logs" / "conv"
    shutil.copytree(tiny_runs / "conv", run_dir, ignore=shutil.ignore_patterns("*.pth.tar"))
    files.write_json({"checkpoint": "x", "clean": {"top1": 47.65, "top5": 76.41}, "count": 10,
                      "attacks": [{"epsilon": 0.1, "top1": 0.09, "top5": 7.61}]}, run_dir / "attack.json")
    text, _ = report.make_report([tmp_path / "logs"], tmp_path / "out", plots=False)
    assert "| `conv` | -a (PGD) | 47.65 | 76.41 | 0.1 | 0.09 | 7.61 |" in text
    assert "nn.Conv2d vs CustomConv2d" not in text  # only one conv op among these runs
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no run folders"):
        report.make_report([tmp_path / "empty"])


# ---------------------------------------------------------------------------------------------------
# zip_submission.py
# ---------------------------------------------------------------------------------------------------


def fake_checkout(root, with_writeup=True):
    files = ["code/main.py", "code/student_code.py", "code/__pycache__/main.cpython-312.pyc", "code/old.pth.tar",
             "code/harness/engine.py", "code/my_layers/harness/notes.py",
             "results/model.pth.tar", "results/predictions_test.txt", "results/predictions_val.txt",
             "results/.predictions_val.txt.tmp123", "data/train.txt", "logs/run/checkpoint.pth.tar"]
    if with_writeup:
        files += ["writeup/report.pdf"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


@pytest.mark.parametrize("with_writeup", [True, False])
def test_zip_holds_code_writeup_and_results_only(tmp_path, with_writeup):
    import zip_submission

    root = fake_checkout(tmp_path, with_writeup)
    output, names, warnings = zip_submission.make_zip(root)
    # code/harness/ is the staff's library, never handed in; a student's own folder of that name is.
    expected = {"code/main.py", "code/student_code.py", "code/my_layers/harness/notes.py", "results/model.pth.tar",
                "results/predictions_test.txt", "results/predictions_val.txt"} | ({"writeup/report.pdf"} if with_writeup else set())
    with zipfile.ZipFile(output) as archive:
        assert set(archive.namelist()) == expected
        assert archive.read("code/main.py") == b"code/main.py"
    assert output == root / "submission.zip"
    assert warnings == ["skipped code/old.pth.tar: checkpoints go in results/ only"]


def test_zip_warns_about_missing_results_and_refuses_a_big_model(tmp_path):
    import zip_submission

    root = fake_checkout(tmp_path)
    (root / "results" / "predictions_test.txt").unlink()
    _, names, warnings = zip_submission.make_zip(root, tmp_path / "out.zip")
    assert "results/predictions_test.txt" not in names
    assert any("results/ lacks predictions_test.txt" in w for w in warnings)
    with open(root / "results" / "model.pth.tar", "wb") as f:
        f.truncate(models.MAX_MODEL_BYTES)  # sparse: no 10 MB written
    with pytest.raises(UserError, match=r"model.pth.tar: 10,000,000 bytes .* 10 MB limit"):
        zip_submission.make_zip(root, tmp_path / "out2.zip")
    assert not (tmp_path / "out2.zip").exists()
    shutil.rmtree(root / "results")
    with pytest.raises(UserError, match=r"results: folder not found"):
        zip_submission.make_zip(root, tmp_path / "out3.zip")


def test_zip_lists_what_it_packed(tmp_path, monkeypatch, capsys):
    import zip_submission

    from harness import paths

    root = fake_checkout(tmp_path / "repo")
    monkeypatch.setattr(paths, "REPO_ROOT", root)
    assert zip_submission.main(["--output", str(tmp_path / "hand-in.zip")]) == 0
    out = capsys.readouterr().out.splitlines()
    with zipfile.ZipFile(tmp_path / "hand-in.zip") as archive:
        names = archive.namelist()
    assert out[:-1] == [f"  {name}" for name in names]  # in the order packed
    assert "  code/harness/engine.py" not in out
    assert out[-1].startswith(f"{tmp_path / 'hand-in.zip'}: {len(names)} files, ")


def test_zip_says_which_model_files_are_over_the_challenges_limit(tmp_path, monkeypatch, capsys):
    import zip_submission

    from harness import paths

    root = fake_checkout(tmp_path / "repo")
    monkeypatch.setattr(paths, "REPO_ROOT", root)
    results = root / "results"
    for name, size in (("model_best.pth.tar", 52_000_000), ("checkpoint.pt", models.MAX_MODEL_BYTES),
                       ("small.pth", models.MAX_MODEL_BYTES - 1), ("features.npy", 30_000_000)):
        with open(results / name, "wb") as f:
            f.truncate(size)  # sparse, and zeros: the zip stays small
    # A checkpoint known by its content, whatever its name: torch.save's zip format.
    torch.save({"w": torch.zeros(0)}, results / "weights.bin")
    with open(results / "weights.bin", "ab") as f:
        f.truncate(11_000_000)
    assert zip_submission.main(["--output", str(tmp_path / "hand-in.zip")]) == 0
    err = capsys.readouterr().err.splitlines()
    tail = ("a model file over the challenge's 10 MB limit; the hand-in needs only results/model.pth.tar "
            "(tools/predict.py writes it)")
    assert err == ["warning: skipped code/old.pth.tar: checkpoints go in results/ only",
                   f"warning: results/checkpoint.pt: 10.0 MB, {tail}",
                   f"warning: results/model_best.pth.tar: 52.0 MB, {tail}",
                   f"warning: results/weights.bin: 11.0 MB, {tail}"]
    with zipfile.ZipFile(tmp_path / "hand-in.zip") as archive:  # warned, still packed
        assert {"results/model_best.pth.tar", "results/weights.bin", "results/features.npy"} <= set(archive.namelist())


def test_zip_over_a_course_sites_limit_names_its_largest_files(tmp_path, monkeypatch):
    import zip_submission

    root = fake_checkout(tmp_path / "repo")
    monkeypatch.setattr(zip_submission, "UPLOAD_LIMIT_BYTES", 400_000)
    random = torch.Generator().manual_seed(0)
    sizes = {"writeup/video.mp4": 250_000, "results/features.npy": 150_000, "code/data.bin": 60_000,
             "writeup/figure.png": 20_000}
    for name, size in sizes.items():  # random bytes do not compress: each takes its size in the zip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        data = torch.randint(0, 256, (size,), generator=random, dtype=torch.uint8)
        (root / name).write_bytes(data.numpy().tobytes())
    output, _, warnings = zip_submission.make_zip(root, tmp_path / "hand-in.zip")
    total = output.stat().st_size
    assert total > 480_000
    assert warnings[1:] == [f"{output}: {total / 1e6:.1f} MB, over the 0.4 MB a course site may refuse (Canvas's "
                            "default quota; docs/hand-in.md); the largest files: writeup/video.mp4 (0.3 MB), "
                            "results/features.npy (0.2 MB), code/data.bin (0.1 MB)"]
    monkeypatch.setattr(zip_submission, "UPLOAD_LIMIT_BYTES", total)  # at the limit: no word
    assert zip_submission.make_zip(root, tmp_path / "again.zip")[2][1:] == []


def test_the_upload_limit_is_canvass_default_quota():
    import zip_submission

    assert zip_submission.UPLOAD_LIMIT_BYTES == 50_000_000
