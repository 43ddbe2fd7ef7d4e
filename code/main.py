"""Train, evaluate and attack the Assignment 2 networks on MiniPlaces, logging to TensorBoard.

    python code/main.py --demo                      # the whole assignment on a small generated dataset
    python code/main.py [data_folder] [--arch simplenet] [--epochs 90] [-b 256] [--lr 0.1] ...
    python code/main.py data --resume logs/<run>/checkpoint.pth.tar           # continue a run
    python code/main.py data --resume logs/<run>/model_best.pth.tar -e [-v]   # flip-averaged val accuracy
    python code/main.py data --resume logs/<run>/model_best.pth.tar -a [-v] [--eps-sweep]
    torchrun --nproc_per_node 2 code/main.py data ...                         # DistributedDataParallel
    tensorboard --logdir logs

Each run writes into logs/<run-name>/: TensorBoard events, checkpoint.pth.tar, model_best.pth.tar,
args.json, metrics.json and PNG grids; -e and -a write into the folder of the checkpoint they load.
The loops live in engine.py and the helpers in utils.py; this file parses, checks and wires.
"""
import argparse
import copy
import functools
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

import devices
import models
import utils
from utils import UserError

CONV_OPS = ("Conv2d", "CustomConv2d")
VAL_BATCH_SIZE = 100
SWEEP_EPSILONS = (0.0, 0.01, 0.02, 0.05, 0.1)
# The assignment's PGD budget; adversarial training spreads it over --adv-steps steps so that its
# few steps reach as far as the default attack's 10 steps of 0.01.
ADV_TRAIN_EPSILON = 0.1

# --demo: a short run on the 10-class demo dataset, sized for a 2-core CPU (see the README).
# Flags given on the command line still win. channels-last: SimpleNet's training steps ran 1.4-2x
# faster in NHWC on the 2-core AVX2 CPU (bench/bench_train.py).
DEMO_DEFAULTS = {
    "epochs": 3,
    "warmup_epochs": 0.25,
    "batch_size": 32,
    "lr": 0.05,
    "workers": 2,
    "print_freq": 20,
    "seed": 0,
    "channels_last": True,
}
DEMO_ATTACK_IMAGES = 50


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' except where X is None or a switch's False (their help says it)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def get_args_parser():
    parser = utils.ArgumentParser(
        description="Train, evaluate (-e) or attack (-a) a network on MiniPlaces; log to TensorBoard.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("data_folder", nargs="?", default=None,
                        help=f"MiniPlaces folder (train.txt, val.txt, images/); default {utils.DEFAULT_DATA_DIR}")
    parser.add_argument("-j", "--workers", default=4, type=int, help="data loading worker processes")
    parser.add_argument("--epochs", default=90, type=int, help="total epochs of the schedule")
    parser.add_argument("--warmup-epochs", default=0, type=float,
                        help="epochs (may be fractional) of linear warm-up from lr 0, weight decay 0, "
                             "before the cosine")
    parser.add_argument("--start-epoch", default=0, type=int, help="first epoch (ignored with --resume)")
    parser.add_argument("-b", "--batch-size", default=256, type=int,
                        help="training mini-batch, summed over all processes of a torchrun")
    parser.add_argument("--lr", "--learning-rate", default=0.1, type=float, dest="lr", help="peak learning rate")
    parser.add_argument("--momentum", default=0.9, type=float, help="SGD momentum")
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay",
                        help="weight decay (0 during warm-up)")
    parser.add_argument("-p", "--print-freq", default=10, type=int, help="log every N iterations")
    parser.add_argument("--resume", default=None, type=str, metavar="PATH",
                        help="checkpoint to continue training from, or to evaluate/attack")
    parser.add_argument("-e", "--evaluate", action="store_true",
                        help="evaluate the --resume model on val (image + horizontal flip averaged)")
    parser.add_argument("-a", "--attack", action="store_true",
                        help="accuracy of the --resume model under the default PGD attack")
    parser.add_argument("-v", "--vis", action="store_true",
                        help="with -e: saliency maps; with -a: original and adversarial images")
    parser.add_argument("--use-custom-conv", action="store_true", help="use CustomConv2d (unfold/fold)")
    parser.add_argument("--gpu", default=None, type=int,
                        help="GPU index; negative for the CPU; default the first GPU if any, else the CPU")
    parser.add_argument("--arch", default=None, choices=models.arch_names(),
                        help="network (default student_code.default_model, or the --resume checkpoint's)")
    parser.add_argument("--seed", default=None, type=int,
                        help="random seed (default: a random one, saved in args.json and checkpoints)")
    parser.add_argument("--logdir", default=str(utils.DEFAULT_LOG_DIR), help="folder holding the run folders")
    parser.add_argument("--run-name", default=None,
                        help="run folder name (default <arch>_<conv>_<timestamp>; with --resume, its folder)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: fp16 + GradScaler on CUDA, bf16 on the CPU")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training model")
    parser.add_argument("--cache", action="store_true",
                        help="decode each split once into a memory-mapped uint8 file under data/cache/, "
                             "so epochs skip JPEG decoding")
    parser.add_argument("--adv-train", action="store_true", help="train on PGD adversarial examples")
    parser.add_argument("--adv-mode", default="mixed", choices=("mixed", "adv"),
                        help="adversarial training batch: clean + adversarial, or adversarial only")
    parser.add_argument("--adv-steps", default=2, type=int, help="PGD steps per adversarial training batch")
    parser.add_argument("--eps-sweep", action="store_true",
                        help=f"with -a: accuracy at epsilon {', '.join(map(str, SWEEP_EPSILONS))}; "
                             "writes robustness.md and robustness.png")
    parser.add_argument("--demo", action="store_true",
                        help="generate the demo dataset if absent, train briefly, then run -e -v and -a -v")
    return parser


def parse_args(argv=None):
    """Parse and check the command line; --demo fills in its own defaults for flags not given."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.demo:
        parser.set_defaults(**DEMO_DEFAULTS)
        args = parser.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    """Reject bad values and flag combinations with a message naming the flag."""
    positive = {"--epochs": args.epochs, "-b/--batch-size": args.batch_size, "-p/--print-freq": args.print_freq,
                "--adv-steps": args.adv_steps}
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    non_negative = {"-j/--workers": args.workers, "--warmup-epochs": args.warmup_epochs,
                    "--start-epoch": args.start_epoch, "--momentum": args.momentum,
                    "--wd/--weight-decay": args.weight_decay}
    for flag, value in non_negative.items():
        if value < 0:
            raise UserError(f"{flag} must not be negative, got {value}")
    if not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    if args.warmup_epochs > args.epochs:
        raise UserError(f"--warmup-epochs ({args.warmup_epochs:g}) exceeds --epochs ({args.epochs})")
    if args.start_epoch >= args.epochs:
        raise UserError(f"--start-epoch ({args.start_epoch}) must be below --epochs ({args.epochs})")
    if args.evaluate and args.attack:
        raise UserError("-e/--evaluate and -a/--attack cannot be combined: run one, then the other")
    for flag, on, verb in (("-e/--evaluate", args.evaluate, "evaluate"), ("-a/--attack", args.attack, "attack")):
        if on and not args.resume:
            raise UserError(f"{flag} needs --resume CHECKPOINT (the model to {verb})")
    if args.vis and not (args.evaluate or args.attack):
        raise UserError("-v/--vis works with -e/--evaluate or -a/--attack")
    if args.eps_sweep and not args.attack:
        raise UserError("--eps-sweep works with -a/--attack")
    if args.adv_train and (args.evaluate or args.attack):
        raise UserError("--adv-train is for training; it cannot be combined with -e or -a")
    if args.demo and (args.evaluate or args.attack or args.resume):
        raise UserError("--demo runs training, -e and -a itself: drop -e, -a and --resume")


# ---------------------------------------------------------------------------------------------------
# Devices and processes
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------------


def check_data_folder(data_folder):
    path = Path(data_folder)
    if not path.is_dir():
        raise UserError(f"data folder {path} does not exist (give the MiniPlaces folder, or run --demo)")
    return path


def build_datasets(data_folder, cache, train=True):
    """(train set or None, val set); the loaders raise DataError (a UserError) on bad files.

    Training images are resampled per batch on the training device (engine.to_device): the workers
    only decode and draw the augmentation, which keeps them ahead of a GPU.
    """
    import custom_dataloader
    import custom_transforms

    root = check_data_folder(data_folder)
    num_classes = count_classes(root)
    train_set = None
    if train:
        train_set = custom_dataloader.MiniPlacesLoader(
            root, num_classes=num_classes, split="train",
            transforms=custom_transforms.get_train_transforms(defer=True), cache=cache)
    val_set = custom_dataloader.MiniPlacesLoader(
        root, num_classes=num_classes, split="val", transforms=custom_transforms.get_val_transforms(),
        cache=cache)
    return train_set, val_set


def count_classes(root):
    """Classes listed in categories.txt (else the class folders of images/train/, else MiniPlaces' 100):
    the demo dataset has 10."""
    import custom_dataloader

    if (root / "categories.txt").is_file():
        return len(custom_dataloader.parse_categories(root / "categories.txt"))
    if (root / "images" / "train").is_dir():
        return len(custom_dataloader.class_names_from_folders(root / "images" / "train")) or 100
    return 100


def train_loader_for(train_set, batch_size, workers, device, rank, world_size, seed):
    """Shuffling, drop-last loader; its generator is re-seeded every epoch (see seed_epoch)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", drop_last=True, generator=generator)
    if len(loader) == 0:
        raise UserError(f"-b/--batch-size {batch_size * world_size} exceeds the {len(train_set)} training images")
    return loader


def seed_epoch(loader, seed, epoch):
    """Shuffle order and worker seeds of `epoch` depend on (seed, epoch) alone, so a resumed run
    draws the same batches as an uninterrupted one."""
    loader.generator.manual_seed((seed * 1_000_003 + epoch) % 2**63)
    if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)


def val_loader_for(val_set, workers, device, rank, world_size):
    """This rank's share of val_set in batches of one image size (the val pipeline keeps aspect ratios)."""
    import custom_dataloader

    batches = custom_dataloader.SizeGroupedBatchSampler(
        custom_dataloader.image_sizes(val_set), VAL_BATCH_SIZE, rank, world_size)
    return torch.utils.data.DataLoader(
        val_set, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda")


def build_model(arch, use_custom_conv, num_classes, checkpoint_path=None):
    """The --arch network. With checkpoint_path, its weights will come from that checkpoint, so
    resnet18 skips the ImageNet weights."""
    return models.build_model(arch, num_classes, use_custom_conv, pretrained=checkpoint_path is None)[1]


# ---------------------------------------------------------------------------------------------------
# Runs: folders, logging, checkpoints
# ---------------------------------------------------------------------------------------------------


def plain_args(args):
    """The namespace as a dict of JSON/weights_only-safe values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def broadcast_object(value, rank, world_size):
    """rank 0's `value` on every rank (run names and random seeds must agree)."""
    if world_size == 1:
        return value
    holder = [value if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class RunLog:
    """Console, TensorBoard and PNG output of one run; everything is a no-op off rank 0."""

    def __init__(self, run_dir, active, purge_step=None):
        self.run_dir = run_dir
        self.active = active
        self.writer = None
        if active:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def print(self, *args, **kwargs):
        if self.active:
            print(*args, **kwargs, flush=True)

    def image(self, tag, image, step):
        """An image grid (3, H, W) in [0, 1] to TensorBoard under `tag` and to <run>/<name>_<step>.png."""
        if not self.active:
            return
        self.writer.add_image(tag, image, step)
        utils.save_png(image, self.run_dir / f"{tag.split('/')[-1]}_{step:04d}.png")

    def close(self):
        if self.writer is not None:
            self.writer.close()


def checkpoint_state(epoch, args, model, optimizer, scaler, best_acc1, num_classes, classes):
    return {
        "epoch": epoch,
        "arch": args.arch,
        "conv_op": CONV_OPS[args.use_custom_conv],
        "num_classes": num_classes,
        "classes": list(classes),
        "state_dict": model.state_dict(),
        "best_acc1": best_acc1,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": utils.get_rng_state(),
        "args": plain_args(args),
    }


def load_model_checkpoint(args):
    """Load --resume, adopt its arch (or check --arch against it) and its seed when none was given."""
    checkpoint = utils.load_checkpoint(args.resume)
    if args.arch is None:
        args.arch = checkpoint["arch"]
    elif args.arch != checkpoint["arch"]:
        raise UserError(f"--resume: {args.resume} holds a '{checkpoint['arch']}' checkpoint, "
                        f"not --arch '{args.arch}'")
    if args.seed is None:
        args.seed = checkpoint.get("args", {}).get("seed")
    return checkpoint


def load_weights(model, checkpoint, path):
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"--resume: the weights in {path} do not fit this model ({first})") from None


def run_folder(args, rank, world_size):
    """logs/<run-name>; with --resume and no --run-name, the checkpoint's own folder."""
    if args.run_name:
        name, reuse = args.run_name, True
    elif args.resume:
        return Path(args.resume).resolve().parent
    else:
        name, reuse = utils.make_run_name(args.arch, CONV_OPS[args.use_custom_conv]), False
    run_dir = None
    if rank == 0:
        run_dir = utils.create_run_dir(args.logdir, name, reuse=reuse)
    return Path(broadcast_object(str(run_dir) if run_dir else None, rank, world_size))


def load_metrics(run_dir, start_epoch):
    """metrics.json of an earlier run in this folder, cut to the epochs before `start_epoch`."""
    path = run_dir / "metrics.json"
    if start_epoch == 0 or not path.is_file():
        return []
    try:
        return [m for m in json.loads(path.read_text(encoding="utf-8-sig")) if m["epoch"] < start_epoch]
    except (ValueError, KeyError, TypeError):
        return []


# ---------------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------------


def train(args, device, rank, world_size):
    """Train (or continue) a run; returns its folder."""
    import engine
    import student_code

    checkpoint = load_model_checkpoint(args) if args.resume else None
    args.arch = args.arch or "simplenet"
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    args.seed = broadcast_object(args.seed, rank, world_size)
    utils.seed_everything(args.seed + rank)

    train_set, val_set = build_datasets(args.data_folder, args.cache)
    num_classes = len(train_set.classes)
    per_rank_batch = args.batch_size // world_size
    if per_rank_batch < 1:
        raise UserError(f"-b/--batch-size {args.batch_size} is smaller than the {world_size} processes")
    train_loader = train_loader_for(train_set, per_rank_batch, args.workers, device, rank, world_size, args.seed)
    val_loader = val_loader_for(val_set, args.workers, device, rank, world_size)

    model = build_model(args.arch, args.use_custom_conv, num_classes,
                        checkpoint_path=None if checkpoint is None else args.resume)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    criterion = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    amp_dtype, scaler = devices.amp_settings(args.amp, device)

    start_epoch, best_acc1 = args.start_epoch, 0.0
    if checkpoint is not None:
        load_weights(model, checkpoint, args.resume)
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scaler.load_state_dict(checkpoint["scaler"])
        except (KeyError, ValueError) as exc:
            raise UserError(f"--resume: {args.resume} has no usable optimizer state ({exc})") from None
        start_epoch, best_acc1 = checkpoint["epoch"], checkpoint["best_acc1"]
        if start_epoch >= args.epochs:
            raise UserError(f"--resume: {args.resume} already finished epoch {start_epoch} of --epochs {args.epochs}")

    train_model = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)

    adversarial_batch = None
    if args.adv_train:
        attack = student_code.PGDAttack(criterion, num_steps=args.adv_steps,
                                        step_size=ADV_TRAIN_EPSILON / args.adv_steps, epsilon=ADV_TRAIN_EPSILON)
        # The attack runs on the bare model: a DDP backward would wait for the other ranks.
        adversarial_batch = functools.partial(student_code.adversarial_training_batch, model, attack,
                                              mode=args.adv_mode)

    iters = len(train_loader)

    def schedule(step):
        return engine.lr_and_weight_decay(step, args.epochs * iters, round(args.warmup_epochs * iters),
                                          args.lr, args.weight_decay)

    run_dir = run_folder(args, rank, world_size)
    log = RunLog(run_dir, rank == 0, purge_step=start_epoch * iters if start_epoch else None)
    metrics = load_metrics(run_dir, start_epoch)
    if checkpoint is not None:
        utils.set_rng_state(checkpoint["rng"])
    if rank == 0:
        utils.write_json(plain_args(args), run_dir / "args.json")
        log.writer.add_text("args", "\n".join(f"    {k} = {v!r}" for k, v in sorted(plain_args(args).items())))
    log.print(f"=> {args.arch} ({CONV_OPS[args.use_custom_conv]}) on {device}, {world_size} process(es), "
              f"{len(train_set)} train / {len(val_set)} val images, {num_classes} classes, "
              f"epochs {start_epoch}..{args.epochs - 1}, run folder {run_dir}")

    if args.amp and device.type == "cpu" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        log.print(f"note: --amp on this CPU ({torch.backends.cpu.get_cpu_capability()}) emulates bf16 and is "
                  "slower than fp32 (bench/bench_train.py measures it)")
    try:
        for epoch in range(start_epoch, args.epochs):
            seed_epoch(train_loader, args.seed, epoch)
            utils.reset_peak_memory(device)
            stats = engine.train_one_epoch(
                train_model, train_loader, criterion, optimizer, scaler, epoch=epoch, schedule=schedule,
                device=device, amp_dtype=amp_dtype, channels_last=args.channels_last,
                print_freq=args.print_freq, writer=log.writer, adversarial_batch=adversarial_batch,
                log=log.print)
            peak_mib = utils.peak_memory_mib(device)
            val = engine.validate(model, val_loader, criterion, device, amp_dtype=amp_dtype,
                                  channels_last=args.channels_last, print_freq=args.print_freq, log=log.print)
            is_best = val["top1"] > best_acc1
            best_acc1 = max(best_acc1, val["top1"])
            record = {
                "epoch": epoch, "lr": schedule((epoch + 1) * iters - 1)[0],
                "train_loss": stats["loss"], "train_top1": stats["top1"], "train_top5": stats["top5"],
                "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                "epoch_minutes": stats["seconds"] / 60, "images_per_s": stats["images"] / stats["seconds"],
                "peak_mem_mib": peak_mib, "device": str(device), "world_size": world_size,
            }
            metrics.append(record)
            if rank == 0:
                log_epoch(log.writer, record)
                utils.save_checkpoint(
                    checkpoint_state(epoch + 1, args, model, optimizer, scaler, best_acc1, num_classes,
                                     train_set.classes), run_dir, is_best)
                utils.write_json(metrics, run_dir / "metrics.json")
            log.print(f" * Epoch {epoch}: train loss {stats['loss']:.4f}  Acc@1 {stats['top1']:.2f}  "
                      f"val Acc@1 {val['top1']:.2f}  Acc@5 {val['top5']:.2f}  (best {best_acc1:.2f})  "
                      f"{record['epoch_minutes']:.2f} min  {record['images_per_s']:.0f} img/s  "
                      f"peak {peak_mib:.0f} MiB")
    finally:
        log.close()
    log.print(f"=> run folder {run_dir}; view it with:  tensorboard --logdir {run_dir.parent}")
    return run_dir


def log_epoch(writer, record):
    epoch = record["epoch"]
    writer.add_scalars("data/top1_accuracy", {"train": record["train_top1"], "val": record["val_top1"]}, epoch)
    writer.add_scalars("data/top5_accuracy", {"train": record["train_top5"], "val": record["val_top5"]}, epoch)
    writer.add_scalar("data/validation_loss", record["val_loss"], epoch)
    writer.add_scalar("perf/epoch_minutes", record["epoch_minutes"], epoch)
    writer.add_scalar("perf/images_per_s", record["images_per_s"], epoch)
    writer.add_scalar("perf/peak_mem_mib", record["peak_mem_mib"], epoch)
    writer.flush()


def load_for_eval(args, device, rank, world_size, val_images=None):
    """(model in eval mode on `device`, val loader, criterion, run log) for -e and -a;
    `val_images` keeps only the first N val images (the demo's attack pass)."""
    checkpoint = load_model_checkpoint(args)
    _, val_set = build_datasets(args.data_folder, args.cache, train=False)
    num_classes = checkpoint.get("num_classes", len(val_set.classes))
    if len(val_set.classes) != num_classes:
        raise UserError(f"--resume: {args.resume} was trained on {num_classes} classes but "
                        f"{args.data_folder} has {len(val_set.classes)}")
    model = build_model(args.arch, args.use_custom_conv, num_classes, checkpoint_path=args.resume)
    load_weights(model, checkpoint, args.resume)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).eval()
    if val_images is not None and val_images < len(val_set):
        classes = val_set.classes
        val_set = torch.utils.data.Subset(val_set, range(val_images))
        val_set.classes = classes
    val_loader = val_loader_for(val_set, args.workers, device, rank, world_size)
    log = RunLog(run_folder(args, rank, world_size), rank == 0)
    log.print(f"=> {args.resume}: {checkpoint['arch']} after epoch {checkpoint.get('epoch')}, "
              f"evaluated with {CONV_OPS[args.use_custom_conv]} on {device}")
    return model, val_loader, nn.CrossEntropyLoss().to(device), log


def evaluate(args, device, rank, world_size):
    import engine
    import student_code

    model, val_loader, criterion, log = load_for_eval(args, device, rank, world_size)
    amp_dtype, _ = devices.amp_settings(args.amp, device)
    attention = student_code.default_attention(criterion) if args.vis else None
    try:
        result = engine.validate(
            model, val_loader, criterion, device, amp_dtype=amp_dtype, channels_last=args.channels_last,
            flip_average=True, print_freq=args.print_freq, attention=attention,
            visualize=student_code.default_visfunction, image_sink=log.image if args.vis else None,
            log=log.print)
    finally:
        log.close()
    log.print(f" * Acc@1 {result['top1']:.3f} Acc@5 {result['top5']:.3f}  ({result['count']} val images, "
              "image + flip averaged)")
    if rank == 0:
        utils.write_json({"checkpoint": str(args.resume), **result}, log.run_dir / "evaluation.json")
    return log.run_dir


def attack(args, device, rank, world_size, val_images=None):
    import engine
    import student_code

    model, val_loader, criterion, log = load_for_eval(args, device, rank, world_size, val_images)
    if args.eps_sweep:
        attacks = {eps: student_code.PGDAttack(criterion, epsilon=eps) for eps in SWEEP_EPSILONS}
    else:
        default = student_code.default_attack(criterion)
        attacks = {getattr(default, "epsilon", None): default}
    try:
        result = engine.attack_eval(
            model, val_loader, criterion, attacks, device, channels_last=args.channels_last,
            print_freq=args.print_freq, visualize=student_code.default_visfunction,
            image_sink=log.image if args.vis else None, log=log.print)
    finally:
        log.close()
    clean = result["clean"]
    for row in result["attacks"]:
        log.print(f" * epsilon {row['epsilon']}: clean Acc@1 {clean['top1']:.3f} Acc@5 {clean['top5']:.3f}"
                  f" -> adversarial Acc@1 {row['top1']:.3f} Acc@5 {row['top5']:.3f}  ({result['count']} val images)")
    if rank == 0:
        utils.write_json({"checkpoint": str(args.resume), **result}, log.run_dir / "attack.json")
        if args.eps_sweep:
            write_robustness_report(result, log.run_dir, args.resume)
            log.print(f"=> robustness table and plot: {log.run_dir / 'robustness.md'}, "
                      f"{log.run_dir / 'robustness.png'}")
    return log.run_dir


def write_robustness_report(result, run_dir, checkpoint_path):
    """robustness.md (a Markdown table) and robustness.png (accuracy against epsilon)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    lines = [f"# Accuracy under PGD attack\n\nModel: `{checkpoint_path}`, {result['count']} val images, "
             "10 steps of 0.01 (targeted at the least confident label).\n",
             "| epsilon | Acc@1 (%) | Acc@5 (%) |", "| ---: | ---: | ---: |"]
    lines += [f"| {row['epsilon']} | {row['top1']:.2f} | {row['top5']:.2f} |" for row in result["attacks"]]
    utils.write_text(run_dir / "robustness.md", "\n".join(lines) + "\n")

    eps = [row["epsilon"] for row in result["attacks"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(eps, [row["top1"] for row in result["attacks"]], "o-", label="top-1")
    ax.plot(eps, [row["top5"] for row in result["attacks"]], "s-", label="top-5")
    ax.set_xlabel("epsilon (L-inf, normalized input)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    utils.save_figure(fig, run_dir / "robustness.png")


def demo(args, device, rank, world_size):
    """The README's first command: demo data, a short training run, then -e -v and -a -v on it."""
    import demo_data

    start = time.perf_counter()
    root = demo_data.ensure_demo_dataset(Path(args.data_folder)) if args.data_folder \
        else demo_data.ensure_demo_dataset()
    train_args = copy.copy(args)
    train_args.data_folder, train_args.demo = str(root), False
    run_dir = train(train_args, device, rank, world_size)

    best = run_dir / utils.BEST_NAME
    eval_args, attack_args = copy.copy(train_args), copy.copy(train_args)
    for mode_args in (eval_args, attack_args):
        mode_args.resume, mode_args.vis, mode_args.run_name = str(best), True, None
    eval_args.evaluate, attack_args.attack = True, True
    evaluate(eval_args, device, rank, world_size)
    if rank == 0:
        print(f"=> attacking the first {DEMO_ATTACK_IMAGES} val images (10 PGD steps each: the whole val set "
              "would take minutes on a CPU)", flush=True)
    attack(attack_args, device, rank, world_size, val_images=DEMO_ATTACK_IMAGES)
    if rank == 0:
        print(f"\nDemo finished in {(time.perf_counter() - start) / 60:.1f} min. Logs, checkpoints and PNG grids: "
              f"{run_dir}\nView them with:  tensorboard --logdir {run_dir.parent}", flush=True)
    return run_dir


def main(argv=None):
    """Entry point; returns the exit code (0, 2 for a user error, 130 when interrupted)."""
    distributed = False
    try:
        args = parse_args(argv)
        if args.data_folder is None and not args.demo:
            args.data_folder = str(utils.DEFAULT_DATA_DIR)
        rank, world_size, local_rank = devices.setup_distributed()
        distributed = world_size > 1
        device = devices.resolve_device(args.gpu, local_rank, distributed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        if args.demo:
            demo(args, device, rank, world_size)
        elif args.evaluate:
            evaluate(args, device, rank, world_size)
        elif args.attack:
            attack(args, device, rank, world_size)
        else:
            train(args, device, rank, world_size)
        return 0
    except UserError as exc:
        utils.print_user_error(exc)
        return 2
    except KeyboardInterrupt:
        print("interrupted: continue with --resume <run folder>/checkpoint.pth.tar", file=sys.stderr, flush=True)
        return 130
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
