"""The GPU check: one command that runs every accelerator path of the project and measures it.

    python3 bench/gpu_check.py                   # on a CUDA machine: results in $OUT, else bench/out/
    python3 bench/gpu_check.py --device cpu      # the same steps at toy sizes on the CPU (a smoke run)
    python3 bench/gpu_check.py --only conv main-eval   # some steps (and the steps they need)

Each step runs in its own process group with its own timeout, all of them within --budget seconds
(default 420, so that the check ends within 8 minutes with the machine's start-up), and a failure
does not stop the steps after it:

    env             python3, torch, torchvision, CUDA and the GPU
    tests           pytest -m cuda (tests/test_cuda.py and any other cuda-marked test) on the device
    conv, conv-nhwc, conv-amp
                    bench_conv.py: CustomConv2d / nn.Conv2d time and peak memory in a SimpleNet
                    training step, fp32 in NCHW and in NHWC, and --amp in NHWC (targets 1.2x time,
                    1.1x memory)
    formats         bench_train.py, SimpleNet: fp32 and --amp, each in NCHW and NHWC, and whether
                    main.py's default memory format (devices.use_channels_last) is the faster one
    demo            tools/demo_data.py writes a generated dataset in the official layout
    pipeline-jpeg, pipeline-cache
                    bench_pipeline.py --workers: images/s that main.py's train loader delivers to
                    the device, from the JPEGs and from the uint8 cache
    main-train      main.py, 2 epochs with --amp on the generated data (--amp only on CUDA), memory
                    format by default
    main-eval, main-attack
                    main.py -e -v and -a -v on its model_best.pth.tar, on the device
    main-cpu-eval   main.py -e on that checkpoint on the CPU (--gpu -1): the same top-1 within a margin
    train-simplenet, train-customnet2
                    bench_train.py --amp --channels-last, eager then torch.compile (target: 10,000
                    img/s for SimpleNet); last, since compiling takes longest

Writes into the output folder: summary.md (a Markdown table, rewritten after every step),
gpu_check.log (each command and all its output), results.json (what each step measured) and the
first saliency and adversarial PNGs of main.py. Every figure comes from a file or output that a
step wrote; a step that failed, timed out or was skipped says so and shows what it left, if
anything. Exit code 0 when every step passed, 1 otherwise. Needs no package beyond the project's and
imports none of them itself, so a broken install still gets a report.
"""
import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH = REPO_ROOT / "bench"
MAIN = str(REPO_ROOT / "code" / "main.py")
DEFAULT_BUDGET_S = 420
SIMPLENET_TARGET_IMAGES_PER_S = 10_000
CONV_TARGETS = {"time_ratio": 1.2, "memory_ratio": 1.1}
RUN_NAME = "gpu_check"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one mode: the GPU's are the assignment's; the CPU's only check that every step runs."""

    device: str
    gpu_flag: str  # main.py --gpu
    conv: tuple  # bench_conv.py flags
    train: tuple  # bench_train.py flags
    compile_backend: str
    train_per_class: int  # generated images per class (10 classes)
    val_per_class: int
    workers: int
    batch_size: int
    pipeline: tuple  # bench_pipeline.py flags beyond workers, device and batch size
    precision: tuple  # main.py's training and -e flags
    tests: tuple = ()  # extra pytest arguments for the device tests


PROFILES = {
    "cuda": Profile(
        device="cuda", gpu_flag="0",
        # One run per variant: a GPU to ourselves is steady, and each run costs a process start.
        conv=("--batch-size", "256", "--steps", "30", "--warmup", "5", "--repeats", "1"),
        train=("-b", "256", "--steps", "30", "--warmup", "10", "--repeats", "3"),
        compile_backend="inductor", train_per_class=500, val_per_class=50, workers=16, batch_size=256,
        pipeline=("--samples", "20000", "--epochs", "3"), precision=("--amp",),
    ),
    "cpu": Profile(
        device="cpu", gpu_flag="-1",
        conv=("--batch-size", "4", "--size", "32", "--steps", "1", "--warmup", "1", "--repeats", "1",
              "--one-run"),
        train=("-b", "4", "--size", "32", "--steps", "1", "--warmup", "1", "--repeats", "1"),
        compile_backend="eager", train_per_class=2, val_per_class=1, workers=2, batch_size=10,
        pipeline=("--samples", "40", "--epochs", "2"),
        # bf16 autocast is emulated on CPUs without AVX-512 (several times slower than float32);
        # the device tests cover --amp on the CPU.
        precision=(),
        # The assignment's gradcheck takes ~20 s on a CPU, and code/test_conv.py runs it there anyway.
        tests=("-k", "not assignment_conv_checks"),
    ),
}


class StepFailed(Exception):
    """A step ran but its output is missing or wrong; the message says what."""


@dataclasses.dataclass
class Step:
    """One command. `read(output)` returns (one-line summary, figures) from what the command wrote
    and raises StepFailed when something expected is missing."""

    key: str
    title: str
    command: list
    timeout: float
    read: object
    needs: tuple = ()
    env: dict = None


@dataclasses.dataclass
class Outcome:
    status: str  # passed, failed, timed out, skipped
    seconds: float = 0.0
    summary: str = ""
    figures: dict = dataclasses.field(default_factory=dict)
    returncode: int = None


# ---------------------------------------------------------------------------------------------------
# Reading what the steps wrote
# ---------------------------------------------------------------------------------------------------


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StepFailed(f"{Path(path).name} not written ({exc.__class__.__name__})") from None


def last_json_line(output):
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise StepFailed("no JSON line in the output")


def verdict(value, target, unit, higher_is_better=False):
    met = value >= target if higher_is_better else value <= target
    return f"target {target:,g}{unit}: {'met' if met else 'missed'}"


def read_environment(output):
    env = last_json_line(output)
    gpu = env.get("gpu")
    where = (f"{gpu['name']}, {gpu['memory_gib']:.0f} GiB, capability {gpu['capability']}" if gpu
             else "no CUDA GPU")
    return (f"{where}; torch {env['torch']} (CUDA {env['cuda']}), torchvision {env['torchvision']}, "
            f"Python {env['python']}, {env['cpus']} CPUs", env)


def last_line(output):
    lines = output.strip().splitlines()
    return lines[-1] if lines else "no output"


def read_pytest(output):
    """pytest's closing line, e.g. '12 passed, 40 deselected in 9.1s'; no test passed is a failure
    (on a machine without CUDA every cuda test skips, and pytest still exits 0)."""
    closing = last_line(output)
    counts = {word: int(number) for number, word in
              re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", closing)}
    if not counts.get("passed"):
        raise StepFailed(f"no test passed ({closing})")
    return ", ".join(f"{n} {word}" for word, n in counts.items() if word != "deselected"), counts


def conv_reader(json_path):
    def read(output):
        result = load_json(json_path)
        base, custom = result["variants"]["nn.Conv2d"], result["variants"]["CustomConv2d"]
        time_ratio, memory_ratio = result["time_ratio"], result["memory_ratio"]
        summary = (f"CustomConv2d / nn.Conv2d: time {time_ratio:.2f}x "
                   f"({verdict(time_ratio, CONV_TARGETS['time_ratio'], 'x')}), memory {memory_ratio:.2f}x "
                   f"({verdict(memory_ratio, CONV_TARGETS['memory_ratio'], 'x')}); "
                   f"{custom['ms']:.1f} vs {base['ms']:.1f} ms/step, {custom['peak_mib']:,.0f} vs "
                   f"{base['peak_mib']:,.0f} MiB, batch {result['batch_size']}")
        return summary, result
    return read


def train_reader(json_path, target=None):
    def read(output):
        result = load_json(json_path)
        parts = []
        for row in result["rows"]:
            kind = f"compiled ({row['compile']})" if row["compile"] else "eager"
            part = f"{kind} {row['images_per_s']:,.0f} img/s, {row['peak_mib']:,.0f} MiB"
            if target:
                part += f" ({verdict(row['images_per_s'], target, ' img/s', higher_is_better=True)})"
            parts.append(part)
        if not any(row["compile"] for row in result["rows"]):
            parts.append("compiled: not measured")
        return f"batch {result['batch_size']}: " + "; ".join(parts), result
    return read


# main.py's default memory format (devices.use_channels_last), per device and --amp: NHWC or not.
DEFAULT_CHANNELS_LAST = {("cpu", False): True, ("cpu", True): True, ("cuda", False): False, ("cuda", True): True}


def formats_reader(json_path, device):
    """Per precision: NCHW and NHWC img/s, and whether main.py's default format is the faster one."""
    def read(output):
        result = load_json(json_path)
        rates = {(row["amp"], row["channels_last"]): row["images_per_s"] for row in result["rows"]}
        parts, figures = [], {"rows": result["rows"]}
        for amp, name in ((False, "fp32"), (True, "amp")):
            if (amp, False) not in rates or (amp, True) not in rates:
                continue
            nchw, nhwc = rates[amp, False], rates[amp, True]
            default = DEFAULT_CHANNELS_LAST[device, amp]
            faster = nhwc >= nchw
            figures[f"{name}_default_is_faster"] = default == faster
            verdict_text = "the faster" if default == faster else "the slower"
            parts.append(f"{name} NCHW {nchw:,.0f}, NHWC {nhwc:,.0f} img/s: default "
                         f"{'NHWC' if default else 'NCHW'} is {verdict_text}")
        if not parts:
            raise StepFailed("no precision measured in both formats")
        return f"batch {result['batch_size']}: " + "; ".join(parts), figures
    return read


def read_demo(root):
    def read(output):
        counts = {split: len((root / f"{split}.txt").read_text().split()) // 2 for split in ("train", "val")}
        return f"{counts['train']:,} train / {counts['val']:,} val images in {root}", counts
    return read


def pipeline_reader(json_path):
    def read(output):
        result = load_json(json_path)
        best = result["images_per_s"]
        if best is None:
            raise StepFailed("only one epoch ran: no steady-state figure")
        epochs = ", ".join(f"{rate:,.0f}" for rate in result["epoch_images_per_s"])
        return (f"{best:,.0f} img/s to {result['device_name']} with {result['workers']} workers from "
                f"{result['source']} (per epoch: {epochs}; the first starts the workers)", result)
    return read


def main_train_reader(run_dir):
    def read(output):
        metrics = load_json(run_dir / "metrics.json")
        if not (run_dir / "model_best.pth.tar").is_file():
            raise StepFailed("model_best.pth.tar not written")
        last = metrics[-1]
        return (f"{len(metrics)} epochs: val top-1 {last['val_top1']:.1f}%, "
                f"train loss {last['train_loss']:.3f}, {last['images_per_s']:,.0f} img/s, "
                f"peak {last['peak_mem_mib']:,.0f} MiB on {last['device']}",
                {"epochs": metrics})
    return read


def count_pngs(run_dir, tag):
    return len(list(run_dir.glob(f"{tag}_*.png")))


def main_eval_reader(run_dir, with_pictures=True):
    def read(output):
        result = load_json(run_dir / "evaluation.json")
        summary = (f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}% "
                   f"({result['count']} val images, flip-averaged)")
        if with_pictures:
            pictures = count_pngs(run_dir, "Image_Atten")
            if not pictures:
                raise StepFailed("-v wrote no Image_Atten PNG")
            summary += f"; {pictures} saliency PNG(s)"
        return summary, result
    return read


def main_attack_reader(run_dir):
    def read(output):
        result = load_json(run_dir / "attack.json")
        pictures = count_pngs(run_dir, "Adv_Image")
        if not pictures:
            raise StepFailed("-v wrote no Adv_Image PNG")
        clean = result["clean"]
        rows = "; ".join(f"epsilon {row['epsilon']}: top-1 {clean['top1']:.1f}% -> {row['top1']:.1f}%, "
                         f"top-5 {clean['top5']:.1f}% -> {row['top5']:.1f}%" for row in result["attacks"])
        return f"{rows} ({result['count']} val images); {pictures} adversarial PNG(s)", result
    return read


def cpu_eval_reader(cpu_dir, device_dir):
    """The CPU's top-1 must equal the device's within 1 point or 2 images, whichever is more: the two
    differ only by floating-point order (and fp16 autocast on the GPU), which flips few near ties."""
    read_cpu = main_eval_reader(cpu_dir, with_pictures=False)

    def read(output):
        summary, result = read_cpu(output)
        device = load_json(device_dir / "evaluation.json")
        margin = max(1.0, 200.0 / result["count"])
        difference = result["top1"] - device["top1"]
        summary += f"; device {device['top1']:.2f}%, difference {difference:+.2f} (margin {margin:.1f})"
        if abs(difference) > margin:
            raise StepFailed(f"the CPU's top-1 differs from the device's by more than the margin: {summary}")
        return summary, result
    return read


# ---------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------

# torchvision's version is read from its metadata: importing it imports torch._dynamo (seconds).
ENVIRONMENT_PROBE = """
import importlib.metadata, json, os, platform, sys
import torch
gpu = None
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    gpu = {"name": p.name, "memory_gib": p.total_memory / 2**30, "capability": f"{p.major}.{p.minor}",
           "count": torch.cuda.device_count()}
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                  "torchvision": importlib.metadata.version("torchvision"), "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "cpus": os.cpu_count(), "gpu": gpu}))
if sys.argv[1] == "cuda" and gpu is None:
    sys.exit("CUDA is not available to torch")
"""


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where the steps write, under the work folder."""

    work: Path

    @property
    def data(self):
        return self.work / "data"

    @property
    def logs(self):
        return self.work / "logs"

    @property
    def run_dir(self):
        return self.logs / RUN_NAME

    @property
    def cpu_eval_dir(self):
        return self.logs / f"{RUN_NAME}_cpu_eval"

    @property
    def best(self):
        return str(self.run_dir / "model_best.pth.tar")


def plan(profile, work):
    """Every step, in the order they run: correctness first, then the benchmarks that compile."""
    paths = Paths(work)
    return [*check_steps(profile), *conv_steps(profile, paths), *data_steps(profile, paths),
            *main_steps(profile, paths), *training_steps(profile, paths)]


def check_steps(profile):
    python = sys.executable
    return [
        Step("env", "environment", [python, "-c", ENVIRONMENT_PROBE, profile.device], 60, read_environment),
        Step("tests", "device tests (pytest -m cuda)",
             [python, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *profile.tests, "tests", "code"],
             150,
             read_pytest, env={"TEST_DEVICE": profile.device}),
    ]


def conv_steps(profile, paths):
    steps = []
    for key, flags in (("conv", ("--no-channels-last",)), ("conv-nhwc", ("--channels-last",)),
                       ("conv-amp", ("--amp", "--channels-last"))):
        out = paths.work / f"{key}.json"
        steps.append(Step(key, f"conv bench, {' '.join(flags) or 'fp32'}",
                          [sys.executable, str(BENCH / "bench_conv.py"), "--device", profile.device,
                           *profile.conv, *flags, "--json", str(out)],
                          90, conv_reader(out)))
    return steps


def data_steps(profile, paths):
    """The generated dataset, and the train loader's throughput on it."""
    steps = [Step("demo", "generated data",
                  [sys.executable, str(REPO_ROOT / "tools" / "demo_data.py"), str(paths.data),
                   "--train-per-class", str(profile.train_per_class),
                   "--val-per-class", str(profile.val_per_class), "--test-count", "10"],
                  120, read_demo(paths.data))]
    for key, flags, label in (("pipeline-jpeg", (), "JPEG"), ("pipeline-cache", ("--cache",), "cache")):
        out = paths.work / f"{key}.json"
        steps.append(Step(key, f"train loader, {label}",
                          [sys.executable, str(BENCH / "bench_pipeline.py"), "--root", str(paths.data),
                           "--workers", str(profile.workers), "--device", profile.device,
                           "-b", str(profile.batch_size), "--channels-last", *profile.pipeline, *flags,
                           "--json", str(out)],
                          90, pipeline_reader(out), needs=("demo",)))
    return steps


def main_steps(profile, paths):
    """main.py end to end: train, -e -v and -a -v on the device, then -e on the CPU."""
    common = (sys.executable, MAIN, str(paths.data), "-j", str(profile.workers), "--logdir", str(paths.logs))
    on_device = (*common, "--gpu", profile.gpu_flag)
    precision = " ".join(profile.precision)
    return [
        Step("main-train", f"main.py, 2 epochs {precision}",
             [*on_device, "--epochs", "2", "-b", str(profile.batch_size), *profile.precision, "--seed", "0",
              "--run-name", RUN_NAME],
             150, main_train_reader(paths.run_dir), needs=("demo",)),
        Step("main-eval", f"main.py -e -v {precision} on model_best",
             [*on_device, "--resume", paths.best, "-e", "-v", *profile.precision],
             90, main_eval_reader(paths.run_dir), needs=("main-train",)),
        Step("main-attack", "main.py -a -v on model_best",
             [*on_device, "--resume", paths.best, "-a", "-v"],
             90, main_attack_reader(paths.run_dir), needs=("main-train",)),
        Step("main-cpu-eval", "main.py -e on the CPU (--gpu -1)",
             [*common, "--gpu", "-1", "--resume", paths.best, "-e", "--run-name", paths.cpu_eval_dir.name],
             120, cpu_eval_reader(paths.cpu_eval_dir, paths.run_dir), needs=("main-eval",)),
    ]


def training_steps(profile, paths):
    """Training throughput in each memory format, then eager and compiled; last, since compiling takes
    longest."""
    out = paths.work / "formats.json"
    steps = [Step("formats", "memory formats, fp32 and amp",
                  [sys.executable, str(BENCH / "bench_train.py"), "--arch", "simplenet",
                   "--device", profile.device, *profile.train, "--json", str(out)],
                  150, formats_reader(out, profile.device))]
    for arch, target in (("simplenet", SIMPLENET_TARGET_IMAGES_PER_S), ("customnet2", None)):
        out = paths.work / f"train-{arch}.json"
        steps.append(Step(f"train-{arch}", f"{arch} training, amp, channels-last, eager and compiled",
                          [sys.executable, str(BENCH / "bench_train.py"), "--arch", arch,
                           "--device", profile.device, *profile.train, "--only", "amp+channels-last",
                           "--compile", "--compile-backend", profile.compile_backend, "--json", str(out)],
                          150, train_reader(out, target)))
    return steps


def select(steps, keys):
    """The steps named in `keys` and, recursively, the steps they need; all of them when keys is empty."""
    if not keys:
        return steps
    by_key = {step.key: step for step in steps}
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise SystemExit(f"--only: unknown step(s) {', '.join(unknown)}; choose from {', '.join(by_key)}")
    wanted, pending = set(), list(keys)
    while pending:
        key = pending.pop()
        if key not in wanted:
            wanted.add(key)
            pending.extend(by_key[key].needs)
    return [step for step in steps if step.key in wanted]


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------


def run_command(command, timeout, env):
    """(return code or None when timed out, combined output). The command gets its own process group,
    so that a timeout also ends its children (DataLoader workers, compile workers)."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, errors="replace", env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def run_step(step, timeout, log):
    """Run one step and read what it wrote; returns its Outcome."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(step.env or {})}
    log.write(f"\n=== {step.key}: {step.title} (timeout {timeout:.0f} s)\n$ {' '.join(step.command)}\n")
    log.flush()
    start = time.perf_counter()
    returncode, output = run_command(step.command, timeout, env)
    seconds = time.perf_counter() - start
    log.write(output)
    outcome = Outcome("passed", seconds, returncode=returncode)
    try:
        outcome.summary, outcome.figures = step.read(output)
    except (StepFailed, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        outcome.status, outcome.summary = "failed", f"no result: {exc}"
    if returncode is None:
        outcome.status = "timed out"
        outcome.summary = f"stopped after {timeout:.0f} s; " + (outcome.summary or "no result")
    elif returncode != 0:
        outcome.status = "failed"
        outcome.summary = f"exit code {returncode}: {last_line(output)[:300]}"
    log.write(f"--- {step.key}: {outcome.status} in {seconds:.1f} s: {outcome.summary}\n")
    log.flush()
    return outcome


def run_all(steps, budget, log, on_outcome):
    """Run the steps in order within `budget` seconds; a step whose needed step did not pass is skipped."""
    deadline = time.monotonic() + budget
    outcomes = {}
    for step in steps:
        missing = [key for key in step.needs if key in outcomes and outcomes[key].status != "passed"]
        remaining = deadline - time.monotonic()
        if missing:
            outcome = Outcome("skipped", summary=f"needs {', '.join(missing)}, which did not pass")
        elif remaining < 5:
            outcome = Outcome("skipped", summary=f"out of the {budget:.0f} s budget")
        else:
            print(f"[gpu_check] {step.key}: {step.title} ...", flush=True)
            outcome = run_step(step, min(step.timeout, remaining), log)
        print(f"[gpu_check] {step.key}: {outcome.status} ({outcome.seconds:.0f} s) {outcome.summary}",
              flush=True)
        outcomes[step.key] = outcome
        on_outcome(outcomes)
    return outcomes


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------


def markdown(steps, outcomes, header):
    """The summary table; steps not run yet show as pending."""
    lines = [f"# GPU check: {header}", "", "| step | status | s | measured |", "|---|---|---:|---|"]
    for step in steps:
        outcome = outcomes.get(step.key, Outcome("pending"))
        summary = outcome.summary.replace("|", "/")
        lines.append(f"| {step.title} | {outcome.status} | {outcome.seconds:.0f} | {summary} |")
    not_passed = [f"{step.key} ({outcomes[step.key].status})" for step in steps
                  if step.key in outcomes and outcomes[step.key].status != "passed"]
    lines += ["", f"Not passed: {', '.join(not_passed) if not_passed else 'none'}."]
    return "\n".join(lines) + "\n"


def header_line(profile, outcomes):
    env = outcomes.get("env")
    if env is not None and env.status == "passed":
        described = env.summary
    else:
        described = "environment unknown (the env step did not pass)"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"--device {profile.device}; {described}; {stamp}"


def write_report(out, steps, outcomes, profile):
    write_atomic(out / "summary.md", markdown(steps, outcomes, header_line(profile, outcomes)))
    record = {"device": profile.device, "steps": [
        {"key": step.key, "title": step.title, "command": step.command,
         **dataclasses.asdict(outcomes[step.key])} for step in steps if step.key in outcomes]}
    write_atomic(out / "results.json", json.dumps(record, indent=1, default=str) + "\n")


def write_atomic(path, text):
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def copy_pictures(run_dir, out):
    """The first saliency and adversarial grids, to look at (the output folder takes few files)."""
    for tag in ("Image_Atten", "Adv_Image"):
        first = sorted(run_dir.glob(f"{tag}_*.png"))[:1]
        for path in first:
            shutil.copyfile(path, out / path.name)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=sorted(PROFILES), default="cuda",
                        help="cuda: the real check; cpu: every step at toy sizes, to test the script")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(BENCH / "out"),
                        help="folder for summary.md, gpu_check.log and results.json ($OUT, else bench/out)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all the steps")
    parser.add_argument("--work", default=None,
                        help="folder for the generated data and runs, kept (default: a temporary one)")
    parser.add_argument("--only", nargs="+", default=[], metavar="STEP",
                        help="run these steps (and the steps they need)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    profile = PROFILES[args.device]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    steps = select(plan(profile, work), args.only)
    print(f"[gpu_check] {len(steps)} steps on {profile.device}, budget {args.budget:.0f} s; "
          f"report in {out}, work folder {work}", flush=True)
    start = time.perf_counter()
    try:
        with open(out / "gpu_check.log", "w") as log:
            outcomes = run_all(steps, args.budget, log,
                               lambda done: write_report(out, steps, done, profile))
        copy_pictures(Paths(work).run_dir, out)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(outcome.status == "passed" for outcome in outcomes.values())
    print(f"[gpu_check] {passed} of {len(steps)} steps passed in {time.perf_counter() - start:.0f} s; "
          f"see {out / 'summary.md'}", flush=True)
    print((out / "summary.md").read_text(), flush=True)
    return 0 if passed == len(steps) else 1


if __name__ == "__main__":
    sys.exit(main())
