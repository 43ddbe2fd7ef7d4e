"""One submission graded: its probes run in the sandbox, each check's verdict decided here, the result
in Gradescope's results.json schema (score, execution_time, output, tests[] with name, score,
max_score, status, output, visibility).

A check whose name the file does not define is "not attempted" (0 points, one line naming it); an
exception in the student's code or a wrong value is 0 points with one line (the file and line); a probe
that timed out, ran out of memory or crashed is 0 points for the checks reading it, saying which.
"""
import time
from pathlib import Path

from .. import paths
from ..cli import UserError
from . import checks, runner
from . import handin as handin_files

REFERENCE_FILE = paths.CODE_DIR / "student_code.py"  # our solution: the reference


def probes_for(rubric):
    """The probes the rubric's checks read, in the checks' order."""
    names = []
    for item in rubric.items:
        probe = checks.BY_NAME[item.name].probe
        if probe not in names:
            names.append(probe)
    return names


def measure_reference(context, rubric, slot=0, source=None):
    """Run our solution through the same sandbox: its training losses and its attack's target loss go
    into context.answers (the bands Part II and Part III compare with)."""
    wanted = [p for p in probes_for(rubric) if p in ("training", "pgd")]
    if not wanted:
        return
    folder = Path(context.scratch) / "reference-src"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "student_code.py").write_bytes(Path(source or REFERENCE_FILE).read_bytes())
    results = runner.run_probes(folder, wanted, context, slot, time.monotonic() + 600)
    for name, result in results.items():
        if result.failure or result.data.get("error"):
            raise UserError(f"the reference solution ({source or REFERENCE_FILE}) failed its own {name} probe: "
                            f"{result.failure or result.data.get('error')}")
    if "training" in results:
        context.answers["reference_losses"] = results["training"].data["losses"]
    if "pgd" in results:
        images = context.answers["attack_images"]
        adv = results["pgd"].tensors["adversarial"]
        context.answers["reference_pgd_loss"] = checks.target_loss(context.answers["refnet"], images, adv)[0]


def grade(source, context, rubric, slot=0):
    """results.json's dict for the submission folder `source`."""
    start = time.monotonic()
    budget_end = start + rubric.grader["budget_s"]
    probes = probes_for(rubric)
    handin = handin_files.read(source, context.answers) if {"handin", "challenge"} & set(probes) else {}
    child_probes = [p for p in probes if p != "handin" and
                    (p != "challenge" or (Path(source) / "results" / "model.pth.tar").is_file())]
    results = runner.run_probes(source, child_probes, context, slot, budget_end) if child_probes else {}
    for name in ("handin", "challenge"):  # the hand-in as read here; nothing the child wrote replaces it
        if name in probes:
            results.setdefault(name, runner.ProbeResult())
            results[name].data["handin"] = handin
    tests, notes = [], []
    for item in rubric.items:
        check = checks.BY_NAME[item.name]
        result = results.get(check.probe, runner.ProbeResult(failure="not run"))
        fraction, lines, attempted = _verdict(check, result, context.answers)
        if not attempted:
            notes.append(item.name)
        score = round(item.points * fraction, 4)
        status = "passed" if fraction >= 1.0 else "failed"
        output = "\n".join(lines)
        if result.output.strip() and status == "failed":
            output += "\n--- the submission's output during this check ---\n" + result.output
        tests.append({"name": item.name, "score": score, "max_score": item.points, "status": status,
                      "output": output, "visibility": rubric.grader["visibility"]})
    total = round(sum(t["score"] for t in tests), 4)
    elapsed = time.monotonic() - start
    summary = f"{total:g} / {rubric.max_score:g} points in {elapsed:.0f} s"
    if notes:
        summary += f"; not attempted: {len(notes)} check{'s' if len(notes) > 1 else ''}"
    return {"score": total, "execution_time": round(elapsed, 1), "output": summary, "tests": tests}


def _verdict(check, result, answers):
    """(fraction, lines, attempted) for one check."""
    data = result.data
    if data.get("handin", {}).get("handed_in") is False:
        return 0.0, ["not attempted: no results/ handed in"], False
    if result.failure:
        return 0.0, [result.failure], True
    defines = data.get("defines")
    if isinstance(defines, dict):
        missing = [name for name in check.needs if defines.get(name) is False]
        if missing:
            return 0.0, [f"not attempted: student_code.py defines no {missing[0]}"], False
    if data.get("error"):
        text = str(data["error"])[:400].replace("sub/student_code.py", "student_code.py")
        if data.get("missing"):
            return 0.0, [f"not attempted: {text}"], False
        return 0.0, [text], True
    try:
        fraction, lines = check.verdict(result, answers)
    except Exception as exc:  # noqa: BLE001 - a malformed answer must not stop the grading of the others
        return 0.0, [f"the answers handed back could not be checked ({type(exc).__name__}: {exc})"[:300]], True
    return max(0.0, min(1.0, float(fraction))), list(lines), True
