"""Training throughput and peak memory of SimpleNet (or another --arch): engine.train_step on
synthetic 128x128 batches, the same step main.py runs, without data loading.

    python bench/bench_train.py                      # CPU: fp32, channels-last, bf16 autocast
    python bench/bench_train.py --device cuda        # GPU: fp32, then --amp --channels-last (fp16 + GradScaler)
    python bench/bench_train.py --batch-size 256 --steps 50 --compile

Prints one table row per configuration: images/s (median of --repeats timed runs of --steps steps,
after --warmup untimed steps) and peak memory (CUDA max allocated; on the CPU the process's peak
resident size, which only grows, so later rows include earlier ones).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "code"))

import engine  # noqa: E402
import loaders  # noqa: E402
import models  # noqa: E402
import utils  # noqa: E402
from devices import amp_settings  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--arch", default="simplenet", choices=models.arch_names())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("-b", "--batch-size", type=int, default=None,
                        help="default 256 on CUDA (the assignment's), 32 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 30 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 CUDA, 1 CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the fastest setting")
    parser.add_argument("--only", choices=("fp32", "channels-last", "amp", "amp+channels-last"), default=None,
                        help="time one configuration only")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available")
    args.batch_size = args.batch_size or (256 if cuda else 32)
    args.steps = args.steps or (30 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    return args


def time_config(arch, device, batch_size, num_classes, amp, channels_last, compile_model, steps, warmup, repeats):
    """(images/s of each repeat, peak MiB) of SGD steps on one fixed random batch."""
    torch.manual_seed(0)
    model = models.build_model(arch, num_classes)[1]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    if compile_model:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    amp_dtype, scaler = amp_settings(amp, device)
    images = torch.randn(batch_size, 3, 128, 128)
    target = torch.randint(0, num_classes, (batch_size,))
    images, target = loaders.to_device(images, target, device,
                                      torch.channels_last if channels_last else torch.contiguous_format)

    def run(n):
        for _ in range(n):
            engine.train_step(model, images, target, criterion, optimizer, scaler, amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    utils.reset_peak_memory(device)
    run(warmup)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates, utils.peak_memory_mib(device)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    configs = [("fp32", False, False), ("channels-last", False, True), ("amp", True, False),
               ("amp+channels-last", True, True)]
    if args.only:
        configs = [c for c in configs if c[0] == args.only]
    print(f"{args.arch} training steps, batch {args.batch_size}, 128x128, {name}, torch {torch.__version__}")
    print(f"{'config':<26} {'images/s':>10} {'min..max':>17} {'peak MiB':>10}")
    results = []
    for label, amp, channels_last in configs:
        rates, peak = time_config(args.arch, device, args.batch_size, args.num_classes, amp, channels_last, False,
                                  args.steps, args.warmup, args.repeats)
        results.append((statistics.median(rates), label, amp, channels_last))
        print(f"{label:<26} {statistics.median(rates):>10.1f} {min(rates):>8.1f}..{max(rates):<8.1f} {peak:>10.0f}",
              flush=True)
    if args.compile:
        _, label, amp, channels_last = max(results)
        rates, peak = time_config(args.arch, device, args.batch_size, args.num_classes, amp, channels_last, True,
                                  args.steps, max(args.warmup, 3), args.repeats)
        print(f"{label + ' + compile':<26} {statistics.median(rates):>10.1f} "
              f"{min(rates):>8.1f}..{max(rates):<8.1f} {peak:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
