"""The same checks on Gradescope: /autograder/submission in, /autograder/results/results.json out.

Gradescope unpacks the student's upload into /autograder/submission (student_code.py, their modules,
results/, or the zip_submission.py layout) and runs /autograder/run_autograder, which calls
tools/grade.py --gradescope /autograder. The submission is graded as one entry of a batch in a scratch
folder, and its results.json is copied where Gradescope reads it, with a line saying whether the
submission's code ran isolated (Gradescope's container usually forbids namespaces: then it runs with
rlimits only, inside the container Gradescope gives each submission).
"""
import shutil
import tempfile
from pathlib import Path

from .. import files
from ..cli import UserError
from . import batch, report, sandbox


def run(root="/autograder", rubric_path=None, data=None, say=print, amp=None):
    """Grade root/submission into root/results/results.json; returns the results."""
    root = Path(root)
    submission = root / "submission"
    if not submission.is_dir():
        raise UserError(f"{submission}: no such folder (Gradescope puts the student's files there)")
    with tempfile.TemporaryDirectory(prefix="gradescope-") as scratch:
        entries = Path(scratch) / "submissions"
        entries.mkdir()
        shutil.copytree(submission, entries / "submission", symlinks=False,
                        ignore=lambda d, names: [n for n in names if (Path(d) / n).is_symlink()])
        out = Path(scratch) / "grades"
        batch.grade_folder(entries, out, data=data, rubric_path=rubric_path, say=say, amp=amp)
        results = report.read_results(out, "submission")
    isolated, why = sandbox.isolation_available()
    results["output"] += "" if isolated else f" (the submission's code ran without namespaces: {why})"
    (root / "results").mkdir(parents=True, exist_ok=True)
    files.write_json(results, root / "results" / "results.json")
    return results
