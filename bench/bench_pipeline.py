"""Images/s of the MiniPlaces input pipeline per DataLoader worker (one process, one thread).

    python bench/bench_pipeline.py [--root ../shared/miniplaces] [--images 2000] [--repeats 3]

Rows: Pillow decode only; the train pipeline per image (fused: one grid_sample resampling into the
tensor), step by step (three Pillow resamplings, for comparison) and deferred (what main.py's workers do:
decode and draw the augmentation; the resampling happens per batch on the training device); the val
pipeline; and the same from the uint8 cache (`cache=...`), which skips JPEG decoding. Each figure is the
best of --repeats passes over the same images, read through MiniPlacesLoader.__getitem__ as a worker
would. A second table times `resample_batch` on this CPU (where a CPU-only run does it, in the main
process). Skips with a message when the data is absent.
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
from torch.utils.data import default_collate

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "code"))

import custom_transforms  # noqa: E402
from custom_dataloader import MiniPlacesLoader  # noqa: E402

DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "miniplaces"


def images_per_second(call, count, repeats):
    """Best-of-`repeats` throughput of `call(i)` for i in range(count), after one warm-up call, as
    (per CPU second of this process, per wall second). The CPU figure is what one worker sustains on
    a core of its own, and it is less disturbed by other load on the machine than the wall figure."""
    call(0)
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for index in range(count):
            call(index)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return count / best_cpu, count / best_wall


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

        pipelines = [
            ("decode only", None),
            ("train per image (fused, 1 resampling)", custom_transforms.get_train_transforms()),
            ("train per image (step by step, 3)", custom_transforms.get_train_transforms(fuse=False)),
            ("train deferred (worker part)", custom_transforms.get_train_transforms(defer=True)),
            ("val (Scale 160)", custom_transforms.get_val_transforms()),
        ]
        rows = []
        for name, transforms in pipelines:
            jpeg = dataset(transforms)
            rows.append((f"JPEG  {name}", images_per_second(jpeg.__getitem__, len(jpeg), args.repeats)))
        start = time.perf_counter()
        cached = dataset(None, cache=Path(tmp) / "cache")
        build_rate = len(cached) / (time.perf_counter() - start)
        for name, transforms in pipelines:
            name = "read" if transforms is None else name
            cached.transforms = transforms
            rows.append((f"cache {name}", images_per_second(cached.__getitem__, len(cached), args.repeats)))
        cached.transforms = custom_transforms.get_train_transforms(defer=True)
        items = [cached[index][0] for index in range(len(cached))]

    print(f"MiniPlaces pipeline, {args.images} train images from {root}, best of {args.repeats}, "
          f"1 thread; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, torch {torch.__version__}, "
          f"Pillow {PIL.__version__}")
    print(f"cache build: {build_rate:,.0f} img/s (decode + write, wall clock)")
    decode = rows[0][1][0]
    print(f"| {'pipeline':44s} | {'img/s CPU':>9s} | {'img/s wall':>10s} | {'us/img CPU':>10s} "
          f"| {'vs decode':>9s} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
    for name, (cpu, wall) in rows:
        print(f"| {name:44s} | {cpu:9,.0f} | {wall:10,.0f} | {1e6 / cpu:10.0f} | {cpu / decode:8.2f}x |")
    print()
    print("resample_batch on this CPU (the deferred pipeline's second half, 1 thread)")
    print(f"| {'batch':>5s} | {'img/s CPU':>9s} | {'us/img CPU':>10s} |")
    print(f"|{'-' * 7}|{'-' * 11}|{'-' * 12}|")
    for batch_size in [size for size in (32, 128) if size <= len(items)]:
        batches = [default_collate(items[i:i + batch_size])
                   for i in range(0, len(items) - batch_size + 1, batch_size)]
        batch_rate, _ = images_per_second(lambda i: custom_transforms.resample_batch(batches[i]),
                                          len(batches), args.repeats)
        rate = batch_rate * batch_size
        print(f"| {batch_size:5d} | {rate:9,.0f} | {1e6 / rate:10.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
