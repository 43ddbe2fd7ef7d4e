"""Checkpoints: writing ours safely, and reading every kind users have.

Written by main.py (`training_state` makes the dict, `save` writes it to a temporary file renamed into place):
    {epoch, arch, conv_op, num_classes, classes, state_dict, best_acc1, optimizer, scaler, rng, args,
     validated, pending_record}
where `epoch` counts finished epochs, `validated` says whether that epoch's validation ran, and
`pending_record` holds the epoch's training metrics until it has.
Never with non-finite weights or optimizer state (`NonFiniteError`).

Read (`read`), always on the CPU and with torch.load(weights_only=True):
  * ours;
  * the 2019 harness's: {epoch, model_arch, state_dict, best_acc1 (a 0-d tensor), optimizer}, model_best
    without the optimizer, often saved on a GPU and in the pre-1.6 serialization. Its model_arch is always
    'simplenet', whatever the network, so it is kept only as a hint (see models.find_fitting_arch);
  * other training scripts' dicts ('state_dict', 'model_state_dict' or 'model'), which may hold
    argparse.Namespace arguments or NumPy scalars and arrays: allowed on top of torch's own allowlist
    (SAFE_GLOBALS), while anything that would run code stays refused;
  * a bare state_dict;
  * any of these as the one checkpoint inside a zip, tar (.tar.gz, .tgz, ...) or gzip/bzip2/xz file
    (archives.unpacked), read in memory or from a temporary file removed afterwards.
State-dict keys lose the `module.` (DataParallel, DistributedDataParallel) and `_orig_mod.`
(torch.compile) prefixes. Every problem is a CheckpointError: one line naming the flag and the file.
"""
import argparse
import io
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cli import UserError
from . import archives, files

CHECKPOINT_NAME = "checkpoint.pth.tar"
BEST_NAME = "model_best.pth.tar"
# What only a resumed training run needs; a challenge model keeps the rest.
TRAINING_ONLY_KEYS = ("optimizer", "scaler", "rng")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


class CheckpointError(UserError):
    """A checkpoint file that is missing, unreadable, of no known kind, or does not fit the model."""


class NonFiniteError(CheckpointError):
    """Weights or optimizer state holding NaN or inf."""


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _numpy_safe_globals():
    """NumPy scalars, dtypes and numeric arrays, under the module names of NumPy 2 and of NumPy 1 pickles."""
    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    _reconstruct, scalar = multiarray.multiarray._reconstruct, multiarray.multiarray.scalar
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    aliases = [(obj, f"{module}.multiarray.{obj.__name__}") for obj in (scalar, _reconstruct)
               for module in ("numpy.core", "numpy._core")]
    return [*aliases, np.ndarray, np.dtype, *dtype_classes]


# Plain data that other training scripts pickle into checkpoints. None of them runs code when unpickled:
# Namespace only receives a __dict__, and object arrays rebuild their items through the same restricted
# unpickler. Anything else (a model object, a function) is still refused.
SAFE_GLOBALS = [argparse.Namespace, *_numpy_safe_globals()]


def load_file(path, flag="--resume"):
    """torch.load of `path` on the CPU with weights_only=True and SAFE_GLOBALS allowed; of the one
    checkpoint inside when `path` is an archive (archives.unpacked: zip, tar, gzip, ...).

    Raises CheckpointError naming `flag` and the file when it is missing or unreadable, or an archive
    holding no checkpoint or several.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{flag}: {path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{flag}: no checkpoint file at {path}")
    try:
        with archives.unpacked(path, flag) as (source, member):
            return _load(source, f"{path} ({member} inside)" if member else path, flag)
    except archives.ArchiveError as exc:
        raise CheckpointError(str(exc)) from None


def _load(source, shown, flag):
    """torch.load of a path or binary file; CheckpointError naming `shown` when it fails."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        if "Weights only load failed" in str(exc):
            # torch's message here is a page of advice about pickles; the gist fits in one line.
            reason = "not a torch checkpoint, or it holds objects other than tensors and plain data"
        else:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            reason = first_line.split(". ")[0][:120]
        raise CheckpointError(f"{flag}: {shown} is not a readable checkpoint ({reason})") from None


@dataclass
class Checkpoint:
    """A checkpoint of any kind, normalized. `arch` is None unless the file names its network
    reliably; `arch_hint` is what an unreliable file says (the 2019 harness's model_arch)."""

    path: Path
    kind: str  # "main.py", "2019 harness", "training script" or "state_dict"
    state_dict: dict
    arch: str = None
    arch_hint: str = None
    conv_op: str = None
    epoch: int = 0
    best_acc1: float = 0.0
    optimizer: dict = None
    scaler: dict = None
    rng: dict = None
    args: dict = None
    num_classes: int = None
    classes: list = None
    validated: bool = True
    pending_record: dict = None  # the training half of the metrics record of an epoch not yet validated
    extra_keys: list = field(default_factory=list)

    def lacks(self):
        """What a training resume would miss, e.g. ['optimizer state', 'RNG states']; another script's
        arguments are not main.py's, so only main.py's checkpoints have 'arguments'."""
        missing = [("optimizer", "optimizer state"), ("scaler", "GradScaler state"), ("rng", "RNG states")]
        lacking = [label for name, label in missing if getattr(self, name) is None]
        if self.kind != "main.py" or not self.args:
            lacking.append("arguments")
        return lacking


def read(path, flag="--resume"):
    """The Checkpoint in `path`; CheckpointError (one line) when it is no checkpoint of a known kind."""
    path = Path(path)
    raw = load_file(path, flag)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{flag}: {path} holds a {type(raw).__name__}, not a checkpoint dict")
    if _is_state_dict(raw):
        state_dict = strip_wrapper_prefixes(raw)
        return Checkpoint(path, "state_dict", state_dict, num_classes=classifier_outputs(state_dict))
    key = next((k for k in STATE_DICT_KEYS if isinstance(raw.get(k), dict) and _is_state_dict(raw[k])), None)
    if key is None:
        raise CheckpointError(f"{flag}: {path} is not a checkpoint (no state_dict of tensors among its keys: "
                              f"{', '.join(map(str, list(raw)[:8]))})")
    checkpoint = Checkpoint(path, _kind(raw), strip_wrapper_prefixes(raw[key]))
    checkpoint.epoch = _as_int(raw.get("epoch", 0), "epoch", path, flag)
    if checkpoint.epoch < 0:
        raise CheckpointError(f"{flag}: {path}: 'epoch' is {checkpoint.epoch}; it counts finished epochs, so "
                              "it cannot be negative")
    checkpoint.best_acc1 = _as_float(raw.get("best_acc1", raw.get("best_acc", 0.0)), "best_acc1", path, flag)
    checkpoint.optimizer = _optional_dict(raw, ("optimizer", "optimizer_state_dict"))
    checkpoint.scaler = _optional_dict(raw, ("scaler",))
    checkpoint.rng = _optional_dict(raw, ("rng",))
    checkpoint.args = _arguments(raw.get("args"))
    checkpoint.conv_op = raw.get("conv_op")
    checkpoint.validated = bool(raw.get("validated", True))
    checkpoint.pending_record = raw.get("pending_record") if isinstance(raw.get("pending_record"), dict) else None
    if checkpoint.kind == "main.py":
        checkpoint.arch = raw["arch"]
    else:
        checkpoint.arch_hint = raw.get("model_arch", raw.get("arch"))
    classes = raw.get("classes")
    checkpoint.classes = list(classes) if isinstance(classes, (list, tuple)) else None
    checkpoint.num_classes = raw.get("num_classes") or classifier_outputs(checkpoint.state_dict)
    checkpoint.extra_keys = [k for k in raw if k not in {key, *Checkpoint.__dataclass_fields__}]
    return checkpoint


def read_finite(path, flag="--resume"):
    """read(path), refused in one line (NonFiniteError) when its weights are not finite: the checkpoint
    a run continues, evaluates, attacks or hands in."""
    checkpoint = read(path, flag)
    check_finite(checkpoint, flag)
    return checkpoint


def _is_state_dict(value):
    return bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _kind(raw):
    if "arch" in raw and "state_dict" in raw and "args" in raw:
        return "main.py"
    if "model_arch" in raw:
        return "2019 harness"
    return "training script"


def _as_int(value, name, path, flag):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{flag}: {path}: '{name}' is {value!r}, not a number") from None


def _as_float(value, name, path, flag):
    try:
        return float(value)  # 0-d tensors (the 2019 harness's best_acc1) and NumPy scalars too
    except (TypeError, ValueError, RuntimeError):
        raise CheckpointError(f"{flag}: {path}: '{name}' is {value!r}, not a number") from None


def _optional_dict(raw, keys):
    return next((raw[k] for k in keys if isinstance(raw.get(k), dict)), None)


def _arguments(args):
    """A checkpoint's arguments as a dict (argparse.Namespace from other scripts too), or None."""
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return args if isinstance(args, dict) else None


def strip_wrapper_prefixes(state_dict):
    """Drop `module.` and `_orig_mod.` prefixes (in any nesting) shared by every key."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state_dict and all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
                changed = True
    return dict(state_dict)


def classifier_outputs(state_dict):
    """Rows of the last 2-D weight of a state_dict (the classifier's classes), or None."""
    weights = [t for k, t in state_dict.items() if k.endswith("weight") and t.dim() == 2]
    return int(weights[-1].shape[0]) if weights else None


# ---------------------------------------------------------------------------------------------------
# Fitting weights to a model
# ---------------------------------------------------------------------------------------------------


def mismatches(model, state_dict):
    """Up to everything that stops a strict load: ['missing a.b', 'unexpected c', 'd is (3, 4), not (4, 4)']."""
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in expected]
    problems += [f"{k} is {tuple(state_dict[k].shape)}, not {tuple(t.shape)}" for k, t in expected.items()
                 if k in state_dict and state_dict[k].shape != t.shape]
    return problems


def fits(model, state_dict):
    return not mismatches(model, state_dict)


def summarize(problems, limit=5):
    """The first `limit` problems on one line, and how many more there are."""
    text = "; ".join(problems[:limit])
    return text + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


def load_weights(model, checkpoint, flag="--resume"):
    """Load checkpoint.state_dict strictly; CheckpointError listing up to five mismatches otherwise."""
    problems = mismatches(model, checkpoint.state_dict)
    if problems:
        raise CheckpointError(f"{flag}: the weights in {checkpoint.path} do not fit {type(model).__name__} "
                              f"({summarize(problems)})")
    model.load_state_dict(checkpoint.state_dict)


# ---------------------------------------------------------------------------------------------------
# Finite values
# ---------------------------------------------------------------------------------------------------


def nonfinite_entries(tree, prefix=""):
    """Names of the floating-point tensors inside a (nested) dict or list that hold NaN or inf."""
    if isinstance(tree, torch.Tensor):
        return [prefix or "tensor"] if tree.is_floating_point() and not torch.isfinite(tree).all() else []
    if isinstance(tree, float):
        return [prefix] if not math.isfinite(tree) else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    found = []
    for key, value in items:
        found += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def check_finite(checkpoint, flag="--resume"):
    """Refuse a checkpoint whose weights are not finite (it would score 0% and train on NaN)."""
    bad = nonfinite_entries(checkpoint.state_dict)
    if bad:
        raise NonFiniteError(f"{flag}: the weights in {checkpoint.path} are not finite (NaN or inf in "
                             f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}): the run that wrote it "
                             "had diverged")


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def training_state(*, epoch, arch, conv_op, classes, model, optimizer, scaler, best_acc1, rng_state, args,
                   pending_record=None):
    """The resumable dict main.py writes after `epoch` finished epochs (the keys `read` reads back).

    `pending_record` is the epoch's training metrics while its validation has not run (the checkpoint
    is written before validation, so a crash there loses no training); None once validated.
    """
    return {
        "epoch": epoch, "arch": arch, "conv_op": conv_op, "num_classes": len(classes), "classes": list(classes),
        "state_dict": model.state_dict(), "best_acc1": best_acc1, "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "rng": rng_state, "args": args, "validated": pending_record is None,
        "pending_record": pending_record,
    }


def save(state, run_dir, is_best=False):
    """Write `state` to run_dir/checkpoint.pth.tar atomically, and copy it to model_best.pth.tar if `is_best`.

    Raises NonFiniteError, writing nothing, when the weights or the optimizer state are not finite:
    the files on disk keep the last good epoch.
    """
    bad = nonfinite_entries(state["state_dict"]) + nonfinite_entries(state.get("optimizer", {}).get("state", {}))
    if bad:
        raise NonFiniteError(f"not writing a checkpoint of epoch {state.get('epoch')}: NaN or inf in "
                             f"{', '.join(bad[:3])}; {Path(run_dir) / CHECKPOINT_NAME} keeps the last finite one")
    run_dir = Path(run_dir)
    last = run_dir / CHECKPOINT_NAME
    # Serialized first, so that its size is checked against the free space before anything is written
    # (torch.save into a file on a full disk fails with "unexpected pos", not "no space left").
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files.write_bytes(last, buffer.getbuffer())
    if is_best:
        copy_to_best(run_dir)
    return last


def copy_to_best(run_dir):
    """model_best.pth.tar := checkpoint.pth.tar, atomically."""
    run_dir = Path(run_dir)
    source = run_dir / CHECKPOINT_NAME
    with open(source, "rb") as src:
        files.atomic_write(run_dir / BEST_NAME, lambda f: shutil.copyfileobj(src, f), size=source.stat().st_size)


def model_only(checkpoint, arch):
    """Our checkpoint format without the training-only states: what a challenge submission hands in."""
    return {"epoch": checkpoint.epoch, "arch": arch, "conv_op": checkpoint.conv_op or "Conv2d",
            "num_classes": checkpoint.num_classes, "classes": checkpoint.classes,
            "state_dict": checkpoint.state_dict, "best_acc1": checkpoint.best_acc1,
            "args": checkpoint.args or {}, "validated": checkpoint.validated}
