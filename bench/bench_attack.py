"""Images/s and peak memory of the PGD attack against a plain training step, SimpleNet, same batch.

    python bench/bench_attack.py                      # CPU (CUDA when available), batch 32, 3x128x128
    python bench/bench_attack.py --num-steps 2 --batch-size 64 --device cuda

Rows: a training step (forward, backward, SGD update; model in train mode), one PGD step and a
full PGD attack of --num-steps steps (model in eval mode, as main.py's -a runs it). The attack
should cost about num_steps times a forward+backward and no more memory than one: each step's graph
is freed before the next. Every measurement runs in a fresh subprocess, the rows alternating so that
background load spreads over all of them. Peak memory is measured in a separate subprocess per row,
one call, above what the model and batch take: on a GPU torch.cuda.max_memory_allocated; on the CPU
the peak resident set size (getrusage) with glibc told to return every block over 128 KiB to the
system when it is freed (MALLOC_MMAP_THRESHOLD_), since its cached free blocks otherwise add tens of
MiB that grow with the number of passes, for a training loop as much as for the attack.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "code"))

from rss import MEASURE_ENV, current_rss_mib  # noqa: E402
from harness.devices import peak_memory_mib

ROWS = ("train step", "PGD 1 step", "PGD attack")


def run_row(row, args):
    """One row in this process: {'seconds': [...], 'threads': int} or, with --memory, {'peak_mib': float}."""
    import torch
    import torch.nn as nn
    from torchvision.transforms.functional import normalize

    import student_code

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = student_code.SimpleNet().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    # Random pixels in [0, 1], normalized as the loaders do, so the range projection is realistic.
    pixels = torch.rand(args.batch_size, 3, args.size, args.size, device=device)
    images = normalize(pixels, student_code.IMAGENET_MEAN, student_code.IMAGENET_STD)
    del pixels
    labels = torch.randint(0, 100, (args.batch_size,), device=device)

    if row == "train step":
        model.train()

        def work():
            optimizer.zero_grad(set_to_none=True)
            criterion(model(images), labels).backward()
            optimizer.step()
    else:
        model.eval()
        steps = 1 if row == "PGD 1 step" else args.num_steps
        attack = student_code.PGDAttack(criterion, num_steps=steps, step_size=args.step_size, epsilon=args.epsilon)

        def work():
            attack.perturb(model, images)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if args.memory:
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        else:
            base = current_rss_mib()
        work()
        sync()
        if device.type == "cuda":
            return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20 - base}
        return {"peak_mib": peak_memory_mib(torch.device("cpu")) - base}

    work()  # warm-up
    sync()
    seconds = []
    for _ in range(args.calls):
        start = time.perf_counter()
        work()
        sync()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "threads": torch.get_num_threads()}


def run_child(args, row, memory=False):
    command = [sys.executable, __file__, *sys.argv[1:], "--device", args.device, "--row", row]
    env = os.environ
    if memory:
        command.append("--memory")
        env = MEASURE_ENV
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args):
    """Per row: the fastest median s/call over `repeats` runs, and the peak MiB of one call."""
    results = {row: {"seconds": float("inf")} for row in ROWS}
    for _ in range(args.repeats):
        for row in ROWS:
            run = run_child(args, row)
            results[row]["seconds"] = min(results[row]["seconds"], statistics.median(run["seconds"]))
            results[row]["threads"] = run["threads"]
    for row in ROWS:
        results[row]["peak_mib"] = run_child(args, row, memory=True)["peak_mib"]
    return results


def print_table(results, args):
    import torch

    train = results["train step"]
    one_step = results["PGD 1 step"]
    print(f"SimpleNet, batch {args.batch_size}, 3x{args.size}x{args.size}, {args.device}, "
          f"torch {torch.__version__}, {train['threads']} threads; PGD epsilon {args.epsilon}, "
          f"step_size {args.step_size}")
    print(f"| work | images/s (median of {args.calls} calls, best of {args.repeats} runs) | "
          f"s/call | x training step time | peak MiB above model+batch (one call) |")
    print("|---|---:|---:|---:|---:|")
    for row in ROWS:
        r = results[row]
        name = f"PGD attack, {args.num_steps} steps" if row == "PGD attack" else row
        print(f"| {name} | {args.batch_size / r['seconds']:.1f} | {r['seconds']:.3f} | "
              f"{r['seconds'] / train['seconds']:.2f} | {r['peak_mib']:.0f} |")
    attack = results["PGD attack"]
    print(f"PGD attack / ({args.num_steps} x one PGD step): time {attack['seconds'] / (args.num_steps * one_step['seconds']):.2f}, "
          f"peak memory {attack['peak_mib'] / one_step['peak_mib']:.2f} "
          f"(1.00 = no memory kept across steps); peak vs training step {attack['peak_mib'] / train['peak_mib']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--num-steps", type=int, default=10, help="PGD steps of the full attack")
    parser.add_argument("--step-size", type=float, default=0.01)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per run, after one warm-up")
    parser.add_argument("--repeats", type=int, default=2, help="runs per row, alternating the rows")
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.row:  # child process: measure one row, print JSON
        print(json.dumps(run_row(args.row, args)))
        return
    print_table(measure(args), args)


if __name__ == "__main__":
    main()
