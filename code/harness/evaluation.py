"""main.py -e and -a: the --resume model's val accuracy (flip-averaged, with saliency maps under -v),
and its accuracy under the student's default PGD attack (or a sweep of epsilons).

Both write into the checkpoint's own run folder when main.py made it and it may be written, else
into a new run folder (runs.run_folder): evaluation.json or attack.json, TensorBoard events and PNG grids.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn

import custom_transforms
from . import attacks, checkpoints, devices, engine, files, flags, loaders, models, runs, signals, student
from .runlog import RunLog

SWEEP_EPSILONS = (0.0, 0.01, 0.02, 0.05, 0.1)


@dataclass
class Evaluation:
    config: flags.RunConfig  # resolved: arch, channels_last and workers as used
    model: nn.Module
    val_loader: loaders.DeviceLoader
    criterion: nn.Module
    log: RunLog


def load_for_eval(config, ctx, val_images=None):
    """The --resume model in eval mode with the val loader for -e and -a; `val_images` keeps only the
    first N val images (the demo's attack pass). -b is not used, so a torchrun's batch split is not
    checked here."""
    checkpoint = checkpoints.read_finite(config.resume)
    _, val_set, _ = loaders.build_datasets(config.data_folder, config.cache, train=False)
    arch, model, note = models.model_from_checkpoint(checkpoint, config.arch, len(val_set.classes),
                                                     config.use_custom_conv, data=config.data_folder)
    channels_last = models.choose_channels_last(config.channels_last, ctx.device, model,
                                                use_custom_conv=config.use_custom_conv, say=ctx.say)
    config = config.replace(arch=arch, channels_last=channels_last, workers=loaders.cap_workers(config.workers, ctx.say))
    model = model.to(ctx.device, memory_format=devices.memory_format(channels_last)).eval()
    size_note = val_set.other_sizes_note()
    if val_images is not None and val_images < len(val_set):
        classes = val_set.classes
        val_set = torch.utils.data.Subset(val_set, range(val_images))
        val_set.classes = classes
    val_loader = loaders.eval_loader(val_set, config.workers, ctx.device, ctx.rank, ctx.world_size)
    log = RunLog(runs.run_folder(config, ctx, checkpoint), ctx.is_main)
    if note:
        log.print(note)
    log.print(f"=> {config.resume}: {arch} trained for {checkpoint.epoch} epochs (a {checkpoint.kind} "
              f"checkpoint), evaluated with {models.CONV_OPS[config.use_custom_conv]} on {ctx.device} "
              f"({devices.memory_format_name(channels_last)})")
    if size_note:
        log.print(f"note: {size_note} (evaluated in batches of one size)")
    return Evaluation(config, model, loaders.DeviceLoader(val_loader, ctx.device, channels_last),
                      nn.CrossEntropyLoss().to(ctx.device), log)


def evaluate(config, ctx):
    """-e: val accuracy of the --resume model (flip-averaged unless --no-flip), saliency maps with -v;
    returns the run folder."""
    ev = load_for_eval(config, ctx)
    amp_dtype, _ = devices.amp_settings(config.amp, ctx.device)
    attention = student.get("default_attention", "-e -v")(ev.criterion) if config.vis else None
    visualize = student.get("default_visfunction", "-e -v") if config.vis else None
    try:
        result = engine.validate(ev.model, ev.val_loader, ev.criterion, ctx.device, amp_dtype=amp_dtype,
                                 flip_average=not config.no_flip, print_freq=config.print_freq,
                                 attention=attention, visualize=visualize, log=ev.log)
    finally:
        ev.log.close()
    signals.check()  # a signal during the last batch: nothing more is written
    averaging = "image only" if config.no_flip else "image + flip averaged"
    ev.log.print(f" * Acc@1 {result['top1']:.3f} Acc@5 {result['top5']:.3f}  ({result['count']} val images, "
                 f"{averaging})")
    if ctx.is_main:
        files.write_json({"checkpoint": str(config.resume), "flip_average": not config.no_flip, **result},
                         ev.log.run_dir / "evaluation.json")
    return ev.log.run_dir


def attack(config, ctx, val_images=None):
    """-a: clean and adversarial accuracy of the --resume model under the default PGD attack (or a
    sweep with --eps-sweep); returns the run folder."""
    ev = load_for_eval(config, ctx, val_images)
    if config.eps_sweep:
        pgd = student.get("PGDAttack", "--eps-sweep")
        pgd_attacks = {eps: pgd(ev.criterion, epsilon=eps) for eps in SWEEP_EPSILONS}
    else:
        default = student.get("default_attack", "-a")(ev.criterion)
        pgd_attacks = {getattr(default, "epsilon", None): default}
    visualize = student.get("default_visfunction", "-a -v") if config.vis else None
    largest = {eps: _record_largest_change(attacker) for eps, attacker in pgd_attacks.items()}
    # --amp on the CPU: the attack's forward and backward passes in bf16 too (its steps follow the
    # gradient's sign). fp16's input gradients would underflow without loss scaling: CUDA stays fp32.
    amp_dtype, _ = devices.amp_settings(config.amp, ctx.device)
    try:
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp_dtype is torch.bfloat16):
            result = engine.attack_eval(ev.model, ev.val_loader, pgd_attacks, ctx.device,
                                        print_freq=config.print_freq, visualize=visualize, log=ev.log)
    finally:
        ev.log.close()
    signals.check()  # a signal during the last batch: nothing more is written
    for row in result["attacks"]:
        if largest.get(row["epsilon"]) is not None:
            row["max_change_grey_levels"] = largest[row["epsilon"]][0]
    clean = result["clean"]
    for row in result["attacks"]:
        ev.log.print(f" * epsilon {row['epsilon']}: clean Acc@1 {clean['top1']:.3f} Acc@5 {clean['top5']:.3f}"
                     f" -> adversarial Acc@1 {row['top1']:.3f} Acc@5 {row['top5']:.3f}  "
                     f"({result['count']} val images)")
    if ctx.is_main:
        files.write_json({"checkpoint": str(config.resume), **result}, ev.log.run_dir / "attack.json")
        if config.eps_sweep:
            attacks.write_report(result, ev.log.run_dir, config.resume)
            ev.log.print(f"=> robustness table and plot: {ev.log.run_dir / 'robustness.md'}, "
                         f"{ev.log.run_dir / 'robustness.png'}")
    return ev.log.run_dir


def _record_largest_change(attacker):
    """Make `attacker.perturb` note the largest change it makes to a pixel, in grey levels (0-255), into
    the one-element list returned (None when the attacker takes no new attribute). The attacker keeps
    its type, so messages about its perturb still name the student's class. Per process: a torchrun's
    ranks each note their own share's."""
    largest = [0.0]

    def recording(model, images, *args, **kwargs):
        clean = images.detach().clone()  # a perturb that changes its input in place must not hide its change
        adversarial = perturb(model, images, *args, **kwargs)
        images_like = isinstance(adversarial, torch.Tensor) and adversarial.shape == clean.shape
        if images_like and clean.ndim == 4 and clean.shape[1] == 3:  # else the engine says what is wrong
            std = torch.tensor(custom_transforms.IMAGENET_STD, device=clean.device)  # (3,) of the 0-1 range
            change = (adversarial.detach().float() - clean.float()).abs().amax(dim=(0, 2, 3))  # (3,) normalized
            largest[0] = max(largest[0], float((change * std).max()) * 255)
        return adversarial

    try:
        perturb = attacker.perturb
        attacker.perturb = recording
    except AttributeError:  # no perturb (the engine says so), __slots__, a read-only property
        return None
    return largest
