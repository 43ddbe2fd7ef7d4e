"""The child process: runs a submission's code for a list of probes and hands back plain data.

Started inside the jail (sandbox.py) as
    python -E -s -c BOOTSTRAP /runtime /work/task.json
with the submission's working copy at /work/sub, the inputs the grader hands it at /inputs (tensors
saved with torch.save, read here with weights_only=True) and /work/out for its answers: per probe,
NAME.json (numbers, strings, lists) and NAME.pt (a flat dict of tensors). The grader reads them with
json and torch.load(weights_only=True) and decides every verdict in its own process, so nothing here is
trusted: a submission may patch torch or this module, and can only forge its own answers.

On the status descriptor it writes "ready" once student_code.py is imported, "begin NAME" and "end
NAME" around each probe; the grader times each probe from its "begin".
"""
import json
import os
import sys
import time

OUTPUT_MARK = "\n@@grader-probe@@ "
BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv[1]); from harness.grading import child; child.main(sys.argv[2])"


def say(line):
    try:
        os.write(int(os.environ["STATUS_FD"]), (line + "\n").encode())
    except (KeyError, ValueError, OSError):
        pass


def main(task_path):
    with open(task_path) as f:
        task = json.load(f)
    import torch

    torch.set_num_threads(task["threads"])
    torch.manual_seed(task.get("seed", 0))
    from .. import student
    from . import probes

    out = task["out"]
    sys.path.insert(0, task["submission"])
    try:
        student.use_file(os.path.join(task["submission"], student.FILE_NAME))
        student.load()
    except student.StudentCodeError as exc:
        _write(out, "_import", {"error": str(exc)}, {})
        say("import-failed")
        return
    say("ready")
    for name in task["probes"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, f"{OUTPUT_MARK}{name}\n".encode())  # the grader splits the output per probe here
        say(f"begin {name}")
        start = time.perf_counter()
        try:
            data, tensors = probes.PROBES[name](task)
        except student.StudentCodeError as exc:
            data, tensors = {"error": str(exc), "missing": "defines no" in str(exc)}, {}
        except student.RAISES as exc:  # the student's code may raise anything
            data, tensors = {"error": student.describe(exc)}, {}
        data["seconds"] = time.perf_counter() - start
        _write(out, name, data, tensors)
        say(f"end {name}")


def _write(out, name, data, tensors):
    import torch

    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(data, f, default=str)
    torch.save({key: value.detach().cpu().contiguous() for key, value in tensors.items()},
               os.path.join(out, f"{name}.pt"))
