"""Is CustomNet's collapse (the report's 60.47% train / 11.38% val top-1) a batch-norm mismatch?

The team's CustomNet applies `residual_block2` and its shortcut `downsample` twice, the same modules:
once to (N, 64, H/4, W/4) maps, once to (N, 64, H/8, W/8) maps. In train mode each application
normalizes with its own batch's statistics; the running statistics that eval mode uses average the
two applications' statistics. This script trains the network briefly on real MiniPlaces images and
measures top-1, on the val images and on the (unaugmented) train images, of:

    (a) CustomNet in eval mode (running statistics), as the team's validation ran it;
    (b) the same weights with batch statistics (BN in train mode, no gradient, running statistics
        restored afterwards);
    (d1) the same weights after recomputing every BN's running statistics over the train images
        (a shared BN then holds the two applications' pooled statistics again);
    (d2) the same weights with the second application given its own copies of residual_block2 and
        downsample (same weights), every BN's statistics recomputed over the train images;
    (c) the same design with separate modules for the second application (`CustomNetUnshared`),
        trained the same way from the same initial weights, in eval mode and with batch statistics.

If the explanation is right, (a) and (d1) are low on val *and* train images, while (b), (d2) and (c)
are not; overfitting instead would show as high train and low val accuracy in every mode.

    python bench/customnet_bn.py                                   # 20 classes, 64 px, 5 epochs, seed 0
    python bench/customnet_bn.py --seeds 0 1 --epochs 5 --init pytorch kaiming
    python bench/customnet_bn.py --classes 2 --epochs 1 --size 32   # a smoke run (under a minute)

The default run takes about 20 minutes a seed on one core of a loaded 2-core VM (11 of them training,
the rest 14 evaluation passes over 2,000 images at 80 px).

Data: --classes classes spread evenly over MiniPlaces' 100 (every 100/classes-th), their train images
(train.txt) and their val images (the official val.txt, filtered). Training follows the assignment's
augmentation scaled to --size: Scale(1.25 size), flip, colour, rotation, RandomSizedCrop(size); images
are evaluated unaugmented at Scale(1.25 size), as the original evaluates 160 px after 128 px crops.
SGD with momentum, cosine learning rate, no warm-up. Prints a Markdown table per seed and init, and
the size of the mismatch in the shared BNs (the two applications' statistics, per channel).
"""
import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Subset

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "code"))

import custom_dataloader  # noqa: E402
import custom_transforms as T  # noqa: E402
from harness import engine, loaders, models  # noqa: E402
import student_code  # noqa: E402
from harness.devices import amp_settings  # noqa: E402

MINIPLACES_CLASSES = 100
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "miniplaces"
INITS = ("pytorch", "kaiming")
# State-dict prefixes of the twice-applied modules and of their copies in CustomNetUnshared.
SHARED_TO_COPY = {"residual_block2.": "residual_block2_again.", "downsample.": "downsample_again."}
SHARED_BNS = ("residual_block2.1", "residual_block2.4", "downsample.1")


# ---------------------------------------------------------------------------------------------------
# The unshared design
# ---------------------------------------------------------------------------------------------------
class CustomNetUnshared(student_code.CustomNet):
    """The team's CustomNet with separate modules (`residual_block2_again`, `downsample_again`, same
    shapes) for the second application of residual_block2 and downsample: 1,785,124 + 300,480 params.

    The new modules are registered after all of CustomNet's, so with the same seed the common modules
    start from the same weights as CustomNet's (under either init).
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__(conv_op, num_classes)
        self.residual_block2_again = copy.deepcopy(self.residual_block2)
        self.downsample_again = copy.deepcopy(self.downsample)
        student_code.kaiming_init_(self.residual_block2_again)  # fresh draws, not copies
        student_code.kaiming_init_(self.downsample_again)

    def second_pass(self, x):
        return self.conv_relu(self.residual_block2_again(x) + self.downsample_again(x))  # (N, 256, H/8, W/8)


def build(unshared, num_classes, init, seed):
    """A fresh CustomNet (or CustomNetUnshared) under `init`: 'pytorch' (the team's) or 'kaiming' (ours).
    Both designs draw the same initial weights for their common modules."""
    torch.manual_seed(seed)
    model = (CustomNetUnshared if unshared else student_code.CustomNet)(num_classes=num_classes)
    if init == "pytorch":
        torch.manual_seed(seed)  # CustomNetUnshared drew more numbers for its copies' Kaiming init
        models.reset_to_pytorch_init_(model)
    return model


def unshare(model):
    """A CustomNetUnshared holding `model`'s (a trained CustomNet's) weights and statistics, the
    second application's modules as copies of the shared ones: the same function until the
    statistics are recomputed."""
    state = model.state_dict()
    for name, value in list(state.items()):
        for shared, again in SHARED_TO_COPY.items():
            if name.startswith(shared):
                state[again + name[len(shared):]] = value.clone()
    copy_model = CustomNetUnshared(num_classes=model.fc.out_features)
    copy_model.load_state_dict(state)
    return copy_model.eval()


# ---------------------------------------------------------------------------------------------------
# Batch-norm statistics
# ---------------------------------------------------------------------------------------------------
def batch_norms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def batch_statistics(model):
    """Within the block every BN normalizes with the current batch's statistics (train mode); on exit
    the running statistics are restored and the model is back in eval mode."""
    saved = {name: buffer.clone() for name, buffer in model.named_buffers()}
    for bn in batch_norms(model):
        bn.train()
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])
        model.eval()


def recompute_statistics_(model, loader):
    """Every BN's running mean and variance reset and set to the plain average over `loader`'s batches
    (momentum None); a module applied twice averages over both applications. Returns the model."""
    bns = batch_norms(model)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for images, _ in loader:
            model(images)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    return model.eval()


def mismatch(unshared):
    """Per shared BN of a recalibrated unshare() copy: (mean over channels of |mu1 - mu2| / sigma, with
    sigma^2 the pooled variance (var1 + var2) / 2; median over channels of var2 / var1), application 1
    being the H/4 maps and application 2 the H/8 maps."""
    rows = {}
    modules = dict(unshared.named_modules())
    for name in SHARED_BNS:
        first = modules[name]
        prefix, index = name.split(".")
        second = modules[SHARED_TO_COPY[prefix + "."] + index]
        pooled = ((first.running_var + second.running_var) / 2).sqrt()
        shift = ((first.running_mean - second.running_mean).abs() / pooled).mean().item()
        ratio = (second.running_var / first.running_var).median().item()
        rows[name] = (shift, ratio)
    return rows


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def chosen_classes(num_classes):
    """Every (100 / num_classes)-th MiniPlaces class, so the subset spans the alphabet."""
    step = MINIPLACES_CLASSES // num_classes
    return [i * step for i in range(num_classes)]


def write_subset_label_file(source, path, classes):
    """The lines of `source` whose label is in `classes`, relabelled 0..len(classes)-1, into `path`."""
    new_label = {old: new for new, old in enumerate(classes)}
    lines = []
    for line in Path(source).read_text().splitlines():
        rel, _, label = line.strip().rpartition(" ")
        if rel and int(label) in new_label:
            lines.append(f"{rel} {new_label[int(label)]}")
    Path(path).write_text("\n".join(lines) + "\n")
    return len(lines)


def train_transforms(size):
    """The assignment's augmentation (get_train_transforms) at `size` instead of 128."""
    return T.Compose([T.Scale(round(1.25 * size)), T.RandomHorizontalFlip(), T.RandomColor(0.15),
                      T.RandomRotate(15), T.RandomSizedCrop(size), T.ToTensor(), T.Normalize()])


def eval_transforms(size):
    """The assignment's val pipeline (Scale(160) bilinear after 128 px training crops) at 1.25 * size."""
    return T.Compose([T.Scale(round(1.25 * size), interpolations=(Image.BILINEAR,)), T.ToTensor(),
                      T.Normalize()])


def datasets(root, label_folder, classes, size):
    """(augmented train set, unaugmented train set, val set) of the chosen classes."""
    files = {}
    for split in ("train", "val"):
        files[split] = Path(label_folder) / f"{split}.txt"
        write_subset_label_file(Path(root) / f"{split}.txt", files[split], classes)

    # num_classes is MiniPlaces' 100 for the loader's check against categories.txt; the subset's
    # labels 0..len(classes)-1 lie within it.
    def dataset(split, transforms):
        return custom_dataloader.MiniPlacesLoader(root, files[split], num_classes=MINIPLACES_CLASSES,
                                                  split=split, transforms=transforms)

    return (dataset("train", train_transforms(size)), dataset("train", eval_transforms(size)),
            dataset("val", eval_transforms(size)))


# ---------------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------------
def train(model, train_set, *, epochs, batch_size, lr, momentum, weight_decay, seed):
    """SGD with momentum and a cosine learning rate (engine's schedule, no warm-up). Returns the last
    epoch's train top-1 (train mode, augmented images, as the team logged it) and seconds per epoch.
    Both designs see the same batches and augmentation for one seed."""
    device = torch.device("cpu")
    torch.manual_seed(seed)  # the augmentation's draws (custom_transforms uses torch's generator)
    generator = torch.Generator().manual_seed(seed)  # the shuffle
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=momentum, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    _, scaler = amp_settings(False, device)
    total_steps = epochs * len(loader)

    def schedule(step):
        return engine.lr_and_weight_decay(step, total_steps, 0, lr, weight_decay)

    seconds = []
    for epoch in range(epochs):
        stats = engine.train_one_epoch(model, loader, criterion, optimizer, scaler, epoch=epoch,
                                       schedule=schedule, device=device)
        seconds.append(stats["seconds"])
        print(f"  epoch {epoch + 1}/{epochs}: loss {stats['loss']:.3f}  train top-1 {stats['top1']:.1f}%  "
              f"{stats['seconds']:.0f} s", file=sys.stderr, flush=True)
    return stats["top1"], statistics.mean(seconds)


def top1(model, loader, batch_stats=False):
    """Top-1 in percent over `loader`: eval mode, or with batch statistics (see batch_statistics)."""
    model.eval()
    correct = total = 0
    with batch_statistics(model) if batch_stats else contextlib.nullcontext(), torch.no_grad():
        for images, target in loader:
            correct += (model(images).argmax(dim=1) == target).sum().item()
            total += target.numel()
    return 100.0 * correct / total


def run_one(args, seed, init, sets):
    """Train CustomNet and CustomNetUnshared from one seed; returns (rows, mismatch, timings)."""
    train_set, train_eval_set, val_set = sets
    # train.txt lists the images class by class: in that order every batch would hold one class, and
    # batch statistics (evaluation and recomputation alike) would lose the between-class variance.
    # One fixed shuffle instead; val.txt's order is already mixed.
    order = torch.randperm(len(train_eval_set), generator=torch.Generator().manual_seed(seed)).tolist()
    train_eval = DataLoader(Subset(train_eval_set, order), batch_size=loaders.VAL_BATCH_SIZE)
    val = DataLoader(val_set, batch_size=loaders.VAL_BATCH_SIZE)
    hyper = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                 weight_decay=args.weight_decay, seed=seed)
    rows, timings = [], {}

    def row(label, model, batch_stats, logged=None):
        rows.append((label, top1(model, val, batch_stats), top1(model, train_eval, batch_stats), logged))

    for unshared in (False, True):
        name = "CustomNetUnshared" if unshared else "CustomNet"
        print(f"seed {seed}, {init} init: training {name}", file=sys.stderr, flush=True)
        model = build(unshared, len(args.class_ids), init, seed)
        start = time.perf_counter()
        logged, timings[f"{name} s/epoch"] = train(model, train_set, **hyper)
        timings[f"{name} train s"] = time.perf_counter() - start
        start = time.perf_counter()
        if not unshared:
            row("(a) CustomNet, running statistics (eval mode)", model, False, logged)
            row("(b) CustomNet, batch statistics", model, True)
            per_application = recompute_statistics_(unshare(model), train_eval)
            recompute_statistics_(model, train_eval)
            row("(d1) CustomNet, running statistics recomputed on train images", model, False)
            row("(d2) CustomNet, 2nd application's own BN copies, recomputed", per_application, False)
            gaps = mismatch(per_application)
        else:
            row("(c) CustomNetUnshared, running statistics (eval mode)", model, False, logged)
            row("(c) CustomNetUnshared, batch statistics", model, True)
        timings[f"{name} eval s"] = time.perf_counter() - start
    return rows, gaps, timings


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA),
                        help="MiniPlaces folder (official layout)")
    parser.add_argument("--classes", type=int, default=20, help="classes, spread evenly over the 100")
    parser.add_argument("--size", type=int, default=64, help="training crop in px (evaluated at 1.25x)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate (cosine to 0)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--wd", type=float, default=1e-4, dest="weight_decay", help="weight decay")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--init", nargs="+", default=["pytorch"], choices=INITS,
                        help="pytorch: the team's init (models.reset_to_pytorch_init_); kaiming: ours")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 measured faster than 2 on the shared 2-core machine)")
    args = parser.parse_args(argv)
    if not 1 <= args.classes <= MINIPLACES_CLASSES or MINIPLACES_CLASSES % args.classes:
        parser.error(f"--classes must divide {MINIPLACES_CLASSES}, got {args.classes}")
    for flag, value in (("--size", args.size), ("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} must be positive, got {value}")
    if not (Path(args.data) / "val.txt").is_file():
        parser.error(f"{args.data}: no val.txt (give the MiniPlaces folder in its official layout)")
    args.class_ids = chosen_classes(args.classes)
    return args


def print_table(seed, init, rows, gaps, timings):
    print(f"\n### seed {seed}, {init} init\n")
    print("| network, BN statistics | val top-1 % | train-image top-1 % "
          "| last-epoch train top-1 % (logged) |")
    print("|---|---:|---:|---:|")
    for label, val, train_images, logged in rows:
        logged = "" if logged is None else f"{logged:.1f}"
        print(f"| {label} | {val:.1f} | {train_images:.1f} | {logged} |")
    print("\nShared BN, H/4 vs H/8 application (from (d2)'s recomputed statistics):\n")
    print("| BN | mean abs(mu1 - mu2) / sigma | median var2 / var1 |")
    print("|---|---:|---:|")
    for name, (shift, ratio) in gaps.items():
        print(f"| {name} | {shift:.2f} | {ratio:.2f} |")
    print("\n" + ", ".join(f"{key} {value:.0f}" for key, value in timings.items()), flush=True)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as label_folder:
        sets = datasets(args.data, label_folder, args.class_ids, args.size)
        print(f"CustomNet BN check: {args.classes} classes {args.class_ids}, {len(sets[0])} train / "
              f"{len(sets[2])} val images, {args.size} px crops (evaluated at {round(1.25 * args.size)} px), "
              f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr} cosine, momentum "
              f"{args.momentum}, wd {args.weight_decay}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s)", flush=True)
        for init in args.init:
            for seed in args.seeds:
                print_table(seed, init, *run_one(args, seed, init, sets))
    print(f"\ntotal {time.perf_counter() - start:.0f} s wall", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
