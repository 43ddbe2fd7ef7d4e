"""A student's own file checked end to end in about a minute on a CPU, with a verdict per part
(`python tools/check_student_code.py [FILE]`).

    Part I    the convolution     test_conv's checks, with what differs and by how much (conv_check)
    Part II   the network         default_model builds, gives logits, and learns a fixed batch of demo
                                  images; with the file's CustomConv2d it trains step for step as with
                                  nn.Conv2d from the same weights (a wrong gradient shows at once)
    Part III  saliency            default_attention's map is the input gradient's largest absolute value
                                  over the colour channels, computed here independently
    Part III  PGD                 default_attack stays within its epsilon of the input and lowers the loss
                                  towards each image's least likely label; PGDAttack with steps of half
                                  the ball stays in it (each step projected)

Every check compares with PyTorch computed here, so a right file passes on any CPU and a wrong one
fails with a line saying what differs. The data are the first images of the generated demo dataset.
On a CPU that computes bf16 natively (devices.cpu_bf16_is_faster) the learning runs in bf16 autocast,
as the demo does; the step-for-step comparison of the two convolutions stays in fp32.
"""
import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from . import conv_check, demo_data, devices, models, student
from .grading import data as grading_data

BATCH = 32  # demo images the network learns, 128x128
# Adam learns a fixed batch whatever the network's initialisation, where SGD at lr 0.02 made ours
# oscillate. On demo data version 5's faint textures, over 6 draws of the batch and both precisions:
# SimpleNet (Kaiming init) to 0.00-0.02 of its first loss in 40 steps, the 2019 student's SimpleNet
# (PyTorch's init) to 0.25-0.32; in 25 steps the 2019 one reached only 0.65-0.68. Judged on the best
# of the last LEARNED_WINDOW losses: Adam's loss may spike for a step or two.
TRAIN_STEPS = 40
LEARNED_WINDOW = 10
LEARNING_RATE = 1e-3
MATCHED_STEPS = 3  # steps compared between CustomConv2d and nn.Conv2d
# Float32 conv kernels differ by ~1e-6 relative; a wrong gradient moves the second step's loss by
# far more than 1e-3.
MATCH_RTOL = 1e-3
ATTACKED = 16  # images the attack and the saliency maps see
CPU = torch.device("cpu")


@dataclass
class Verdict:
    part: str
    passed: bool
    lines: list = field(default_factory=list)


def run(say=print, data=None, amp=None):
    """Every part's Verdict, in order; each is said as it is decided. `data`: a demo dataset's folder
    (default: data/miniplaces_demo, generated when absent); `amp`: the learning in bf16 autocast (None:
    where the CPU computes bf16 natively and faster)."""
    amp_dtype = torch.bfloat16 if (devices.cpu_bf16_is_faster(CPU) if amp is None else amp) else None
    if amp_dtype is not None:
        say("The network learns in bf16 autocast" + (" (this CPU computes bf16 natively; --no-amp for fp32)"
                                                     if amp is None else ""))
    torch.manual_seed(0)
    images, labels = demo_batch(data)
    # Part III looks at val images: on the batch it learned, the trained network is so sure that some
    # input gradients vanish.
    val_images, _ = demo_batch(data, split="val", count=ATTACKED)
    trained = {}  # Part II's network after training: what Part III explains and attacks

    def model():
        if "model" not in trained:  # Part II failed before training it
            torch.manual_seed(0)
            _, trained["model"] = models.build_model(None, demo_data.DEMO_NUM_CLASSES)
            train(trained["model"], images, labels, TRAIN_STEPS, amp_dtype)
        return trained["model"].eval()

    verdicts = []
    for part, check in (("Part I    the convolution", check_convolution),
                        ("Part II   the network", lambda: check_network(images, labels, trained, amp_dtype)),
                        ("Part III  saliency", lambda: check_saliency(model(), val_images)),
                        ("Part III  PGD", lambda: check_attack(model(), val_images))):
        start = time.perf_counter()
        try:
            passed, lines = check()
        except student.StudentCodeError as exc:
            passed, lines = False, [str(exc)]
        except student.RAISES as exc:  # the student's code may raise anything, sys.exit too: that part fails
            if not student.raised_in_student_code(exc):
                raise
            passed, lines = False, [student.describe(exc)]
        verdict = Verdict(part, passed, lines)
        verdicts.append(verdict)
        say(f"{part:<27} {'PASS' if passed else 'FAIL'}   ({time.perf_counter() - start:.0f} s)")
        for line in lines:
            say(f"    {line}")
    return verdicts


def demo_batch(root=None, split="train", count=BATCH):
    """(images (B, 3, 128, 128) normalized, labels (B,)): up to `count` demo images of `split`, every class
    in turn (the grader's fixed slices, grading.data.image_slice)."""
    return grading_data.image_slice(root, split, count)


def check_convolution():
    """test_conv's checks: the function and the module against F.conv2d, on the assignment's case."""
    function = student.get("CustomConv2DFunction", "Part I").apply
    module = student.get("CustomConv2d", "Part I")
    lines = conv_check.diagnose(function, torch.device("cpu"))
    lines += [f"CustomConv2d: {line}" for line in conv_check.diagnose(conv_check.module_as_function(module),
                                                                      torch.device("cpu"))]
    if not lines:
        lines = ["the output and the input, weight and bias gradients match F.conv2d's"]
        return True, lines
    return False, lines


def check_network(images, labels, trained, amp_dtype=None):
    """default_model learns the batch (in autocast to `amp_dtype` when given); with CustomConv2d it
    trains as with nn.Conv2d, both in fp32. The trained network goes into trained["model"]."""
    num_classes = demo_data.DEMO_NUM_CLASSES
    arch, reference = models.build_model(None, num_classes)
    models.check_logits(reference, num_classes, arch)
    start_weights = copy.deepcopy(reference.state_dict())
    losses = train(reference, images, labels, TRAIN_STEPS, amp_dtype)
    trained["model"] = copy.deepcopy(reference)
    reached = min(losses[-LEARNED_WINDOW:])
    learned = reached < 0.5 * losses[0]
    lines = [f"{type(reference).__name__} (default_model) on {len(images)} demo images: loss {losses[0]:.2f} -> "
             f"{reached:.2f} in {TRAIN_STEPS} steps (the best of the last {LEARNED_WINDOW})"
             + ("" if learned else "; expected below half")]

    _, custom = models.build_model(None, num_classes, use_custom_conv=True)
    custom.load_state_dict(start_weights)
    reference.load_state_dict(start_weights)
    custom_losses = train(custom, images, labels, MATCHED_STEPS)
    if amp_dtype is None:
        reference_losses = losses[:MATCHED_STEPS]
    else:  # the comparison needs fp32 on both sides: bf16 rounds far above MATCH_RTOL
        _, fp32_reference = models.build_model(None, num_classes)
        fp32_reference.load_state_dict(start_weights)
        reference_losses = train(fp32_reference, images, labels, MATCHED_STEPS)
    matched = all(abs(a - b) <= MATCH_RTOL * abs(b) for a, b in zip(custom_losses, reference_losses))
    pairs = ", ".join(f"{a:.4f} vs {b:.4f}" for a, b in zip(custom_losses, reference_losses))
    lines.append(f"with CustomConv2d, the first {MATCHED_STEPS} steps' losses {pairs} (nn.Conv2d)"
                 + ("" if matched else ": they should agree to 1e-3; check Part I's backward"))
    return learned and matched, lines


def train(model, images, labels, steps, amp_dtype=None):
    """Full-batch Adam on (images, labels), the forward pass in autocast to `amp_dtype` when given: the
    loss before each step."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = criterion(model(images).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def check_saliency(model, images):
    """default_attention(criterion).explain(model, x) against |d loss / d x| max over channels, per image."""
    x = images[:ATTACKED].clone()
    attention = student.get("default_attention", "Part III saliency")(nn.CrossEntropyLoss())
    saliency = attention.explain(model, x.clone())
    expected = input_gradient_saliency(model, x)  # (N, 1, H, W), what -e -v's pictures need
    if not isinstance(saliency, torch.Tensor) or saliency.shape != expected.shape:
        got = tuple(saliency.shape) if isinstance(saliency, torch.Tensor) else type(saliency).__name__
        return False, [f"explain returned {got}; expected a map of shape {tuple(expected.shape)}"]
    found = saliency.detach().double().reshape(len(x), -1)
    wanted = expected.double().reshape(len(x), -1)
    # The cosine of the maps, computed here: F.cosine_similarity's eps floor (1e-8 on the product of the
    # norms) zeroes it for a confident image, whose map is ~1e-9. Two all-zero maps agree.
    norms = found.norm(dim=1) * wanted.norm(dim=1)
    similarity = torch.where(norms > 0, (found * wanted).sum(dim=1) / norms.clamp_min(1e-300),
                             (found.abs().sum(dim=1) + wanted.abs().sum(dim=1) == 0).double())
    worst = similarity.min().item()
    passed = worst > 0.99
    line = f"cosine similarity with the input gradient's map, worst of {len(x)} images: {worst:.4f}"
    return passed, [line + ("" if passed else " (expected above 0.99: the absolute input gradient of the "
                                              "predicted label's loss, maximum over the colour channels)")]


def input_gradient_saliency(model, x):
    """|d loss(model(x), predicted label) / dx|, maximum over the colour channels: (N, 1, H, W)."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.abs().amax(dim=1, keepdim=True)


def check_attack(model, images):
    """default_attack(criterion).perturb(model, x) stays in its ball and lowers the target's loss."""
    x = images[:ATTACKED].clone()
    attack = student.get("default_attack", "Part III PGD")(nn.CrossEntropyLoss())
    epsilon = float(getattr(attack, "epsilon", 0.1))
    given = x.clone()
    adversarial = attack.perturb(model, given)
    if not isinstance(adversarial, torch.Tensor) or adversarial.shape != x.shape:
        got = tuple(adversarial.shape) if isinstance(adversarial, torch.Tensor) else type(adversarial).__name__
        return False, [f"perturb returned {got}; expected images of shape {tuple(x.shape)}"]
    lines, passed = [], True
    if not torch.equal(given, x):
        passed = False
        lines.append("perturb changed its input in place: the clean images must stay as they were")
    distance = (adversarial.detach() - x).abs().max().item()
    if distance > epsilon + 1e-5:
        passed = False
        lines.append(f"the perturbation reaches {distance:.4f}, beyond epsilon {epsilon} (L-inf)")
    with torch.no_grad():
        clean_logits, adversarial_logits = model(x), model(adversarial.detach())
    target = clean_logits.argmin(1)  # the least likely label, as the 2019 attack targets it
    before = nn.functional.cross_entropy(clean_logits, target, reduction="none")
    after = nn.functional.cross_entropy(adversarial_logits, target, reduction="none")
    lowered = (after < before).float().mean().item()
    if lowered < 0.5:
        passed = False
    lines.append(f"largest change {distance:.4f} (epsilon {epsilon}); the loss towards the least likely label "
                 f"fell for {lowered:.0%} of {len(x)} images" + ("" if lowered >= 0.5 else
                                                                 " (a targeted PGD step goes down the gradient)"))
    flipped = (adversarial_logits.argmax(1) != clean_logits.argmax(1)).float().mean().item()
    lines.append(f"predictions changed for {flipped:.0%} of the images")
    # Steps of half the ball leave it unless each is projected back: the default attack's 10 steps of
    # 0.01 never reach past 0.1, so they cannot show a missing projection.
    pgd = student.get("PGDAttack", "Part III PGD")(nn.CrossEntropyLoss(), num_steps=3, step_size=epsilon / 2,
                                                     epsilon=epsilon)
    reach = (pgd.perturb(model, x.clone()).detach() - x).abs().max().item()
    if reach > epsilon + 1e-5:
        passed = False
        lines.append(f"PGDAttack(num_steps=3, step_size={epsilon / 2:g}, epsilon={epsilon:g}) reaches {reach:.4f}: "
                     "each step must be projected back into the epsilon ball")
    return passed, lines
