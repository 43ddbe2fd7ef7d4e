"""What the harness adds to the student's attack: the adversarial training batch of --adv-train (for
student files that offer no `adversarial_training_batch` of their own; the 2019 interface has none),
and the robustness report of `main.py -a --eps-sweep` (robustness.md and robustness.png)."""
import torch

from . import files, student

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
        what = f"{type(attack).__name__}.perturb"
        with student.model_kept(model, what):
            adv = attack.perturb(model, images) if targeted else attack.perturb(model, images, labels)
        adv = student.expect_images_like(adv, images, what)
    finally:
        for module, training in modes:  # per module: a submodule deliberately left in eval stays so
            module.training = training
    if mode == "adv":
        return adv.detach(), labels
    return torch.cat([images.detach(), adv.detach()]), torch.cat([labels, labels])


def write_report(result, run_dir, checkpoint_path):
    """robustness.md (a Markdown table) and robustness.png (accuracy against epsilon)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    lines = [f"# Accuracy under PGD attack\n\nModel: `{checkpoint_path}`, {result['count']} val images, "
             "10 steps of 0.01 (targeted at the least confident label).\n",
             "| epsilon | Acc@1 (%) | Acc@5 (%) |", "| ---: | ---: | ---: |"]
    lines += [f"| {row['epsilon']} | {row['top1']:.2f} | {row['top5']:.2f} |" for row in result["attacks"]]
    files.write_text(run_dir / "robustness.md", "\n".join(lines) + "\n")

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
    files.save_figure(fig, run_dir / "robustness.png")
