"""A diverging run stops, says why, and keeps its last finite checkpoint (issue 15).

Run: python -m pytest tests/test_divergence.py -q
"""
import json
import math
import re

import pytest
import torch
import torch.nn as nn

from harness import checkpoints, cli, engine
import main
import helpers
from harness.divergence import NONFINITE_PATIENCE, Divergence, DivergenceWatch
from helpers import run_torchrun

EPOCHS, WARMUP_EPOCHS, ITERS = 4, 2, 5  # conftest's tiny_data: 20 training images, batch 4


# Far too high for any data: the loss is not finite within epoch 0. (30 was enough on the demo data's
# +-70 textures; on version 5's faint ones the first epoch's steps stayed finite at 30.)
FIRST_EPOCH_DIVERGING_LR = 1000


def argv(data, logdir, lr, *extra):
    # lr 2 at batch 4 (the default 0.1 is meant for batch 256), warmed up over 2 epochs: epoch 0 (lr up
    # to 0.8) ends at a loss of about 2.5, and the loss becomes NaN in epoch 1 (lr 1.0 to 1.8). The step
    # depends on the CPU's rounding (iteration 3 on one, 4 on another): the tests check it by the schedule.
    return helpers.train_argv(data, logdir, "run", *extra, epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS, lr=lr,
                              print_freq=1)


def scheduled_lr(step, lr):
    """The lr at global iteration `step` by hand: linear warm-up from 0, then the cosine over the run."""
    total, warm = EPOCHS * ITERS, WARMUP_EPOCHS * ITERS
    return lr * step / warm if step < warm else 0.5 * lr * (1 + math.cos(math.pi * step / total))


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_finite_checkpoint(tiny_data, tmp_path, capsys):
    code = main.main(argv(tiny_data, tmp_path, 2))
    out, err = capsys.readouterr()
    assert code == cli.EXIT_DIVERGED
    run_dir = tmp_path / "run"
    (line,) = err.strip().splitlines()
    match = re.fullmatch(
        r"error: training diverged: the loss is (?:nan|inf) at epoch (\d+), iteration (\d+) of 5 \(lr ([\d.]+)\); "
        + re.escape(f"{run_dir / checkpoints.CHECKPOINT_NAME} keeps the last finite epoch (") + r"(\d+)\); "
        + r"try a lower --lr than 2, e\.g\. 0\.031 by the linear scaling rule for -b 4 \(lr x batch / 256\)", line)
    assert match, line
    epoch, iteration, last_finite = int(match[1]), int(match[2]), int(match[4])
    # The iteration is the CPU's rounding; on any CPU epoch 0 (lr up to 0.8) finishes, and the message
    # gives the lr that the schedule gives at its iteration.
    assert 1 <= epoch < EPOCHS and iteration < ITERS and last_finite == epoch - 1
    assert match[3] == f"{scheduled_lr(epoch * ITERS + iteration, 2.0):.4g}"
    assert f" * Epoch {last_finite}:" in out and f" * Epoch {epoch}:" not in out
    for name in (checkpoints.CHECKPOINT_NAME, checkpoints.BEST_NAME):
        checkpoint = checkpoints.read(run_dir / name)
        # model_best is the best epoch's, the latest one when the run diverges in epoch 1.
        assert 1 <= checkpoint.epoch <= epoch and checkpoint.validated
        assert not checkpoints.nonfinite_entries(checkpoint.state_dict)
        assert not checkpoints.nonfinite_entries(checkpoint.optimizer)
    assert checkpoints.read(run_dir / checkpoints.CHECKPOINT_NAME).epoch == epoch
    assert [m["epoch"] for m in json.loads((run_dir / "metrics.json").read_text())] == list(range(epoch))

    # The kept checkpoint resumes, at a learning rate that does not diverge.
    code = main.main(argv(tiny_data, tmp_path, 0.01, "--resume", run_dir / checkpoints.CHECKPOINT_NAME))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "note: --lr 0.01 replaces the run's 2.0 from here on" in out and f"epochs {epoch}..{EPOCHS - 1}" in out
    assert checkpoints.read(run_dir / checkpoints.CHECKPOINT_NAME).epoch == EPOCHS


def test_divergence_in_the_first_epoch_writes_nothing(tiny_data, tmp_path, capsys):
    code = main.main(argv(tiny_data, tmp_path, FIRST_EPOCH_DIVERGING_LR))
    err = capsys.readouterr().err
    assert code == cli.EXIT_DIVERGED
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
    code, _, err = run_torchrun(argv(tiny_data, tmp_path, FIRST_EPOCH_DIVERGING_LR))
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith("error: training diverged: the loss is "), err[-3000:]
    assert not (tmp_path / "run" / checkpoints.CHECKPOINT_NAME).exists()
