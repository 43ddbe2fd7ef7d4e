"""A diverging run stops, says why, and keeps its last finite checkpoint (issue 15).

Run: python -m pytest tests/test_divergence.py -q
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from harness import checkpoints, demo_data, engine
import main
from harness.divergence import NONFINITE_PATIENCE, Divergence, DivergenceWatch

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return demo_data.make_demo_dataset(tmp_path_factory.mktemp("data") / "tiny", seed=0, train_per_class=2,
                                       val_per_class=1, test_count=1)


def argv(data, logdir, lr, *extra):
    # lr 2 at batch 4 (the default 0.1 is meant for batch 256), warmed up over 2 epochs: epoch 0 ends
    # at a loss of about 2.5, and epoch 1 reaches NaN at its fourth step (measured with seed 0).
    return [str(data), "--epochs", "4", "--warmup-epochs", "2", "-b", "4", "-j", "0", "--lr", str(lr), "--seed", "0",
            "-p", "1", "--gpu", "-1", "--logdir", str(logdir), "--run-name", "run", *map(str, extra)]


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_finite_checkpoint(tiny_data, tmp_path, capsys):
    code = main.main(argv(tiny_data, tmp_path, 2))
    out, err = capsys.readouterr()
    assert code == main.EXIT_DIVERGED
    run_dir = tmp_path / "run"
    (line,) = err.strip().splitlines()
    assert re.fullmatch(
        r"error: training diverged: the loss is nan at epoch 1, iteration 3 of 5 \(lr 1\.6\); "
        + re.escape(f"{run_dir / checkpoints.CHECKPOINT_NAME} keeps the last finite epoch (0); ")
        + r"try a lower --lr than 2, e\.g\. 0\.031 by the linear scaling rule for -b 4 \(lr x batch / 256\)", line)
    assert " * Epoch 0:" in out and " * Epoch 1:" not in out
    for name in (checkpoints.CHECKPOINT_NAME, checkpoints.BEST_NAME):
        checkpoint = checkpoints.read(run_dir / name)
        assert checkpoint.epoch == 1 and checkpoint.validated
        assert not checkpoints.nonfinite_entries(checkpoint.state_dict)
        assert not checkpoints.nonfinite_entries(checkpoint.optimizer)
    assert [m["epoch"] for m in json.loads((run_dir / "metrics.json").read_text())] == [0]

    # The kept checkpoint resumes, at a learning rate that does not diverge.
    code = main.main(argv(tiny_data, tmp_path, 0.01, "--resume", run_dir / checkpoints.CHECKPOINT_NAME))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "note: --lr 0.01 replaces the run's 2.0 from here on" in out and "epochs 1..3" in out
    assert checkpoints.read(run_dir / checkpoints.CHECKPOINT_NAME).epoch == 4


def test_divergence_in_the_first_epoch_writes_nothing(tiny_data, tmp_path, capsys):
    code = main.main(argv(tiny_data, tmp_path, 30))
    err = capsys.readouterr().err
    assert code == main.EXIT_DIVERGED
    assert re.search(r"the loss is (nan|inf) at epoch 0, iteration \d of 5 .*; no checkpoint was written; ", err)
    assert not (tmp_path / "run" / checkpoints.CHECKPOINT_NAME).exists()


# ---------------------------------------------------------------------------------------------------
# The watch's rules, on simulated losses
# ---------------------------------------------------------------------------------------------------


def watch_losses(losses, loss_scaling, model=None):
    """Feed `losses` to a DivergenceWatch, checking every 10 iterations and at the end; the Divergence or None."""
    model = model or nn.Linear(2, 2)
    watch = DivergenceWatch(torch.device("cpu"), loss_scaling=loss_scaling)
    try:
        for step, value in enumerate(losses):
            watch.observe(step, torch.tensor(value))
            if step % 10 == 0:
                watch.check(model, step)
        watch.check(model, len(losses) - 1)
    except Divergence as stop:
        return stop
    return None


def test_full_precision_stops_at_the_first_non_finite_loss():
    stop = watch_losses([2.0] * 13 + [math.inf] + [2.0] * 20, loss_scaling=False)
    assert (stop.reason, stop.step, stop.loss) == ("loss", 13, math.inf)


def test_amp_tolerates_occasional_inf_losses():
    # fp16 with a GradScaler: an inf loss skips that step; a few, even several in a row, are normal.
    losses = ([math.inf] + [2.0] * 5) * 10 + [math.inf] * (NONFINITE_PATIENCE - 1) + [2.0] * 5
    assert watch_losses(losses, loss_scaling=True) is None


def test_amp_stops_when_the_loss_stays_non_finite():
    losses = [2.0] * 7 + [math.inf] * NONFINITE_PATIENCE + [2.0] * 3
    stop = watch_losses(losses, loss_scaling=True)
    assert (stop.reason, stop.step, stop.streak) == ("loss streak", 7, NONFINITE_PATIENCE)


def test_amp_stops_when_the_weights_become_non_finite():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    stop = watch_losses([2.0] * 15, loss_scaling=True, model=model)
    assert (stop.reason, stop.step) == ("weights", 0)


def test_train_one_epoch_with_a_grad_scaler_skips_inf_steps():
    # A GradScaler on the CPU stands in for fp16 on CUDA: inf losses make inf gradients, which it skips.
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(30)]

    class InfSometimes(nn.Module):
        def __init__(self, bad_steps):
            super().__init__()
            self.bad_steps, self.calls = bad_steps, 0

        def forward(self, output, target):
            loss = nn.functional.cross_entropy(output, target)
            self.calls += 1
            return loss * math.inf if self.calls - 1 in self.bad_steps else loss

    def epoch(criterion):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
        return engine.train_one_epoch(model, batches, criterion, optimizer, scaler, epoch=0, device=torch.device("cpu"),
                                      schedule=lambda step: (0.1, 0.0), print_freq=10)

    stats = epoch(InfSometimes({3, 4, 5, 17}))
    assert stats["images"] == 60 and all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(Divergence) as stop:
        epoch(InfSometimes(set(range(2, 2 + NONFINITE_PATIENCE))))
    assert (stop.value.reason, stop.value.step) == ("loss streak", 2)


def test_torchrun_processes_stop_together(tiny_data, tmp_path):
    # Both ranks must decide alike and exit (no rank waiting in a collective for one that left).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO_ROOT / "code" / "main.py"), *argv(tiny_data, tmp_path, 30)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith("error: training diverged: the loss is "), \
        result.stderr[-3000:]
    assert not (tmp_path / "run" / checkpoints.CHECKPOINT_NAME).exists()
