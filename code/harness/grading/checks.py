"""The checks: each a name (starting with its part), the probe whose answers it reads, and a verdict
computed here, in the grader's process, from plain data the child handed back.

A verdict is (fraction of the points, lines of feedback). The grader turns a probe that did not
finish (timeout, crash, out of memory), a name the file lacks ("not attempted") and an exception in
the student's code (its file and line) into 0 points before any verdict runs.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import custom_transforms
from . import conv_cases

MODEL_BYTES_LIMIT = 10_000_000  # the challenge's limit: 10 MB
NETWORK_RTOL = 1e-2  # CustomConv2d against nn.Conv2d in float32: relative L2 difference (a wrong conv: ~1)
TRAINING_BAND = 0.5  # the student's relative loss drop must reach half of the reference's
SALIENCY_COSINE = 0.99
EPSILON = 0.1  # the assignment's PGD: 10 steps of 0.01 within 0.1 (L-inf), normalized units
EPSILON_SLACK = 1e-5
PGD_BAND = 0.1  # the student's mean target loss may exceed the reference's by 10% of its clean loss


@dataclass(frozen=True)
class Check:
    name: str
    probe: str
    verdict: object  # verdict(probe_result, answers) -> (fraction, lines)
    needs: tuple = ()  # names the file must define, for "not attempted"


def _cases(result, answers, ids):
    """[(held case, lines of what differs)] for the cases `ids`, in order."""
    out = []
    for held in answers["conv_cases"]:
        if held.id not in ids:
            continue
        record = result.data.get("cases", {}).get(held.id)
        if record is None:
            out.append((held, ["was not run"]))
        elif record.get("error"):
            out.append((held, [record["error"]]))
        else:
            found = {q: result.tensors.get(f"{held.id}.{q}") for q in conv_cases.QUANTITIES}
            exact, tolerance = answers["conv"][held.id]
            out.append((held, conv_cases.compare(held, exact, tolerance, found)))
    return out


def _cases_verdict(result, answers, ids, quantities=conv_cases.QUANTITIES, label=""):
    outcomes = _cases(result, answers, ids)
    failing = [(held, [line for line in lines if line.split(" ")[0] in quantities or not
                       line.split(" ")[0] in conv_cases.QUANTITIES]) for held, lines in outcomes]
    failing = [(held, lines) for held, lines in failing if lines]
    passed = len(outcomes) - len(failing)
    if not outcomes:
        return 0.0, ["no case was run"]
    lines = [f"{passed} of {len(outcomes)} {label}cases agree with F.conv2d"]
    if failing:
        held, first = min(failing, key=lambda item: _size(item[0].case))
        lines.append(f"smallest failing case: {held.describe()}: {'; '.join(first)}")
    return passed / len(outcomes), lines


def _size(case):
    return case.batch * case.in_channels * case.height * case.width * case.out_channels * case.kernel ** 2


def _function_ids(answers, extra=False):
    return {h.id for h in answers["conv_cases"] if h.via != "module" and h.extra == extra}


def test_conv_forward(result, answers):
    outcome = _cases(result, answers, {conv_cases.ASSIGNMENT_ID})
    lines = [line for line in outcome[0][1] if not line.startswith("grad_")] if outcome else ["not run"]
    return (0.0 if lines else 1.0), lines or ["the output matches F.conv2d's (test_conv.py's case)"]


def test_conv_backward(result, answers):
    # test_conv.py runs gradcheck (finite differences) in the student's process, where a patched torch
    # could fake it; here the gradients are compared with F.conv2d's exact ones, which gradcheck approximates.
    outcome = _cases(result, answers, {conv_cases.ASSIGNMENT_ID})
    lines = [line for line in outcome[0][1] if not line.startswith("output")] if outcome else ["not run"]
    return (0.0 if lines else 1.0), lines or ["the input, weight and bias gradients match F.conv2d's"]


def test_conv_module(result, answers):
    outcome = _cases(result, answers, {"m_assignment"})
    lines = outcome[0][1] if outcome else ["not run"]
    return (0.0 if lines else 1.0), lines or ["CustomConv2d and nn.Conv2d agree from one state_dict"]


def held_forward(result, answers):
    return _cases_verdict(result, answers, _function_ids(answers), ("output",), "held ")


def held_gradients(result, answers):
    return _cases_verdict(result, answers, _function_ids(answers), ("grad_input", "grad_weight", "grad_bias"),
                          "held ")


def held_module(result, answers):
    return _cases_verdict(result, answers, {h.id for h in answers["conv_cases"] if h.via == "module"},
                          label="CustomConv2d ")


def beyond_2019(result, answers):
    return _cases_verdict(result, answers, _function_ids(answers, extra=True), label="custom_conv2d ")


def no_builtin_convolution(result, answers):
    records = {key: record for key, record in result.data.get("cases", {}).items()
               if not key.startswith("x_") and isinstance(record, dict)}
    used = sorted({name for record in records.values() for name in record.get("convs", [])})
    if used:
        return 0.0, [f"a built-in convolution ran inside the student's convolution: {', '.join(used)}"]
    if not records or any(record.get("ops", 0) == 0 for record in records.values() if not record.get("error")):
        return 0.0, ["the operator counter saw no operator at all: the dispatcher was bypassed or switched off"]
    if not any(not lines for _, lines in _cases(result, answers, _function_ids(answers))):
        return 0.0, ["no held case's output agrees with F.conv2d: no working convolution to credit"]
    return 1.0, ["no aten convolution ran (unfold, fold and matrix products only)"]


# Part II ------------------------------------------------------------------------------------------

def network_builds(result, answers):
    return 1.0, [f"default_model(num_classes=100): {result.data.get('parameters', 0):,} parameters"]


def network_logits(result, answers):
    logits = result.tensors.get("logits")
    expected = (len(answers["network_images"]), 100)
    if type(logits) is not torch.Tensor:
        return 0.0, [f"the forward pass returned a {result.data.get('logits_type', 'nothing')}, not a tensor"]
    if tuple(logits.shape) != expected:
        return 0.0, [f"logits of shape {tuple(logits.shape)}, expected {expected}"]
    if not torch.isfinite(logits).all():
        return 0.0, ["the logits hold NaN or infinite values"]
    return 1.0, [f"logits of shape {expected}, finite"]


def network_size(result, answers):
    size = result.data.get("grader_state_bytes")
    if size is None:
        return 0.0, ["the network's weights were not handed back as tensors (torch.load weights_only refused them)"]
    fits = size <= MODEL_BYTES_LIMIT
    return (1.0 if fits else 0.0), [f"the serialised weights take {size / 1e6:.2f} MB (limit 10 MB)"]


def network_custom_conv(result, answers):
    if result.data.get("custom_error"):
        return 0.0, [result.data["custom_error"]]
    pairs = [(result.tensors.get(k), result.tensors.get(f"custom_{k}")) for k in ("logits_grad", "input_grad")]
    for (reference, custom), what in zip(pairs, ("logits", "input gradients")):
        if type(reference) is not torch.Tensor or type(custom) is not torch.Tensor or reference.shape != custom.shape:
            return 0.0, [f"with conv_op=CustomConv2d the {what} are missing or of another shape"]
        # The relative difference of the whole tensors: float32 rounding flips a few ReLUs whose input is
        # ~0, which moves single input-gradient pixels by much more than the rounding itself.
        difference = (custom.double() - reference.double()).norm().item() / (reference.double().norm().item() or 1.0)
        if not difference <= NETWORK_RTOL:
            return 0.0, [f"with conv_op=CustomConv2d the {what} differ from nn.Conv2d's by {difference:.1e} "
                         f"(relative, L2), same weights"]
    return 1.0, ["with conv_op=CustomConv2d: the same logits and input gradients as with nn.Conv2d"]


def _drop(losses):
    return (losses[0] - min(losses[-3:])) / losses[0] if losses and losses[0] > 0 else 0.0


def network_training(result, answers):
    losses = result.data.get("losses")
    if not isinstance(losses, list) or not losses or not all(isinstance(v, (int, float)) for v in losses):
        return 0.0, ["no losses came back"]
    reference = answers["reference_losses"]
    ours, theirs = _drop(reference), _drop(losses)
    finite = all(v == v and abs(v) != float("inf") for v in losses)
    passed = finite and theirs >= TRAINING_BAND * ours
    return (1.0 if passed else 0.0), [
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps ({theirs:.0%} lower); the reference "
        f"solution's {reference[0]:.3f} -> {reference[-1]:.3f} ({ours:.0%}); needed: {TRAINING_BAND:.0%} of "
        f"the reference's drop" + ("; both in bf16 autocast" if answers.get("amp") else "")]


# Part III -----------------------------------------------------------------------------------------

def saliency_shape(result, answers):
    found = result.tensors.get("map")
    wanted = answers["saliency"]
    if type(found) is not torch.Tensor:
        return 0.0, [f"explain returned a {result.data.get('type')}, not a tensor"]
    if found.shape != wanted.shape:
        return 0.0, [f"explain returned a map of shape {tuple(found.shape)}, expected {tuple(wanted.shape)} "
                     "(N, 1, H, W)"]
    return 1.0, [f"a map of shape {tuple(wanted.shape)}"]


def saliency_gradient(result, answers):
    fraction, lines = saliency_shape(result, answers)
    if not fraction:
        return fraction, lines
    found = result.tensors["map"].double().reshape(len(answers["saliency"]), -1)
    wanted = answers["saliency"].double().reshape(len(found), -1)
    norms = found.norm(dim=1) * wanted.norm(dim=1)
    cosine = torch.where(norms > 0, (found * wanted).sum(1) / norms.clamp_min(1e-300),
                         (found.abs().sum(1) + wanted.abs().sum(1) == 0).double())
    worst = cosine.min().item()
    passed = worst > SALIENCY_COSINE
    return (1.0 if passed else 0.0), [
        f"cosine with the input gradient's map (|d loss / d x|, maximum over the colour channels, computed by "
        f"the grader), worst of {len(found)} images: {worst:.4f} (needed above {SALIENCY_COSINE})"]


def _adversarial(result, answers, key="adversarial"):
    adv = result.tensors.get(key)
    images = answers["attack_images"]
    if type(adv) is not torch.Tensor or adv.shape != images.shape:
        shape = tuple(adv.shape) if isinstance(adv, torch.Tensor) else result.data.get("type")
        return None, [f"perturb returned {shape}, not images shaped like its input {tuple(images.shape)}"]
    return adv.double(), []


def pgd_epsilon(result, answers):
    adv, lines = _adversarial(result, answers)
    if adv is None:
        return 0.0, lines
    images = answers["attack_images"].double()
    reach = (adv - images).abs().max().item()
    lines = [f"default_attack: largest change {reach:.4f} (epsilon {EPSILON}, L-inf)"]
    passed = reach <= EPSILON + EPSILON_SLACK
    projected, _ = _adversarial(result, answers, "projected")
    if projected is None:
        passed = False
        lines.append(result.data.get("projection_error") or "PGDAttack(num_steps=3, step_size=0.05) returned no images")
    else:
        far = (projected - images).abs().max().item()
        lines.append(f"PGDAttack(num_steps=3, step_size={EPSILON / 2:g}, epsilon={EPSILON:g}): largest change {far:.4f}"
                     + ("" if far <= EPSILON + EPSILON_SLACK else ": each step must be projected back into the ball"))
        passed = passed and far <= EPSILON + EPSILON_SLACK
    return (1.0 if passed else 0.0), lines


def pgd_valid_range(result, answers):
    adv, lines = _adversarial(result, answers)
    if adv is None:
        return 0.0, lines
    mean = torch.tensor(custom_transforms.IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(custom_transforms.IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    pixels = adv * std + mean
    below, above = (-pixels).max().item(), (pixels - 1).max().item()
    out = max(below, above, 0.0)
    passed = out <= 1e-4
    return (1.0 if passed else 0.0), [f"adversarial pixels reach {out:.4f} outside [0, 1] after de-normalizing"
                                      if not passed else "every adversarial pixel lies in [0, 1] after de-normalizing"]


def pgd_detached(result, answers):
    data, problems = result.data, []
    if data.get("requires_grad") or data.get("has_graph"):
        problems.append("the returned tensor still carries an autograd graph (requires_grad or grad_fn): detach it")
    if data.get("input_changed"):
        problems.append("perturb changed its input in place")
    if "requires_grad" not in data:
        problems.append(f"perturb returned a {data.get('type')}, not a tensor")
    return (0.0 if problems else 1.0), problems or ["a detached tensor; the input left as it was"]


def pgd_model_untouched(result, answers):
    data, problems = result.data, []
    if data.get("modes_changed"):
        problems.append("the model's train/eval mode changed")
    if data.get("flags_changed"):
        problems.append("the parameters' requires_grad flags changed")
    for key, value in answers["refnet_state"].items():
        after = result.tensors.get(f"after.{key}")
        if type(after) is not torch.Tensor or not torch.equal(after, value):
            problems.append(f"the model's {key} changed")
            break
    return (0.0 if problems else 1.0), problems or ["mode, parameters and requires_grad flags as they were"]


def target_loss(model, images, adversarial):
    """Mean cross-entropy towards each image's least likely label (of the clean image), after the attack."""
    with torch.no_grad():
        target = model(images).argmin(1)
        return F.cross_entropy(model(adversarial.float()), target).item(), F.cross_entropy(model(images), target).item()


def pgd_strength(result, answers):
    adv, lines = _adversarial(result, answers)
    if adv is None:
        return 0.0, lines
    images = answers["attack_images"]
    theirs, clean = target_loss(answers["refnet"], images, adv)
    ours = answers["reference_pgd_loss"]
    passed = theirs <= ours + PGD_BAND * (clean - ours)
    return (1.0 if passed else 0.0), [
        f"loss towards the least likely label: clean {clean:.3f}, after this attack {theirs:.3f}, after the reference "
        f"solution's {ours:.3f} (allowed up to {ours + PGD_BAND * (clean - ours):.3f})"
        + ("" if passed else "; a targeted PGD step goes down the gradient")]


CHECKS = (
    Check("Part I: test_conv forward", "conv", test_conv_forward, ("CustomConv2DFunction",)),
    Check("Part I: test_conv backward", "conv", test_conv_backward, ("CustomConv2DFunction",)),
    Check("Part I: test_conv CustomConv2d against nn.Conv2d", "conv", test_conv_module, ("CustomConv2d",)),
    Check("Part I: held cases, forward", "conv", held_forward, ("CustomConv2DFunction",)),
    Check("Part I: held cases, gradients", "conv", held_gradients, ("CustomConv2DFunction",)),
    Check("Part I: held cases, CustomConv2d", "conv", held_module, ("CustomConv2d",)),
    Check("Part I: no built-in convolution", "conv", no_builtin_convolution, ("CustomConv2DFunction",)),
    Check("Part I: beyond 2019 (dilation, groups, no bias, rectangular kernels)", "conv", beyond_2019,
          ("custom_conv2d",)),
    Check("Part II: default_model builds", "network", network_builds, ("default_model",)),
    Check("Part II: logits of the right shape", "network", network_logits, ("default_model",)),
    Check("Part II: weights within 10 MB", "network", network_size, ("default_model",)),
    Check("Part II: CustomConv2d gives nn.Conv2d's outputs", "network", network_custom_conv,
          ("default_model", "CustomConv2d")),
    Check("Part II: short training lowers the loss", "training", network_training, ("default_model",)),
    Check("Part III: saliency map shape", "saliency", saliency_shape, ("default_attention",)),
    Check("Part III: saliency equals the input gradient", "saliency", saliency_gradient, ("default_attention",)),
    Check("Part III: PGD stays within epsilon", "pgd", pgd_epsilon, ("default_attack",)),
    Check("Part III: PGD stays in the valid image range", "pgd", pgd_valid_range, ("default_attack",)),
    Check("Part III: PGD returns a detached tensor", "pgd", pgd_detached, ("default_attack",)),
    Check("Part III: PGD leaves the model as it was", "pgd", pgd_model_untouched, ("default_attack",)),
    Check("Part III: PGD is as strong as the reference", "pgd", pgd_strength, ("default_attack",)),
)


# Challenge ----------------------------------------------------------------------------------------

def _handin(result):
    return result.data.get("handin", {})


def challenge_model(result, answers):
    info = _handin(result)
    if "model_bytes" not in info:
        return 0.0, ["results/model.pth.tar is missing"]
    problems = []
    if info["model_bytes"] >= MODEL_BYTES_LIMIT:
        problems.append(f"results/model.pth.tar takes {info['model_bytes']:,} bytes (limit 10,000,000)")
    if info.get("model_error"):
        problems.append(info["model_error"])
    line = f"results/model.pth.tar: {info['model_bytes'] / 1e6:.2f} MB, loads with weights_only into " \
           f"{result.data.get('arch') or 'default_model'} ({result.data.get('classes')} classes)"
    return (0.0 if problems else 1.0), problems or [line]


def challenge_format(result, answers):
    info = _handin(result)
    problems = [f"results/{name} is missing" for name in info.get("missing", []) if name != "model.pth.tar"]
    problems += info.get("format_errors", [])
    return (0.0 if problems else 1.0), problems or ["predictions_test.txt and predictions_val.txt follow the devkit's "
                                                    "format (5 distinct labels per image, every image once)"]


def challenge_accuracy(result, answers):
    info = _handin(result)
    errors = info.get("errors")
    if not errors:
        return 0.0, info.get("format_errors", [])[:1] or ["no predictions to score"]
    chance = 1 - 5 / answers["num_classes"]
    passed = errors["top5"] < chance
    where = "the staff's held test labels" if errors["labels"] == "staff" else "the val labels (no --test-labels)"
    return (1.0 if passed else 0.0), [
        f"top-1 error {errors['top1']:.2%}, top-5 error {errors['top5']:.2%} on {errors['count']} images of {where}"
        + ("" if passed else f"; needed: a top-5 error below chance ({chance:.0%})")]


def challenge_reproduces(result, answers):
    info = _handin(result)
    sample, top5 = info.get("sample"), result.tensors.get("top5")
    if not sample or any(labels is None for labels in sample):
        return 0.0, ["predictions_val.txt does not predict the sample's images"]
    if type(top5) is not torch.Tensor or tuple(top5.shape) != (len(sample), 5):
        return 0.0, ["the model gave no top-5 labels for the sample"]
    agree = sum(int(top5[i, 0]) == labels[0] for i, labels in enumerate(sample))
    passed = agree >= len(sample) - 1  # one near tie may flip on another CPU
    return (1.0 if passed else 0.0), [f"the handed-in model's top-1 label matches predictions_val.txt for {agree} of "
                                      f"{len(sample)} sample images" + ("" if passed else " (needed: all but one)")]


CHECKS += (
    Check("Challenge: model within 10 MB loads with weights_only", "challenge", challenge_model),
    Check("Challenge: predictions follow the devkit's format", "handin", challenge_format),
    Check("Challenge: top-5 error on held labels", "handin", challenge_accuracy),
    Check("Challenge: the model reproduces its predictions", "challenge", challenge_reproduces),
)
BY_NAME = {check.name: check for check in CHECKS}
