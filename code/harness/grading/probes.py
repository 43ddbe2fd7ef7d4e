"""What the child computes with the submission's code, probe by probe: outputs only, no verdicts.

Each probe takes the task (JSON) and returns (data, tensors): data is JSON (numbers, strings, lists),
tensors a flat dict of tensors. The grader compares them with its own answers (grading/verdicts_*.py).

    conv       Part I: CustomConv2DFunction / custom_conv2d / CustomConv2d on the held cases, forward and
               gradients, counting the convolution kernels the dispatcher sees while they run
    network    Part II: default_model(num_classes=100): its weights, logits, and the same network built
               with conv_op=CustomConv2d from the same weights
    training   Part II: a short training run on a fixed slice: the loss before each step
    saliency   Part III: default_attention(criterion).explain on the reference network
    pgd        Part III: default_attack(criterion).perturb, and PGDAttack with steps of half the ball,
               with the model's state before and after
    challenge  Challenge: results/model.pth.tar (weights_only) built with the student's network, predicting
               the first val images as tools/predict.py does
"""
import os

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from .. import conv_check, student
from . import refnet

PGD_PROJECTION_STEPS = 3


class ConvCounter(TorchDispatchMode):
    """Counts the operators the dispatcher runs, and the convolution kernels among them (aten.convolution,
    its backward, and every backend's variant: their names contain 'conv')."""

    def __init__(self):
        super().__init__()
        self.ops, self.convs = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        name = func._schema.name.split("::")[-1]
        if "conv" in name:
            self.convs.append(name)
        return func(*args, **(kwargs or {}))


def load_inputs(name):
    return torch.load(f"{os.environ.get('GRADER_INPUTS', '/inputs')}/{name}.pt", weights_only=True)


def conv(task):
    inputs = load_inputs("conv")
    function = student.optional("CustomConv2DFunction")
    functional = student.optional("custom_conv2d")
    module = student.optional("CustomConv2d")
    data, tensors = {"cases": {}, "defines": {"CustomConv2DFunction": function is not None,
                                              "custom_conv2d": functional is not None,
                                              "CustomConv2d": module is not None}}, {}
    for case in task["conv_cases"]:
        key = case["id"]
        if case["via"] == "function":
            if function is None:
                continue
            call = function.apply
        elif case["via"] == "functional":
            if functional is None:
                continue
            call = functional
        else:
            if module is None:
                continue
            call = conv_check.module_as_function(module)
        x, w = (inputs[f"{key}.{n}"].clone().requires_grad_(True) for n in ("x", "w"))
        b = inputs[f"{key}.b"].clone().requires_grad_(True) if case["bias"] else None
        g = inputs[f"{key}.g"]
        counter = ConvCounter()
        record = {"error": None}
        try:
            with counter:
                if case.get("extra"):  # beyond 2019: dilation and groups as F.conv2d takes them
                    out = call(x, w, b, case["stride"], case["padding"], case["dilation"], case["groups"])
                else:
                    out = call(x, w, b, case["stride"], case["padding"])
                if isinstance(out, torch.Tensor):
                    tensors[f"{key}.output"] = out.detach()
                    if out.requires_grad and out.shape == g.shape:
                        wanted = (x, w) if b is None else (x, w, b)
                        grads = torch.autograd.grad(out, wanted, g, allow_unused=True)
                        for label, grad in zip(("grad_input", "grad_weight", "grad_bias"), grads):
                            if isinstance(grad, torch.Tensor):
                                tensors[f"{key}.{label}"] = grad.detach()
                else:
                    record["error"] = f"returned a {type(out).__name__}, not a tensor"
        except student.RAISES as exc:
            record["error"] = student.describe(exc)
        record.update(ops=counter.ops, convs=sorted(set(counter.convs)), conv_calls=len(counter.convs))
        data["cases"][key] = record
    return data, tensors


def network(task):
    inputs = load_inputs("network")
    build = student.get("default_model", "Part II")
    torch.manual_seed(0)
    model = build(num_classes=100)
    if not isinstance(model, nn.Module):
        return {"error": f"default_model(num_classes=100) returned a {type(model).__name__}, not an nn.Module"}, {}
    model.eval()
    torch.save(model.state_dict(), f"{task['out']}/network_state.pt")
    data, tensors = {"parameters": sum(p.numel() for p in model.parameters())}, {}
    with torch.no_grad():
        logits = model(inputs["images"].clone())
    if isinstance(logits, torch.Tensor):
        tensors["logits"] = logits
    else:
        data["logits_type"] = type(logits).__name__
    custom_conv = student.optional("CustomConv2d")
    if custom_conv is None:
        data["custom_error"] = "defines no CustomConv2d"
        return data, tensors
    try:
        custom = build(num_classes=100, conv_op=custom_conv)
        custom.load_state_dict(model.state_dict())
        custom.eval()
        for label, net in (("", model), ("custom_", custom)):
            x = inputs["images"].clone().requires_grad_(True)
            out = net(x)
            (grad,) = torch.autograd.grad(out.sum(), x)
            tensors[f"{label}logits_grad"] = out.detach()
            tensors[f"{label}input_grad"] = grad
    except student.RAISES as exc:
        data["custom_error"] = student.describe(exc)
    return data, tensors


def training(task):
    inputs = load_inputs("network")
    torch.manual_seed(task.get("seed", 0))
    model = student.get("default_model", "Part II")(num_classes=100)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=task["train_lr"], momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    images, labels = inputs["train_images"], inputs["train_labels"]
    losses = []
    for _ in range(task["train_steps"]):
        # bf16 where the grader chose it for everyone (grading/context.py): a student and the reference alike.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=task.get("amp", False)):
            loss = criterion(model(images.clone()), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    return {"losses": losses}, {}


def _reference_model():
    model = refnet.ReferenceNet(num_classes=refnet.NUM_CLASSES)
    model.load_state_dict(load_inputs("refnet"))
    return model.eval()


def saliency(task):
    model, images = _reference_model(), load_inputs("attack")["images"]
    attention = student.get("default_attention", "Part III saliency")(nn.CrossEntropyLoss())
    result = attention.explain(model, images.clone())
    if not isinstance(result, torch.Tensor):
        return {"type": type(result).__name__}, {}
    return {"type": "Tensor"}, {"map": result.detach().double()}


def pgd(task):
    model, images = _reference_model(), load_inputs("attack")["images"]
    attack = student.get("default_attack", "Part III PGD")(nn.CrossEntropyLoss())
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    given = images.clone()
    adversarial = attack.perturb(model, given)
    data, tensors = {"type": type(adversarial).__name__}, {}
    if isinstance(adversarial, torch.Tensor):
        tensors["adversarial"] = adversarial.detach()
        data.update(requires_grad=adversarial.requires_grad, has_graph=adversarial.grad_fn is not None)
    data.update(input_changed=not torch.equal(given, images),
                modes_changed=modes != [m.training for m in model.modules()],
                flags_changed=flags != [p.requires_grad for p in model.parameters()])
    tensors.update({f"after.{k}": v for k, v in model.state_dict().items()})
    try:  # steps of half the ball leave it unless each step is projected back
        epsilon = task["epsilon"]
        strong = student.get("PGDAttack", "Part III PGD")(nn.CrossEntropyLoss(), num_steps=PGD_PROJECTION_STEPS,
                                                          step_size=epsilon / 2, epsilon=epsilon)
        projected = strong.perturb(_reference_model(), images.clone())
        if isinstance(projected, torch.Tensor):
            tensors["projected"] = projected.detach()
    except student.RAISES as exc:
        data["projection_error"] = student.describe(exc)
    return data, tensors


def challenge(task):
    from .. import checkpoints, models

    path = os.path.join(task["submission"], "results", "model.pth.tar")
    checkpoint = checkpoints.read(path, "results/model.pth.tar")
    arch, model = models.build_model(checkpoint.arch, checkpoint.num_classes)
    checkpoints.load_weights(model, checkpoint, "results/model.pth.tar")
    model.eval()
    images = load_inputs("challenge")["images"]
    with torch.no_grad():  # as tools/predict.py: logits averaged over each image and its flip
        logits = 0.5 * (model(images.clone()) + model(torch.flip(images, dims=(3,))))
    return {"arch": arch, "classes": checkpoint.num_classes}, {"top5": logits.topk(5, dim=1).indices}


PROBES = {"conv": conv, "network": network, "training": training, "saliency": saliency, "pgd": pgd,
          "challenge": challenge}
