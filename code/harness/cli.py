"""User errors as one line and the exit codes every script shares."""
import argparse
import re
import sys

EXIT_USER_ERROR = 2  # a flag, a file or a line of the user's input
EXIT_DIVERGED = 3  # training stopped on a non-finite loss or weights
EXIT_STUDENT_CODE = 4  # the student's code raised, or lacks a name of the interface
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it

_WORKER_LAST_LINE = re.compile(r"DataError: (.*)$")


class UserError(Exception):
    """A mistake in the user's input (a file, a line, a flag).

    Scripts catch it and print its message as one line (print_user_error), with a non-zero exit,
    instead of a traceback.
    """


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


def one_line(error):
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__
