"""A grading run's fixed part: the inputs handed to every child, the runtime it imports, the grader's
own answers, and the reference solution's results measured on this machine in this run.

    inputs/   conv.pt (Part I's cases), network.pt (Part II's images and training slice), attack.pt and
              refnet.pt (Part III's images and the reference network's weights): tensors only
    runtime/  the harness package and the course's data files, without our solution, read-only in the jail

The reference network is trained once per dataset and cached (cache/refnet-*.pt); our solution's
training losses and attack are measured by running it through the same sandbox as the students.
"""
import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import custom_transforms
from .. import paths
from ..cli import UserError
from . import checks, conv_cases, data, refnet, sandbox

NETWORK_IMAGES = 4
# Seeded pixel noise on Part II's network images, in normalized units (about 15 grey levels). The demo's
# flat, faint images leave max-pool windows of near-equal values whose ties float32 rounding breaks
# either way in nn.Conv2d and CustomConv2d, so a correct CustomConv2d's input gradients differed from
# nn.Conv2d's by 11-13% (relative L2); with the noise, by at most 0.5% over 12 draws.
NETWORK_NOISE_STD = 0.25
TRAIN_IMAGES = 8
TRAIN_STEPS = 8
TRAIN_LR = 0.01
ATTACK_IMAGES = 8
REFNET_IMAGES = 640
CHALLENGE_IMAGES = 8  # val images the handed-in model predicts again
COURSE_FILES = ("custom_dataloader.py", "custom_transforms.py", "utils.py")
VERSION_FILES = ("checks.py", "probes.py", "child.py", "conv_cases.py", "context.py", "refnet.py", "runner.py",
                 "sandbox.py", "jail.py", "grader.py", "handin.py", "data.py")


@dataclass
class Context:
    scratch: Path
    inputs: Path
    runtime: Path
    limits: sandbox.Limits
    timeouts: dict
    task: dict
    answers: dict = field(default_factory=dict)


def grader_version(rubric_text=""):
    """A hash of the grader's own code and the rubric: a changed check regrades everyone."""
    digest = hashlib.sha256(rubric_text.encode())
    for name in VERSION_FILES:
        digest.update((Path(__file__).with_name(name)).read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:16]


def make_runtime(folder):
    """The harness package and the course's data files (not student_code.py, main.py or test_conv.py)."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(paths.CODE_DIR / "harness", folder / "harness",
                    ignore=shutil.ignore_patterns("__pycache__", "*.toml"))
    for name in COURSE_FILES:
        shutil.copyfile(paths.CODE_DIR / name, folder / name)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def reference_network(cache, dataset, steps=refnet.TRAIN_STEPS):
    """The reference network's state_dict, trained once per dataset and cached."""
    key = hashlib.sha256(f"{Path(data.dataset_root(dataset)).resolve()}|{torch.__version__}|"
                         f"{steps}|{Path(refnet.__file__).read_text()}".encode()).hexdigest()[:12]
    path = Path(cache) / f"refnet-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    images, labels = data.image_slice(dataset, "train", REFNET_IMAGES)
    state = refnet.train(images, labels, steps=steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def build(workdir, rubric, dataset=None, cache=None, say=print, refnet_steps=refnet.TRAIN_STEPS, test_labels=None,
          *, amp):
    """The Context of a grading run in `workdir` (scratch space the grader owns). `amp`: Part II's short
    training in bf16 autocast, for every submission and the reference alike (batch.grade_folder chooses,
    as the grader version must know it)."""
    if test_labels is not None and not Path(test_labels).is_file():
        raise UserError(f"--test-labels: no such file: {test_labels}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)  # the children never see it: only inputs/ and runtime/ are bound into the jail
    inputs = workdir / "inputs"
    inputs.mkdir(exist_ok=True)
    held = conv_cases.held_cases()
    conv_inputs = conv_cases.make_inputs(held)
    torch.save(conv_inputs, inputs / "conv.pt")
    answers = {"conv_cases": held, "conv": {h.id: conv_cases.answers(h, conv_inputs) for h in held}}

    start = time.perf_counter()
    probes = {checks.BY_NAME[item.name].probe for item in rubric.items}
    if probes & {"network", "training"}:
        images, _ = data.image_slice(dataset, "val", NETWORK_IMAGES)
        images = images + NETWORK_NOISE_STD * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        train_images, train_labels = data.image_slice(dataset, "train", TRAIN_IMAGES)
        torch.save({"images": images, "train_images": train_images, "train_labels": train_labels},
                   inputs / "network.pt")
        answers["network_images"] = images
    if probes & {"saliency", "pgd"}:
        attack_images = with_black_and_white_bands(data.image_slice(dataset, "val", ATTACK_IMAGES)[0])
        state = reference_network(cache or workdir / "cache", dataset, refnet_steps)
        torch.save(state, inputs / "refnet.pt")
        torch.save({"images": attack_images}, inputs / "attack.pt")
        model = refnet.ReferenceNet()
        model.load_state_dict(state)
        model.eval()
        answers.update(attack_images=attack_images, refnet=model, refnet_state=state,
                       saliency=_input_gradient_map(model, attack_images))
    if probes & {"challenge", "handin"}:
        images, names = data.challenge_sample(dataset, CHALLENGE_IMAGES)
        torch.save({"images": images}, inputs / "challenge.pt")
        val_labels, test_count = data.label_files(dataset)
        answers.update(challenge_names=names, num_classes=data.num_classes(dataset), test_count=test_count,
                       held_labels=(Path(test_labels), "staff") if test_labels is not None else (val_labels, "val"))
    say(f"inputs ready ({time.perf_counter() - start:.0f} s)")
    for path in [inputs, *inputs.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    g = rubric.grader
    limits = sandbox.Limits(memory_bytes=g["memory_mb"] * 2**20, processes=g["processes"], threads=g["threads"],
                            stdout_bytes=g["stdout_kb"] * 1024)
    timeouts = {}
    for item in rubric.items:
        probe = checks.BY_NAME[item.name].probe
        timeouts[probe] = max(timeouts.get(probe, 0), item.timeout_s)
    answers["amp"] = bool(amp)
    if probes & {"training"}:
        say(f"Part II's training check in {'bf16 autocast (--no-amp: fp32)' if amp else 'fp32'}")
    task = {"conv_cases": [h.task() for h in held], "epsilon": 0.1, "train_steps": TRAIN_STEPS, "train_lr": TRAIN_LR,
            "amp": bool(amp)}
    return Context(workdir / "scratch", inputs, make_runtime(workdir / "runtime"), limits, timeouts, task, answers)


def with_black_and_white_bands(images, rows=8):
    """(N, 3, H, W) normalized images with their top `rows` rows black and bottom `rows` white: pixels at
    both ends of the valid range, where an attack that forgets to clamp leaves it. (The demo's images are
    near-grey: without the bands, no step of 0.1 could leave the range.)"""
    mean = torch.tensor(custom_transforms.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(custom_transforms.IMAGENET_STD).view(1, 3, 1, 1)
    banded = images.clone()
    banded[:, :, :rows] = (0 - mean) / std  # (1, 3, 1, 1) broadcast over the band
    banded[:, :, -rows:] = (1 - mean) / std
    return banded


def _input_gradient_map(model, images):
    """|d loss(predicted label) / d x|, maximum over the colour channels: (N, 1, H, W), computed here."""
    x = images.clone().requires_grad_(True)
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.abs().amax(dim=1, keepdim=True).detach()

