"""Time and memory of a SimpleNet training step: nn.Conv2d against the unfold/fold CustomConv2d.

    python bench/bench_conv.py                 # CPU, batch 64, 3x128x128, float32
    python bench/bench_conv.py --device cuda   # on a GPU (add --amp --channels-last as in training)

Each variant runs in its own subprocess so that peak memory is measured separately: on the CPU
the peak resident set size (getrusage) above the process's size before the model was built (with
glibc's mmap threshold fixed, see MEASURE_ENV), on a GPU torch.cuda.max_memory_allocated.
Prints ms/step (median) and peak MiB for both, and the ratios.
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
from utils import peak_memory_mib  # noqa: E402


def run_variant(variant, args):
    """One variant in this process: returns {'ms': [...], 'peak_mib': float}."""
    import torch
    import torch.nn as nn

    import student_code

    if args.chunk_bytes:
        student_code.CHUNK_BYTES = args.chunk_bytes
    torch.manual_seed(0)
    device = torch.device(args.device)
    rss_before = current_rss_mib()
    conv_op = nn.Conv2d if variant == "nn.Conv2d" else student_code.CustomConv2d
    model = student_code.SimpleNet(conv_op=conv_op).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    images = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, 100, (args.batch_size,), device=device)
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_memory_mib(torch.device("cpu")) - rss_before
    return {"ms": times, "peak_mib": peak}


VARIANTS = ("nn.Conv2d", "CustomConv2d")


def run_child(variant, env, *extra):
    """Measure one variant in a fresh process; extra flags override the parent's."""
    out = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], *extra, "--variant", variant],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate the two variants this many times; the best of each is kept")
    parser.add_argument("--chunk-bytes", type=int, help="override student_code.CHUNK_BYTES")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:  # child process: measure one variant, print JSON
        print(json.dumps(run_variant(args.variant, args)))
        return

    # Alternating the variants, each in a fresh process, spreads any background load over both.
    # Time is measured with the default allocator (as users run), memory in separate runs with the
    # fixed mmap threshold (MEASURE_ENV). The best of the repeats is kept for each.
    times = {variant: [] for variant in VARIANTS}
    peaks = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            times[variant].append(statistics.median(run_child(variant, os.environ)["ms"]))
            peaks[variant].append(run_child(variant, MEASURE_ENV, "--steps", "2", "--warmup", "1")["peak_mib"])
    results = {v: {"median": min(times[v]), "peak_mib": min(peaks[v])} for v in VARIANTS}

    import torch

    print(f"SimpleNet training step, batch {args.batch_size}, 3x{args.size}x{args.size}, "
          f"{args.device}, amp={args.amp}, channels_last={args.channels_last}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"| conv | ms/step (median of {args.steps}, best of {args.repeats} runs) | peak MiB |")
    print("|---|---:|---:|")
    for variant, r in results.items():
        print(f"| {variant} | {r['median']:.1f} | {r['peak_mib']:.0f} |")
    base, custom = (results[v] for v in VARIANTS)
    print(f"| CustomConv2d / nn.Conv2d | {custom['median'] / base['median']:.2f}x | "
          f"{custom['peak_mib'] / base['peak_mib']:.2f}x |")


if __name__ == "__main__":
    main()
