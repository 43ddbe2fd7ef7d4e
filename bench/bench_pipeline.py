"""Images/s of the MiniPlaces input pipeline per DataLoader worker (one process, one thread).

    python bench/bench_pipeline.py [--root ../shared/miniplaces] [--images 2000] [--repeats 3]

Rows: Pillow decode only; the train pipeline (fused: one affine resampling; and step by step, three
resamplings, for comparison); the val pipeline; and the same from the uint8 cache (`cache=...`), which
skips JPEG decoding. Each figure is the best of --repeats passes over the same images, read through
MiniPlacesLoader.__getitem__ as a worker would. Skips with a message when the data is absent.
"""
import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import PIL
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "code"))

import custom_transforms  # noqa: E402
from custom_dataloader import MiniPlacesLoader  # noqa: E402

DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "miniplaces"


def images_per_second(dataset, repeats):
    """Best-of-`repeats` throughput of dataset[i] over the whole dataset, after one warm-up item, as
    (per CPU second of this process, per wall second). The CPU figure is what one worker sustains on
    a core of its own, and it is less disturbed by other load on the machine than the wall figure."""
    dataset[0]
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for index in range(len(dataset)):
            dataset[index]
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return len(dataset) / best_cpu, len(dataset) / best_wall


def write_subset(root, count, folder):
    """A label file with `count` train lines spread evenly over the classes (every k-th line)."""
    lines = [line for line in (root / "train.txt").read_text().splitlines() if line.strip()]
    step = max(1, len(lines) // count)
    subset = Path(folder) / "bench_train.txt"
    subset.write_text("\n".join(lines[::step][:count]) + "\n")
    return subset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="MiniPlaces folder (official layout)")
    parser.add_argument("--images", type=int, default=2000, help="train images to time")
    parser.add_argument("--repeats", type=int, default=3, help="passes; the best one counts")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "train.txt").is_file():
        print(f"skipped: no MiniPlaces at {root} (pass --root)")
        return 0
    torch.set_num_threads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        subset = write_subset(root, args.images, tmp)
        num_classes = len((root / "categories.txt").read_text().split()) // 2

        def dataset(transforms, cache=False):
            return MiniPlacesLoader(root, label_file=subset, num_classes=num_classes, split="train",
                                    transforms=transforms, cache=cache)

        fast_filters = (Image.NEAREST, Image.BILINEAR)
        pipelines = [
            ("decode only", None),
            ("train (fused, 1 resampling)", custom_transforms.get_train_transforms()),
            ("train (step by step, 3)", custom_transforms.get_train_transforms(fuse=False)),
            ("train (fused, nearest/bilinear)", custom_transforms.get_train_transforms(
                interpolations=fast_filters)),
            ("val (Scale 160)", custom_transforms.get_val_transforms()),
        ]
        rows = []
        for name, transforms in pipelines:
            rows.append((f"JPEG  {name}", images_per_second(dataset(transforms), args.repeats)))
        start = time.perf_counter()
        cached = dataset(None, cache=Path(tmp) / "cache")
        build_rate = len(cached) / (time.perf_counter() - start)
        for name, transforms in pipelines:
            name = "read" if transforms is None else name
            cached.transforms = transforms
            rows.append((f"cache {name}", images_per_second(cached, args.repeats)))

    print(f"MiniPlaces pipeline, {args.images} train images from {root}, best of {args.repeats}, "
          f"1 thread; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, torch {torch.__version__}, "
          f"Pillow {PIL.__version__}")
    print(f"cache build: {build_rate:,.0f} img/s (decode + write, wall clock)")
    decode = rows[0][1][0]
    print(f"| {'pipeline':40s} | {'img/s CPU':>9s} | {'img/s wall':>10s} | {'us/img CPU':>10s} | {'vs decode':>9s} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
    for name, (cpu, wall) in rows:
        print(f"| {name:40s} | {cpu:9,.0f} | {wall:10,.0f} | {1e6 / cpu:10.0f} | {cpu / decode:8.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
