"""The harness's adversarial training batch (--adv-train), for student files that offer no
`adversarial_training_batch` of their own (the 2019 interface has none)."""
import torch

import student_interface

MODES = ("mixed", "adv")


def training_batch(model, attack, images, labels, mode="mixed"):
    """The (images, labels) of one adversarial-training SGD step.

    mode 'mixed': clean and adversarial images concatenated, (2N, 3, H, W) with labels (2N,);
    'adv': adversarial images only, (N, 3, H, W) with labels (N,). `attack` is the student's PGDAttack:
    an untargeted one gets the true labels, a targeted one picks its own targets. The attack runs with
    every module in eval mode (batch-norm statistics come from the training batches alone, dropout does
    not blur the attack's gradient), and each module's mode is restored afterwards, whatever the
    student's perturb does itself.
    Raises ValueError for another mode, or labels that are not one class index per image.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a batch (N, 3, H, W), got {getattr(images, 'shape', type(images))}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of {images.shape[0]} class indices, got {shape}")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        # 2019 attacks are targeted and take perturb(model, input); an untargeted one needs the labels.
        targeted = getattr(attack, "targeted", True)
        adv = attack.perturb(model, images) if targeted else attack.perturb(model, images, labels)
        adv = student_interface.expect_images_like(adv, images, f"{type(attack).__name__}.perturb")
    finally:
        for module, training in modes:  # per module: a submodule deliberately left in eval stays so
            module.training = training
    if mode == "adv":
        return adv.detach(), labels
    return torch.cat([images.detach(), adv.detach()]), torch.cat([labels, labels])
