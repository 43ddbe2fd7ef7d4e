"""main.py --demo: the README's first command. The generated demo dataset (demo_data), a short
training run with flags.DEMO_DEFAULTS, then -e -v and -a -v on its best checkpoint, on a 2-core CPU
in about two minutes."""
import shlex
import time
from pathlib import Path

from . import checkpoints, demo_data, evaluation, training

# PGD's 10 steps per image: the whole val set would take minutes on a CPU.
DEMO_ATTACK_IMAGES = 20


def demo(config, given, ctx):
    """Train on the demo data, then evaluate and attack the best checkpoint; returns the run folder."""
    start = time.perf_counter()
    root = demo_data.ensure_demo_dataset(Path(config.data_folder)) if config.data_folder \
        else demo_data.ensure_demo_dataset()
    train_config = config.replace(data_folder=str(root), demo=False)
    run_dir = training.train(train_config, given, ctx)

    best = str(run_dir / checkpoints.BEST_NAME)
    after = train_config.replace(resume=best, vis=True, run_name=None)
    evaluation.evaluate(after.replace(evaluate=True), ctx)
    ctx.say(f"=> attacking the first {DEMO_ATTACK_IMAGES} val images (10 PGD steps each: the whole val set "
            "would take minutes on a CPU)")
    evaluation.attack(after.replace(attack=True), ctx, val_images=DEMO_ATTACK_IMAGES)
    ctx.say(f"\nDemo finished in {(time.perf_counter() - start) / 60:.1f} min. Logs, checkpoints and PNG grids: "
            f"{run_dir}\nView them with:  tensorboard --logdir {shlex.quote(str(run_dir.parent))}")
    return run_dir
