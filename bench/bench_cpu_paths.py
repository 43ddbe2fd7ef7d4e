"""One table of every CPU path: training, evaluation (-e and predict.py), the demo and the custom
convolution, each in fp32 NCHW, fp32 NHWC and bf16 NHWC, with the configuration each default picks on
this CPU and whether it is the fastest faithful one.

    python bench/bench_cpu_paths.py [--steps 3] [--repeats 3] [--json cpu_paths.json]

Each path is timed by bench/bench_train.py in a process of its own (images/s, median of --repeats),
so the rows do not share a warmed-up allocator. Faithful: main.py's training, -e and predict.py stay
in fp32 (the course's figures and the hand-in are fp32); our own short runs (--demo) may use bf16.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "code"))

from harness import devices, flags  # noqa: E402

BENCH_TRAIN = Path(__file__).resolve().parent / "bench_train.py"
# bench_train's configurations, as the table names them.
COLUMNS = {"channels-last": "fp32 NHWC", "fp32": "fp32 NCHW", "amp+channels-last": "bf16 NHWC"}
CPU = torch.device("cpu")
# Runs of one configuration scatter by 10-20% on a shared 2-core host (docs/measurements.md), so a
# default within 10% of the fastest is called a tie, not a wrong choice.
TIE = 1.10


def paths():
    """(name, bench_train arguments, the default's column on this CPU, columns that are faithful)."""
    demo_bf16 = devices.cpu_bf16_is_faster(CPU)
    fp32 = ("fp32 NCHW", "fp32 NHWC")
    return [
        ("training step (main.py), batch 32, 128 px", ["-b", "32"], "fp32 NHWC", fp32),
        ("evaluation forward (-e, predict.py), batch 100, 160 px", ["--inference", "-b", "100", "--size", "160"],
         "fp32 NHWC", fp32),
        (f"demo training step, batch {flags.DEMO_DEFAULTS['batch_size']}, 128 px",
         ["-b", str(flags.DEMO_DEFAULTS["batch_size"])], "bf16 NHWC" if demo_bf16 else "fp32 NHWC", tuple(COLUMNS.values())),
        ("custom conv training step, batch 64, 128 px", ["-b", "64", "--use-custom-conv"], "fp32 NCHW", fp32),
        ("nn.Conv2d training step, batch 64, 128 px", ["-b", "64"], "fp32 NHWC", fp32),
    ]


def time_path(arguments, steps, repeats):
    """{column: images/s} of one path, from bench_train.py's JSON."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rows.json"
        subprocess.run([sys.executable, str(BENCH_TRAIN), "--device", "cpu", *arguments, "--steps", str(steps),
                        "--repeats", str(repeats), "--json", str(out)], check=True, capture_output=True)
        rows = json.loads(out.read_text())["rows"]
    return {COLUMNS[row["config"]]: row["images_per_s"] for row in rows if row["config"] in COLUMNS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    args = parser.parse_args(argv)
    speedup = devices.bf16_speedup()
    print(f"CPU: {devices.cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"native bf16: {', '.join(devices.native_bf16_features()) or 'none'}"
          + (f"; the harness's probe: bf16 {speedup:.2f}x fp32" if speedup else ""))
    header = f"{'path':<58}" + "".join(f"{c:>11}" for c in COLUMNS.values()) + f"  {'default':<10} fastest faithful"
    print(header)
    table = []
    for name, arguments, default, faithful in paths():
        rates = time_path(arguments, args.steps, args.repeats)
        fastest = max((c for c in faithful if c in rates), key=rates.get)
        ratio = round(rates[fastest] / rates[default], 2)  # as printed
        verdict = ("yes" if default == fastest else f"tie: {fastest} {ratio:.2f}x, within the scatter"
                   if ratio < TIE else f"no: {fastest} is {ratio:.2f}x")
        table.append({"path": name, "images_per_s": rates, "default": default, "fastest_faithful": fastest,
                      "verdict": verdict})
        print(f"{name:<58}" + "".join(f"{rates.get(c, float('nan')):>11.1f}" for c in COLUMNS.values())
              + f"  {default:<10} {verdict}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": devices.cpu_description(), "rows": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
