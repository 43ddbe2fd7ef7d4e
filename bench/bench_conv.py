"""Time and memory of a SimpleNet training step: nn.Conv2d against the unfold/fold CustomConv2d.

    python bench/bench_conv.py                                    # CPU, batch 64, 3x128x128, float32
    python bench/bench_conv.py --no-channels-last                 # the same in NCHW
    python bench/bench_conv.py --device cuda --batch-size 256     # on a GPU
    python bench/bench_conv.py --device cuda --amp --json conv.json   # as main.py trains with --amp

The step is main.py's (engine.train_step, with devices.amp_settings: fp16 and a GradScaler with
--amp on CUDA, bf16 on the CPU). Each variant runs in its own subprocess, the two alternating
--repeats times, and the best median of each is kept, so background load spreads over both. The
memory format is main.py's default for the device and precision (devices.use_channels_last) unless
--channels-last or --no-channels-last forces one; CustomConv2d computes in NCHW whatever its input's
format (main.py runs it in NCHW unless forced), so compare the two in NCHW with --no-channels-last.
Peak memory: on a GPU torch.cuda.max_memory_allocated over the timed steps (model, optimizer state,
batch and activations), read in the timing run itself since the caching allocator counts exactly;
on the CPU the peak resident set size above the process's size before the model was built, in a
separate run with glibc's mmap threshold fixed (see rss.MEASURE_ENV), while the timing runs keep the
default allocator, as users run (--one-run takes it from the timing run instead, as on a GPU: half
the processes, for a quick check of the script, but then glibc's cached free blocks count too).
Prints ms/step and peak MiB for both, and the ratios; --json PATH writes the same figures as JSON
(bench/gpu_check.py reads them).
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

from rss import MEASURE_ENV, current_rss_mib  # noqa: E402  (no torch: the parent process stays light)

VARIANTS = ("nn.Conv2d", "CustomConv2d")


def run_variant(variant, args):
    """One variant in this process: {'ms': [...], 'peak_mib': float, and the environment}."""
    import torch
    import torch.nn as nn

    from harness import engine
    from harness import loaders
    import student_code
    from harness.devices import amp_settings, memory_format, use_channels_last
    from harness.devices import cpu_description, peak_memory_mib

    if args.chunk_bytes:
        student_code.CHUNK_BYTES.update(dict.fromkeys(student_code.CHUNK_BYTES, args.chunk_bytes))
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as main.py sets it
    rss_before = current_rss_mib()
    conv_op = nn.Conv2d if variant == "nn.Conv2d" else student_code.CustomConv2d
    channels_last = use_channels_last(args.channels_last, device, args.amp)
    model = student_code.SimpleNet(conv_op=conv_op).to(device, memory_format=memory_format(channels_last))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    amp_dtype, scaler = amp_settings(args.amp, device)
    images = torch.randn(args.batch_size, 3, args.size, args.size)
    labels = torch.randint(0, 100, (args.batch_size,))
    images, labels = loaders.to_device(images, labels, device, channels_last)

    def step():
        engine.train_step(model, images, labels, criterion, optimizer, scaler, amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    if device.type == "cuda":
        peak = peak_memory_mib(device)
        name = torch.cuda.get_device_name(device)
    else:
        peak = peak_memory_mib(device) - rss_before
        name = f"CPU {cpu_description()}, {torch.get_num_threads()} threads"
    return {"ms": times, "peak_mib": peak, "device_name": name, "torch": torch.__version__,
            "channels_last": channels_last}


def run_child(variant, env, *extra):
    """Measure one variant in a fresh process; extra flags override the parent's."""
    out = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], *extra, "--variant", variant],
        check=True, stdout=subprocess.PIPE, text=True, env=env,  # stderr passes through: errors show
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args):
    """{variant: {'ms': best median ms/step, 'peak_mib': lowest peak}, plus the children's environment}."""
    separate_memory_runs = args.device == "cpu" and not args.one_run
    times = {variant: [] for variant in VARIANTS}
    peaks = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            run = run_child(variant, os.environ)
            times[variant].append(statistics.median(run["ms"]))
            if separate_memory_runs:
                run_memory = run_child(variant, MEASURE_ENV, "--steps", "2", "--warmup", "1")
                peaks[variant].append(run_memory["peak_mib"])
            else:
                peaks[variant].append(run["peak_mib"])
    return {
        "variants": {v: {"ms": min(times[v]), "peak_mib": min(peaks[v])} for v in VARIANTS},
        "device_name": run["device_name"],
        "torch": run["torch"],
        "channels_last": run["channels_last"],
    }


def summarize(results, args):
    """The JSON record: settings, both variants and the CustomConv2d / nn.Conv2d ratios."""
    base, custom = (results["variants"][v] for v in VARIANTS)
    return {
        **results,
        "device": args.device, "batch_size": args.batch_size, "size": args.size, "amp": args.amp,
        "steps": args.steps, "repeats": args.repeats,
        "memory_from_timing_run": args.device != "cpu" or args.one_run,
        "time_ratio": custom["ms"] / base["ms"],
        "memory_ratio": custom["peak_mib"] / base["peak_mib"],
    }


def print_table(summary):
    print(f"SimpleNet training step, batch {summary['batch_size']}, 3x{summary['size']}x{summary['size']}, "
          f"{summary['device_name']}, amp={summary['amp']}, channels_last={summary['channels_last']}, "
          f"torch {summary['torch']}")
    print(f"| conv | ms/step (median of {summary['steps']}, best of {summary['repeats']} runs) | peak MiB |")
    print("|---|---:|---:|")
    for variant, r in summary["variants"].items():
        print(f"| {variant} | {r['ms']:.1f} | {r['peak_mib']:.0f} |")
    print(f"| CustomConv2d / nn.Conv2d | {summary['time_ratio']:.2f}x | {summary['memory_ratio']:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--amp", action="store_true", help="mixed precision as main.py --amp")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC model and batch; --no-channels-last: NCHW (default: main.py's for the device)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate the two variants this many times; the best of each is kept")
    parser.add_argument("--chunk-bytes", type=int,
                        help="column bytes per chunk on every device (student_code.CHUNK_BYTES's values)")
    parser.add_argument("--one-run", action="store_true",
                        help="on the CPU, read the peak memory from the timing run (no separate memory run)")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:  # child process: measure one variant, print JSON
        print(json.dumps(run_variant(args.variant, args)))
        return
    summary = summarize(measure(args), args)
    print_table(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
