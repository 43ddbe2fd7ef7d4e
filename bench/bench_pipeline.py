"""Images/s of the MiniPlaces input pipeline: per DataLoader worker, or delivered to the training device.

    python bench/bench_pipeline.py [--root ../shared/miniplaces] [--images 2000] [--repeats 3]
    python bench/bench_pipeline.py --root DATA --workers 16 --device cuda [--cache] [--json PATH]

Rows: Pillow decode only; the train pipeline per image (fused: one grid_sample resampling into the
tensor), step by step (three Pillow resamplings, for comparison) and deferred (what main.py's workers do:
decode and draw the augmentation; the resampling happens per batch on the training device); the val
pipeline; and the same from the uint8 cache (`cache=...`), which skips JPEG decoding. Each figure is the
best of --repeats passes over the same images, read through MiniPlacesLoader.__getitem__ as a worker
would. A second table times `resample_batch` on this CPU (where a CPU-only run does it, in the main
process). Skips with a message when the data is absent.

With --workers N it measures the pipeline as main.py's training sees it instead: a DataLoader with N
worker processes (the deferred train transforms, --batch-size, shuffled, drop-last, pinned memory on
CUDA), each batch resampled on --device by loaders.finish_deferred_batch, from JPEG or with --cache from a uint8
cache built first in a temporary folder. Each epoch draws --samples images (as many permutations of
the train split as needed, so a small generated dataset gives long epochs) and the figure is the
best images/s over the epochs after the first, which includes starting the workers; the device is
synchronized before each epoch's clock stops. --json PATH writes the figures as JSON.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import PIL
import torch
from torch.utils.data import DataLoader, RandomSampler, default_collate

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "code"))

import custom_transforms  # noqa: E402
from harness import devices, loaders  # noqa: E402
from custom_dataloader import MiniPlacesLoader

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


def count_classes(root):
    return len((root / "categories.txt").read_text().split()) // 2


def loader_epochs(loader, device, channels_last, epochs):
    """Images/s of each pass over `loader`, every batch moved to `device` and resampled there."""
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for images, target in loader:
            images, target = loaders.finish_deferred_batch(images, target, device, channels_last)
            count += target.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(count / (time.perf_counter() - start))
    return rates


def measure_loader(args, root):
    """The --workers mode: {source, images_per_s, epoch_images_per_s, ...} as main.py's training loader
    delivers batches to the device."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        dataset = MiniPlacesLoader(root, num_classes=count_classes(root), split="train",
                                   transforms=custom_transforms.get_train_transforms(defer=True),
                                   cache=Path(tmp) / "cache" if args.cache else False)
        setup_seconds = time.perf_counter() - start
        sampler = RandomSampler(dataset, num_samples=args.samples)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            pin_memory=device.type == "cuda", drop_last=True, persistent_workers=True)
        channels_last = devices.use_channels_last(args.channels_last, device)
        rates = loader_epochs(loader, device, channels_last, args.epochs)
        del loader  # stops the persistent workers before the cache folder goes
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {
        "source": "cache" if args.cache else "JPEG", "workers": args.workers, "batch_size": args.batch_size,
        "samples_per_epoch": args.samples, "train_images": len(dataset), "device": args.device,
        "device_name": name, "cpus": os.cpu_count(), "torch": torch.__version__,
        "setup_seconds": setup_seconds, "epoch_images_per_s": rates,
        "images_per_s": max(rates[1:]) if len(rates) > 1 else None,
    }


def print_loader_report(report):
    print(f"train loader to {report['device_name']}: {report['workers']} workers, "
          f"batch {report['batch_size']}, {report['samples_per_epoch']} images/epoch drawn from "
          f"{report['train_images']} {report['source']} images; {report['cpus']} CPUs, "
          f"torch {report['torch']}")
    if report["source"] == "cache":
        print(f"cache build: {report['setup_seconds']:.1f} s")
    epochs = ", ".join(f"{rate:,.0f}" for rate in report["epoch_images_per_s"])
    best = report["images_per_s"]
    print(f"images/s per epoch: {epochs} (the first starts the workers); "
          f"best after the first: {'not measured (one epoch)' if best is None else f'{best:,.0f}'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="MiniPlaces folder (official layout)")
    parser.add_argument("--images", type=int, default=2000, help="train images to time")
    parser.add_argument("--repeats", type=int, default=3, help="passes; the best one counts")
    loader = parser.add_argument_group("the training loader (--workers N)")
    loader.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers; 0: time one worker's work instead")
    loader.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    loader.add_argument("--cache", action="store_true", help="read a uint8 cache instead of the JPEGs")
    loader.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="batches in NHWC; --no-channels-last: NCHW (default: main.py's for the device in "
                             "full precision)")
    loader.add_argument("-b", "--batch-size", type=int, default=256)
    loader.add_argument("--samples", type=int, default=20_000, help="images per epoch")
    loader.add_argument("--epochs", type=int, default=3, help="epochs; the first is not counted")
    loader.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "train.txt").is_file():
        print(f"skipped: no MiniPlaces at {root} (pass --root)")
        return 0
    if args.workers:
        report = measure_loader(args, root)
        print_loader_report(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        return 0
    return time_per_worker(args, root)


def time_per_worker(args, root):
    """The default mode: the tables of one worker's throughput per pipeline and of resample_batch."""
    torch.set_num_threads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        subset = write_subset(root, args.images, tmp)
        num_classes = count_classes(root)

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
