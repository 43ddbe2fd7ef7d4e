"""What the tests share besides fixtures (those are in conftest.py): the tiny demo dataset, main.py run
in this process or in its own, and the command line of a short training run on the CPU.

pytest's default import mode puts `tests/` (no __init__.py) on sys.path, so test files say
`from helpers import run_main, train_argv`.
"""
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import custom_dataloader
import custom_transforms
from harness import demo_data, models

REPO_ROOT = Path(__file__).resolve().parent.parent
MAIN_PY = REPO_ROOT / "code" / "main.py"


def make_tiny_dataset(root, train_per_class=2, val_per_class=1, test_count=2):
    """demo_data's 128x128 scenes of 10 classes, seed 0, written to `root`; returns it.

    The test images are drawn after the train and val ones, so datasets that differ only in
    `test_count` share their train and val images.
    """
    return demo_data.make_demo_dataset(root, seed=0, train_per_class=train_per_class, val_per_class=val_per_class,
                                       test_count=test_count)


def train_argv(data, logdir, run_name=None, *extra, epochs=1, batch_size=4, lr=None, warmup_epochs=None,
               print_freq=None, seed=0, gpu=-1):
    """main.py's command line (strings) for a short seeded run on the CPU (--gpu -1) with no loader workers.

    run_name, lr, warmup_epochs, print_freq and gpu left at None are not given (main.py's defaults);
    `extra` arguments go last.
    """
    argv = [data, "--epochs", epochs, "-b", batch_size, "-j", 0, "--seed", seed, "--logdir", logdir]
    for flag, value in (("--gpu", gpu), ("--lr", lr), ("--warmup-epochs", warmup_epochs), ("-p", print_freq),
                        ("--run-name", run_name)):
        if value is not None:
            argv += [flag, value]
    return [str(a) for a in (*argv, *extra)]


def run_main(argv, capsys):
    """(exit code, stdout, stderr) of main.main(argv) in this process; `argv` may hold Paths and numbers."""
    # Imported here, not at the top: conftest.py imports this module, and a broken main.py should fail
    # the tests that run it, not every test's collection.
    import main

    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_python(*args, cwd=None, env=None, timeout=300):
    """(exit code, stdout, stderr) of `python args` in its own process (environment: ours unless `env`)."""
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                            cwd=cwd, env=env)
    return result.returncode, result.stdout, result.stderr


def run_torchrun(argv, nproc=2, timeout=300):
    """(exit code, stdout, stderr) of main.py under torchrun: `nproc` processes of one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", nproc, MAIN_PY, *argv,
                      env=env, timeout=timeout)


def start_main(argv):
    """main.py running in a session of its own (so that what it leaves behind is its process group),
    stdout and stderr through one pipe, unbuffered; a hang can be dumped (faulthandler, on SIGABRT)."""
    return subprocess.Popen([sys.executable, "-u", str(MAIN_PY), *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})


def wait_for(proc, pattern, timeout=120):
    """The output up to the first line matching `pattern` (the process is killed if none comes); what
    came after it is kept for finish()."""
    seen, deadline = getattr(proc, "unread", b""), time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)  # raw reads: no line waits in a Python buffer
    while True:
        lines = seen.decode(errors="replace").splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.endswith("\n") and re.search(pattern, line):
                proc.unread = "".join(lines[i + 1:]).encode()
                return "".join(lines[:i + 1])
        remaining = deadline - time.monotonic()
        chunk = os.read(proc.stdout.fileno(), 65536) if remaining > 0 and selector.select(remaining) else b""
        if not chunk:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no line matching {pattern!r} within {timeout} s:\n{seen.decode(errors='replace')}")
        seen += chunk


def finish(proc, timeout=60):
    """(exit code, the rest of the output as text), after checking that the process group is empty; a
    process still running after `timeout` seconds fails the test with its threads' stacks."""
    try:
        rest, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # faulthandler prints every thread's stack
        rest, _ = proc.communicate(timeout=30)
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running {timeout} s later:\n{rest.decode(errors='replace')[-8000:]}")
    rest = (getattr(proc, "unread", b"") + rest).decode(errors="replace")
    for _ in range(20):  # DataLoader workers end with the main process, not 5 s later
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return proc.returncode, rest
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("processes of the run were left behind after it exited")


def load_model(checkpoint_path):
    """The network of a main.py checkpoint, in eval mode, built without the harness's checkpoint reader."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model = models.build_model(checkpoint["arch"], checkpoint["num_classes"])[1]
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


# Logits closer than this fraction of the largest |logit| are a near tie: float32 rounding moves them
# by up to 4e-7 of it between NCHW and NHWC, batches of 1 and of 10 (untrained SimpleNets on the tiny
# val set), and so between CPUs, so a near tie may be broken either way. Those nets' closest classes
# were 4e-4 of it apart: in these tests a near tie is rare, and the comparisons stay exact.
NEAR_TIE = 1e-4


def accuracy_bounds(logits, labels, k=1):
    """(low, high) in %: the top-k accuracy of `logits` (N, C) for `labels` (N,), counting each image whose
    k-th and (k+1)-th logits are a near tie as a miss, then as a hit.

    An accuracy that main.py or predict.py measures from the same network and images lies within, on any
    CPU; with no near ties, low == high and the comparison is exact.
    """
    values, indices = logits.topk(k + 1, dim=1)  # k < C
    hit = (indices[:, :k] == labels[:, None]).any(dim=1)
    tied = values[:, k - 1] - values[:, k] < NEAR_TIE * logits.abs().max()
    count = len(labels)
    return 100.0 * (hit & ~tied).sum().item() / count, 100.0 * (hit | tied).sum().item() / count


def assert_accuracy_of(measured, logits, labels, k=1):
    """`measured` (%) is the top-k accuracy of `logits` for `labels`, up to near ties (accuracy_bounds)."""
    low, high = accuracy_bounds(logits, labels, k)
    assert low - 1e-6 <= measured <= high + 1e-6, f"top-{k} accuracy {measured} outside [{low}, {high}]"


def is_top_k(classes, logits):
    """Whether `classes` (k class indices) are the k best of `logits` (C,), best first, near ties in either order."""
    tolerance = NEAR_TIE * logits.abs().max().item()
    chosen = logits[list(classes)]
    rest = [c for c in range(len(logits)) if c not in set(classes)]
    in_order = bool((chosen[1:] <= chosen[:-1] + tolerance).all())
    return in_order and (not rest or chosen.min().item() >= logits[rest].max().item() - tolerance)


@torch.no_grad()
def val_logits(model, root, flip=True):
    """(logits (N, C), labels (N,)) of `model` on the val split of `root`, image by image in NCHW without
    the harness's loops (someone else's answer to main.py -e and predict.py); with `flip`, the sum of the
    image's and its mirror's logits, which ranks classes as their average does."""
    val_set = custom_dataloader.MiniPlacesLoader(root, num_classes=demo_data.DEMO_NUM_CLASSES, split="val",
                                                 transforms=custom_transforms.get_val_transforms())
    logits, labels = [], []
    for image, label in val_set:
        image = image[None]  # (1, 3, H, W): images of other sizes need batches of their own
        logits.append(model(image) + model(image.flip(3)) if flip else model(image))
        labels.append(label)
    return torch.cat(logits), torch.tensor(labels)
