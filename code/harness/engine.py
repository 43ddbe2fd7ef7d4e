"""The loops behind main.py: one training epoch, a validation pass, an attack pass, and the schedule.

Each function takes the objects it uses (model, loader, optimizer, ...) and returns plain numbers in a
dict. Loaders yield ready (images, target) batches on the model's device (loaders.DeviceLoader).
Everything printed or logged goes through `log`, a runlog.RunLog, which is inactive on every rank but
0 of a distributed run (and when no log is given).
"""
import math
import time
from dataclasses import dataclass

import torch

from . import attack_grid, student
from .divergence import DivergenceWatch
from .runlog import MetricLogger, RunLog
from .metrics import accuracy

NO_LOG = RunLog()


def _loss_and_accuracy():
    return MetricLogger(loss=("Loss", ":.4e"), top1=("Acc@1", ":6.2f"), top5=("Acc@5", ":6.2f"))


# ---------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------


def lr_and_weight_decay(step, total_steps, warmup_steps, base_lr, weight_decay):
    """(lr, weight decay) at global iteration `step`, as the starter's adjust_learning_rate.

    Linear warm-up from 0 over the first `warmup_steps` iterations with weight decay 0; then
    cosine 0.5 * lr * (1 + cos(pi * t / T)) with t the global iteration and T = epochs * iterations
    per epoch, so a resumed run lands on the same point of the curve.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps, 0.0
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / total_steps)), weight_decay


@dataclass(frozen=True)
class Schedule:
    """The run's (lr, weight decay) by global iteration: lr_and_weight_decay over `epochs` epochs of
    `iters_per_epoch` iterations, the first `warmup_epochs` (may be fractional) warming up."""

    lr: float
    weight_decay: float
    epochs: int
    iters_per_epoch: int
    warmup_epochs: float = 0.0

    def __call__(self, step):
        return lr_and_weight_decay(step, self.epochs * self.iters_per_epoch,
                                   round(self.warmup_epochs * self.iters_per_epoch), self.lr, self.weight_decay)

    def last_lr(self, epoch):
        """The lr of `epoch`'s last iteration (the epoch's record)."""
        return self((epoch + 1) * self.iters_per_epoch - 1)[0]


def set_lr_and_weight_decay(optimizer, lr, weight_decay):
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def train_step(model, images, target, criterion, optimizer, scaler, amp_dtype=None):
    """One SGD step; returns the detached loss (0-d) and logits (N, C).

    `scaler` is a torch.amp.GradScaler, enabled for fp16 on CUDA and a pass-through otherwise;
    `amp_dtype` None means full precision.
    """
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        output = model(images)
        loss = criterion(output, target)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), output.detach()


def train_one_epoch(model, loader, criterion, optimizer, scaler, *, epoch, schedule, device, amp_dtype=None,
                    print_freq=10, adversarial_batch=None, watch=None, log=NO_LOG):
    """Train for one epoch; returns {loss, top1, top5, images, seconds} averaged over all processes.

    schedule(step) -> (lr, weight_decay) (a Schedule) is applied before every iteration. adversarial_batch, when
    given, maps (images, target) to the batch actually trained on (adversarial training). `images`
    counts the loader's images (not the adversarial copies), summed over processes. `watch` (a
    DivergenceWatch, default one for this scaler) sees every loss and is checked every print_freq
    iterations and at the end: divergence.Divergence stops the epoch.
    """
    model.train()
    watch = watch or DivergenceWatch(device, loss_scaling=scaler.is_enabled())
    metrics = _loss_and_accuracy()
    iters = len(loader)
    data_seconds = 0.0
    start = end = time.perf_counter()
    for i, (images, target) in enumerate(loader):
        data_seconds += time.perf_counter() - end
        step = epoch * iters + i
        lr, weight_decay = schedule(step)
        set_lr_and_weight_decay(optimizer, lr, weight_decay)
        metrics.add(images=target.shape[0])
        if adversarial_batch is not None:
            images, target = adversarial_batch(images, target)

        loss, output = train_step(model, images, target, criterion, optimizer, scaler, amp_dtype)
        watch.observe(step, loss)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        metrics.update(target.shape[0], loss=loss, top1=acc1, top5=acc5)
        end = time.perf_counter()

        if i % print_freq == 0:
            watch.check(model, step)
            log.print(f"Epoch: [{epoch}][{i}/{iters}]  lr {lr:.4g}  {(end - start) / (i + 1):.3f} s/it  "
                      f"data {data_seconds / (i + 1):.3f} s/it  {metrics}")
            log.scalar("data/training_loss", loss, step)
            log.scalar("data/learning_rate", lr, step)
    watch.check(model, (epoch + 1) * iters - 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start

    metrics.all_reduce(device)
    averages = metrics.averages()
    return {"loss": averages["loss"], "top1": averages["top1"], "top5": averages["top5"],
            "images": round(metrics.totals.get("images", 0)), "seconds": seconds}


# ---------------------------------------------------------------------------------------------------
# Validation, attention maps and attacks
# ---------------------------------------------------------------------------------------------------


def validate(model, loader, criterion, device, *, amp_dtype=None, flip_average=False, print_freq=10,
             attention=None, visualize=None, log=NO_LOG):
    """One pass over `loader` in eval mode; returns {loss, top1, top5, count} over all processes.

    flip_average: logits averaged over each image and its horizontal flip (the original's -e).
    attention + visualize: every print_freq batches, the saliency grid
    visualize(images, vis_output=attention.explain(model, images)) goes to `Image/Image_Atten`.
    """
    model.eval()
    metrics = _loss_and_accuracy()
    for i, (images, target) in enumerate(loader):
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(images)
            if flip_average:
                output = 0.5 * (output + model(torch.flip(images, dims=(3,))))  # (N, C)
            loss = criterion(output.float(), target)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        metrics.update(target.shape[0], loss=loss, top1=acc1, top5=acc5)
        if i % print_freq == 0:
            if attention is not None and log.active:
                what = f"{type(attention).__name__}.explain"
                with student.model_kept(model, what):
                    saliency = attention.explain(model, images)
                saliency = student.expect_saliency_for(saliency, images, what)  # (N, 1, H, W)
                log.image("Image/Image_Atten", visualize(images, vis_output=saliency), i)
            log.print(f"Test: [{i}/{len(loader)}]  {metrics}")
    metrics.all_reduce(device)
    return metrics.averages()


def perturb(attacker, model, images):
    """The student's attacker.perturb(model, images) on a copy of the batch (an attack that changes its
    input in place must not change the clean batch), the model's modes and flags kept."""
    what = f"{type(attacker).__name__}.perturb"
    with student.model_kept(model, what):
        adv_images = attacker.perturb(model, images.clone())
    return student.expect_images_like(adv_images, images, what)


def attack_eval(model, loader, attacks, device, *, print_freq=10, visualize=None, log=NO_LOG):
    """Clean and adversarial accuracy over `loader`.

    attacks: {epsilon: attacker} (attacker None = the clean images, i.e. epsilon 0), each with a
    .perturb(model, images). With `visualize`, every print_freq batches the last attack's originals and
    adversarial images go to `Image/Org_Image` and `Image/Adv_Image`, and attack_grid's picture of the
    labels and the magnified perturbation to `Image/Adv_Perturbation`.
    Returns {"clean": {top1, top5}, "attacks": [{epsilon, top1, top5}, ...], "count"}.
    """
    model.eval()
    accuracy_formats = {"top1": ("Acc@1", ":6.2f"), "top5": ("Acc@5", ":6.2f")}
    clean = MetricLogger(**accuracy_formats)
    adversarial = {eps: MetricLogger(**accuracy_formats) for eps in attacks}
    last_eps = list(attacks)[-1]
    for i, (images, target) in enumerate(loader):
        n = target.shape[0]
        with torch.no_grad():
            clean_logits = model(images)
            acc1, acc5 = accuracy(clean_logits, target, topk=(1, 5))
        clean.update(n, top1=acc1, top5=acc5)
        for eps, attacker in attacks.items():
            adv_images = images if attacker is None else perturb(attacker, model, images)
            with torch.no_grad():
                adv_logits = model(adv_images)
                acc1, acc5 = accuracy(adv_logits, target, topk=(1, 5))
            adversarial[eps].update(n, top1=acc1, top5=acc5)
            if eps == last_eps and i % print_freq == 0 and visualize is not None and log.active:
                log.image("Image/Org_Image", visualize(images), i)
                log.image("Image/Adv_Image", visualize(adv_images), i)
                picture, factor, grey_levels = attack_grid.attack_grid(
                    images, adv_images, target, clean_logits.argmax(1), adv_logits.argmax(1),
                    getattr(loader.dataset, "classes", None))
                log.image("Image/Adv_Perturbation", picture, i)
                log.print(f"  Image/Adv_Perturbation: true, clean and adversarial labels; the perturbation "
                          f"magnified x{factor:.0f} (its largest change: {grey_levels:.1f} of 255 grey levels)")
        if i % print_freq == 0:
            log.print(f"Attack: [{i}/{len(loader)}]  clean {clean}  adversarial {adversarial[last_eps]}")
    for metrics in (clean, *adversarial.values()):
        metrics.all_reduce(device)
    totals = clean.averages()
    return {
        "clean": {"top1": totals["top1"], "top5": totals["top5"]},
        "attacks": [{"epsilon": eps, "top1": m.averages()["top1"], "top5": m.averages()["top5"]}
                    for eps, m in adversarial.items()],
        "count": totals["count"],
    }
