"""Parameter count, saved size and compute of every --arch network, as a Markdown table.

    python bench/model_sizes.py            # the table in docs/networks.md
    python bench/model_sizes.py --size 160 # multiply-accumulates at the validation size

Size is the bytes of torch.save(model.state_dict()), the file the MiniPlaces challenge limits to
10 MB; MMACs are the convolutions' and the classifier's multiply-accumulates for one image,
counted with forward hooks. resnet18 is built without looking for ImageNet weights.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "code"))

from harness import models  # noqa: E402  (needs the sys.path entry above)


def count_macs(model, size):
    """Multiply-accumulates of conv and linear layers for one (1, 3, size, size) image."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        # Every output element of a conv is one dot product over weight[0]'s elements.
        total += output.numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def build(name):
    return models.build_model(name, num_classes=100)[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input size for the MAC count (default 128)")
    args = parser.parse_args()

    limit_mb = models.MAX_MODEL_BYTES / 1e6
    print(f"| --arch | parameters | saved size (MB) | under {limit_mb:g} MB | MMACs / image at {args.size} px |")
    print("|---|---:|---:|:-:|---:|")
    for name in models.arch_names():
        model = build(name)
        params = sum(p.numel() for p in model.parameters())
        size = models.model_size_bytes(model)
        fits = "yes" if size < models.MAX_MODEL_BYTES else "**no**"
        macs = count_macs(model, args.size)
        print(f"| {name} | {params:,} | {size / 1e6:.2f} | {fits} | {macs / 1e6:,.0f} |")


if __name__ == "__main__":
    main()
