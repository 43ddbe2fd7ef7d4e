"""The loops behind main.py: one training epoch, a validation pass, an attack pass, and the schedule.

Each function takes the objects it uses (model, loader, optimizer, ...) and returns plain numbers in
a dict; logging goes through the `log` (console) and `image_sink` (TensorBoard + PNG) callables that
main.py passes in, which are None/no-ops on every rank but 0 of a distributed run.
"""
import math
import time

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

import custom_transforms
from utils import AverageMeter, accuracy


def _no_log(*args, **kwargs):
    pass


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


def set_lr_and_weight_decay(optimizer, lr, weight_decay):
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def to_device(images, target, device, channels_last=False):
    """Move a batch to `device` (asynchronously from pinned memory) in the model's memory format.

    `images` is an (N, 3, H, W) tensor, or the dict that a pipeline ending in DeferResample yields
    (uint8 sources and planned warps), which is resampled and normalized here, on `device`.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if isinstance(images, dict):
        images = custom_transforms.resample_batch(images, device, memory_format)
    else:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, target.to(device, non_blocking=True)


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


def train_one_epoch(model, loader, criterion, optimizer, scaler, *, epoch, schedule, device,
                    amp_dtype=None, channels_last=False, print_freq=10, writer=None,
                    adversarial_batch=None, log=_no_log):
    """Train for one epoch; returns {loss, top1, top5, images, seconds} averaged over all processes.

    schedule(step) -> (lr, weight_decay) is applied before every iteration. adversarial_batch, when
    given, maps (images, target) to the batch actually trained on (adversarial training).
    `images` counts the loader's images (not the adversarial copies), summed over processes.
    """
    model.train()
    batch_time, data_time = AverageMeter("Time", ":6.3f"), AverageMeter("Data", ":6.3f")
    losses, top1, top5 = AverageMeter("Loss", ":.4e"), AverageMeter("Acc@1", ":6.2f"), AverageMeter("Acc@5", ":6.2f")
    iters = len(loader)
    images_seen = 0
    start = end = time.perf_counter()
    for i, (images, target) in enumerate(loader):
        data_time.update(time.perf_counter() - end)
        step = epoch * iters + i
        lr, weight_decay = schedule(step)
        set_lr_and_weight_decay(optimizer, lr, weight_decay)
        images, target = to_device(images, target, device, channels_last)
        images_seen += target.shape[0]
        if adversarial_batch is not None:
            images, target = adversarial_batch(images, target)

        loss, output = train_step(model, images, target, criterion, optimizer, scaler, amp_dtype)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        n = target.shape[0]
        losses.update(loss, n)
        top1.update(acc1, n)
        top5.update(acc5, n)
        batch_time.update(time.perf_counter() - end)
        end = time.perf_counter()

        if i % print_freq == 0:
            log(f"Epoch: [{epoch}][{i}/{iters}]  lr {lr:.4g}  {batch_time}  {data_time}  {losses}  {top1}  {top5}")
            if writer is not None:
                writer.add_scalar("data/training_loss", float(loss), step)
                writer.add_scalar("data/learning_rate", lr, step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start

    for meter in (losses, top1, top5):
        meter.all_reduce(device)
    return {"loss": losses.avg, "top1": top1.avg, "top5": top5.avg,
            "images": _all_reduce_sum(images_seen, device), "seconds": seconds}


def _all_reduce_sum(value, device):
    if not (dist.is_available() and dist.is_initialized()):
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return int(total.item())


# ---------------------------------------------------------------------------------------------------
# Validation, attention maps and attacks
# ---------------------------------------------------------------------------------------------------


class ShardSampler(Sampler):
    """Indices rank, rank + world_size, ... of a dataset of `length` items.

    Unlike DistributedSampler it never pads with repeated items, so sums all-reduced over the ranks
    count every validation image exactly once.
    """

    def __init__(self, length, rank, world_size):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self):
        return len(range(self.rank, self.length, self.world_size))


def validate(model, loader, criterion, device, *, amp_dtype=None, channels_last=False,
             flip_average=False, print_freq=10, attention=None, visualize=None, image_sink=None,
             log=_no_log):
    """One pass over `loader` in eval mode; returns {loss, top1, top5, count} over all processes.

    flip_average: logits averaged over each image and its horizontal flip (the original's -e).
    attention + visualize + image_sink: every print_freq batches, the saliency grid
    visualize(images, vis_output=attention.explain(model, images)) goes to `Image/Image_Atten`.
    """
    model.eval()
    losses, top1, top5 = AverageMeter("Loss", ":.4e"), AverageMeter("Acc@1", ":6.2f"), AverageMeter("Acc@5", ":6.2f")
    for i, (images, target) in enumerate(loader):
        images, target = to_device(images, target, device, channels_last)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(images)
            if flip_average:
                output = 0.5 * (output + model(torch.flip(images, dims=(3,))))  # (N, C)
            loss = criterion(output.float(), target)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        n = target.shape[0]
        losses.update(loss, n)
        top1.update(acc1, n)
        top5.update(acc5, n)
        if i % print_freq == 0:
            if attention is not None and image_sink is not None:
                saliency = attention.explain(model, images)  # (N, 1, H, W)
                image_sink("Image/Image_Atten", visualize(images, vis_output=saliency), i)
            log(f"Test: [{i}/{len(loader)}]  {losses}  {top1}  {top5}")
    for meter in (losses, top1, top5):
        meter.all_reduce(device)
    return {"loss": losses.avg, "top1": top1.avg, "top5": top5.avg, "count": losses.count}


def attack_eval(model, loader, criterion, attacks, device, *, channels_last=False, print_freq=10,
                visualize=None, image_sink=None, log=_no_log):
    """Clean and adversarial accuracy over `loader`.

    attacks: {epsilon: attacker} (attacker None = the clean images, i.e. epsilon 0), each with a
    .perturb(model, images). Every print_freq batches the last attack's originals and adversarial
    images go to `Image/Org_Image` and `Image/Adv_Image`.
    Returns {"clean": {top1, top5}, "attacks": [{epsilon, top1, top5}, ...], "count"}.
    """
    model.eval()
    clean1, clean5 = AverageMeter("Acc@1", ":6.2f"), AverageMeter("Acc@5", ":6.2f")
    adv_meters = {eps: (AverageMeter("Adv@1", ":6.2f"), AverageMeter("Adv@5", ":6.2f")) for eps in attacks}
    last_eps = list(attacks)[-1]
    for i, (images, target) in enumerate(loader):
        images, target = to_device(images, target, device, channels_last)
        n = target.shape[0]
        with torch.no_grad():
            output = model(images)
        for meter, value in zip((clean1, clean5), accuracy(output, target, topk=(1, 5))):
            meter.update(value, n)
        for eps, attacker in attacks.items():
            adv_images = images if attacker is None else attacker.perturb(model, images)
            with torch.no_grad():
                adv_output = model(adv_images)
            for meter, value in zip(adv_meters[eps], accuracy(adv_output, target, topk=(1, 5))):
                meter.update(value, n)
            if eps == last_eps and i % print_freq == 0 and image_sink is not None:
                image_sink("Image/Org_Image", visualize(images), i)
                image_sink("Image/Adv_Image", visualize(adv_images), i)
        if i % print_freq == 0:
            adv1, adv5 = adv_meters[last_eps]
            log(f"Attack: [{i}/{len(loader)}]  clean {clean1}  {clean5}  adversarial {adv1}  {adv5}")
    for meter in (clean1, clean5, *[m for pair in adv_meters.values() for m in pair]):
        meter.all_reduce(device)
    return {
        "clean": {"top1": clean1.avg, "top5": clean5.avg},
        "attacks": [{"epsilon": eps, "top1": a1.avg, "top5": a5.avg} for eps, (a1, a5) in adv_meters.items()],
        "count": clean1.count,
    }
