"""Run folders (their names, creation, whose they are) and the resume policy (which of a resumed run's
settings carry over)."""
import fcntl
import itertools
import json
import os
import stat
import sys
from datetime import datetime
from pathlib import Path

from . import files
from .cli import UserError
from .models import CONV_OPS

ARGS_NAME = "args.json"
METRICS_NAME = "metrics.json"


def make_run_name(arch, conv_name, now=None):
    """Default run folder name: arch, conv op and a timestamp, e.g. `simplenet_conv2d_20190301-142501`."""
    now = now or datetime.now()
    return f"{arch}_{conv_name.lower()}_{now:%Y%m%d-%H%M%S}"


def create_run_dir(logdir, run_name, reuse=False):
    """Create logdir/run_name; when it exists and `reuse` is False, logdir/run_name-1, -2, ... instead.

    mkdir is atomic: of two runs that pick the same name in the same second, each gets its own folder.
    Raises UserError when the folder cannot be created or its path is not UTF-8 (TensorBoard's is).
    """
    base = Path(logdir) / run_name
    _check_utf8(logdir, "--logdir")
    _check_utf8(run_name, "--run-name")
    for suffix in itertools.count():
        run_dir = base if suffix == 0 else base.with_name(f"{base.name}-{suffix}")
        try:
            run_dir.mkdir(parents=True, exist_ok=reuse)
            return run_dir
        except FileExistsError:
            if reuse:
                raise UserError(f"--run-name: cannot create the run folder {run_dir} (a file of that name "
                                "exists)") from None
        except OSError as exc:
            raise UserError(f"--logdir: cannot create the run folder {run_dir} ({exc.strerror})") from None


def _check_utf8(path, flag):
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{flag}: {os.fsencode(path)!a} is not valid UTF-8, which TensorBoard's folder names "
                        "must be: give a UTF-8 name") from None


def run_folder(config, ctx, checkpoint=None):
    """The run folder this process writes into, held (hold) for the rest of the run; rank 0 chooses it.

    --run-name: logdir/<run-name>, refused while another run holds it. With --resume and no --run-name:
    the checkpoint's own folder when it is a run folder of main.py that may be written (a file main.py
    did not write is never overwritten, and a read-only folder stays untouched even for root); while
    another run holds it, training is refused and -e/-a take a new folder. Otherwise a new folder
    named after the network and the time (create_run_dir).
    """
    run_dir = _choose_run_folder(config, ctx.say, checkpoint) if ctx.is_main else None
    return Path(ctx.broadcast(str(run_dir) if run_dir else None))


def _choose_run_folder(config, say, checkpoint):
    if config.run_name:
        run_dir = create_run_dir(config.logdir, config.run_name, reuse=True)
        if not hold(run_dir):
            raise UserError(f"--run-name {config.run_name}: {run_dir} is in use by another run "
                            f"({holder(run_dir)}); choose another --run-name, or wait for that run to end")
        return run_dir
    if checkpoint is not None and is_own_run_folder(checkpoint):
        folder = checkpoint.path.resolve().parent
        _check_utf8(folder, "--resume")
        if hold(folder):
            return folder
        if not (config.evaluate or config.attack):
            raise UserError(f"--resume: the run in {folder} is still running ({holder(folder)}); stop it first, or "
                            "give --run-name to continue it in a new run folder")
        say(f"note: {folder} is in use by a running run ({holder(folder)}); writing into a new run folder")
    name = make_run_name(config.arch, CONV_OPS[config.use_custom_conv])
    while True:
        run_dir = create_run_dir(config.logdir, name)
        if hold(run_dir):  # a fresh folder another run took between its mkdir and its lock: take the next
            return run_dir


# ---------------------------------------------------------------------------------------------------
# Holding a run folder: one run writes into a folder at a time
# ---------------------------------------------------------------------------------------------------

LOCK_NAME = ".lock"
_HELD = {}  # resolved run folder -> the open lock file through which this process holds it


def hold(run_dir):
    """Take `run_dir`'s lock for this process: True, or False when another process holds it.

    An exclusive fcntl.flock on run_dir/.lock, which holds the holder's pid and command. The kernel
    drops it when the process ends, however it ends, so a crashed or killed run never leaves its folder
    stuck. Re-entrant within a process (--demo trains, then evaluates, in one folder); released by
    release_run_folders (main.py, at its end) or at exit.
    """
    key = Path(run_dir).resolve()
    if key in _HELD:
        return True
    try:
        lock = open(key / LOCK_NAME, "a+", encoding="utf-8", errors="backslashreplace")
    except OSError:
        return True  # a folder that takes no lock file: the run goes on unguarded, as before locks
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return False
    except OSError:  # a file system without flock (some network mounts): unguarded, as before locks
        lock.close()
        return True
    try:  # who holds it, for the message of a run refused; a full disk leaves it empty
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
        lock.flush()
    except OSError:
        pass
    _HELD[key] = lock
    return True


def holder(run_dir):
    """Who holds `run_dir` as its lock file says, e.g. 'pid 4242: code/main.py data ...'."""
    try:
        return (Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8", errors="replace").strip() or "pid unknown"
    except OSError:
        return "pid unknown"


def release_run_folders():
    """Let go of every run folder this process holds."""
    while _HELD:
        _HELD.popitem()[1].close()


def is_own_run_folder(checkpoint):
    """The checkpoint's folder is one main.py made (the checkpoint is ours, args.json beside it) and
    its permission bits allow writing (os.access says yes to root whatever the bits are)."""
    folder = checkpoint.path.resolve().parent
    try:
        writable = bool(folder.stat().st_mode & stat.S_IWUSR) and os.access(folder, os.W_OK)
    except OSError:
        return False
    return checkpoint.kind == "main.py" and (folder / ARGS_NAME).is_file() and writable


def load_metrics(run_dir, epochs_done):
    """metrics.json of an earlier run in this folder, cut to its first `epochs_done` epochs."""
    path = Path(run_dir) / METRICS_NAME
    if epochs_done == 0 or not path.is_file():
        return []
    try:
        return [m for m in json.loads(path.read_text(encoding="utf-8-sig")) if m["epoch"] < epochs_done]
    except (ValueError, KeyError, TypeError):
        return []


# ---------------------------------------------------------------------------------------------------
# The resume policy
# ---------------------------------------------------------------------------------------------------

# What a resumed run keeps from the run it continues unless the flag is given again: dest -> flag.
# The switches among them have a --no-... form (BooleanOptionalAction), to turn one off on resume.
# The memory format is not among them: it changes speed, not what is learned, so a resumed run takes
# the one its machine runs fastest (devices.use_channels_last) unless --[no-]channels-last is given.
RUN_SETTINGS = {
    "data_folder": "data_folder", "arch": "--arch", "use_custom_conv": "--use-custom-conv", "init": "--init",
    "amp": "--amp", "compile": "--compile", "cache": "--cache",
    "batch_size": "-b/--batch-size", "lr": "--lr", "momentum": "--momentum", "weight_decay": "--wd",
    "epochs": "--epochs", "warmup_epochs": "--warmup-epochs", "seed": "--seed", "adv_train": "--adv-train",
    "adv_mode": "--adv-mode", "adv_steps": "--adv-steps",
}


def adopt_run_settings(config, given, checkpoint, say):
    """The configuration that continues `checkpoint`'s run: its stored settings, except where a flag
    gives one again; then the new value is used and said in one line. Only main.py's own checkpoints
    carry our settings (another script's arguments mean something else); arch changes are refused by
    the weights' fit. Raises UserError when --epochs leaves nothing to train."""
    stored = checkpoint.args if checkpoint.kind == "main.py" else None
    if not stored:
        return config
    adopted = {}
    for dest, flag in RUN_SETTINGS.items():
        if dest not in stored or stored[dest] is None:
            continue
        if dest not in given:
            adopted[dest] = stored[dest]
        elif getattr(config, dest) != stored[dest] and dest != "arch":
            if dest == "epochs" and config.epochs <= checkpoint.epoch:
                raise UserError(f"--resume: {checkpoint.path} already finished epoch {checkpoint.epoch} of "
                                f"--epochs {config.epochs}")
            say(_changed_setting_note(dest, flag, stored[dest], getattr(config, dest)))
    return config.replace(**adopted)


def _changed_setting_note(dest, flag, old, new):
    if dest == "amp" and new:
        return "note: --amp switches mixed precision on for the rest of the run, with a fresh GradScaler"
    if dest == "amp":
        return "note: the run trained with --amp; it continues in full precision"
    if isinstance(new, bool):
        return f"note: {flag} is {'on' if new else 'off'} from here on (the run started with it {'on' if old else 'off'})"
    return f"note: {flag} {new} replaces the run's {old} from here on"


def memory_format_note(config, given, ctx, checkpoint):
    """A line when a resumed run continues in another memory format than it trained in, else None."""
    stored = checkpoint.args if checkpoint is not None and checkpoint.kind == "main.py" else None
    before = stored.get("channels_last") if stored else None
    if "channels_last" in given or before is None or before == config.channels_last:
        return None
    was, flag = ("NHWC", "--channels-last") if before else ("NCHW", "--no-channels-last")
    now = "NHWC" if config.channels_last else "NCHW"
    return f"note: the run trained in {was}; it continues in {now}, the default on {ctx.device.type} ({flag} keeps the run's)"


def write_args(settings, run_dir):
    """run_dir/args.json: the run's resolved settings (a dict of plain values)."""
    files.write_json(settings, Path(run_dir) / ARGS_NAME)


def write_metrics(metrics, run_dir):
    """run_dir/metrics.json: one record per validated epoch."""
    files.write_json(metrics, Path(run_dir) / METRICS_NAME)
