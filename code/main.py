"""Train, evaluate and attack the Assignment 2 networks on MiniPlaces, logging to TensorBoard.

    python code/main.py --demo                      # the whole assignment on a small generated dataset
    python code/main.py [data_folder] [--arch simplenet] [--epochs 90] [-b 256] [--lr 0.1] ...
    python code/main.py data --resume logs/<run>/checkpoint.pth.tar           # continue a run
    python code/main.py data --resume logs/<run>/model_best.pth.tar -e [-v] [--no-flip]
    python code/main.py data --resume logs/<run>/model_best.pth.tar -a [-v] [--eps-sweep]
    torchrun --nproc_per_node 2 code/main.py data ...                         # DistributedDataParallel
    tensorboard --logdir logs

Each run writes into logs/<run-name>/: TensorBoard events, checkpoint.pth.tar, model_best.pth.tar,
args.json, metrics.json and PNG grids; -e and -a write into the folder of the checkpoint they load
(a new run folder when that one is not writable). This file parses and checks the flags and wires
the library modules: loaders (data), models (networks), checkpoints, engine (the loops), runlog
(console, TensorBoard, PNG), devices (GPU, torchrun, AMP).
"""
import argparse
import copy
import functools
import json
import math
import os
import random
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from harness import attacks as harness_attacks, checkpoints, cli, devices, engine, files, loaders, models, paths, rng, runs, student
from harness.divergence import Divergence
from harness.runlog import RunLog
from harness.cli import UserError

CONV_OPS = ("Conv2d", "CustomConv2d")
SWEEP_EPSILONS = (0.0, 0.01, 0.02, 0.05, 0.1)
# The assignment's PGD budget; adversarial training spreads it over --adv-steps steps so that its
# few steps reach as far as the default attack's 10 steps of 0.01.
ADV_TRAIN_EPSILON = 0.1
# The reference batch of the linear scaling rule (Goyal et al. 2017) for the default --lr 0.1.
REFERENCE_BATCH = 256

# --demo: a short run on the 10-class demo dataset (1,500 train images), sized for a 2-core CPU (see the
# README). Flags given on the command line still win. Batch 16 trains as many images a second on that
# CPU as batch 32, with twice the updates. lr 0.02: on the demo data of 2026-11-30, 2 epochs reached
# 76-98% val top-1 over seeds 0-3, where lr 0.01 gave 44% with seed 1 (and lr 0.05, on the same
# scenes without pixel noise, 43% with seed 0).
DEMO_DEFAULTS = {
    "epochs": 2,
    "warmup_epochs": 0.25,
    "batch_size": 16,
    "lr": 0.02,
    "workers": 2,
    "print_freq": 20,
    "seed": 0,
}
DEMO_ATTACK_IMAGES = 20

# What a resumed run keeps from the run it continues unless the flag is given again: dest -> flag.
# The switches among them have a --no-... form (BooleanOptionalAction), to turn one off on resume.
# The memory format is not among them: it changes speed, not what is learned, so a resumed run takes
# the one its machine runs fastest (devices.use_channels_last) unless --[no-]channels-last is given.
RUN_SETTINGS = {
    "data_folder": "data_folder", "arch": "--arch", "use_custom_conv": "--use-custom-conv", "init": "--init",
    "amp": "--amp", "compile": "--compile", "cache": "--cache",
    "batch_size": "-b/--batch-size", "lr": "--lr", "momentum": "--momentum", "weight_decay": "--wd",
    "epochs": "--epochs", "warmup_epochs": "--warmup-epochs", "seed": "--seed", "adv_train": "--adv-train",
    "adv_mode": "--adv-mode", "adv_steps": "--adv-steps",
}
EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_STUDENT_CODE, EXIT_INTERRUPTED = 2, 3, 4, 130
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class EveryRankError(UserError):
    """An error every process of a torchrun raises alike (a flag against the run's context, a diverged
    run): only rank 0 prints it."""


class TrainingDiverged(EveryRankError):
    """The run stopped on a non-finite loss or non-finite weights; the message says what to try."""


def get_args_parser():
    parser = cli.ArgumentParser(
        description="Train, evaluate (-e) or attack (-a) a network on MiniPlaces; log to TensorBoard.",
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("data_folder", nargs="?", default=None,
                        help=f"MiniPlaces folder (train.txt, val.txt, images/); default {paths.DEFAULT_DATA_DIR}")
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
                        help="checkpoint to continue training from, or to evaluate/attack (ours, the 2019 "
                             "harness's, or a state_dict)")
    parser.add_argument("-e", "--evaluate", action="store_true",
                        help="evaluate the --resume model on val (image + horizontal flip averaged)")
    parser.add_argument("--no-flip", action="store_true",
                        help="with -e: each image once, no flip averaging (as the training log's val figures)")
    parser.add_argument("-a", "--attack", action="store_true",
                        help="accuracy of the --resume model under the default PGD attack")
    parser.add_argument("-v", "--vis", action="store_true",
                        help="with -e: saliency maps; with -a: original and adversarial images")
    parser.add_argument("--use-custom-conv", action=argparse.BooleanOptionalAction, default=False, help="use CustomConv2d (unfold/fold)")
    parser.add_argument("--gpu", default=None, type=int,
                        help="GPU index; negative for the CPU; default the first GPU if any, else the CPU")
    parser.add_argument("--arch", default=None, choices=models.arch_names(),
                        help="network (default: student_code.default_model, or the --resume checkpoint's)")
    parser.add_argument("--init", default="model", choices=models.INITS,
                        help="'model': as the network's constructor initialises it (our student_code.py: "
                             "Kaiming); 'pytorch': PyTorch's default init, as the team trained")
    parser.add_argument("--seed", default=None, type=int,
                        help="random seed (default: a random one, saved in args.json and checkpoints)")
    parser.add_argument("--logdir", default=str(paths.DEFAULT_LOG_DIR), help="folder holding the run folders")
    parser.add_argument("--run-name", default=None,
                        help="run folder name (default <arch>_<conv>_<timestamp>; with --resume, its folder)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="mixed precision: fp16 + GradScaler on CUDA, bf16 on the CPU")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC memory format; --no-channels-last forces NCHW (default: NHWC on the CPU, "
                             "and on CUDA with --amp; else NCHW)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the training model")
    parser.add_argument("--cache", action=argparse.BooleanOptionalAction, default=False,
                        help="decode each split once into a memory-mapped uint8 file under data/cache/, "
                             "so epochs skip JPEG decoding")
    parser.add_argument("--adv-train", action=argparse.BooleanOptionalAction, default=False, help="train on PGD adversarial examples")
    parser.add_argument("--adv-mode", default="mixed", choices=harness_attacks.MODES,
                        help="adversarial training batch: clean + adversarial, or adversarial only")
    parser.add_argument("--adv-steps", default=2, type=int, help="PGD steps per adversarial training batch")
    parser.add_argument("--eps-sweep", action="store_true",
                        help=f"with -a: accuracy at epsilon {', '.join(map(str, SWEEP_EPSILONS))}; "
                             "writes attacks.md and attacks.png")
    parser.add_argument("--demo", action="store_true",
                        help="generate the demo dataset if absent, train briefly, then run -e -v and -a -v")
    return parser


def parse_args(argv=None):
    """(args, flags given): the checked command line; --demo fills in its own defaults for flags not given.

    `given` holds the dests the command line set explicitly, so a resumed run can tell a flag repeated
    with its default value from one left out.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.demo:
        parser.set_defaults(**DEMO_DEFAULTS)
        args = parser.parse_args(argv)
    check_args(args)
    return args, explicit_flags(parser, argv)


def explicit_flags(parser, argv):
    """The dests that argv sets (a parse with every default suppressed keeps only those)."""
    shadow = copy.deepcopy(parser)
    for action in shadow._actions:
        action.default = argparse.SUPPRESS
    return set(vars(shadow.parse_args(argv)))


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
    floats = {"--lr": args.lr, "--momentum": args.momentum, "--wd/--weight-decay": args.weight_decay,
              "--warmup-epochs": args.warmup_epochs}
    for flag, value in floats.items():
        # The weights are float32: a step of lr 1e308 overflows, and NaN or inf train nothing.
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise UserError(f"{flag} must be a finite number (float32), got {value}")
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
    if args.no_flip and not args.evaluate:
        raise UserError("--no-flip works with -e/--evaluate")
    if args.eps_sweep and not args.attack:
        raise UserError("--eps-sweep works with -a/--attack")
    if args.adv_train and (args.evaluate or args.attack):
        raise UserError("--adv-train is for training; it cannot be combined with -e or -a")
    if args.demo and (args.evaluate or args.attack or args.resume):
        raise UserError("--demo runs training, -e and -a itself: drop -e, -a and --resume")


def check_context(args, ctx, train_size=None):
    """Check the flags against the run's context before any work starts (refuse or adjust, in one line).

    -b must split evenly over the processes of a torchrun and leave at least one iteration; more data
    workers per process than this machine has cores for are cut down.
    """
    if ctx.world_size > 1 and args.batch_size % ctx.world_size:
        low = max(ctx.world_size, args.batch_size // ctx.world_size * ctx.world_size)
        raise EveryRankError(f"-b/--batch-size {args.batch_size} does not split evenly over the {ctx.world_size} "
                        f"processes of this torchrun: give a multiple of {ctx.world_size} "
                        f"(e.g. {low} or {low + ctx.world_size})")
    if train_size is not None and args.batch_size > train_size:
        raise EveryRankError(f"-b/--batch-size {args.batch_size} exceeds the {train_size} training images")
    args.workers = loaders.cap_workers(args.workers, ctx.say)


def memory_format_name(args):
    """The memory format in use: NHWC (channels-last) or NCHW."""
    return "NHWC" if args.channels_last else "NCHW"


def plain_args(args):
    """The namespace as a dict of JSON/weights_only-safe values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


# ---------------------------------------------------------------------------------------------------
# Checkpoints and run folders
# ---------------------------------------------------------------------------------------------------


def read_checkpoint(path):
    """The --resume checkpoint, refused in one line when its weights are not finite."""
    checkpoint = checkpoints.read(path, "--resume")
    checkpoints.check_finite(checkpoint, "--resume")
    return checkpoint


def adopt_run_settings(args, given, checkpoint, say):
    """Continue with the settings the run was started with, unless a flag gives one again: then use
    the new value and say so in one line. Only main.py's own checkpoints carry our settings (another
    script's arguments mean something else); arch changes are refused by the weights' fit."""
    stored = checkpoint.args if checkpoint.kind == "main.py" else None
    if not stored:
        return
    for dest, flag in RUN_SETTINGS.items():
        if dest not in stored or stored[dest] is None:
            continue
        if dest not in given:
            setattr(args, dest, stored[dest])
        elif getattr(args, dest) != stored[dest] and dest != "arch":
            if dest == "epochs" and args.epochs <= checkpoint.epoch:
                raise UserError(f"--resume: {checkpoint.path} already finished epoch {checkpoint.epoch} of "
                                f"--epochs {args.epochs}")
            say(_changed_setting_note(dest, flag, stored[dest], getattr(args, dest)))


def choose_memory_format(args, given, ctx, model, checkpoint=None, say=print):
    """Set args.channels_last: the flag when given, else the faster format on this device
    (devices.use_channels_last), unless `model` cannot run in NHWC (a student's code written for NCHW):
    then NCHW, with a note (models.choose_channels_last). A resumed run that trained in the other format
    is told so."""
    args.channels_last = models.choose_channels_last(args.channels_last, ctx.device, model, args.amp, say)
    stored = checkpoint.args if checkpoint is not None and checkpoint.kind == "main.py" else None
    before = stored.get("channels_last") if stored else None
    if "channels_last" not in given and before is not None and before != args.channels_last:
        was, flag = ("NHWC", "--channels-last") if before else ("NCHW", "--no-channels-last")
        say(f"note: the run trained in {was}; it continues in {memory_format_name(args)}, the default on "
            f"{ctx.device.type} ({flag} keeps the run's)")


def _changed_setting_note(dest, flag, old, new):
    if dest == "amp" and new:
        return "note: --amp switches mixed precision on for the rest of the run, with a fresh GradScaler"
    if dest == "amp":
        return "note: the run trained with --amp; it continues in full precision"
    if isinstance(new, bool):
        return f"note: {flag} is {'on' if new else 'off'} from here on (the run started with it {'on' if old else 'off'})"
    return f"note: {flag} {new} replaces the run's {old} from here on"


def run_folder(args, ctx, arch, checkpoint=None):
    """logs/<run-name>; with --resume and no --run-name, the checkpoint's own folder when it is a run
    folder of main.py that may be written, else a new run folder (a file main.py did not write is never
    overwritten, and a read-only folder stays untouched even for root)."""
    if args.run_name:
        name, reuse = args.run_name, True
    elif checkpoint is not None and is_own_run_folder(checkpoint):
        return checkpoint.path.resolve().parent
    else:
        name, reuse = runs.make_run_name(arch, CONV_OPS[args.use_custom_conv]), False
    run_dir = runs.create_run_dir(args.logdir, name, reuse=reuse) if ctx.is_main else None
    return Path(ctx.broadcast(str(run_dir) if run_dir else None))


def is_own_run_folder(checkpoint):
    """The checkpoint's folder is one main.py made (the checkpoint is ours, args.json beside it) and
    its permission bits allow writing (os.access says yes to root whatever the bits are)."""
    folder = checkpoint.path.resolve().parent
    try:
        writable = bool(folder.stat().st_mode & stat.S_IWUSR) and os.access(folder, os.W_OK)
    except OSError:
        return False
    return checkpoint.kind == "main.py" and (folder / "args.json").is_file() and writable


def load_metrics(run_dir, epochs_done):
    """metrics.json of an earlier run in this folder, cut to its first `epochs_done` epochs."""
    path = run_dir / "metrics.json"
    if epochs_done == 0 or not path.is_file():
        return []
    try:
        return [m for m in json.loads(path.read_text(encoding="utf-8-sig")) if m["epoch"] < epochs_done]
    except (ValueError, KeyError, TypeError):
        return []


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


@dataclass
class Training:
    """One training run: what it trains, on what, and where it is."""

    args: argparse.Namespace
    ctx: devices.Context
    model: nn.Module  # the bare network: evaluation, checkpoints and the attack use it
    train_model: nn.Module  # what trains: the network, wrapped by DDP and torch.compile when asked
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype
    criterion: nn.Module
    train_loader: loaders.DeviceLoader
    val_loader: loaders.DeviceLoader
    classes: list
    run_dir: Path = None
    log: RunLog = None
    start_epoch: int = 0
    best_acc1: float = 0.0
    metrics: list = field(default_factory=list)
    pending: dict = None  # the training half of an epoch record whose validation has not run yet
    adversarial_batch: object = None

    @property
    def iters(self):
        return len(self.train_loader)

    def schedule(self, step):
        a = self.args
        return engine.lr_and_weight_decay(step, a.epochs * self.iters, round(a.warmup_epochs * self.iters),
                                          a.lr, a.weight_decay)


def prepare_training(args, given, ctx):
    """Everything a run needs, with --resume's state restored: the run's first steps, in order."""
    say = ctx.say
    checkpoint = read_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None:
        adopt_run_settings(args, given, checkpoint, say)
        check_args(args)  # the run's settings with this command line's: --warmup-epochs against --epochs, ...
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    args.seed = ctx.broadcast(args.seed)
    rng.seed_everything(args.seed + ctx.rank)

    check_context(args, ctx)
    num_classes = loaders.count_classes(loaders.check_data_folder(args.data_folder))
    model = build_training_model(args, num_classes, checkpoint, say)
    choose_memory_format(args, given, ctx, model, checkpoint, say)
    train_set, val_set = loaders.build_datasets(args.data_folder, args.cache)
    check_context(args, ctx, train_size=len(train_set) // ctx.world_size * ctx.world_size)
    per_rank_batch = args.batch_size // ctx.world_size
    train_loader = loaders.train_loader(train_set, per_rank_batch, args.workers, ctx.device, ctx.rank,
                                        ctx.world_size, args.seed)
    val_loader = loaders.eval_loader(val_set, args.workers, ctx.device, ctx.rank, ctx.world_size)

    model = model.to(ctx.device, memory_format=devices.memory_format(args.channels_last))
    amp_dtype, scaler = devices.amp_settings(args.amp, ctx.device)
    run = Training(
        args, ctx, model, model,
        torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum, weight_decay=args.weight_decay),
        scaler, amp_dtype, nn.CrossEntropyLoss().to(ctx.device),
        loaders.DeviceLoader(train_loader, ctx.device, args.channels_last),
        loaders.DeviceLoader(val_loader, ctx.device, args.channels_last), list(train_set.classes))
    if checkpoint is not None:
        restore_training_state(run, checkpoint, say)
    run.train_model = wrap_for_training(model, args, ctx)
    run.adversarial_batch = adversarial_batch_fn(args, model, run.criterion)

    run.run_dir = run_folder(args, ctx, args.arch, checkpoint)
    run.log = RunLog(run.run_dir, ctx.is_main, purge_step=run.start_epoch * run.iters if run.start_epoch else None,
                     purge_epoch=run.start_epoch + 1 if run.start_epoch else None)
    run.metrics = load_metrics(run.run_dir, run.start_epoch - (run.pending is not None))
    if ctx.is_main:
        files.write_json(plain_args(args), run.run_dir / "args.json")
        run.log.text("args", "\n".join(f"    {k} = {v!r}" for k, v in sorted(plain_args(args).items())))
    run.log.print(f"=> {args.arch} ({CONV_OPS[args.use_custom_conv]}) on {ctx.device} "
                  f"({memory_format_name(args)}), {ctx.world_size} process(es), "
                  f"{len(train_set)} train / {len(val_set)} val images, {num_classes} classes, "
                  f"epochs {run.start_epoch}..{args.epochs - 1}, run folder {run.run_dir}")
    for dataset in (train_set, val_set):
        note = dataset.other_sizes_note()
        if note:
            run.log.print(f"note: {note} (training resizes them; validation batches them by size)")
    if args.amp and ctx.device.type == "cpu" and torch.backends.cpu.get_cpu_capability() != "AVX512":
        run.log.print(f"note: --amp on this CPU ({torch.backends.cpu.get_cpu_capability()}) emulates bf16 and is "
                      "slower than fp32 (bench/bench_train.py measures it)")
    return run


def build_training_model(args, num_classes, checkpoint, say):
    """The network to train: --arch (or default_model), or the one the --resume weights fit."""
    if checkpoint is None:
        args.arch, model = models.build_model(args.arch, num_classes, args.use_custom_conv, init=args.init,
                                              pretrained=True)
        models.check_logits(model, num_classes, args.arch)
        return model
    if checkpoint.num_classes not in (None, num_classes):
        raise UserError(f"--resume: {checkpoint.path} was trained on {checkpoint.num_classes} classes but "
                        f"{args.data_folder} has {num_classes}")
    args.arch, model, note = models.model_for_checkpoint(checkpoint, args.arch, num_classes, args.use_custom_conv)
    if note:
        say(note)
    checkpoints.load_weights(model, checkpoint)
    models.check_logits(model, num_classes, args.arch)
    return model


def restore_training_state(run, checkpoint, say):
    """Epoch, best accuracy, optimizer, GradScaler and RNG states from --resume; one line for what it lacks."""
    if checkpoint.epoch >= run.args.epochs:
        raise UserError(f"--resume: {checkpoint.path} already finished epoch {checkpoint.epoch} of "
                        f"--epochs {run.args.epochs}")
    run.start_epoch, run.best_acc1 = checkpoint.epoch, checkpoint.best_acc1
    if checkpoint.optimizer is not None:
        try:
            run.optimizer.load_state_dict(checkpoint.optimizer)
        except (KeyError, ValueError) as exc:
            raise UserError(f"--resume: {checkpoint.path} has an optimizer state that does not fit "
                            f"({exc})") from None
    if checkpoint.scaler is not None and run.scaler.is_enabled() and checkpoint.scaler:
        run.scaler.load_state_dict(checkpoint.scaler)
    if checkpoint.rng is not None:
        rng.set_rng_state(checkpoint.rng)
    if not checkpoint.validated and checkpoint.pending_record:
        run.pending = checkpoint.pending_record
    lacking = checkpoint.lacks()
    if lacking:
        instead = {"optimizer state": "a fresh SGD (no momentum yet)", "GradScaler state": "a fresh GradScaler",
                   "RNG states": f"RNGs seeded from --seed {run.args.seed}", "arguments": "this command line"}
        say(f"=> {checkpoint.path} (a {checkpoint.kind} checkpoint, epoch {checkpoint.epoch}) lacks "
            f"{', '.join(lacking)}: continuing with {', '.join(instead[x] for x in lacking)}")


def wrap_for_training(model, args, ctx):
    """DDP across the processes of a torchrun, then torch.compile when asked."""
    train_model = model
    if ctx.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)
    return train_model


def adversarial_batch_fn(args, model, criterion):
    """(images, target) -> the adversarial training batch, or None without --adv-train.

    The attack is the student's PGDAttack; the batch maker is the student's adversarial_training_batch
    when the file offers one, else the harness's. It runs on the bare model: a DDP backward would wait
    for the other ranks.
    """
    if not args.adv_train:
        return None
    pgd = student.get("PGDAttack", "--adv-train")
    try:
        attack = pgd(criterion, num_steps=args.adv_steps, step_size=ADV_TRAIN_EPSILON / args.adv_steps,
                     epsilon=ADV_TRAIN_EPSILON)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--adv-steps {args.adv_steps}: {exc}") from None
    make_batch = student.optional("adversarial_training_batch") or harness_attacks.training_batch
    return functools.partial(make_batch, model, attack, mode=args.adv_mode)


def train(args, given, ctx):
    """Train (or continue) a run; returns its folder."""
    run = prepare_training(args, given, ctx)
    try:
        if run.pending is not None:
            finish_epoch(run, run.start_epoch - 1, run.pending)
        for epoch in range(run.start_epoch, args.epochs):
            record = train_epoch(run, epoch)
            save_epoch(run, epoch, record)  # on disk before validation: a crash there loses no training
            finish_epoch(run, epoch, record)
    except Divergence as stop:
        raise TrainingDiverged(divergence_message(stop, run)) from None
    finally:
        run.log.close()
    run.log.print(f"=> run folder {run.run_dir}; view it with:  tensorboard --logdir {run.run_dir.parent}")
    return run.run_dir


def train_epoch(run, epoch):
    """One epoch of training; returns the training half of its metrics record."""
    loaders.seed_epoch(run.train_loader.loader, run.args.seed, epoch)
    devices.reset_peak_memory(run.ctx.device)
    stats = engine.train_one_epoch(
        run.train_model, run.train_loader, run.criterion, run.optimizer, run.scaler, epoch=epoch,
        schedule=run.schedule, device=run.ctx.device, amp_dtype=run.amp_dtype, print_freq=run.args.print_freq,
        adversarial_batch=run.adversarial_batch, log=run.log)
    return {
        "epoch": epoch, "lr": run.schedule((epoch + 1) * run.iters - 1)[0],
        "train_loss": stats["loss"], "train_top1": stats["top1"], "train_top5": stats["top5"],
        "epoch_minutes": stats["seconds"] / 60, "images_per_s": stats["images"] / stats["seconds"],
        "peak_mem_mib": devices.peak_memory_mib(run.ctx.device), "device": str(run.ctx.device),
        "world_size": run.ctx.world_size,
    }


def save_epoch(run, epoch, record, validated=False, is_best=False):
    """The checkpoint after `epoch` (rank 0 writes it); before validation it carries the training record."""
    if not run.ctx.is_main:
        return
    checkpoints.save({
        "epoch": epoch + 1, "arch": run.args.arch, "conv_op": CONV_OPS[run.args.use_custom_conv],
        "num_classes": len(run.classes), "classes": run.classes, "state_dict": run.model.state_dict(),
        "best_acc1": run.best_acc1, "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
        "rng": rng.get_rng_state(), "args": plain_args(run.args), "validated": validated,
        "pending_record": None if validated else record,
    }, run.run_dir, is_best)


def finish_epoch(run, epoch, record):
    """Validate `epoch`, then log it, save the checkpoint again (and model_best) and print its line."""
    try:
        val = engine.validate(run.model, run.val_loader, run.criterion, run.ctx.device, amp_dtype=run.amp_dtype,
                              print_freq=run.args.print_freq, log=run.log)
    except UserError as exc:  # a bad val image, say: the epoch's training is safe on disk
        saved = run.run_dir / checkpoints.CHECKPOINT_NAME
        raise UserError(f"{exc} (validating epoch {epoch}; its training is saved in {saved}: fix the data and "
                        "--resume it to validate it)") from None
    # The first validated epoch of a run is its best so far even at 0%: model_best must exist.
    is_best = val["top1"] > run.best_acc1 or not (run.run_dir / checkpoints.BEST_NAME).is_file()
    run.best_acc1 = max(run.best_acc1, val["top1"])
    record = {**record, "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"]}
    run.metrics.append(record)
    log_epoch(run.log, record, (epoch + 1) * run.iters - 1)
    save_epoch(run, epoch, record, validated=True, is_best=is_best)
    if run.ctx.is_main:
        files.write_json(run.metrics, run.run_dir / "metrics.json")
    run.log.print(f" * Epoch {epoch}: train loss {record['train_loss']:.4f}  Acc@1 {record['train_top1']:.2f}  "
                  f"val Acc@1 {val['top1']:.2f}  Acc@5 {val['top5']:.2f}  (best {run.best_acc1:.2f})  "
                  f"{record['epoch_minutes']:.2f} min  {record['images_per_s']:.0f} img/s  "
                  f"peak {record['peak_mem_mib']:.0f} MiB")


def log_epoch(log, record, step):
    """Per-epoch TensorBoard scalars: the accuracy series at the 1-based epoch, the rest at `step`, the
    global iteration of the epoch's last step (a resume purges from the next one on)."""
    epoch = record["epoch"] + 1
    log.series("data/top1_accuracy", {"train": record["train_top1"], "val": record["val_top1"]}, epoch)
    log.series("data/top5_accuracy", {"train": record["train_top5"], "val": record["val_top5"]}, epoch)
    log.scalar("data/validation_loss", record["val_loss"], step)
    for key in ("epoch_minutes", "images_per_s", "peak_mem_mib"):
        log.scalar(f"perf/{key}", record[key], step)
    log.flush()


def divergence_message(stop, run):
    """The one line that says where the run diverged and what to try."""
    epoch, iteration = divmod(stop.step, run.iters)
    lr = run.schedule(stop.step)[0]
    where = f"epoch {epoch}, iteration {iteration} of {run.iters} (lr {lr:.4g})"
    if stop.reason == "loss":
        what = f"training diverged: the loss is {stop.loss} at {where}"
    elif stop.reason == "loss streak":
        what = f"training diverged: under --amp the loss stayed non-finite for {stop.streak} iterations in a " \
               f"row from {where}"
    else:
        what = f"training diverged: under --amp the weights became non-finite by {where}"
    hints = [f"try a lower --lr than {run.args.lr:g}"]
    batch = run.args.batch_size
    if batch * 2 <= REFERENCE_BATCH or batch >= 2 * REFERENCE_BATCH:
        hints.append(f"e.g. {run.args.lr * batch / REFERENCE_BATCH:.2g} by the linear scaling rule for -b {batch} "
                     f"(lr x batch / {REFERENCE_BATCH})")
    if run.args.warmup_epochs == 0:
        hints.append("or --warmup-epochs 1")
    kept = run.run_dir / checkpoints.CHECKPOINT_NAME
    saved = (f"{kept} keeps the last finite epoch ({run.metrics[-1]['epoch']})" if run.metrics
             else "no checkpoint was written")
    return f"{what}; {saved}; {', '.join(hints)}"


# ---------------------------------------------------------------------------------------------------
# Evaluation and attack
# ---------------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    model: nn.Module
    val_loader: loaders.DeviceLoader
    criterion: nn.Module
    log: RunLog


def load_for_eval(args, ctx, val_images=None):
    """The --resume model in eval mode with the val loader for -e and -a; `val_images` keeps only the
    first N val images (the demo's attack pass)."""
    checkpoint = read_checkpoint(args.resume)
    _, val_set = loaders.build_datasets(args.data_folder, args.cache, train=False)
    check_context(args, ctx)
    num_classes = checkpoint.num_classes or len(val_set.classes)
    if len(val_set.classes) != num_classes:
        raise UserError(f"--resume: {args.resume} was trained on {num_classes} classes but "
                        f"{args.data_folder} has {len(val_set.classes)}")
    args.arch, model, note = models.model_for_checkpoint(checkpoint, args.arch, num_classes, args.use_custom_conv)
    checkpoints.load_weights(model, checkpoint)
    models.check_logits(model, num_classes, args.arch)
    choose_memory_format(args, set(), ctx, model, say=ctx.say)
    model = model.to(ctx.device, memory_format=devices.memory_format(args.channels_last)).eval()
    if val_images is not None and val_images < len(val_set):
        classes = val_set.classes
        val_set = torch.utils.data.Subset(val_set, range(val_images))
        val_set.classes = classes
    val_loader = loaders.eval_loader(val_set, args.workers, ctx.device, ctx.rank, ctx.world_size)
    log = RunLog(run_folder(args, ctx, args.arch, checkpoint), ctx.is_main)
    if note:
        log.print(note)
    log.print(f"=> {args.resume}: {args.arch} trained for {checkpoint.epoch} epochs (a {checkpoint.kind} "
              f"checkpoint), evaluated with {CONV_OPS[args.use_custom_conv]} on {ctx.device} "
              f"({memory_format_name(args)})")
    size_note = val_set.dataset.other_sizes_note() if isinstance(val_set, torch.utils.data.Subset) \
        else val_set.other_sizes_note()
    if size_note:
        log.print(f"note: {size_note} (evaluated in batches of one size)")
    return Evaluation(model, loaders.DeviceLoader(val_loader, ctx.device, args.channels_last),
                      nn.CrossEntropyLoss().to(ctx.device), log)


def evaluate(args, ctx):
    """-e: val accuracy of the --resume model (flip-averaged unless --no-flip), saliency maps with -v."""
    ev = load_for_eval(args, ctx)
    amp_dtype, _ = devices.amp_settings(args.amp, ctx.device)
    attention = student.get("default_attention", "-e -v")(ev.criterion) if args.vis else None
    visualize = student.get("default_visfunction", "-e -v") if args.vis else None
    try:
        result = engine.validate(ev.model, ev.val_loader, ev.criterion, ctx.device, amp_dtype=amp_dtype,
                                 flip_average=not args.no_flip, print_freq=args.print_freq, attention=attention,
                                 visualize=visualize, log=ev.log)
    finally:
        ev.log.close()
    averaging = "image only" if args.no_flip else "image + flip averaged"
    ev.log.print(f" * Acc@1 {result['top1']:.3f} Acc@5 {result['top5']:.3f}  ({result['count']} val images, "
                 f"{averaging})")
    if ctx.is_main:
        files.write_json({"checkpoint": str(args.resume), "flip_average": not args.no_flip, **result},
                         ev.log.run_dir / "evaluation.json")
    return ev.log.run_dir


def attack(args, ctx, val_images=None):
    """-a: clean and adversarial accuracy of the --resume model under the default PGD attack (or a sweep)."""
    ev = load_for_eval(args, ctx, val_images)
    if args.eps_sweep:
        pgd = student.get("PGDAttack", "--eps-sweep")
        attacks = {eps: pgd(ev.criterion, epsilon=eps) for eps in SWEEP_EPSILONS}
    else:
        default = student.get("default_attack", "-a")(ev.criterion)
        attacks = {getattr(default, "epsilon", None): default}
    visualize = student.get("default_visfunction", "-a -v") if args.vis else None
    try:
        result = engine.attack_eval(ev.model, ev.val_loader, attacks, ctx.device, print_freq=args.print_freq,
                                    visualize=visualize, log=ev.log)
    finally:
        ev.log.close()
    clean = result["clean"]
    for row in result["attacks"]:
        ev.log.print(f" * epsilon {row['epsilon']}: clean Acc@1 {clean['top1']:.3f} Acc@5 {clean['top5']:.3f}"
                     f" -> adversarial Acc@1 {row['top1']:.3f} Acc@5 {row['top5']:.3f}  "
                     f"({result['count']} val images)")
    if ctx.is_main:
        files.write_json({"checkpoint": str(args.resume), **result}, ev.log.run_dir / "attack.json")
        if args.eps_sweep:
            harness_attacks.write_report(result, ev.log.run_dir, args.resume)
            ev.log.print(f"=> robustness table and plot: {ev.log.run_dir / 'attacks.md'}, "
                         f"{ev.log.run_dir / 'attacks.png'}")
    return ev.log.run_dir


def demo(args, given, ctx):
    """The README's first command: demo data, a short training run, then -e -v and -a -v on it."""
    from harness import demo_data  # only --demo generates data

    start = time.perf_counter()
    root = demo_data.ensure_demo_dataset(Path(args.data_folder)) if args.data_folder \
        else demo_data.ensure_demo_dataset()
    train_args = copy.copy(args)
    train_args.data_folder, train_args.demo = str(root), False
    run_dir = train(train_args, given, ctx)

    best = run_dir / checkpoints.BEST_NAME
    eval_args, attack_args = copy.copy(train_args), copy.copy(train_args)
    for mode_args in (eval_args, attack_args):
        mode_args.resume, mode_args.vis, mode_args.run_name = str(best), True, None
    eval_args.evaluate, attack_args.attack = True, True
    evaluate(eval_args, ctx)
    if ctx.is_main:
        print(f"=> attacking the first {DEMO_ATTACK_IMAGES} val images (10 PGD steps each: the whole val set "
              "would take minutes on a CPU)", flush=True)
    attack(attack_args, ctx, val_images=DEMO_ATTACK_IMAGES)
    if ctx.is_main:
        print(f"\nDemo finished in {(time.perf_counter() - start) / 60:.1f} min. Logs, checkpoints and PNG grids: "
              f"{run_dir}\nView them with:  tensorboard --logdir {run_dir.parent}", flush=True)
    return run_dir


def run_mode(args, given, ctx):
    if args.demo:
        return demo(args, given, ctx)
    if args.evaluate:
        return evaluate(args, ctx)
    if args.attack:
        return attack(args, ctx)
    return train(args, given, ctx)


def main(argv=None):
    """Entry point; returns the exit code: 0, 2 for a user error, 3 when training diverged, 4 when the
    student's code raised, 130 when interrupted."""
    distributed = False
    rank = int(os.environ.get("RANK", "0"))  # known before the process group is: errors print once
    try:
        args, given = parse_args(argv)
        if args.data_folder is None and not args.demo:
            args.data_folder = str(paths.DEFAULT_DATA_DIR)
        rank, world_size, local_rank = devices.setup_distributed()
        distributed = world_size > 1
        device = devices.resolve_device(args.gpu, local_rank, distributed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        run_mode(args, given, devices.Context(device, rank, world_size))
        return 0
    except UserError as exc:
        # Flag errors (found before the process group) and EveryRankError are alike on every process.
        if rank == 0 or (distributed and not isinstance(exc, EveryRankError)):
            cli.print_user_error(exc)
        if isinstance(exc, TrainingDiverged):
            return EXIT_DIVERGED
        return EXIT_STUDENT_CODE if isinstance(exc, student.StudentCodeError) else EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: continue with --resume <run folder>/checkpoint.pth.tar", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the student's code may raise anything; our own bugs keep their traceback
        if not student.raised_in_student_code(exc):
            raise
        cli.print_user_error(f"{student.describe(exc)} (an error in the student's code)")
        return EXIT_STUDENT_CODE
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
