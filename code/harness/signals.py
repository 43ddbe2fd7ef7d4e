"""Stopping on a signal: Ctrl-C (SIGINT), SIGTERM (a preemptible VM's notice, `docker stop`, a
scheduler's cancel, torchrun passing one on) and SIGHUP (the terminal closed) all end a script the same
way: an `Interrupted` exception that unwinds the run (DataLoader workers are shut down, open writers
closed, no half-written file left), one line saying what was kept, and exit code 128 + the signal's
number, as a shell reports a process killed by it (130, 143, 129).

    with signals.handled():
        ...                      # any work; DeviceLoader calls signals.check() at every batch
    except signals.Interrupted as stop: return stop.exit_code

A signal can arrive where Python cannot raise: inside the at-fork hooks that run while DataLoader
workers start, the exception is printed as "Exception ignored in: <function _releaseLock>" and dropped,
and the run went on. The handler therefore also remembers the signal, and `check()` raises it again at
the next batch; the dropped copy is not printed (sys.unraisablehook).
"""
import contextlib
import os
import signal
import sys
import threading

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)

_received = None  # the first signal received while handled() is active, or None
_owner_pid = None  # the process that installed the handlers (forked DataLoader workers inherit them)


class Interrupted(KeyboardInterrupt):
    """A signal stopped the script. `kept` is the sentence a layer that knows adds (training: which
    checkpoint holds which epochs and the command that continues it)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum
        self.kept = None

    @property
    def name(self):
        return signal.Signals(self.signum).name

    @property
    def exit_code(self):
        return 128 + self.signum


def _handler(signum, frame):
    global _received
    if os.getpid() != _owner_pid:
        # A DataLoader worker: the main process shuts it down as it unwinds (Ctrl-C reaches the whole
        # process group; a worker that died first would turn it into "worker killed by signal").
        return
    if _received is not None:
        return  # a second signal while the first one's exception unwinds: it stops within seconds anyway
    _received = signum
    raise Interrupted(signum)


def _unraisable(hook):
    def quiet(info):
        if not isinstance(info.exc_value, Interrupted):  # an Interrupted dropped here: check() raises it again
            hook(info)
    return quiet


@contextlib.contextmanager
def handled():
    """Turn SIGINT, SIGTERM and SIGHUP into Interrupted inside the block (main thread only); the
    previous handlers come back after it."""
    global _received, _owner_pid
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    _received, _owner_pid = None, os.getpid()
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        sys.unraisablehook = previous_hook
        _received, _owner_pid = None, None


def check():
    """Raise Interrupted when a signal was received but its exception got lost on the way."""
    if _received is not None and os.getpid() == _owner_pid:
        raise Interrupted(_received)


def message(stop):
    """The one line for an Interrupted: the signal and what was kept."""
    return f"interrupted by {stop.name}: {stop.kept or 'nothing was written'}"
