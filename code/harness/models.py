"""The harness's network registry: which `--arch` names exist, how a network is built from the
student's file, the challenge's model-size limit, and torchvision's resnet18 baseline.

`--arch NAME` names a class that student_code.py defines (ARCHS maps each name to the class it looks
for); without --arch the harness builds `student_code.default_model`, as the 2019 harness did.
The harness builds some networks itself: `resnet18` (torchvision's) and our own designs
(harness.networks: customnet2_bn, customnet_res, resnet18_half, googlenet_half).

Construction follows the 2019 calls: `Network(num_classes=...)`, plus `conv_op=CustomConv2d` only
with --use-custom-conv. `init='pytorch'` re-initialises every layer with PyTorch's defaults (how the
team trained); `init='model'` keeps what the constructor did (our student_code.py: Kaiming init).
"""
import copy
import inspect
import io
import os

import torch
import torch.nn as nn

from . import checkpoints, devices, networks, student
from .cli import UserError

# --arch name -> the class (or function) student_code.py defines for it, or harness.networks for
# NETWORK_ARCHS.
ARCHS = {
    "simplenet": "SimpleNet",
    # The team's networks, as their code built them (their checkpoints load into these).
    "customnet2": "CustomNet2",
    "customnet": "CustomNet",
    "resnet": "ResNet",
    "googlenet": "GoogLeNet",
    # Our own designs, written from the report's prose: harness.networks builds them (NETWORK_ARCHS).
    "customnet2_bn": "CustomNet2BN",
    "customnet_res": "CustomNetRes",
    "resnet18_half": "ResNet18Half",
    "googlenet_half": "GoogLeNetHalf",
}
# Networks the harness builds itself: torchvision's resnet18 (with its `pretrained` argument), and our
# designs, classes of harness.networks whatever the student's file defines.
HARNESS_ARCHS = ("resnet18",)
NETWORK_ARCHS = ("customnet2_bn", "customnet_res", "resnet18_half", "googlenet_half")
INITS = ("model", "pytorch")
# The conv op a network is built with, by --use-custom-conv (False, True): checkpoints and run names.
CONV_OPS = ("Conv2d", "CustomConv2d")

# Bytes a saved model may take: the MiniPlaces challenge's "10 MB", read strictly as 10,000,000 bytes
# so that a file under it passes whichever way a grader reads "MB".
MAX_MODEL_BYTES = 10_000_000


def arch_names():
    """Every --arch choice, sorted."""
    return sorted((*ARCHS, *HARNESS_ARCHS))


def arch_of(constructor):
    """The --arch name of a student_code class (default_model), or its own name when unregistered."""
    name = getattr(constructor, "__name__", type(constructor).__name__)
    return next((arch for arch, class_name in ARCHS.items() if class_name == name), name)


def constructor_for(arch):
    """(arch name, callable) for an --arch name, a class name of student_code.py, or None (default_model)."""
    if arch is None:
        constructor = student.get("default_model", "building the network without --arch")
        return arch_of(constructor), constructor
    if arch in HARNESS_ARCHS:
        return arch, resnet18
    if arch in NETWORK_ARCHS:
        return arch, getattr(networks, ARCHS[arch])
    class_name = ARCHS.get(arch, arch)
    module = student.load()
    constructor = getattr(module, class_name, None)
    if not callable(constructor):
        raise UserError(f"--arch {arch}: {student.FILE_NAME} defines no {class_name} "
                        f"(the class --arch {arch} builds)")
    return arch, constructor


def _accepts(constructor, name):
    try:
        parameters = inspect.signature(constructor).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def build_model(arch, num_classes, use_custom_conv=False, init="model", pretrained=False):
    """(arch name, network) for `arch` (None: default_model) with `num_classes` outputs.

    conv_op=student_code.CustomConv2d is passed only when use_custom_conv; `pretrained` only matters
    for resnet18. Raises UserError (one line) for an unknown class, a constructor that cannot take
    conv_op, or an error raised inside the student's constructor.
    """
    if init not in INITS:
        raise UserError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
    arch, constructor = constructor_for(arch)
    kwargs = {"num_classes": num_classes}
    if use_custom_conv:
        if not _accepts(constructor, "conv_op"):
            raise UserError(f"--use-custom-conv: {student.FILE_NAME}'s {constructor.__name__} takes "
                            "no conv_op argument, so its convolutions cannot be swapped")
        kwargs["conv_op"] = student.get("CustomConv2d", "--use-custom-conv")
    if arch in HARNESS_ARCHS:
        kwargs["pretrained"] = pretrained
    elif not _accepts(constructor, "num_classes"):
        raise UserError(f"{student.FILE_NAME}'s {constructor.__name__} takes no num_classes argument")
    try:
        model = constructor(**kwargs)
    except UserError:
        raise
    except student.RAISES as exc:  # the student's constructor may raise anything
        raise student.StudentCodeError(
            f"building {constructor.__name__}: {student.describe(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{student.FILE_NAME}'s {constructor.__name__} returned a "
                        f"{type(model).__name__}, not a torch.nn.Module")
    if init == "pytorch":
        reset_to_pytorch_init_(model)
    return arch, model


def check_logits(model, num_classes, arch, size=128):
    """Refuse, in one line, a network whose forward does not return (N, num_classes) logits: a tuple,
    a wrong width (a classifier hard-coded to 100 classes on other data), a flattened output...

    One forward pass of two blank (3, size, size) images in eval mode, without gradients, on the
    CPU, before the network moves anywhere; the module modes are restored.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, 3, size, size))
    except student.RAISES as exc:  # the student's forward may raise anything
        raise student.StudentCodeError(
            f"running {type(model).__name__} on two blank images: {student.describe(exc)}") from None
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(output, torch.Tensor) or output.shape != (2, num_classes):
        got = f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) \
            else f"a {type(output).__name__}"
        raise student.StudentCodeError(
            f"{student.FILE_NAME}'s {type(model).__name__} (--arch {arch}) returned {got} for a batch of "
            f"2 images, not (2, {num_classes}) logits: its forward must return one row of {num_classes} class "
            "scores per image")


def channels_last_failure(model, size=128):
    """None when a copy of `model` runs a training step's forward and backward in channels-last (NHWC)
    on two blank (3, size, size) images, the input's gradient included (as PGD needs it); else one
    line saying why not. A network written for NCHW, e.g. a 2019 student's convolution calling
    weight.view(...) or a forward flattening a feature map with .view(...), fails in NHWC."""
    probe = copy.deepcopy(model).to(memory_format=torch.channels_last).train()
    images = torch.zeros(2, 3, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    try:
        output = probe(images)
        output.float().sum().backward()
    except student.RAISES as exc:  # the student's code may raise anything
        return f"{type(model).__name__} fails in NHWC ({student.describe(exc)})"
    return None


def choose_channels_last(requested, device, model, amp=False, use_custom_conv=False, say=print):
    """devices.use_channels_last(requested, device, amp), except that a default NHWC gives way to NCHW
    for a network built with the student's CustomConv2d (the model answer computes in NCHW) and, said
    in one line that reads as the harness's choice, not as an error, for a `model` that fails in NHWC
    (channels_last_failure); a forced one stays."""
    channels_last = devices.use_channels_last(requested, device, amp)
    if requested is None and channels_last and use_custom_conv:
        return False
    failure = channels_last_failure(model) if requested is None and channels_last else None
    if failure:
        # The harness's own fallback, not the student's error: said without the exception it caught.
        say(f"note: {type(model).__name__} runs in NCHW, the memory layout its code is written for; NHWC, "
            f"faster on this {device.type}, needs .reshape where the code uses .view (--no-channels-last skips "
            "this check)")
        return False
    return channels_last


def candidate_archs():
    """Every network the harness can build with this student's file: the registry's names it defines
    (and our designs), then default_model's class when the registry does not name it, then resnet18."""
    module = student.load()
    names = [arch for arch, class_name in ARCHS.items()
             if arch in NETWORK_ARCHS or callable(getattr(module, class_name, None))]
    default = getattr(module, "default_model", None)
    if default is not None and arch_of(default) not in names:
        names.append(arch_of(default))
    return names + list(HARNESS_ARCHS)


def find_fitting_arch(state_dict, num_classes, skip=()):
    """The first of candidate_archs() whose network has exactly `state_dict`'s names and shapes, or None."""
    for arch in candidate_archs():
        if arch in skip:
            continue
        try:
            _, model = build_model(arch, num_classes)
        except UserError:  # a constructor that cannot be built here is no candidate
            continue
        if checkpoints.fits(model, state_dict):
            return arch
    return None


def model_for_checkpoint(checkpoint, arch, num_classes, use_custom_conv=False, flag="--resume"):
    """(arch, network, note) whose weights checkpoint.state_dict fits, for -e, -a, training --resume and
    predict.py; `note` is a line to print (or None).

    `arch` is the --arch given (or None). A checkpoint that names its network (ours) must fit it. One that
    only hints (the 2019 harness's model_arch, always 'simplenet') or names nothing is tried as the hint,
    or default_model, and otherwise as whichever network of the student's file fits its weights.
    Raises CheckpointError (one line, with up to five mismatches) when nothing fits.
    """
    if arch and checkpoint.arch and arch != checkpoint.arch:
        raise checkpoints.CheckpointError(f"{flag}: {checkpoint.path} holds a '{checkpoint.arch}' checkpoint, "
                                          f"not --arch '{arch}'")
    hint = checkpoint.arch_hint if checkpoint.arch_hint in candidate_archs() else None
    wanted = arch or checkpoint.arch or hint
    name, model = build_model(wanted, num_classes, use_custom_conv, pretrained=False)
    problems = checkpoints.mismatches(model, checkpoint.state_dict)
    if not problems:
        return name, model, None
    fitting = find_fitting_arch(checkpoint.state_dict, num_classes, skip=(name,))
    if fitting is not None and not (arch or checkpoint.arch):
        said = f"its model_arch says '{checkpoint.arch_hint}'" if checkpoint.arch_hint else "it names no network"
        note = (f"=> {checkpoint.path}: {said}, but its weights fit --arch {fitting} "
                f"({ARCHS.get(fitting, fitting)}): building that")
        name, model = build_model(fitting, num_classes, use_custom_conv, pretrained=False)
        return name, model, note
    where = f"they fit --arch {fitting}" if fitting else f"they fit no network of {student.FILE_NAME} or the harness"
    raise checkpoints.CheckpointError(
        f"{flag}: the weights in {checkpoint.path} do not fit {name} ({ARCHS.get(name, name)}): "
        f"{checkpoints.summarize(problems)}; {where}")


def model_from_checkpoint(checkpoint, arch, num_classes, use_custom_conv=False, flag="--resume", data="the data"):
    """(arch, network with the checkpoint's weights, note) for training --resume, -e, -a and predict.py.

    Refuses in one line a checkpoint trained on another number of classes than `num_classes`, weights
    that fit no network (model_for_checkpoint), and a network whose forward does not return
    (N, num_classes) logits (check_logits). `note` is a line to print, or None; `data` names the data
    folder in the message.
    """
    if checkpoint.num_classes not in (None, num_classes):
        raise UserError(f"{flag}: {checkpoint.path} was trained on {checkpoint.num_classes} classes but {data} "
                        f"has {num_classes}")
    arch, model, note = model_for_checkpoint(checkpoint, arch, num_classes, use_custom_conv, flag)
    checkpoints.load_weights(model, checkpoint, flag)
    check_logits(model, num_classes, arch)
    return arch, model, note


def reset_to_pytorch_init_(model):
    """Re-initialise every layer that has PyTorch's own `reset_parameters` (conv, linear, batch norm):
    the initialisation the team trained with."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def model_size_bytes(model):
    """Bytes of `torch.save(model.state_dict())`, the file a submission hands in."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def check_model_size(num_bytes, path, limit=None):
    """Refuse a model file of `limit` (default MAX_MODEL_BYTES) bytes or more (UserError naming `path`)."""
    limit = MAX_MODEL_BYTES if limit is None else limit
    if num_bytes >= limit:
        raise UserError(f"{path}: {num_bytes:,} bytes ({num_bytes / 2**20:.2f} MiB) is at or over the challenge's "
                        f"10 MB limit ({limit:,} bytes): train a smaller --arch")


# ---------------------------------------------------------------------------------------------------
# resnet18: torchvision's network, the Fall 2019 `--use-resnet18` baseline
# ---------------------------------------------------------------------------------------------------


def cached_resnet18_weights():
    """Path of torchvision's ImageNet resnet18 weights in the local torch hub cache, or None.

    Only looks: nothing is ever downloaded (the file is what torchvision's own download writes,
    `<torch.hub.get_dir()>/checkpoints/resnet18-f37072fd.pth`).
    """
    from torchvision.models import ResNet18_Weights  # importing torchvision takes seconds: only here

    file_name = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", file_name)
    return path if os.path.isfile(path) else None


def resnet18(conv_op=nn.Conv2d, num_classes=100, pretrained=True):
    """torchvision's resnet18 with a new 512 -> num_classes head.

    With `pretrained`, ImageNet weights are loaded when already in the local torch hub cache; one
    line says whether they were. Without them, torchvision's own init is kept (Kaiming-normal
    fan_out convs, `zero_init_residual`). The head is N(0, 0.01). 11.2 M parameters, about 45 MB:
    over the challenge's 10 MB limit, a baseline, not an entry.
    """
    from torchvision.models import resnet18 as torchvision_resnet18  # seconds to import: only here

    model = torchvision_resnet18(weights=None, zero_init_residual=True)
    weights_path = cached_resnet18_weights() if pretrained else None
    if weights_path is not None:
        try:
            state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state_dict)
        except Exception as err:  # unpickling and key/shape mismatches raise several types
            raise UserError(f"resnet18: cannot read the ImageNet weights {weights_path} "
                            f"({type(err).__name__}); delete the file to train from scratch") from err
        print(f"resnet18: ImageNet weights loaded from {weights_path}")
    elif pretrained:
        print(f"resnet18: no ImageNet weights in {os.path.join(torch.hub.get_dir(), 'checkpoints')}"
              " (they are never downloaded): random initialisation")
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.normal_(model.fc.weight, 0.0, 0.01)
    nn.init.zeros_(model.fc.bias)
    return swap_conv_op_(model, conv_op)


def swap_conv_op_(model, conv_op):
    """Replace every nn.Conv2d inside `model` by conv_op with the same arguments and weights.

    The replacement sits under the same attribute name, so the state_dict keys do not change.
    """
    if conv_op is nn.Conv2d:
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                replacement = conv_op(
                    child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                    padding=child.padding, dilation=child.dilation, groups=child.groups,
                    bias=child.bias is not None, padding_mode=child.padding_mode,
                )
                replacement.load_state_dict(child.state_dict())
                setattr(parent, name, replacement)
    return model
