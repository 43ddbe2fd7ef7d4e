"""report.py on the team's 2019 TensorBoard logs: their README's figures from ../shared/team/logs
(skipped when absent), and the 2019 layout's quirks on small logs generated here with SummaryWriter
(several event files per folder, an empty one, an epoch logged twice), beside a run of ours.

Run: python -m pytest tests/test_report_team.py -q
"""
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

import report
from harness.cli import UserError
from harness import files

# ../shared/team/README.md's table: epochs logged, final val top-1 / top-5, final train top-1 / top-5,
# final training loss.
TEAM_README = {
    "3_2_0_simplenet": (90, "46.85", "75.50", "55.80", "82.77", "1.733"),
    "3_2_2_simplenet_customconv": (10, "17.04", "43.47", "13.55", "36.92", "3.693"),
    "3_2_3_customnet": (90, "11.38", "33.30", "60.47", "86.21", "1.489"),
    "3_2_3_customnet2": (90, "50.73", "78.88", "54.08", "82.09", "1.639"),
    "3_2_3_resnet": (90, "43.97", "74.66", "40.56", "71.06", "2.166"),
    "3_2_3_resnet_lr0.01": (55, "36.54", "68.00", "32.91", "63.52", "2.710"),
    "3_2_3_googlenet": (82, "35.99", "67.06", "32.43", "62.79", "2.766"),
}
COLUMNS = ("epochs", "val top-1", "val top-5", "train top-1", "train top-5", "final training loss")

# Median minutes per epoch: the README gives 4.2 for SimpleNet, 6.2 for the custom conv and "about
# 4.1-4.2 for the others", which the wall times bear out for CustomNet and CustomNet-2 only. ResNet
# (layer1 at full resolution), its lr 0.01 rerun and GoogLeNet took longer: the values below are what
# their logs give (the per-iteration loss's wall times give the same, 390 iterations an epoch).
MINUTES_PER_EPOCH = {"3_2_0_simplenet": "4.2", "3_2_2_simplenet_customconv": "6.2", "3_2_3_customnet": "4.2",
                     "3_2_3_customnet2": "4.1", "3_2_3_resnet": "7.2", "3_2_3_resnet_lr0.01": "6.9",
                     "3_2_3_googlenet": "13.8"}


def table_rows(text, header_start):
    """{run name: {column: cell}} of the Markdown table whose header line starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = dict(zip(header, cells))
    return rows


# ---------------------------------------------------------------------------------------------------
# The team's logs
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def team_report(shared_team, tmp_path_factory):
    """(printed text, {run: row of the team's table}) of report.py on the seven shared runs."""
    folders = sorted(str(path) for path in (shared_team / "logs").iterdir())
    text, _ = report.make_report(folders, tmp_path_factory.mktemp("report"), plots=False)
    return text, table_rows(text, "| run | report row |")


def test_team_table_reproduces_the_readme(team_report):
    _, rows = team_report
    assert set(rows) == set(TEAM_README)
    for name, expected in TEAM_README.items():
        assert tuple(rows[name][column] for column in COLUMNS) == (str(expected[0]), *expected[1:]), name
        assert rows[name]["min/epoch"] == MINUTES_PER_EPOCH[name], name
    assert "## Runs" not in team_report[0]  # none of ours given: only the team's table


def test_team_resnet_best_epoch_is_the_checkpoints(team_report):
    # The team's checkpoint says best_acc1 43.97 at epoch 90; the logs agree.
    row = team_report[1]["3_2_3_resnet"]
    assert (row["best val top-1"], row["at epoch"]) == ("43.97", "90")


def test_team_resnet_logged_epoch_1_twice_and_the_later_counts(shared_team):
    run = report.load_run(shared_team / "logs" / "3_2_3_resnet")
    assert [m["epoch"] for m in run.metrics] == list(range(90))  # 91 writes of 90 epochs
    assert run.metrics[0]["val_top1"] == pytest.approx(9.72, abs=0.005)  # the aborted start logged 9.11
    assert run.curves["data/training_loss"][-1][0] == 90 * report.TEAM_ITERATIONS_PER_EPOCH - 10


# ---------------------------------------------------------------------------------------------------
# The 2019 layout, generated
# ---------------------------------------------------------------------------------------------------

T0 = 1_553_900_000.0  # a wall time in March 2019


def write_events(folder, tag, points):
    """One new event file in `folder` with the scalar `tag` at (step, value, wall time) points."""
    writer = SummaryWriter(log_dir=str(folder))
    for step, value, wall_time in points:
        writer.add_scalar(tag, value, step, walltime=wall_time)
    writer.close()


@pytest.fixture
def run_2019(tmp_path):
    """A 3-epoch run in the 2019 layout: an aborted start that logged epoch 1, an empty event file,
    then the full run 10 minutes an epoch, its events written before the aborted start's (by file name)."""
    run_dir = tmp_path / "team" / "3_2_3_resnet"
    val_folder = run_dir / "data" / "top1_accuracy" / "val"
    write_events(val_folder, "data/top1_accuracy", [(1, 9.72, T0 + 3600), (2, 15.71, T0 + 4200),
                                                    (3, 20.5, T0 + 4800)])
    write_events(val_folder, "data/top1_accuracy", [(1, 9.11, T0 + 60)])
    for split, first in (("train", 10.0), ("val", 30.0)):
        write_events(run_dir / "data" / "top5_accuracy" / split, "data/top5_accuracy",
                     [(epoch, first + epoch, T0 + 3600 + 600 * epoch) for epoch in (1, 2, 3)])
    write_events(run_dir / "data" / "top1_accuracy" / "train", "data/top1_accuracy",
                 [(epoch, 5.0 * epoch, T0 + 3600 + 600 * epoch) for epoch in (1, 2, 3)])
    write_events(run_dir, "data/training_loss", [(step, 9.0, T0 + step / 10) for step in (0, 10, 20)])
    write_events(run_dir, "data/training_loss", [])
    iterations = 3 * report.TEAM_ITERATIONS_PER_EPOCH
    write_events(run_dir, "data/training_loss", [(step, 4.6 - step / 1000, T0 + 3000 + step)
                                                 for step in range(0, iterations, 10)])
    return run_dir


@pytest.fixture
def our_run(tmp_path):
    """A 3-epoch run folder as main.py writes it (metrics.json counts epochs from 0)."""
    run_dir = tmp_path / "ours" / "simplenet_run"
    run_dir.mkdir(parents=True)
    args = {"arch": "simplenet", "use_custom_conv": False, "batch_size": 256, "epochs": 3, "lr": 0.1}
    files.write_json(args, run_dir / "args.json")
    metrics = [{"epoch": epoch, "lr": 0.1, "train_loss": 3.0 - epoch, "train_top1": 20.0 + epoch,
                "train_top5": 40.0 + epoch, "val_loss": 3.5 - epoch, "val_top1": 18.0 + epoch,
                "val_top5": 38.0 + epoch, "epoch_minutes": 2.0, "images_per_s": 800.0,
                "peak_mem_mib": 900.0, "device": "cpu", "world_size": 1} for epoch in range(3)]
    files.write_json(metrics, run_dir / "metrics.json")
    return run_dir


def test_2019_run_keeps_the_later_write_of_an_epoch(run_2019):
    run = report.load_run(run_2019)
    assert run.from_2019 and run.epochs_done == 3
    assert [m["epoch"] for m in run.metrics] == [0, 1, 2]  # stored from 0, as metrics.json
    assert [m["val_top1"] for m in run.metrics] == pytest.approx([9.72, 15.71, 20.5])
    assert [m["train_top1"] for m in run.metrics] == [5.0, 10.0, 15.0]
    assert [m["val_top5"] for m in run.metrics] == [31.0, 32.0, 33.0]
    assert [m.get("epoch_minutes") for m in run.metrics] == [None, pytest.approx(10.0), pytest.approx(10.0)]
    # The restarted run's loss replaces the aborted start's at steps 0-20.
    loss = run.curves["data/training_loss"]
    assert len(loss) == 117 and loss[0] == (0, pytest.approx(4.6))
    assert run.last_logged_loss == pytest.approx(4.6 - 1.16)
    assert run.best("val_top1") == (pytest.approx(20.5), 3)


def test_a_restart_from_an_earlier_epoch_drops_what_the_abandoned_run_logged_after_it(tmp_path):
    write_events(tmp_path, "data/top1_accuracy", [(1, 10.0, T0), (2, 20.0, T0 + 60), (3, 30.0, T0 + 120)])
    write_events(tmp_path, "data/top1_accuracy", [(2, 21.0, T0 + 600)])  # resumed from epoch 1, then stopped
    points = report.read_scalars(tmp_path, "data/top1_accuracy")["data/top1_accuracy"]
    assert [(p.step, p.value) for p in points] == [(1, 10.0), (2, 21.0)]


def test_report_puts_the_teams_run_beside_ours_on_one_epoch_axis(run_2019, our_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert report.main([str(run_2019), str(our_run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    team_row = table_rows(text, "| run | report row |")["3_2_3_resnet"]
    assert team_row["report row"] == "Section 3: ResNet"
    assert (team_row["epochs"], team_row["val top-1"], team_row["best val top-1"], team_row["at epoch"]) == (
        "3", "20.50", "20.50", "3")
    assert (team_row["final training loss"], team_row["min/epoch"]) == ("3.440", "10.0")
    our_row = table_rows(text, "| run | arch |")["simplenet_run"]
    assert (our_row["epochs"], our_row["val top-1"], our_row["train loss"]) == ("3", "20.00", "1.000")
    assert "3_2_3_resnet" not in table_rows(text, "| run | arch |")

    # Both counted in epochs completed: our epoch 0 and their epoch 1 are both the first.
    theirs, ours = report.load_run(run_2019), report.load_run(our_run, with_curves=True)
    assert report.epoch_series(theirs, "val_top1")[0] == report.epoch_series(ours, "val_top1")[0] == [1, 2, 3]
    loss_x, _ = report._curve(theirs, "data/training_loss", "train_loss")
    assert loss_x[0] == 0 and loss_x[-1] == pytest.approx(1160 / 390)
    for name in report.PLOT_NAMES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100


def test_2019_folder_without_val_events_is_a_one_line_error(run_2019, capsys):
    for path in (run_2019 / "data" / "top1_accuracy" / "val").iterdir():
        path.unlink()
    with pytest.raises(UserError, match=r"3_2_3_resnet: no val top-1 accuracy in data/top1_accuracy/val/"):
        report.load_run(run_2019)
    assert report.main([str(run_2019), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
