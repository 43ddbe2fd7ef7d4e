"""main.py --demo: the README's first command. The generated demo dataset (demo_data), a short
training run with flags.DEMO_DEFAULTS, then -e -v and -a -v on its best checkpoint, and a table of
what it measured (also written to the run folder as demo.json): clean and attacked accuracy, the
attack's largest change in grey levels and each stage's wall time."""
import json
import shlex
import time
from pathlib import Path

from . import checkpoints, demo_data, devices, evaluation, files, training

# The attack's 10 PGD steps cost about 10 training steps an image at 160x160: the demo attacks the
# first 100 val images (all of the demo data's val split), 12-22 s on a 2-core CPU.
DEMO_ATTACK_IMAGES = 100
SUMMARY_NAME = "demo.json"


def demo(config, given, ctx):
    """Train on the demo data, then evaluate and attack the best checkpoint; print the summary table
    and write it to the run folder; returns the run folder."""
    start = time.perf_counter()
    root = Path(config.data_folder).expanduser().resolve() if config.data_folder else demo_data.DEFAULT_DEMO_DIR
    generated = not demo_data.is_ready(root)
    root = demo_data.ensure_demo_dataset(root)
    seconds = {"data": time.perf_counter() - start}

    def timed(stage, run):
        began = time.perf_counter()
        out = run()
        seconds[stage] = time.perf_counter() - began
        return out

    amp = config.amp
    if "amp" not in given and devices.cpu_bf16_is_faster(ctx.device):
        # Our own short run, not the course's figures: bf16 where the CPU computes it natively.
        amp = True
        ctx.say(f"=> bf16 autocast: this CPU computes bf16 natively ({', '.join(devices.native_bf16_features())}; "
                f"a probe ran it {devices.bf16_speedup():.1f}x as fast as fp32); --no-amp trains in fp32")
    train_config = config.replace(data_folder=str(root), demo=False, amp=amp)
    run_dir = timed("training", lambda: training.train(train_config, given, ctx))
    best = str(run_dir / checkpoints.BEST_NAME)
    after = train_config.replace(resume=best, vis=True, run_name=None)
    timed("evaluation", lambda: evaluation.evaluate(after.replace(evaluate=True), ctx))
    ctx.say(f"=> attacking the first {DEMO_ATTACK_IMAGES} val images (10 PGD steps each: the whole val set of "
            "MiniPlaces would take an hour on a CPU)")
    timed("attack", lambda: evaluation.attack(after.replace(attack=True), ctx, val_images=DEMO_ATTACK_IMAGES))
    seconds["total"] = time.perf_counter() - start
    if ctx.is_main:
        summary = summarize(run_dir, train_config, generated, seconds)
        files.write_json(summary, run_dir / SUMMARY_NAME)
        ctx.say(format_table(summary))
    return run_dir


def summarize(run_dir, config, generated, seconds):
    """The demo's figures as one JSON-ready dict, from the run folder's evaluation.json and attack.json."""
    evaluated = json.loads((run_dir / "evaluation.json").read_text())
    attacked = json.loads((run_dir / "attack.json").read_text())
    (row,) = attacked["attacks"]
    return {
        "run_dir": str(run_dir),
        "tensorboard": f"tensorboard --logdir {shlex.quote(str(run_dir.parent))}",
        "data": {"folder": str(config.data_folder), "version": demo_data.FORMAT_VERSION, "generated": generated},
        "seed": config.seed,
        "precision": "bf16 autocast" if config.amp else "fp32",
        "clean": {"top1": evaluated["top1"], "top5": evaluated["top5"], "images": evaluated["count"],
                  "flip_average": evaluated["flip_average"]},
        "attack": {"epsilon": row["epsilon"], "images": attacked["count"],
                   "clean_top1": attacked["clean"]["top1"], "clean_top5": attacked["clean"]["top5"],
                   "top1": row["top1"], "top5": row["top5"],
                   "max_change_grey_levels": row.get("max_change_grey_levels")},
        "seconds": {stage: round(value, 1) for stage, value in seconds.items()},
    }


def format_table(summary):
    """The summary as the lines the demo ends with."""
    clean, attack, seconds = summary["clean"], summary["attack"], summary["seconds"]
    change = attack["max_change_grey_levels"]
    change_text = "not measured" if change is None else f"{change:.1f} of 255 grey levels"
    data = "generated" if summary["data"]["generated"] else "already there"
    rows = ((f"clean, -e ({clean['images']} val images, flip-averaged)", clean["top1"], clean["top5"]),
            (f"clean, the {attack['images']} images attacked", attack["clean_top1"], attack["clean_top5"]),
            (f"under the default attack (epsilon {attack['epsilon']:g})", attack["top1"], attack["top5"]))
    lines = [
        "",
        f"Demo summary (seed {summary['seed']}, {summary['precision']}, demo data version "
        f"{summary['data']['version']})",
        f"  {'':44} {'top-1':>7} {'top-5':>7}",
        *(f"  {name:44} {top1:7.2f} {top5:7.2f}" for name, top1, top5 in rows),
        f"  largest change the attack made to a pixel: {change_text}",
        f"  wall time: data ({data}) {seconds['data']:.1f} s, training {seconds['training']:.1f} s, "
        f"-e -v {seconds['evaluation']:.1f} s, -a -v {seconds['attack']:.1f} s; "
        f"{seconds['total']:.1f} s in all ({seconds['total'] / 60:.1f} min)",
        f"  run folder: {summary['run_dir']} (these figures: {SUMMARY_NAME})",
        f"  view it with:  {summary['tensorboard']}",
    ]
    return "\n".join(lines)
