"""A folder of submissions graded (tools/grade.py): results streamed as each student finishes, a second
run skipping students whose submission hash and grader version are unchanged, then grades.csv and
summary.md for everyone graded so far.

--jobs N grades N submissions at once, each in its own slot (its own UID, cgroup and threads).
"""
import concurrent.futures
import json
import threading
import time
from pathlib import Path

import torch

from .. import devices, files, paths
from ..cli import UserError
from . import context as grading_context
from . import grader, report, rubric as rubrics, sandbox, similarity, submissions

WORKDIR = ".grader"  # under GRADES: scratch, inputs, runtime, staging and the reference network's cache
PRECISION_FILE = "precision.json"  # under WORKDIR: the precision this folder's training checks ran in


def training_precision(work, amp, say=print):
    """Part II's training check in bf16 (True) or fp32 (False): `amp` where given (--amp/--no-amp), else
    what this folder was graded in before (WORK/precision.json, see remember_precision), else this CPU's
    choice (devices.cpu_bf16_is_faster: native bf16 and a timing probe). Says so where the file is
    damaged, and where bf16 is used on a CPU that only emulates it."""
    if amp is None:
        amp = _remembered_precision(Path(work) / PRECISION_FILE, say)
    if amp is None:
        amp = devices.cpu_bf16_is_faster(torch.device("cpu"))
    elif amp and not devices.native_bf16_features():
        say("note: this CPU emulates bf16, slower than fp32; --no-amp grades the training check in fp32 "
            "(and regrades everyone)")
    return amp


def remember_precision(work, amp):
    """Keep `amp` in WORK/precision.json, so that a busier hour's probe cannot flip the default, and with it
    the grader version, and regrade everyone. Written once the run's inputs are accepted."""
    files.write_json({"amp": amp}, Path(work) / PRECISION_FILE)


def _remembered_precision(path, say):
    """The remembered bool, or None where there is none (or it is damaged, which `say` reports)."""
    if not path.exists():
        return None
    try:
        amp = json.loads(path.read_text(encoding="utf-8"))["amp"]
        if isinstance(amp, bool):
            return amp
    except (OSError, ValueError, KeyError, TypeError):
        pass
    say(f"note: {path} is damaged or unreadable; the training check's precision is chosen again")
    return None


def _make_folder(path):
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {path} ({exc.strerror or exc})") from None


def grade_folder(submissions_dir, out, data=None, jobs=1, only=None, regrade=False, rubric_path=None,
                 say=print, cache=None, refnet_steps=None, test_labels=None, amp=None):
    """Grade every submission of `submissions_dir` into `out`; returns {name: results}. `amp`: Part II's
    training check in bf16 (None: as this folder was graded before, else where the CPU computes bf16
    natively and faster; training_precision)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file, not a folder")
    work = out / WORKDIR
    _make_folder(work)
    rubric = rubrics.load(rubric_path)
    # The data, the held labels and the precision are part of the version: another regrades everyone.
    amp = training_precision(work, amp, say)
    version = grading_context.grader_version(f"{rubric.text}|{data}|{test_labels}|amp={amp}")
    found = submissions.discover(submissions_dir, work / "staging")  # all of them: the summary compares all
    names = {sub.name for sub in found}
    unknown = [name for name in (only or ()) if name not in names]
    if unknown:
        raise UserError(f"{submissions_dir}: no submission called {unknown[0]!r}")
    isolated, why = sandbox.isolation_available()
    isolation = ("each submission in its own mount, PID and network namespaces (no network), as its own "
                 "unprivileged user, with a memory and a pids cgroup" if isolated else
                 f"NOT isolated ({why}): no network namespace, no separate user or file system; rlimits only")
    todo, changes = [], []
    for sub in found:
        previous = report.read_results(out, sub.name)
        meta = (previous or {}).get("extra_data", {})
        if only and sub.name not in only:
            continue
        if regrade or only or previous is None or meta.get("grader_version") != version or \
                meta.get("submission_hash") != sub.digest:
            todo.append((sub, previous))
    kept = len(found) - len(todo)
    say(f"{len(found)} submissions, {len(todo)} to grade ({kept} {'kept' if only else 'unchanged'}); {isolation}")
    if todo:
        options = {} if refnet_steps is None else {"refnet_steps": refnet_steps}
        ctx = grading_context.build(work, rubric, data, cache or work / "cache", say=say, test_labels=test_labels,
                                    amp=amp, **options)
        remember_precision(work, amp)  # the inputs are accepted; before the first result is written
        grader.measure_reference(ctx, rubric)
        slots = list(range(max(1, jobs)))
        lock = threading.Lock()
        done = [0]

        def one(item):
            sub, previous = item
            with lock:
                slot = slots.pop()
            start = time.monotonic()
            try:
                results = _grade_one(sub, ctx, rubric, slot)
            finally:
                with lock:
                    slots.append(slot)
            results["extra_data"] = {"grader_version": version, "submission_hash": sub.digest}
            report.write_results(out, sub.name, results)
            with lock:
                done[0] += 1
                bar = "#" * (20 * done[0] // len(todo))
                say(f"[{bar:<20}] {done[0]}/{len(todo)} {sub.name}: {results['score']:g}/{rubric.max_score:g} "
                    f"({time.monotonic() - start:.0f} s)")
                if previous is not None and previous.get("score") != results["score"]:
                    line = f"{sub.name}: {previous.get('score'):g} -> {results['score']:g} points"
                    changes.append(line)
                    say(f"    score changed: {line}")
            return sub.name, results

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(slots)) as pool:
            list(pool.map(one, todo))
    everyone = {}
    for path in sorted(out.glob("*/results.json")):
        results = report.read_results(out, path.parent.name)
        if results is not None and path.parent.name != WORKDIR:
            everyone[path.parent.name] = results
    report.write_csv(out, rubric, everyone)
    staged = {sub.name: sub.source for sub in found}
    starter = _starter_text()
    report.write_summary(out, rubric, everyone, similarity.similar_pairs(staged, starter), isolation, version, changes)
    say(f"wrote {out / report.CSV} and {out / report.SUMMARY}")
    return everyone


def _grade_one(sub, ctx, rubric, slot):
    if sub.problem:
        tests = [{"name": item.name, "score": 0.0, "max_score": item.points, "status": "failed",
                  "output": f"not graded: {sub.problem}", "visibility": rubric.grader["visibility"]}
                 for item in rubric.items]
        return {"score": 0.0, "execution_time": 0.0, "output": f"not graded: {sub.problem}", "tests": tests}
    try:
        return grader.grade(sub.source, ctx, rubric, slot)
    except Exception as exc:  # noqa: BLE001 - one submission's trouble must not stop the class's grading
        tests = [{"name": item.name, "score": 0.0, "max_score": item.points, "status": "failed",
                  "output": f"grader error: {type(exc).__name__}: {exc}"[:300], "visibility": "visible"}
                 for item in rubric.items]
        return {"score": 0.0, "execution_time": 0.0, "output": f"grader error: {exc}"[:300], "tests": tests}


def _starter_text():
    """The starter made from our solution: its lines are removed before comparing submissions."""
    try:
        from . import starter
        return starter.make((paths.CODE_DIR / "student_code.py").read_text(encoding="utf-8"))
    except (ImportError, OSError, ValueError):
        return ""
