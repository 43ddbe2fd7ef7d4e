"""A training run of main.py: resolve its configuration, build what it trains on, then per epoch train,
checkpoint (before validation, so a crash there loses no training), validate and log.

    run_dir = training.train(config, given, ctx)

`config` is main.py's checked RunConfig (harness.flags), `given` the flags the command line set, `ctx`
the devices.Context. A resumed run (--resume) continues its own settings (runs.adopt_run_settings),
weights, optimizer, GradScaler, RNG states, metrics and TensorBoard curves.
"""
import functools
import os
import random
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import attacks, checkpoints, devices, engine, flags, loaders, models, rng, runs, signals, student
from . import cli
from .cli import EXIT_DIVERGED, EveryRankError, UserError
from .divergence import Divergence
from .runlog import RunLog

# The assignment's PGD budget; adversarial training spreads it over --adv-steps steps so that its
# few steps reach as far as the default attack's 10 steps of 0.01.
ADV_TRAIN_EPSILON = 0.1
# The reference batch of the linear scaling rule (Goyal et al. 2017) for the default --lr 0.1.
REFERENCE_BATCH = 256


class TrainingDiverged(EveryRankError):
    """The run stopped on a non-finite loss or non-finite weights; the message says what to try."""

    exit_code = EXIT_DIVERGED


@dataclass
class Training:
    """One training run: what it trains, on what, and where it is."""

    config: flags.RunConfig
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
    schedule: engine.Schedule
    run_dir: Path = None
    log: RunLog = None
    start_epoch: int = 0
    best_acc1: float = 0.0
    metrics: list = field(default_factory=list)
    kept: tuple = None  # (checkpoint path, epochs it holds) of the latest training state on disk
    pending: dict = None  # the training half of an epoch record whose validation has not run yet
    adversarial_batch: object = None

    @property
    def iters(self):
        return len(self.train_loader)


def train(config, given, ctx):
    """Train (or continue) a run; returns its folder. Raises TrainingDiverged (exit 3) on divergence."""
    run = prepare(config, given, ctx)
    try:
        if run.pending is not None:
            finish_epoch(run, run.start_epoch - 1, run.pending)
        for epoch in range(run.start_epoch, run.config.epochs):
            record = train_epoch(run, epoch)
            save_epoch(run, epoch, record)  # on disk before validation: a crash there loses no training
            finish_epoch(run, epoch, record)
        signals.check()  # a signal after the last batch: said here, with what was kept
    except Divergence as stop:
        raise TrainingDiverged(divergence_message(stop, run)) from None
    except KeyboardInterrupt as stop:
        stop = stop if isinstance(stop, signals.Interrupted) else signals.Interrupted(signal.SIGINT)
        stop.kept = kept_message(run)
        raise stop from None
    except torch._dynamo.exc.BackendCompilerFailed as exc:  # what check_compile could not foresee
        raise UserError(f"--compile: torch.compile failed ({cli.one_line(exc.inner_exception)}); run without "
                        "--compile") from None
    finally:
        run.log.close()
    # Quoted as a shell needs it, so that the command can be pasted whatever the folder's name.
    logdir = shlex.quote(str(run.run_dir.parent))
    run.log.print(f"=> run folder {run.run_dir}; view it with:  tensorboard --logdir {logdir}")
    return run.run_dir


# ---------------------------------------------------------------------------------------------------
# The run's first steps
# ---------------------------------------------------------------------------------------------------


def resolve(config, given, ctx, checkpoint):
    """(resolved RunConfig, network): --resume's settings adopted, then the seed, the workers, the
    network's name and the memory format decided for this machine; the result is what args.json and
    the checkpoints store."""
    say = ctx.say
    if checkpoint is not None:
        config = runs.adopt_run_settings(config, given, checkpoint, say)
        flags.check(config)  # the run's settings with this command line's: --warmup-epochs against --epochs, ...
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    seed = ctx.broadcast(seed)
    rng.seed_everything(seed + ctx.rank)
    check_batch_split(config.batch_size, ctx)
    if config.compile:
        devices.check_compile(ctx.device)
    num_classes = loaders.count_classes(loaders.check_data_folder(config.data_folder))
    arch, model = build_model(config, num_classes, checkpoint, say)
    channels_last = models.choose_channels_last(config.channels_last, ctx.device, model, config.amp,
                                                config.use_custom_conv, say)
    config = config.replace(seed=seed, arch=arch, channels_last=channels_last,
                            workers=loaders.cap_workers(config.workers, say))
    note = runs.memory_format_note(config, given, ctx, checkpoint)
    if note:
        say(note)
    return config, model


def check_batch_split(batch_size, ctx, train_size=None):
    """-b must split evenly over the processes of a torchrun and leave at least one iteration."""
    if ctx.world_size > 1 and batch_size % ctx.world_size:
        low = max(ctx.world_size, batch_size // ctx.world_size * ctx.world_size)
        raise EveryRankError(f"-b/--batch-size {batch_size} does not split evenly over the {ctx.world_size} "
                             f"processes of this torchrun: give a multiple of {ctx.world_size} "
                             f"(e.g. {low} or {low + ctx.world_size})")
    if train_size is not None and batch_size > train_size:
        raise EveryRankError(f"-b/--batch-size {batch_size} exceeds the {train_size} training images")


def build_model(config, num_classes, checkpoint, say):
    """(arch, network) to train: --arch (or default_model), or the one the --resume weights fit."""
    if checkpoint is None:
        arch, model = models.build_model(config.arch, num_classes, config.use_custom_conv, init=config.init,
                                         pretrained=True)
        models.check_logits(model, num_classes, arch)
        return arch, model
    arch, model, note = models.model_from_checkpoint(checkpoint, config.arch, num_classes, config.use_custom_conv,
                                                     data=config.data_folder)
    if note:
        say(note)
    return arch, model


def prepare(config, given, ctx):
    """Everything a run needs, with --resume's state restored: the run's first steps, in order."""
    checkpoint = checkpoints.read_finite(config.resume) if config.resume else None
    config, model = resolve(config, given, ctx, checkpoint)
    train_set, val_set, finish_train_batch = loaders.build_datasets(config.data_folder, config.cache)
    check_batch_split(config.batch_size, ctx, train_size=len(train_set) // ctx.world_size * ctx.world_size)
    train_loader = loaders.train_loader(train_set, config.batch_size // ctx.world_size, config.workers,
                                        ctx.device, ctx.rank, ctx.world_size, config.seed)
    val_loader = loaders.eval_loader(val_set, config.workers, ctx.device, ctx.rank, ctx.world_size)

    model = model.to(ctx.device, memory_format=devices.memory_format(config.channels_last))
    amp_dtype, scaler = devices.amp_settings(config.amp, ctx.device)
    run = Training(
        config, ctx, model, model,
        torch.optim.SGD(model.parameters(), config.lr, momentum=config.momentum, weight_decay=config.weight_decay),
        scaler, amp_dtype, nn.CrossEntropyLoss().to(ctx.device),
        loaders.DeviceLoader(train_loader, ctx.device, config.channels_last, finish_train_batch),
        loaders.DeviceLoader(val_loader, ctx.device, config.channels_last), list(train_set.classes),
        engine.Schedule(config.lr, config.weight_decay, config.epochs, len(train_loader), config.warmup_epochs))
    if checkpoint is not None:
        restore_training_state(run, checkpoint, ctx.say)
    run.train_model = wrap_for_training(model, config, ctx)
    run.adversarial_batch = adversarial_batch_fn(config, model, run.criterion)
    open_run_folder(run, checkpoint)
    run.log.print(f"=> {config.arch} ({models.CONV_OPS[config.use_custom_conv]}) on {ctx.device} "
                  f"({devices.memory_format_name(config.channels_last)}), {ctx.world_size} process(es), "
                  f"{len(train_set)} train / {len(val_set)} val images, {len(run.classes)} classes, "
                  f"epochs {run.start_epoch}..{config.epochs - 1}, run folder {run.run_dir}")
    for dataset in (train_set, val_set):
        note = dataset.other_sizes_note()
        if note:
            run.log.print(f"note: {note} (training resizes them; validation batches them by size)")
    note = devices.cpu_precision_note(config.amp, ctx.device)
    if note:
        run.log.print(note)
    return run


def open_run_folder(run, checkpoint):
    """The run folder, its RunLog (TensorBoard purged past a resumed epoch), metrics so far and args.json."""
    ctx, config = run.ctx, run.config
    run.run_dir = runs.run_folder(config, ctx, checkpoint)
    resumed = run.start_epoch > 0
    run.log = RunLog(run.run_dir, ctx.is_main, purge_step=run.start_epoch * run.iters if resumed else None,
                     purge_epoch=run.start_epoch + 1 if resumed else None)
    run.metrics = runs.load_metrics(run.run_dir, run.start_epoch - (run.pending is not None))
    if ctx.is_main:
        settings = config.as_plain_dict()
        runs.write_args(settings, run.run_dir)
        run.log.text("args", "\n".join(f"    {k} = {v!r}" for k, v in sorted(settings.items())))


def restore_training_state(run, checkpoint, say):
    """Epoch, best accuracy, optimizer, GradScaler and RNG states from --resume; one line for what it lacks."""
    unvalidated = not checkpoint.validated and checkpoint.pending_record
    if checkpoint.epoch > run.config.epochs or (checkpoint.epoch == run.config.epochs and not unvalidated):
        raise UserError(f"--resume: {checkpoint.path} already finished epoch {checkpoint.epoch} of "
                        f"--epochs {run.config.epochs}")
    run.start_epoch, run.best_acc1 = checkpoint.epoch, checkpoint.best_acc1
    run.kept = (checkpoint.path, checkpoint.epoch)
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
                   "RNG states": f"RNGs seeded from --seed {run.config.seed}", "arguments": "this command line"}
        say(f"=> {checkpoint.path} (a {checkpoint.kind} checkpoint, epoch {checkpoint.epoch}) lacks "
            f"{', '.join(lacking)}: continuing with {', '.join(instead[x] for x in lacking)}")


def wrap_for_training(model, config, ctx):
    """DDP across the processes of a torchrun, then torch.compile when asked."""
    train_model = model
    if ctx.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)
    return train_model


def adversarial_batch_fn(config, model, criterion):
    """(images, target) -> the adversarial training batch, or None without --adv-train.

    The attack is the student's PGDAttack; the batch maker is the student's adversarial_training_batch
    when the file offers one, else the harness's. It runs on the bare model: a DDP backward would wait
    for the other ranks.
    """
    if not config.adv_train:
        return None
    pgd = student.get("PGDAttack", "--adv-train")
    try:
        attack = pgd(criterion, num_steps=config.adv_steps, step_size=ADV_TRAIN_EPSILON / config.adv_steps,
                     epsilon=ADV_TRAIN_EPSILON)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--adv-steps {config.adv_steps}: {exc}") from None
    make_batch = student.optional("adversarial_training_batch") or attacks.training_batch
    return functools.partial(make_batch, model, attack, mode=config.adv_mode)


# ---------------------------------------------------------------------------------------------------
# Epochs
# ---------------------------------------------------------------------------------------------------


def train_epoch(run, epoch):
    """One epoch of training; returns the training half of its metrics record."""
    loaders.seed_epoch(run.train_loader.loader, run.config.seed, epoch)
    devices.reset_peak_memory(run.ctx.device)
    stats = engine.train_one_epoch(
        run.train_model, run.train_loader, run.criterion, run.optimizer, run.scaler, epoch=epoch,
        schedule=run.schedule, device=run.ctx.device, amp_dtype=run.amp_dtype, print_freq=run.config.print_freq,
        adversarial_batch=run.adversarial_batch, log=run.log)
    return {
        "epoch": epoch, "lr": run.schedule.last_lr(epoch),
        "train_loss": stats["loss"], "train_top1": stats["top1"], "train_top5": stats["top5"],
        "epoch_minutes": stats["seconds"] / 60, "images_per_s": stats["images"] / stats["seconds"],
        "peak_mem_mib": devices.peak_memory_mib(run.ctx.device), "device": str(run.ctx.device),
        "world_size": run.ctx.world_size,
    }


def save_epoch(run, epoch, record, validated=False, is_best=False):
    """The checkpoint after `epoch` (rank 0 writes it); before validation it carries the training record."""
    if not run.ctx.is_main:
        return
    state = checkpoints.training_state(
        epoch=epoch + 1, arch=run.config.arch, conv_op=models.CONV_OPS[run.config.use_custom_conv],
        classes=run.classes, model=run.model, optimizer=run.optimizer, scaler=run.scaler,
        best_acc1=run.best_acc1, rng_state=rng.get_rng_state(), args=run.config.as_plain_dict(),
        pending_record=None if validated else record)
    checkpoints.save(state, run.run_dir, is_best)
    run.kept = (run.run_dir / checkpoints.CHECKPOINT_NAME, epoch + 1)


def finish_epoch(run, epoch, record):
    """Validate `epoch`, then log it, save the checkpoint again (and model_best) and print its line."""
    try:
        val = engine.validate(run.model, run.val_loader, run.criterion, run.ctx.device, amp_dtype=run.amp_dtype,
                              print_freq=run.config.print_freq, log=run.log)
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
        runs.write_metrics(run.metrics, run.run_dir)
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


def kept_message(run):
    """What an interrupted run leaves: the checkpoint and its epochs, and the command that continues it."""
    if run.kept is None:
        return f"no epoch had finished, so no checkpoint was written (run folder {run.run_dir})"
    checkpoint, epochs = run.kept
    launcher = [Path(sys.executable).name]
    if run.ctx.world_size > 1:  # started by torchrun, which sets LOCAL_WORLD_SIZE: continue the same way
        launcher = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", str(run.ctx.world_size))]
    command = " ".join(shlex.quote(str(part)) for part in (*launcher, sys.argv[0], "--resume", checkpoint))
    return f"{checkpoint} keeps epochs 0-{epochs - 1} of {run.config.epochs}; continue with:  {command}"


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
    config = run.config
    hints = [f"try a lower --lr than {config.lr:g}"]
    if config.batch_size * 2 <= REFERENCE_BATCH or config.batch_size >= 2 * REFERENCE_BATCH:
        hints.append(f"e.g. {config.lr * config.batch_size / REFERENCE_BATCH:.2g} by the linear scaling rule for "
                     f"-b {config.batch_size} (lr x batch / {REFERENCE_BATCH})")
    if config.warmup_epochs == 0:
        hints.append("or --warmup-epochs 1")
    kept = run.run_dir / checkpoints.CHECKPOINT_NAME
    saved = (f"{kept} keeps the last finite epoch ({run.metrics[-1]['epoch']})" if run.metrics
             else "no checkpoint was written")
    return f"{what}; {saved}; {', '.join(hints)}"
