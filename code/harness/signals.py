"""Stopping on a signal: Ctrl-C (SIGINT), SIGTERM (a preemptible VM's notice, `docker stop`, a
scheduler's cancel, torchrun passing one on) and SIGHUP (the terminal closed) all end a script the same
way: an `Interrupted` exception that unwinds the run (DataLoader workers are shut down, open writers
closed, no half-written file left), one line saying what was kept, and exit code 128 + the signal's
number, as a shell reports a process killed by it (130, 143, 129).

    with signals.handled():
        ...                      # any work; DeviceLoader calls signals.check() at every batch
    except signals.Interrupted as stop: return stop.exit_code

Where the loops run (`deferred()`: training's epochs, validation, the attack, predict.py), a signal
only marks itself and `check()` raises it at the next batch: an exception raised from a handler in
the middle of a queue operation or a TensorBoard write can leave a lock held or a counter wrong, and
the shutdown then hangs. A second signal there raises at once. Elsewhere the handler raises at once;
where Python cannot raise (inside the at-fork hooks that run while DataLoader workers start, the
exception is printed as "Exception ignored in: <function _releaseLock>" and dropped) the signal is
remembered and `check()` raises it again; the dropped copy is not printed (sys.unraisablehook).
"""
import contextlib
import os
import signal
import sys
import threading

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)

_received = None  # the first signal received while handled() is active, or None
_raised = False  # whether an Interrupted for it has been raised
_deferring = 0  # depth of deferred() blocks: there, the first signal waits for check()
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
    if _received is None:
        _received = signum
        if not _deferring:
            _raise()
        # os.write, not print: a handler may run in the middle of the main thread's own print.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after this batch (again to stop at once)\n".encode())
    elif _deferring and not _raised:
        _raise()  # asked twice before the next batch: stop now
    # else: a second signal while the first one's exception unwinds; it ends within seconds anyway


def _raise():
    global _raised
    _raised = True
    raise Interrupted(_received)


def _unraisable(hook):
    def quiet(info):
        if not isinstance(info.exc_value, Interrupted):  # an Interrupted dropped here: check() raises it again
            hook(info)
    return quiet


@contextlib.contextmanager
def handled():
    """Turn SIGINT, SIGTERM and SIGHUP into Interrupted inside the block (main thread only); the
    previous handlers come back after it."""
    global _received, _raised, _owner_pid
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    _received, _raised, _owner_pid = None, False, os.getpid()
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        sys.unraisablehook = previous_hook
        _received, _raised, _owner_pid = None, False, None


@contextlib.contextmanager
def deferred():
    """Inside, the first signal waits for check() (a loop calls it at every batch) instead of raising
    wherever the main thread happens to be."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def during_startup():
    """Until handled() takes over: a signal while a script imports torch (seconds) ends it with one
    line and 128 + N, instead of a KeyboardInterrupt traceback (SIGINT) or no word at all (SIGTERM)."""
    def stop(signum, frame):
        os.write(2, f"interrupted by {signal.Signals(signum).name} while starting: nothing was written\n".encode())
        os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, stop)


def check():
    """Raise Interrupted when a signal was received: one deferred to this point, or one whose exception
    got lost on the way."""
    if _received is not None and os.getpid() == _owner_pid:
        _raise()


def message(stop):
    """The one line for an Interrupted: the signal and what was kept."""
    return f"interrupted by {stop.name}: {stop.kept or 'nothing was written'}"
