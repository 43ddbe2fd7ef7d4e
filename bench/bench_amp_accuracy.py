"""Does bf16 autocast train as well as fp32 on the CPU? One main.py run per precision on a proxy subset
of real MiniPlaces, the same seed, side by side.

    python bench/bench_amp_accuracy.py                                 # ../shared/miniplaces, 20 classes, 15 epochs
    python bench/bench_amp_accuracy.py --data DATA --classes 10 --epochs 3   # a quicker look

The proxy subset is the one bench/customnet_bn.py uses: every (100 / --classes)-th class of MiniPlaces,
its train images (train.txt) and its images of the official val.txt, written as a data folder of
symbolic links in the official layout (labels renumbered 0..classes-1). Each run is the whole
`python code/main.py SUBSET --epochs E -b 64 --lr 0.025 --seed S --amp|--no-amp` in a fresh process
(SGD, cosine schedule, the assignment's augmentation at 128 px); the table gives each run's final and
best val top-1/top-5 (flip-free, as main.py validates every epoch), its training speed and wall time,
and the difference. On 2,000 val images one top-1 figure has a standard error of about 1 point.
Prints Markdown with the CPU's model name; --json PATH writes the rows.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "code" / "main.py"
DEFAULT_DATA = REPO.parent / "shared" / "miniplaces"

sys.path.insert(0, str(REPO / "code"))

from harness import devices, labels  # noqa: E402


def write_subset(data, folder, classes):
    """A data folder of `classes` evenly spread MiniPlaces classes (symbolic links to the images)."""
    categories = [line.split() for line in (data / "categories.txt").read_text().splitlines() if line.strip()]
    step = len(categories) // classes
    kept = {int(label): new for new, (_, label) in enumerate(categories[::step][:classes])}
    (folder / "images").mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / "images" / split).symlink_to((data / "images" / split).resolve())
    (folder / "categories.txt").write_text("".join(f"{name} {kept[int(label)]}\n" for name, label in categories
                                                   if int(label) in kept))
    for split in ("train", "val"):
        lines = [line.split() for line in (data / f"{split}.txt").read_text().splitlines() if line.strip()]
        (folder / f"{split}.txt").write_text("".join(f"{path} {kept[int(label)]}\n" for path, label in lines
                                                     if int(label) in kept))
    return sum(1 for _ in (folder / "val.txt").open())


def run(subset, logdir, precision, args):
    """One training run in a fresh process: (its metrics.json rows, wall seconds)."""
    name = f"proxy-{precision}-seed{args.seed}"
    start = time.perf_counter()
    subprocess.run([sys.executable, str(MAIN), str(subset), "--epochs", str(args.epochs), "-b", "64",
                    "--lr", "0.025", "--seed", str(args.seed), "-j", "2", f"--{precision}", "--logdir", str(logdir),
                    "--run-name", name, "-p", "1000"], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return json.loads((logdir / name / "metrics.json").read_text()), wall


def summarize(precision, metrics, wall):
    last, best = metrics[-1], max(metrics, key=lambda m: m["val_top1"])
    speeds = sorted(m["images_per_s"] for m in metrics)
    return {"precision": precision, "epochs": len(metrics), "final_top1": last["val_top1"], "final_top5": last["val_top5"],
            "best_top1": best["val_top1"], "best_epoch": best["epoch"], "train_top1": last["train_top1"],
            "median_images_per_s": speeds[len(speeds) // 2], "wall_s": round(wall, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MiniPlaces in the official layout")
    parser.add_argument("--classes", type=int, default=20, help="classes of the proxy subset (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of each run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if not (args.data / "train.txt").is_file():
        parser.error(f"--data: {args.data} holds no train.txt (MiniPlaces in the official layout)")
    if not (args.data / "categories.txt").is_file():
        parser.error(f"--data: {args.data} holds no categories.txt")
    available = len(labels.parse_categories(args.data / "categories.txt"))
    if not 1 <= args.classes <= available:
        parser.error(f"--classes must be 1-{available} (the classes of {args.data}), got {args.classes}")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_amp_") as tmp:
        subset = Path(tmp) / "subset"
        val_count = write_subset(args.data, subset, args.classes)
        for precision in ("amp", "no-amp"):
            load = os.getloadavg()[0]
            metrics, wall = run(subset, Path(tmp) / "logs", precision, args)
            rows.append({**summarize(precision, metrics, wall), "load_before": round(load, 2)})
            print(f"{precision}: {wall:.0f} s", file=sys.stderr, flush=True)
    print(f"CPU: {devices.cpu_description()}, {os.cpu_count()} cores; {args.classes} classes, {val_count} val images, "
          f"{args.epochs} epochs, seed {args.seed}")
    print("| precision | final val top-1 / top-5 | best val top-1 (epoch) | last epoch's train top-1 | img/s | wall s | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {'bf16 autocast' if r['precision'] == 'amp' else 'fp32'} | {r['final_top1']:.2f} / {r['final_top5']:.2f} | "
              f"{r['best_top1']:.2f} ({r['best_epoch']}) | {r['train_top1']:.2f} | {r['median_images_per_s']:.0f} | "
              f"{r['wall_s']:.0f} | {r['load_before']:.2f} |")
    print(f"bf16 - fp32, final val top-1: {rows[0]['final_top1'] - rows[1]['final_top1']:+.2f} points")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": devices.cpu_description(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
