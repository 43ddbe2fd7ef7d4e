"""One submission's probes run in the sandbox: a working copy of its own, a timeout per probe, a fresh
child after a probe that timed out or crashed, and the answers read back as plain data.

The answers are read with json (at most MAX_JSON_BYTES) and torch.load(weights_only=True): nothing the
child wrote is unpickled. A probe that did not finish gets a failure line saying why (timeout, out of
memory, a signal, an early exit), and so does every probe left when the submission's budget runs out.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import files
from . import child, sandbox

MAX_JSON_BYTES = 4 * 2**20
WORK_BYTES = 1024 * 2**20  # the working copy's tmpfs: the submission, its answers and what it writes
STARTUP_S = 90  # importing torch and the student's file, before the first probe begins


@dataclass
class ProbeResult:
    data: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    failure: str = ""  # why the probe gave no answers
    output: str = ""  # the child's output while it ran (cut at the rubric's limit)


def prepare_copy(source, work, uid, isolated=False):
    """A fresh working copy of the submission folder `source` in work/sub, owned by `uid`, and work/out.
    Isolated, `work` is a tmpfs of WORK_BYTES mounted for this submission (release_copy unmounts it), so
    what the submission writes cannot fill the grader's disk."""
    release_copy(work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if isolated:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={WORK_BYTES},mode=0755,nosuid,nodev", "tmpfs",
                        str(work)], check=True, capture_output=True)
    os.chmod(work, 0o755)
    shutil.copytree(source, work / "sub", symlinks=True)
    (work / "out").mkdir()
    if os.geteuid() == 0:
        for folder in (work / "sub", work / "out"):
            for path in [folder, *folder.rglob("*")]:
                os.lchown(path, uid, uid)
    return work


def release_copy(work):
    """Unmount the working copy's tmpfs, if one is mounted there (also one a crashed run left)."""
    if os.path.ismount(work):
        subprocess.run(["umount", "-l", str(work)], capture_output=True)


def run_probes(source, probes, context, slot, budget_end):
    """{probe: ProbeResult} for the submission folder `source` (its student_code.py and modules)."""
    uid = sandbox.FIRST_UID + slot
    work = Path(context.scratch) / f"slot-{slot}"
    isolated, _ = sandbox.isolation_available()
    try:
        prepare_copy(source, work, uid, isolated)
        return _run_probes(probes, context, slot, budget_end, work, isolated)
    finally:
        release_copy(work)
        shutil.rmtree(work, ignore_errors=True)


def _run_probes(probes, context, slot, budget_end, work, isolated):
    inside = "/work" if isolated else str(work)
    results, pending = {}, list(probes)
    limits = context.limits
    while pending:
        if time.monotonic() >= budget_end:
            for name in pending:
                results[name] = ProbeResult(failure="not run: the submission's time budget was spent")
            break
        task = {"probes": pending, "threads": limits.threads, "seed": 0, "out": f"{inside}/out",
                "submission": f"{inside}/sub", **context.task}
        files.write_json(task, work / "task.json")
        state = {"current": None, "ended": [], "ready": False, "import_failed": False}

        def on_status(line, state=state):
            now = time.monotonic()
            if line.startswith("begin "):
                name = line[6:]
                state["current"] = name if name in pending else None
                return min(now + context.timeouts.get(name, 60), budget_end)
            if line.startswith("end "):
                state["ended"].append(line[4:])
                state["current"] = None
                return min(now + 30, budget_end)
            if line == "ready":
                state["ready"] = True
            elif line == "import-failed":
                state["import_failed"] = True
            return None

        runtime = context.runtime if isolated else str(context.runtime)
        argv = [os.path.realpath(sys.executable), "-E", "-s", "-c", child.BOOTSTRAP,
                "/runtime" if isolated else runtime, f"{inside}/task.json"]
        env = {"PATH": "/usr/bin:/bin", "HOME": inside, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": str(limits.threads),
               "MKL_NUM_THREADS": str(limits.threads), "GRADER_INPUTS": "/inputs" if isolated else str(context.inputs)}
        outcome = sandbox.run(argv, env=env, work=work, slot=slot, limits=limits, scratch=context.scratch,
                              ro=[(str(context.runtime), "/runtime"), (str(context.inputs), "/inputs")],
                              on_status=on_status, deadline=min(time.monotonic() + STARTUP_S, budget_end))
        outputs = _split_output(outcome.output)
        if state["import_failed"]:
            data = _read_json(work / "out" / "_import.json") or {}
            message = str(data.get("error", "student_code.py could not be imported"))[:400].replace(
                "sub/student_code.py", "student_code.py")
            for name in pending:
                results[name] = ProbeResult(data={"error": message, "missing": False}, failure="", output=outcome.output)
            break
        for name in list(pending):
            if name in state["ended"]:
                results[name] = _read_result(work / "out", name, outputs.get(name, ""))
                pending.remove(name)
        why = _why(outcome, limits, context.timeouts)
        if state["current"] in pending:
            results[state["current"]] = ProbeResult(failure=why, output=outputs.get(state["current"], outcome.output))
            pending.remove(state["current"])
        elif pending and not state["ready"]:  # it ended before the first probe: no retry would do better
            for name in pending:
                results[name] = ProbeResult(failure=why + " (before its first check began)", output=outcome.output)
            break
        elif pending and not state["ended"]:
            for name in pending:
                results[name] = ProbeResult(failure=why, output=outcome.output)
            break
    return results


def _split_output(text):
    """{probe: what the child printed while it ran}, cut at the child's marks; what it printed before
    the first mark (importing the file) goes with the first probe."""
    parts = text.split(child.OUTPUT_MARK)
    found = {}
    for index, part in enumerate(parts[1:]):
        name, _, rest = part.partition("\n")
        found[name] = (parts[0].strip() + "\n" if index == 0 and parts[0].strip() else "") + rest
    return found


def _why(outcome, limits, timeouts):
    if outcome.reason == "timeout":
        return f"timed out ({outcome.wall_s:.0f} s): the check's wall-clock limit or the submission's budget"
    if outcome.reason == "out of memory":
        return f"ran out of memory (the cap is {limits.memory_bytes // 2**20} MB) and was killed"
    if outcome.reason.startswith("killed"):
        return f"the submission's process was {outcome.reason}"
    return f"the submission's process ended (exit code {outcome.returncode}) before finishing this check"


def _read_json(path):
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _read_result(out, name, output):
    data = _read_json(out / f"{name}.json")
    if data is None:
        return ProbeResult(failure="its answers could not be read (missing or not JSON)", output=output)
    try:
        with warnings.catch_warnings():  # a forged file's pickle protocol is no news
            warnings.simplefilter("ignore")
            tensors = torch.load(out / f"{name}.pt", weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - anything the child wrote may be malformed
        return ProbeResult(failure=f"its answers could not be read as tensors ({type(exc).__name__})", output=output)
    if not isinstance(tensors, dict) or not all(type(v) is torch.Tensor for v in tensors.values()):
        return ProbeResult(failure="its answers are not a dict of tensors", output=output)
    data = _named_as_handed_in(data)
    if name == "network":  # measured here: the child's own figure could be forged
        data["grader_state_bytes"] = _state_bytes(out / "network_state.pt")
    return ProbeResult(data=data, tensors=tensors, output=output)


def _named_as_handed_in(value):
    """The child's strings name the working copy (sub/student_code.py): name the student's file instead."""
    if isinstance(value, str):
        return value.replace("sub/student_code.py", "student_code.py")
    if isinstance(value, list):
        return [_named_as_handed_in(item) for item in value]
    if isinstance(value, dict):
        return {key: _named_as_handed_in(item) for key, item in value.items()}
    return value


def _state_bytes(path):
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
            return path.stat().st_size
    except Exception:  # noqa: BLE001 - a forged or broken file
        pass
    return None
