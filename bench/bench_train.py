"""Training throughput and peak memory of SimpleNet (or another --arch): engine.train_step on
synthetic 128x128 batches, the same step main.py runs, without data loading; --inference times
the forward pass of evaluation instead (eval mode, no gradients), as -e and predict.py run it.

    python bench/bench_train.py                      # CPU: fp32, channels-last, bf16 autocast
    python bench/bench_train.py --inference --size 160 -b 100 --only channels-last   # predict.py's forward on a CPU
    python bench/bench_train.py --device cuda        # GPU: fp32, then --amp --channels-last (fp16 + GradScaler)
    python bench/bench_train.py --batch-size 256 --steps 50 --compile
    python bench/bench_train.py --device cuda --arch customnet2 --only amp+channels-last --compile

Prints one table row per configuration: images/s (median of --repeats timed runs of --steps steps,
after --warmup untimed steps) and peak memory (CUDA max allocated; on the CPU the process's peak
resident size, which only grows, so later rows include earlier ones). --compile adds a row for
torch.compile on the fastest configuration (--compile-backend picks the backend: 'eager' only traces,
for a quick check of the plumbing). --json PATH writes the rows as JSON, after each row.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "code"))

from harness import devices, engine, loaders, models  # noqa: E402
from harness.devices import amp_settings, memory_format  # noqa: E402


# (name, amp, channels_last)
CONFIGS = (("fp32", False, False), ("channels-last", False, True), ("amp", True, False),
           ("amp+channels-last", True, True))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--arch", default="simplenet", choices=models.arch_names())
    parser.add_argument("--use-custom-conv", action="store_true", help="the student's CustomConv2d (unfold/fold)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-b", "--batch-size", type=int, default=None,
                        help="default 256 on CUDA (the assignment's), 32 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 30 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 CUDA, 1 CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the fastest setting")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile's backend")
    parser.add_argument("--only", choices=[name for name, _, _ in CONFIGS], default=None,
                        help="time one configuration only")
    parser.add_argument("--inference", action="store_true",
                        help="time the evaluation forward pass (eval mode, no gradients) instead of training")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available")
    args.batch_size = args.batch_size or (256 if cuda else 32)
    args.steps = args.steps or (30 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    return args


def time_config(args, device, amp, channels_last, compile_backend=None):
    """(images/s of each repeat, peak MiB) of SGD steps on one fixed random batch;
    compile_backend: None for eager, else torch.compile's backend."""
    arch, batch_size, num_classes = args.arch, args.batch_size, args.num_classes
    steps, warmup, repeats = args.steps, args.warmup, args.repeats
    if compile_backend is not None:
        warmup = max(warmup, 3)  # compilation (forward, then backward) happens in the first steps
    torch.manual_seed(0)
    model = models.build_model(arch, num_classes, use_custom_conv=args.use_custom_conv)[1]
    model = model.to(device, memory_format=memory_format(channels_last)).train(not args.inference)
    if compile_backend is not None:
        model = torch.compile(model, backend=compile_backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    amp_dtype, scaler = amp_settings(amp, device)
    images = torch.randn(batch_size, 3, args.size, args.size)
    target = torch.randint(0, num_classes, (batch_size,))
    images, target = loaders.to_device(images, target, device, channels_last)

    def step():
        if not args.inference:
            engine.train_step(model, images, target, criterion, optimizer, scaler, amp_dtype)
            return
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            model(images)

    def run(n):
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    devices.reset_peak_memory(device)
    run(warmup)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates, devices.peak_memory_mib(device)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as main.py sets it
    configs = [c for c in CONFIGS if args.only in (None, c[0])]
    report = {"arch": args.arch, "device": args.device, "device_name": device_name(device),
              "torch": torch.__version__, "batch_size": args.batch_size, "size": args.size, "rows": []}
    what = "inference (eval-mode forward)" if args.inference else "training steps"
    report["inference"] = args.inference
    print(f"{args.arch} {what}, batch {args.batch_size}, {args.size}x{args.size}, "
          f"{report['device_name']}, torch {torch.__version__}")
    print(f"{'config':<26} {'images/s':>10} {'min..max':>17} {'peak MiB':>10}")

    def add_row(label, amp, channels_last, compile_backend=None):
        rates, peak = time_config(args, device, amp, channels_last, compile_backend)
        row = {"config": label, "amp": amp, "channels_last": channels_last, "compile": compile_backend,
               "images_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
               "peak_mib": peak}
        report["rows"].append(row)
        name = label if compile_backend is None else f"{label} + compile"
        print(f"{name:<26} {row['images_per_s']:>10.1f} {row['min']:>8.1f}..{row['max']:<8.1f} {peak:>10.0f}",
              flush=True)
        if args.json:  # after every row, so that a run stopped by a timeout keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")

    for label, amp, channels_last in configs:
        add_row(label, amp, channels_last)
    if args.compile:
        fastest = max(report["rows"], key=lambda row: row["images_per_s"])
        add_row(fastest["config"], fastest["amp"], fastest["channels_last"], args.compile_backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
