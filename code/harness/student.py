"""The seam between the harness and the student's file, `code/student_code.py`, as in the 2019 course.

The harness reads only the names of the 2019 interface from the student's file:

    CustomConv2DFunction, custom_conv2d, CustomConv2d     Part I   (test_conv.py, --use-custom-conv)
    default_model and the network classes of --arch       Part II  (models.py maps names to classes)
    PGDAttack, GradAttention, vis_grad_attention,         Part III (-a, -e -v)
    default_attack, default_attention, default_visfunction
and, when the file offers them, `get_train_transforms(normalize)` (Fall 2019) and
`adversarial_training_batch` (--adv-train; the harness has its own otherwise). Everything else (the
network registry, checkpoints, the model-size limit) belongs to the harness, so any student's file
written to that interface runs here, and ours runs in the 2019 harness.

Whatever goes wrong on the student's side becomes a StudentCodeError: one line naming the file, the
line and the exception, e.g.
    code/student_code.py:41 in __init__: AssertionError: Torch not compiled with CUDA enabled
"""
import atexit
import contextlib
import importlib
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import torch

from .cli import EXIT_STUDENT_CODE, UserError

MODULE_NAME = "student_code"
FILE_NAME = f"{MODULE_NAME}.py"


# What the student's code may raise: anything, sys.exit() included. SystemExit is no Exception, so a
# sys.exit(0) in a forward would otherwise end a run "successfully" (exit 0) having done nothing.
# (os._exit cannot be caught: it ends the process at once.)
RAISES = (Exception, SystemExit)
_COPIED_FROM = {}  # a temporary student_code.py (use_file) -> the file it copies
_RESTORED = set()  # the student's functions after which model_kept had to restore the model


class StudentCodeError(UserError):
    """The student's file could not be imported, lacks a name, or raised inside its own code."""

    exit_code = EXIT_STUDENT_CODE


def load():
    """The student_code module (imported once); StudentCodeError when importing it fails."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    try:
        return importlib.import_module(MODULE_NAME)
    except SystemExit as exc:  # sys.exit() at the file's top level would end the harness silently
        raise StudentCodeError(f"cannot import {FILE_NAME}: it called sys.exit({exc.code!r})") from None
    except Exception as exc:  # the student's file may raise anything while it is imported
        raise StudentCodeError(f"cannot import {FILE_NAME}: {describe(exc)}") from None


def use_file(path):
    """Make load() import the student's file at `path` instead of code/student_code.py: its folder goes
    first on sys.path, so modules of its own beside it import too. A file of another name (a download
    saved as 'student_code (1).py') is copied as student_code.py into a temporary folder put first.
    Call it before anything loads the student's file. Raises UserError for a path that is no file."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{path}: no such file (give the student's student_code.py)")
    if MODULE_NAME in sys.modules:
        raise RuntimeError(f"{MODULE_NAME} is already imported from {sys.modules[MODULE_NAME].__file__}")
    sys.path.insert(0, str(path.parent))
    if path.name != FILE_NAME:
        folder = Path(tempfile.mkdtemp(prefix="student-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # nothing left behind in the temp folder
        shutil.copyfile(path, folder / FILE_NAME)
        _COPIED_FROM[str((folder / FILE_NAME).resolve())] = str(path)  # messages name the student's file
        sys.path.insert(0, str(folder))
    return path


def get(name, needed_for):
    """student_code.<name>, or one line saying that the file defines no `name` (needed for ...)."""
    module = load()
    if not hasattr(module, name):
        raise StudentCodeError(f"{_file_of(module)} defines no {name} (needed for {needed_for})")
    return getattr(module, name)


def optional(name):
    """student_code.<name>, or None when the file does not define it."""
    return getattr(load(), name, None)


@contextlib.contextmanager
def model_kept(model, what):
    """Around a call into the student's `what` (e.g. 'PGDAttack.perturb') with `model`: afterwards each
    module's train/eval mode and each parameter's requires_grad are as they were before, whatever the
    student's code did (a perturb that calls model.eval() or freezes the weights would otherwise leave
    training in eval mode, or fail with "element 0 of tensors does not require grad"). Says so once per
    `what`, on stderr, when it had to restore something."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        yield
    finally:
        changed = []
        if any(module.training != training for module, training in modes):
            changed.append("train/eval mode")
        if any(param.requires_grad != flag for param, flag in flags):
            changed.append("requires_grad")
        for module, training in modes:
            module.training = training
        for param, flag in flags:
            param.requires_grad_(flag)
        if changed and what not in _RESTORED:
            _RESTORED.add(what)
            print(f"note: {FILE_NAME}'s {what} changed the model's {' and '.join(changed)}; the harness "
                  "restored it (and does so after every call)", file=sys.stderr, flush=True)


def expect_images_like(result, images, what):
    """Refuse, in one line, a student's function that should return a batch like `images` (a perturbed
    batch) but returned something else: None, a tuple, another shape."""
    if isinstance(result, torch.Tensor) and result.shape == images.shape:
        return result
    got = f"a tensor of shape {tuple(result.shape)}" if isinstance(result, torch.Tensor) \
        else f"a {type(result).__name__}"
    raise StudentCodeError(f"{FILE_NAME}'s {what} returned {got}, not a batch of images shaped like its "
                           f"input {tuple(images.shape)}")


def expect_saliency_for(result, images, what):
    """Refuse, in one line, a saliency map that is not a tensor of shape (N, 1, H, W) for `images`
    (N, 3, H, W): None from an unfinished explain, (N, H, W), (N, 3, H, W) ..."""
    expected = (images.shape[0], 1, *images.shape[2:])
    if isinstance(result, torch.Tensor) and result.shape == expected:
        return result
    got = f"a tensor of shape {tuple(result.shape)}" if isinstance(result, torch.Tensor) \
        else f"a {type(result).__name__}"
    raise StudentCodeError(f"{FILE_NAME}'s {what} returned {got}, not a saliency map of shape {expected}")


def _shown_as(filename, default):
    """How messages name the file at `filename`: the student's own path when it is a copy that
    use_file made, else `default`."""
    return _COPIED_FROM.get(str(Path(filename).resolve()), default)


def _file_of(module):
    path = Path(getattr(module, "__file__", FILE_NAME))
    return _shown_as(path, f"{path.parent.name}/{path.name}" if path.parent.name else path.name)


def student_frame(exc):
    """The innermost traceback frame of `exc` that lies in student_code.py, or None."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if Path(frame.filename).name == FILE_NAME]
    return frames[-1] if frames else None


def raised_in_student_code(exc):
    """True when `exc` was raised from code in student_code.py (or while importing it), or by autograd
    about what a backward of the file returned (autograd_function_of)."""
    return student_frame(exc) is not None or autograd_function_of(exc) is not None or (
        isinstance(exc, SyntaxError) and Path(exc.filename or "").name == FILE_NAME)


def autograd_function_of(exc):
    """The name of the student's autograd Function that `exc` blames, or None.

    Autograd checks what a Function's backward returned (how many gradients, their shapes) after it has
    returned, so the error's traceback holds no frame of the student's file; its message names the
    Function's backward node, e.g. 'function CustomConv2DFunctionBackward returned an incorrect number
    of gradients (expected 5, got 3)'.
    """
    module = sys.modules.get(MODULE_NAME)
    if module is None or not isinstance(exc, RuntimeError):
        return None
    message = str(exc)
    for name, value in vars(module).items():
        if (isinstance(value, type) and issubclass(value, torch.autograd.Function)
                and value is not torch.autograd.Function and re.search(rf"\b{name}Backward\b", message)):
            return name
    return None


def as_user_error(exc):
    """A StudentCodeError (one line, exit 4) for `exc` when the student's code raised it, else None."""
    if isinstance(exc, RAISES) and not isinstance(exc, UserError) and raised_in_student_code(exc):
        return StudentCodeError(f"{describe(exc)} (an error in the student's code)")
    return None


def describe(exc):
    """One line: where in student_code.py `exc` came from, its type and the first line of its message."""
    message = (str(exc).strip().splitlines() or [""])[0][:200]
    what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, SystemExit):
        what = f"it called sys.exit({exc.code!r})"
    if isinstance(exc, SyntaxError) and Path(exc.filename or "").name == FILE_NAME:
        return f"{_shown_as(exc.filename, FILE_NAME)}:{exc.lineno}: SyntaxError: {exc.msg}"
    frame = student_frame(exc)
    function = autograd_function_of(exc) if frame is None else None
    if function is not None:
        return f"{_file_of(sys.modules[MODULE_NAME])}: {function}.backward: {what}"
    if frame is None:
        return what
    where = _shown_as(frame.filename, f"{Path(frame.filename).parent.name}/{FILE_NAME}")
    return f"{where}:{frame.lineno} in {frame.name}: {what}"
