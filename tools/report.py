"""The experiment report: Markdown tables and PNG curves from the run folders main.py writes, and
from the team's own 2019 TensorBoard logs.

    python tools/report.py logs/                      # every run under logs/
    python tools/report.py logs/runA logs/runB --out report/ [--no-plots]
    python tools/report.py ../shared/team/logs/* logs/runA --out report/   # the team's runs beside ours

A run folder is one holding metrics.json (per epoch: lr, train_loss, train/val top-1 and top-5,
epoch_minutes, images_per_s, peak_mem_mib, device) or, failing that, main.py's TensorBoard events;
args.json adds the run's settings, evaluation.json and attack.json the results of -e and -a.
A folder with data/top1_accuracy/ is a run of the team's 2019 harness (see load_2019_run).

Printed (and written to <out>/report.md):
  * one row per run: arch, conv op, epochs, peak training memory, minutes per epoch, final train and
    val top-1/top-5, final training loss;
  * the team's runs: final and best val top-1/top-5, final train top-1/top-5, final training loss and
    median minutes per epoch, as the report's Sections 0-3 give them;
  * -e and -a results, when the run folders hold them;
  * nn.Conv2d against CustomConv2d for each arch trained with both: memory, speed and convergence
    (training loss and val top-1 at the last epoch both runs reached).
Written: <out>/learning_rate.png, loss.png, accuracy.png (TensorBoard stays the interactive view), every
run on one x axis: epochs completed, so epoch e of metrics.json (counted from 0) is plotted at e + 1,
where the 2019 logs (counted from 1) put it too.
<out> defaults to <first folder>/report.
"""
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness.cli import UserError  # noqa: E402
from harness import cli, files, paths  # noqa: E402

CONV_OPS = ("Conv2d", "CustomConv2d")
PLOT_NAMES = ("learning_rate.png", "loss.png", "accuracy.png")
# Per-epoch TensorBoard scalars, metric -> (sub-run folder, tag). main.py's add_scalars puts each series in
# a folder <tag>_<series> (slashes as underscores), x = epoch counted from 0.
EPOCH_SCALARS = {
    "train_top1": ("data_top1_accuracy_train", "data/top1_accuracy"),
    "val_top1": ("data_top1_accuracy_val", "data/top1_accuracy"),
    "train_top5": ("data_top5_accuracy_train", "data/top5_accuracy"),
    "val_top5": ("data_top5_accuracy_val", "data/top5_accuracy"),
    "val_loss": (".", "data/validation_loss"),
    "epoch_minutes": (".", "perf/epoch_minutes"),
    "images_per_s": (".", "perf/images_per_s"),
    "peak_mem_mib": (".", "perf/peak_mem_mib"),
}
# The team's 2019 harness (tensorboardX) nested the series as <tag>/<series>, x = epoch counted from 1;
# its per-iteration data/training_loss and data/learning_rate sit in the run folder itself, as ours do.
EPOCH_SCALARS_2019 = {
    "train_top1": ("data/top1_accuracy/train", "data/top1_accuracy"),
    "val_top1": ("data/top1_accuracy/val", "data/top1_accuracy"),
    "train_top5": ("data/top5_accuracy/train", "data/top5_accuracy"),
    "val_top5": ("data/top5_accuracy/val", "data/top5_accuracy"),
}
ITERATION_TAGS = ("data/learning_rate", "data/training_loss")
SOURCE_2019 = "2019 TensorBoard logs"
# Optimizer steps per epoch in the team's runs: 100,000 training images in batches of 256, the last
# partial batch dropped (their 90-epoch runs log their last loss at iteration 35,090 = 90 x 390 - 10).
TEAM_ITERATIONS_PER_EPOCH = 390
# The report row of each run folder the team published (../shared/team/README.md).
TEAM_REPORT_ROWS = {
    "3_2_0_simplenet": "Section 0: SimpleNet",
    "3_2_2_simplenet_customconv": "Section 2: SimpleNet with the unfold/fold conv",
    "3_2_3_customnet": "Section 3: CustomNet",
    "3_2_3_customnet2": "Section 3: CustomNet-2 (best)",
    "3_2_3_resnet": "Section 3: ResNet",
    "3_2_3_resnet_lr0.01": "Section 3: ResNet, lr 0.01 (stopped early)",
    "3_2_3_googlenet": "Section 3: GoogLeNet (stopped early)",
}


# ---------------------------------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run folder: its arguments, its per-epoch metrics and the -e / -a results it holds."""

    path: Path
    args: dict
    metrics: list  # one dict per epoch, sorted by epoch
    evaluation: dict = None
    attack: dict = None
    source: str = "metrics.json"
    curves: dict = field(default_factory=dict)  # per-iteration TensorBoard series: tag -> [(step, value)]
    iterations: int = None  # optimizer steps per epoch, when known rather than derived

    @property
    def from_2019(self):
        return self.source == SOURCE_2019

    @property
    def name(self):
        return self.path.name

    @property
    def arch(self):
        return self.args.get("arch", "?")

    @property
    def conv_op(self):
        custom = self.args.get("use_custom_conv")
        return "?" if custom is None else CONV_OPS[bool(custom)]

    @property
    def epochs_done(self):
        return len(self.metrics)

    @property
    def final(self):
        return self.metrics[-1] if self.metrics else {}

    def median(self, key):
        """Median over epochs (robust to the first epoch's warm-up: cuDNN autotuning, compilation)."""
        values = [m[key] for m in self.metrics if _is_number(m.get(key))]
        return statistics.median(values) if values else None

    def peak(self, key="peak_mem_mib"):
        values = [m[key] for m in self.metrics if _is_number(m.get(key))]
        return max(values) if values else None

    @property
    def iterations_per_epoch(self):
        """Optimizer steps per epoch: training images per epoch / batch (the loader drops the last
        partial batch, so images = iterations x batch exactly); None when not derivable."""
        if self.iterations:
            return self.iterations
        batch = self.args.get("batch_size")
        epoch = next((m for m in self.metrics if _is_number(m.get("images_per_s"))
                      and _is_number(m.get("epoch_minutes"))), None)
        if not batch or epoch is None:
            return None
        return max(1, round(epoch["images_per_s"] * epoch["epoch_minutes"] * 60 / batch))

    def best(self, key):
        """(largest value of a per-epoch metric, its epoch counted from 1), or (None, None)."""
        epochs = [m for m in self.metrics if _is_number(m.get(key))]
        if not epochs:
            return None, None
        top = max(epochs, key=lambda m: m[key])
        return top[key], top["epoch"] + 1

    @property
    def last_logged_loss(self):
        """The last per-iteration training loss in the events: the team's "final training loss"."""
        points = self.curves.get("data/training_loss") or []
        return points[-1][1] if points else None

    @property
    def mtime(self):
        files = [self.path / n for n in ("metrics.json", "args.json")]
        return max((f.stat().st_mtime for f in files if f.is_file()), default=0.0)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path, expect):
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(value, expect):
        raise UserError(f"{path}: expected a JSON {expect.__name__}")
    return value


def is_run_folder(path):
    return ((path / "metrics.json").is_file() or (path / "args.json").is_file()
            or any(path.glob("events.out.tfevents.*")))


def find_runs(paths):
    """Run folders among `paths`: a path is a run folder itself or a folder of run folders."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"{path}: no such folder (give logs/ or a run folder)")
        if is_run_folder(path):
            found.append(path)
        else:
            found += sorted(child for child in path.iterdir() if child.is_dir() and is_run_folder(child))
    if not found:
        raise UserError(f"{', '.join(map(str, paths))}: no run folders (with metrics.json, args.json or "
                        "TensorBoard events) found")
    return found


class Scalar(NamedTuple):
    step: int
    value: float
    wall_time: float  # seconds since the epoch, when it was written


def _written_scalars(folder, tags):
    """{tag: [Scalar]}: every write of the scalar `tags` in the event files directly in `folder`.

    The legacy loader hands the events over as written, without converting each value to a tensor
    first (which took half the reading time of the team's logs)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util import tensor_util

    points = {tag: [] for tag in tags}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag in points:
                    number = (value.simple_value if value.HasField("simple_value")
                              else tensor_util.make_ndarray(value.tensor).item())
                    points[value.tag].append(Scalar(event.step, number, event.wall_time))
    return points


def _latest_writes(points):
    """One point per step, in step order. In write order, a point replaces every point already kept
    at its step or later: a rerun epoch replaces its first write, and a restart from an earlier epoch
    drops what the abandoned run logged after it, much as TensorBoard purges orphaned data."""
    kept = []
    for point in sorted(points, key=lambda p: p.wall_time):
        while kept and kept[-1].step >= point.step:
            kept.pop()
        kept.append(point)
    return kept


def read_scalars(folder, *tags):
    """{tag: [Scalar]} of `folder`'s event files (not its subfolders'), one point per step.

    A folder may hold several event files: a restarted run writes a new one, and an aborted start
    leaves one that is empty or ends early (see _latest_writes)."""
    return {tag: _latest_writes(points) for tag, points in _written_scalars(folder, tags).items()}


def metrics_from_events(run_dir, scalars=EPOCH_SCALARS):
    """Per-epoch metrics rebuilt from TensorBoard events, `epoch` counted from 0 as in metrics.json;
    `wall_time` is when the epoch's val top-1 was written.

    The series folders (ours and the 2019 harness's) count epochs from 1. The run folder's
    once-an-epoch scalars (validation loss, perf/*) sit at the global iteration of each epoch's last
    step, so the k-th of them belongs to the k-th epoch. The training loss per epoch is not among the
    per-epoch tags and stays missing."""
    keys_by_folder = {}  # each event folder is read once, for all its tags
    for key, (subfolder, tag) in scalars.items():
        keys_by_folder.setdefault(subfolder, {})[tag] = key
    epochs, at_iterations = {}, {}
    for subfolder, keys in keys_by_folder.items():
        for tag, points in read_scalars(run_dir / subfolder, *keys).items():
            if subfolder == ".":
                at_iterations[keys[tag]] = sorted(points, key=lambda point: point.step)
                continue
            for point in points:
                record = epochs.setdefault(point.step - 1, {"epoch": point.step - 1})
                record[keys[tag]] = point.value
                if keys[tag] == "val_top1":
                    record["wall_time"] = point.wall_time
    ordered = [epochs[e] for e in sorted(epochs)]
    for key, points in at_iterations.items():
        for record, point in zip(ordered, points):
            record[key] = point.value
    return ordered


def add_wall_clock_minutes_(metrics):
    """Set epoch_minutes from the wall time between consecutive epochs' val writes: training,
    validation and checkpointing, all an epoch took. The first epoch has no predecessor to measure from."""
    for previous, record in zip(metrics, metrics[1:]):
        if record["epoch"] == previous["epoch"] + 1 and "wall_time" in record and "wall_time" in previous:
            record["epoch_minutes"] = (record["wall_time"] - previous["wall_time"]) / 60
    return metrics


def iteration_curves(run_dir):
    """{tag: [(step, value)]} of the per-iteration loss and learning rate in the run folder."""
    curves = read_scalars(run_dir, *ITERATION_TAGS)
    return {tag: [(p.step, p.value) for p in points] for tag, points in curves.items()}


def is_2019_layout(run_dir):
    return (Path(run_dir) / "data" / "top1_accuracy").is_dir()


def load_2019_run(run_dir):
    """A run folder of the team's 2019 harness: per-epoch accuracies in sub-run folders
    data/top{1,5}_accuracy/{train,val} (x = epoch from 1), per-iteration loss and learning rate
    (every 10 iterations) in the folder itself. Its epochs are stored from 0, as ours."""
    run_dir = Path(run_dir)
    metrics = add_wall_clock_minutes_(metrics_from_events(run_dir, EPOCH_SCALARS_2019))
    if not any("val_top1" in m for m in metrics):
        raise UserError(f"{run_dir}: no val top-1 accuracy in {EPOCH_SCALARS_2019['val_top1'][0]}/ "
                        "(a 2019 run folder needs its per-epoch events)")
    return Run(run_dir, {}, metrics, source=SOURCE_2019, curves=iteration_curves(run_dir),
               iterations=TEAM_ITERATIONS_PER_EPOCH)


def load_run(run_dir, with_curves=False):
    """Read one run folder; `with_curves` also reads the per-iteration loss and lr from TensorBoard
    (always read from a 2019 run: its final training loss is one of them)."""
    run_dir = Path(run_dir)
    if is_2019_layout(run_dir):
        return load_2019_run(run_dir)
    args = _read_json(run_dir / "args.json", dict) if (run_dir / "args.json").is_file() else {}
    if (run_dir / "metrics.json").is_file():
        metrics, source = _read_json(run_dir / "metrics.json", list), "metrics.json"
        if not all(isinstance(m, dict) and "epoch" in m for m in metrics):
            raise UserError(f"{run_dir / 'metrics.json'}: expected a list of per-epoch objects with 'epoch'")
        metrics = sorted(metrics, key=lambda m: m["epoch"])
    else:
        metrics, source = metrics_from_events(run_dir), "TensorBoard events"
    run = Run(run_dir, args, metrics, source=source)
    for name in ("evaluation", "attack"):
        if (run_dir / f"{name}.json").is_file():
            setattr(run, name, _read_json(run_dir / f"{name}.json", dict))
    if with_curves:
        run.curves = iteration_curves(run_dir)
    return run


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def fmt(value, digits=2, thousands=False):
    if not _is_number(value):
        return "–"
    return f"{value:,.{digits}f}" if thousands else f"{value:.{digits}f}"


def markdown_table(header, rows, align=None):
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings(run):
    """The flags that change speed or memory, e.g. 'b 256, lr 0.1, amp'."""
    a = run.args
    parts = [f"b {a['batch_size']}" if "batch_size" in a else None,
             f"lr {a['lr']:g}" if _is_number(a.get("lr")) else None]
    parts += [flag for flag in ("amp", "channels_last", "compile", "adv_train") if a.get(flag)]
    world = run.final.get("world_size")
    if _is_number(world) and world > 1:
        parts.append(f"{world} processes")
    return ", ".join(p.replace("_", "-") for p in parts if p) or "–"


def _epochs(run):
    planned = run.args.get("epochs")
    if planned and planned != run.epochs_done:
        return f"{run.epochs_done}/{planned}"
    return str(run.epochs_done)


def runs_table(runs):
    header = ["run", "arch", "conv op", "epochs", "device", "settings", "peak train memory (MiB)",
              "min/epoch", "img/s", "train top-1", "train top-5", "val top-1", "val top-5", "train loss"]
    rows = []
    for run in runs:
        if not run.metrics:  # e.g. a folder of -e/-a given its own --run-name: only the tables below
            continue
        final = run.final
        rows.append([
            f"`{run.name}`", run.arch, run.conv_op, _epochs(run), final.get("device", "–"), _settings(run),
            fmt(run.peak(), 0, thousands=True), fmt(run.median("epoch_minutes")), fmt(run.median("images_per_s"), 0),
            fmt(final.get("train_top1")), fmt(final.get("train_top5")), fmt(final.get("val_top1")),
            fmt(final.get("val_top5")), fmt(final.get("train_loss"), 3),
        ])
    align = ["---", "---", "---", "---:", "---", "---"] + ["---:"] * 8
    return markdown_table(header, rows, align)


def team_table(runs):
    """The report's Sections 0-3 figures from the team's 2019 logs: one row per run."""
    header = ["run", "report row", "epochs", "val top-1", "val top-5", "best val top-1", "at epoch",
              "best val top-5", "train top-1", "train top-5", "final training loss", "min/epoch"]
    rows = []
    for run in runs:
        final = run.final
        best_top1, best_epoch = run.best("val_top1")
        rows.append([
            f"`{run.name}`", TEAM_REPORT_ROWS.get(run.name, "–"), run.epochs_done,
            fmt(final.get("val_top1")), fmt(final.get("val_top5")), fmt(best_top1), best_epoch or "–",
            fmt(run.best("val_top5")[0]), fmt(final.get("train_top1")), fmt(final.get("train_top5")),
            fmt(run.last_logged_loss, 3), fmt(run.median("epoch_minutes"), 1),
        ])
    return markdown_table(header, rows, ["---", "---"] + ["---:"] * 10)


TEAM_TABLE_NOTE = (
    "Read from the team's TensorBoard logs (tensorboardX, 2019). Final: the last epoch logged; an epoch "
    "logged twice counts once, as its later write. Final training loss: the last per-iteration loss logged "
    "(every 10 iterations; in a run stopped early it may lie past the last complete epoch). Minutes per "
    "epoch: the median time between consecutive epochs' val writes, so training, validation and "
    "checkpointing (ours count training alone); one GPU on Google Cloud, batch 256.")


def evaluation_table(runs):
    """-e (flip-averaged) and -a results of the runs that have them; None when no run has any."""
    rows = []
    for run in runs:
        if run.evaluation:
            rows.append([f"`{run.name}`", "-e (image + flip)", fmt(run.evaluation.get("top1")),
                         fmt(run.evaluation.get("top5")), "–", "–", "–"])
        if run.attack:
            clean = run.attack.get("clean", {})
            for row in run.attack.get("attacks", []):
                rows.append([f"`{run.name}`", "-a (PGD)", fmt(clean.get("top1")), fmt(clean.get("top5")),
                             row.get("epsilon", "–"), fmt(row.get("top1")), fmt(row.get("top5"))])
    if not rows:
        return None
    return markdown_table(["run", "mode", "val top-1", "val top-5", "epsilon", "adversarial top-1",
                           "adversarial top-5"], rows, ["---", "---", "---:", "---:", "---:", "---:", "---:"])


def conv_pairs(runs):
    """{arch: (latest nn.Conv2d run, latest CustomConv2d run)} for each arch trained with both."""
    latest = {}
    for run in runs:
        if run.conv_op in CONV_OPS and run.metrics:
            key = (run.arch, run.conv_op)
            if key not in latest or run.mtime >= latest[key].mtime:
                latest[key] = run
    return {arch: (latest[(arch, "Conv2d")], latest[(arch, "CustomConv2d")])
            for arch, op in sorted(latest) if op == "Conv2d" and (arch, "CustomConv2d") in latest}


def _ratio(custom, conv):
    return f"{custom / conv:.2f}x" if _is_number(custom) and _is_number(conv) and conv else "–"


def comparison_section(arch, conv, custom):
    """Markdown: memory, speed and convergence of `custom` (CustomConv2d) against `conv` (nn.Conv2d)."""
    common = min(conv.epochs_done, custom.epochs_done)  # compare at the last epoch both reached
    at_conv, at_custom = conv.metrics[common - 1], custom.metrics[common - 1]
    rows = [
        ["peak train memory (MiB)", fmt(conv.peak(), 0, True), fmt(custom.peak(), 0, True),
         _ratio(custom.peak(), conv.peak())],
        ["min/epoch (median)", fmt(conv.median("epoch_minutes")), fmt(custom.median("epoch_minutes")),
         _ratio(custom.median("epoch_minutes"), conv.median("epoch_minutes"))],
        ["img/s (median)", fmt(conv.median("images_per_s"), 0), fmt(custom.median("images_per_s"), 0),
         _ratio(custom.median("images_per_s"), conv.median("images_per_s"))],
    ]
    for key, label, digits in (("train_loss", "train loss", 3), ("train_top1", "train top-1", 2),
                               ("val_top1", "val top-1", 2), ("val_top5", "val top-5", 2), ("lr", "lr", 4)):
        rows.append([f"{label} after epoch {common}", fmt(at_conv.get(key), digits),
                     fmt(at_custom.get(key), digits), ""])
    lines = [f"### {arch}: nn.Conv2d vs CustomConv2d", "",
             f"`{conv.name}` ({conv.epochs_done} epochs) against `{custom.name}` ({custom.epochs_done} epochs).", "",
             markdown_table(["", "nn.Conv2d", "CustomConv2d", "CustomConv2d / nn.Conv2d"], rows,
                            ["---", "---:", "---:", "---:"])]
    notes = []
    if conv.final.get("device") != custom.final.get("device"):
        notes.append(f"the runs used different devices ({conv.final.get('device')} and "
                     f"{custom.final.get('device')}): memory and speed are not comparable")
    if conv.args.get("epochs") != custom.args.get("epochs"):
        notes.append("the runs planned different --epochs, so their cosine learning rates differ at the same "
                     "epoch (the lr row)")
    if str(conv.final.get("device", "")).startswith("cpu"):
        notes.append("on the CPU, peak memory is the process's peak resident size")
    if notes:
        lines += ["", "Note: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def build_report(runs):
    theirs = [run for run in runs if run.from_2019]
    runs = [run for run in runs if not run.from_2019]
    parts = ["# Experiment report"]
    if runs:
        parts += ["", "## Runs", "", runs_table(runs), "",
                  "Peak memory is the largest over the epochs; minutes per epoch and images/s are medians "
                  "over the epochs; accuracies (%) and training loss are the last epoch's."]
    if theirs:
        parts += ["", "## The team's runs", "", team_table(theirs), "", TEAM_TABLE_NOTE]
    from_events = [run.name for run in runs if run.source != "metrics.json"]
    if from_events:
        parts += ["", "Read from TensorBoard events (no metrics.json; no per-epoch training loss): "
                  + ", ".join(f"`{name}`" for name in from_events) + "."]
    table = evaluation_table(runs)
    if table:
        parts += ["", "## Evaluation and attack", "", table]
    pairs = conv_pairs(runs)
    if pairs:
        parts += ["", "## nn.Conv2d vs CustomConv2d"]
        for arch, (conv, custom) in pairs.items():
            parts += ["", comparison_section(arch, conv, custom)]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------


# Every run on one x axis: epochs completed (epoch e of metrics.json, counted from 0, at e + 1).
EPOCH_AXIS = "epochs completed"


def _epoch_axis(run, steps):
    """Global iterations -> fractional epochs (None when the iterations per epoch are unknown)."""
    iters = run.iterations_per_epoch
    return [step / iters for step in steps] if iters else None


def epoch_series(run, key):
    """(x, y) of a per-epoch metric: x = epochs completed, epoch e (counted from 0) at e + 1."""
    epochs = [m for m in run.metrics if _is_number(m.get(key))]
    return [m["epoch"] + 1 for m in epochs], [m[key] for m in epochs]


def _curve(run, tag, metric_key):
    """(x in epochs, y): the per-iteration TensorBoard series when available, else the per-epoch metric
    at the end of each epoch."""
    points = run.curves.get(tag) or []
    if points:
        x = _epoch_axis(run, [step for step, _ in points])
        if x is not None:
            return x, [value for _, value in points]
    return epoch_series(run, metric_key)


def write_plots(runs, out_dir):
    """learning_rate.png, loss.png and accuracy.png in out_dir; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = [out_dir / name for name in PLOT_NAMES]

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, run in enumerate(runs):
        x, y = _curve(run, "data/learning_rate", "lr")
        ax.plot(x, y, color=colors[i % len(colors)], label=run.name)
    ax.set(xlabel=EPOCH_AXIS, ylabel="learning rate", title="Learning rate")
    _finish(ax, fig)
    files.save_figure(fig, paths[0], dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        x, y = _curve(run, "data/training_loss", "train_loss")
        ax.plot(x, y, color=color, alpha=0.8, label=f"{run.name} train")
        x, y = epoch_series(run, "val_loss")
        if x:
            ax.plot(x, y, "--", color=color, label=f"{run.name} val")
    ax.set(xlabel=EPOCH_AXIS, ylabel="cross-entropy loss", title="Loss")
    _finish(ax, fig)
    files.save_figure(fig, paths[1], dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, k in zip(axes, (1, 5)):
        for i, run in enumerate(runs):
            color = colors[i % len(colors)]
            for split, style in (("train", "--"), ("val", "-")):
                x, y = epoch_series(run, f"{split}_top{k}")
                ax.plot(x, y, style, marker="o" if len(x) < 3 else None, color=color,
                        label=f"{run.name} {split}")
        ax.set(xlabel=EPOCH_AXIS, ylabel=f"top-{k} accuracy (%)", title=f"Top-{k} accuracy", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    files.save_figure(fig, paths[2], dpi=110)
    return paths


def _finish(ax, fig):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def get_args_parser():
    parser = cli.ArgumentParser(description="Markdown tables and PNG curves of the runs main.py wrote.")
    parser.add_argument("folders", nargs="*", default=[str(paths.DEFAULT_LOG_DIR)],
                        help=f"logs folders or run folders (default {paths.DEFAULT_LOG_DIR})")
    parser.add_argument("--out", default=None, help="folder for report.md and the PNG plots "
                                                    "(default <first folder>/report)")
    parser.add_argument("--no-plots", action="store_true", help="print the tables only")
    return parser


def make_report(folders, out_dir=None, plots=True):
    """Read the runs, write <out>/report.md (and the plots); returns (Markdown text, written paths)."""
    runs = [load_run(path, with_curves=plots) for path in find_runs(folders)]
    text = build_report(runs)
    out_dir = Path(out_dir) if out_dir else Path(folders[0]) / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {out_dir} ({exc.strerror})") from None
    written = [out_dir / "report.md"]
    files.write_text(written[0], text)
    if plots:
        written += write_plots(runs, out_dir)
    return text, written


def main(argv=None):
    """Entry point; returns the exit code (0, or those of harness.cli: 2 for a user error ...)."""
    return cli.run(report, argv)


def report(argv):
    args = get_args_parser().parse_args(argv)
    text, written = make_report(args.folders, args.out, plots=not args.no_plots)
    print(text)
    print("Written: " + ", ".join(map(str, written)))


if __name__ == "__main__":
    sys.exit(main())
