"""AverageMeter (the 2019 helper) and top-k accuracy."""
import torch


class AverageMeter:
    """The current value and running average of a metric, printed as `name val (avg)` (the 2019 helper).

    `update` accepts Python numbers or 0-d tensors. A tensor stays on its device until the meter is
    read or printed, so a GPU run syncs with the host only when it logs, not every iteration.
    """

    def __init__(self, name="", fmt=":f"):
        self.name = name
        self.fmt = fmt
        self.reset()

    def reset(self):
        self.val = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = val.detach() if isinstance(val, torch.Tensor) else val
        self.sum = self.sum + self.val * n
        self.count += n

    @property
    def avg(self):
        return float(self.sum) / self.count if self.count else 0.0

    def __str__(self):
        fmtstr = "{name} {val" + self.fmt + "} ({avg" + self.fmt + "})"
        return fmtstr.format(name=self.name, val=float(self.val), avg=self.avg)


def accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent of logits `output` (N, C) against labels `target` (N,).

    Returns one 0-d tensor per k, on the output's device. k is capped at C, so top-5 of a 3-class
    problem is 100%.
    """
    with torch.no_grad():
        batch_size = target.shape[0]
        maxk = min(max(topk), output.shape[1])
        _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)  # (N, maxk)
        correct = pred.eq(target.view(-1, 1))  # (N, maxk); at most one True per row
        return [correct[:, :min(k, maxk)].sum(dtype=torch.float32) * (100.0 / batch_size) for k in topk]
