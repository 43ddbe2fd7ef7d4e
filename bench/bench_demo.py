"""Where `python code/main.py --demo` spends its time, stage by stage, and what it measured.

    python bench/bench_demo.py                      # seed 0, the demo data generated afresh, once
    python bench/bench_demo.py --seeds 0 1 2 3      # one run per seed (the data generated before the first)
    python bench/bench_demo.py --keep-data DIR      # use (or write once) DIR instead of a fresh folder
    python bench/bench_demo.py --seeds 0 1 2 3 --precision amp no-amp   # bf16 against fp32, seed by seed

Each run is the whole command in a fresh process (`python code/main.py --demo DATA --logdir TMP
--seed S`), so Python's and PyTorch's start-up count as a newcomer sees them. The demo's own
demo.json gives the stages (data, training, -e -v, -a -v); "start + end" is what the process took
beyond them (imports, building the parser, writing the last files). With a fresh data folder the
first run generates the data, later runs of the same invocation find it. Prints one row per run
with the CPU's model name and the load average before the run (other processes on a 2-core machine
slow every stage), and --json PATH writes the rows.
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
sys.path.insert(0, str(REPO / "code"))

from harness import devices  # noqa: E402

MAIN = REPO / "code" / "main.py"


def run_demo(data, logdir, seed, extra):
    """One `main.py --demo` in a fresh process: (its demo.json as a dict, wall seconds)."""
    before = {p.name for p in logdir.iterdir()} if logdir.is_dir() else set()
    start = time.perf_counter()
    subprocess.run([sys.executable, str(MAIN), "--demo", str(data), "--logdir", str(logdir), "--seed", str(seed),
                    *extra], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    (run,) = [p for p in logdir.iterdir() if p.name not in before]
    return json.loads((run / "demo.json").read_text()), wall


def row(summary, wall, load):
    seconds = summary["seconds"]
    return {
        "seed": summary["seed"], "precision": summary.get("precision", "fp32"), "load_before": load, "wall_s": round(wall, 1),
        "start_end_s": round(wall - seconds["total"], 1), "data_s": seconds["data"],
        "data_generated": summary["data"]["generated"], "training_s": seconds["training"],
        "evaluation_s": seconds["evaluation"], "attack_s": seconds["attack"],
        "clean_top1": summary["clean"]["top1"], "attacked_top1": summary["attack"]["top1"],
        "attacked_images": summary["attack"]["images"],
        "max_change_grey_levels": summary["attack"]["max_change_grey_levels"],
    }


def print_rows(rows, cpu):
    print(f"CPU: {cpu}, {os.cpu_count()} cores")
    header = ("seed", "precision", "load", "wall s", "start+end", "data", "training", "-e -v", "-a -v", "clean top-1",
              "attacked top-1")
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for r in rows:
        data = f"{r['data_s']:.1f}" + (" (generated)" if r["data_generated"] else "")
        cells = (r["seed"], r["precision"], f"{r['load_before']:.2f}", f"{r['wall_s']:.1f}", f"{r['start_end_s']:.1f}", data,
                 f"{r['training_s']:.1f}", f"{r['evaluation_s']:.1f}", f"{r['attack_s']:.1f}",
                 f"{r['clean_top1']:.1f}%", f"{r['attacked_top1']:.1f}% of {r['attacked_images']}")
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (default: %(default)s)")
    parser.add_argument("--keep-data", metavar="DIR", default=None,
                        help="demo data folder to use or write once (default: a fresh temporary one)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON")
    parser.add_argument("--gpu", default="-1", help="main.py's --gpu (default: %(default)s, the CPU)")
    parser.add_argument("--precision", nargs="+", choices=("default", "amp", "no-amp"), default=["default"],
                        help="one run per seed and choice: the demo's default for this CPU, --amp or --no-amp")
    args = parser.parse_args(argv)
    cpu = devices.cpu_description()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        data = Path(args.keep_data) if args.keep_data else Path(tmp) / "miniplaces_demo"
        logdir = Path(tmp) / "logs"
        for seed in args.seeds:
            for precision in args.precision:  # side by side: the same seed's runs follow each other
                load = os.getloadavg()[0]
                flag = [] if precision == "default" else [f"--{precision}"]
                summary, wall = run_demo(data, logdir, seed, ["--gpu", args.gpu, *flag])
                rows.append(row(summary, wall, load))
                print(f"seed {seed}, {precision}: {wall:.1f} s", file=sys.stderr, flush=True)
    print_rows(rows, cpu)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
