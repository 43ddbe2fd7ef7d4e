"""Stopping a training run that diverges, as torchvision's detection reference stops on a non-finite loss.

In full precision (and bf16 autocast, which has no loss scaling) the first non-finite loss stops the run.
Under fp16 with a GradScaler an occasional inf loss is normal: the scaler skips that step and lowers its
scale. There the run stops only when the weights themselves become non-finite, or when the loss stays
non-finite for NONFINITE_PATIENCE iterations in a row.

The loss is watched on its device (a few tiny kernels per iteration, no host sync) and read back only at
`check`, which the training loop calls every print-freq iterations and at the end of each epoch. Under
torchrun every process gathers every process's findings, so all of them decide alike and stop together.
"""
from dataclasses import dataclass

import torch
import torch.distributed as dist

NONFINITE_PATIENCE = 25


@dataclass
class Divergence(Exception):
    """Why a run stopped. reason: 'loss' (a non-finite loss in full precision), 'loss streak' (AMP: the
    loss stayed non-finite `streak` iterations) or 'weights' (AMP: non-finite weights by `step`).
    step: the global iteration of the first non-finite loss (or of the check that found the weights)."""

    reason: str
    step: int
    loss: float
    streak: int = 0

    def __str__(self):
        return f"training diverged ({self.reason}) at global iteration {self.step}, loss {self.loss}"


class DivergenceWatch:
    """Records, on the loss's device, the first non-finite loss and the longest run of non-finite losses."""

    def __init__(self, device, loss_scaling=False, patience=NONFINITE_PATIENCE):
        self.device = device
        self.loss_scaling = loss_scaling
        self.patience = patience
        self._first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self._first_loss = torch.zeros((), dtype=torch.float32, device=device)
        self._streak = torch.zeros((), dtype=torch.int64, device=device)
        self._longest = torch.zeros((), dtype=torch.int64, device=device)
        self._longest_end = torch.full((), -1, dtype=torch.int64, device=device)

    def observe(self, step, loss):
        """Note the loss (0-d tensor) of global iteration `step`."""
        bad = ~torch.isfinite(loss.detach())
        first = bad & (self._first_step < 0)
        self._first_step = torch.where(first, step, self._first_step)
        self._first_loss = torch.where(first, loss.detach().float(), self._first_loss)
        self._streak = torch.where(bad, self._streak + 1, torch.zeros_like(self._streak))
        longer = self._streak > self._longest
        self._longest = torch.where(longer, self._streak, self._longest)
        self._longest_end = torch.where(longer, step, self._longest_end)

    def check(self, model, step):
        """Raise Divergence when the run must stop (the same decision on every process)."""
        weights_bad = not all(torch.isfinite(p).all() for p in model.parameters()) if self.loss_scaling else False
        local = torch.stack([self._first_step.double(), self._first_loss.double(), self._longest.double(),
                             self._longest_end.double(), torch.tensor(float(weights_bad), device=self.device,
                                                                      dtype=torch.float64)])
        for first_step, first_loss, longest, longest_end, weights in _gather(local):
            if not self.loss_scaling and first_step >= 0:
                raise Divergence("loss", int(first_step), first_loss)
            if self.loss_scaling and longest >= self.patience:
                raise Divergence("loss streak", int(longest_end - longest + 1), first_loss, int(longest))
            if weights:
                raise Divergence("weights", step, first_loss)


def _gather(local):
    """Every process's findings, as lists (ordered by the first non-finite step, earliest first)."""
    if not (dist.is_available() and dist.is_initialized()):
        rows = [local.tolist()]
    else:
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)
        rows = [row.tolist() for row in gathered]
    return sorted(rows, key=lambda row: (row[0] < 0, row[0]))
