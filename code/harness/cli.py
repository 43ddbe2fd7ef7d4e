"""User errors as one line and the exit codes every script shares.

    return cli.run(body, argv)    # a script's main(): body(argv) with one line and an exit code for
                                  # every way it can end (signals.handled() around it)
"""
import argparse
import errno
import re
import shutil
import signal
import sys
from pathlib import Path

from . import signals

EXIT_USER_ERROR = 2  # a flag, a file or a line of the user's input
EXIT_DIVERGED = 3  # training stopped on a non-finite loss or weights
EXIT_STUDENT_CODE = 4  # the student's code raised, or lacks a name of the interface
EXIT_DISK_FULL = 5  # a file did not fit on its disk (the previous version of it is intact)
EXIT_OUT_OF_MEMORY = 6  # the CPU's or the GPU's memory ran out
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C; a signal N exits 128 + N (SIGTERM 143, SIGHUP 129)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

_WORKER_LAST_LINE = re.compile(r"DataError: (.*)$")


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a flag).

    Scripts catch it and print its message as one line (print_user_error), with a non-zero exit
    (`exit_code`, which subclasses set), instead of a traceback.
    """

    exit_code = EXIT_USER_ERROR


class DiskFull(UserError):
    """A file did not fit on its disk: the message names it and how much it needed."""

    exit_code = EXIT_DISK_FULL


class OutOfMemory(UserError):
    """The CPU's or the GPU's memory ran out: the message names the batch size and what to try."""

    exit_code = EXIT_OUT_OF_MEMORY


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UserError (one line, exit code 2) instead of printing the usage block."""

    def error(self, message):
        raise UserError(message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' except where X is None or a switch's False (their help says it)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def print_user_error(exc):
    """The one line every script prints for a UserError, on stderr."""
    print(f"error: {exc}", file=sys.stderr, flush=True)


class EveryRankError(UserError):
    """An error every process of a torchrun raises alike (a flag against the run's context, a diverged
    run): only rank 0 prints it."""


class DataError(UserError):
    """A problem with the dataset on disk, as one line naming the file (and line number).

    When a DataLoader worker fails, PyTorch re-raises the error in the main process as
    `DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback ...")`;
    the constructor keeps only the original one-line message (the full text stays in `.details`).
    """

    def __init__(self, message):
        message = str(message)
        self.details = message
        if message.startswith("Caught DataError") and "Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            found = _WORKER_LAST_LINE.search(last)
            message = found.group(1) if found else last
        super().__init__(message)


def is_out_of_memory(exc):
    """An allocation failure: Python's MemoryError, torch's CPU allocator ("DefaultCPUAllocator: can't
    allocate memory") or CUDA's OutOfMemoryError (a RuntimeError: "CUDA out of memory")."""
    if isinstance(exc, MemoryError):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in message or "out of memory" in message)


def out_of_memory(exc, doing, advice):
    """The OutOfMemory to raise for `exc` while `doing` (e.g. "training with -b 256 on cuda:0")."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first.split(". ")[0] if len(first) > 120 else first
    return OutOfMemory(f"out of memory while {doing} ({first}): {advice}")


def disk_full(path, needed=None):
    """The DiskFull for a write of `needed` bytes (None when unknown) to `path` that did not fit."""
    folder = Path(path).parent
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"{_size(needed)} needed, " if needed is not None else ""
    return DiskFull(f"cannot write {path}: the disk is full ({need}{free} in {folder}); free some space "
                    "and run again (any earlier version of the file is intact)")


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def exit_code_for(exc, quiet=False):
    """Print the one line for `exc`, an exception that ends a script, on stderr (not when `quiet`: the
    ranks of a torchrun that stay silent) and return the exit code; None when `exc` is nothing the user
    can act on (a bug of ours: the caller re-raises it, traceback and all)."""
    if isinstance(exc, KeyboardInterrupt):
        stop = exc if isinstance(exc, signals.Interrupted) else signals.Interrupted(signal.SIGINT)
        line, code = signals.message(stop), stop.exit_code
    else:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            exc = disk_full(exc.filename) if exc.filename else DiskFull("the disk is full: free some space and run "
                                                                        "again")
        elif is_out_of_memory(exc):
            exc = out_of_memory(exc, "running", "close other programs, or use a smaller batch (-b)")
        if not isinstance(exc, UserError):
            return None
        line, code = f"error: {exc}", exc.exit_code
    if not quiet:
        print(line, file=sys.stderr, flush=True)
    return code


def run(body, argv=None, translate=None):
    """A script's main: body(argv) inside signals.handled(); returns its exit code (body's, 0 when it
    returns None, or what exit_code_for says); our own bugs keep their traceback.

    translate(exc) -> a UserError to report instead, or None: what only the script knows (the student's
    code raised: student.as_user_error; out of memory at which batch size).
    """
    safe_streams()
    with signals.handled():
        try:
            code = body(argv)
            signals.check()  # a signal whose exception was dropped still ends the script as one
            return code or 0
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # SystemExit: the student's sys.exit
            code = exit_code_for((translate and translate(exc)) or exc)
            if code is None:
                raise
            return code


def safe_streams():
    """Let stdout and stderr print any path: bytes that are not UTF-8 (held by Python as surrogates)
    come out escaped instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def one_line(error):
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__
