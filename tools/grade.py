"""Grade a folder of students' submissions: scores, feedback and a class summary out, hostile code contained.

    python tools/grade.py SUBMISSIONS --out GRADES [--data DATA] [--jobs N] [--only NAME ...] [--regrade]
                          [--rubric FILE] [--test-labels FILE] [--no-amp]
    python tools/grade.py --gradescope /autograder [--rubric FILE]     (tools/gradescope/run_autograder)

SUBMISSIONS holds one entry per student, named after the student: a folder (student_code.py, their own
modules, results/), a .zip as zip_submission.py makes it, or a bare NAME.py. Each runs in child processes
of its own (harness/grading/sandbox.py). Writes GRADES/<name>/results.json (Gradescope's schema),
GRADES/grades.csv and GRADES/summary.md. Without --data the checks use the generated demo dataset.
Details: docs/grading.md.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package

from harness import cli  # noqa: E402
from harness.grading import batch, gradescope  # noqa: E402


def main(argv=None):
    parser = cli.ArgumentParser(description="Grade a folder of submissions (see docs/grading.md).")
    parser.add_argument("submissions", nargs="?", help="the folder of submissions: NAME/, NAME.zip or NAME.py per student")
    parser.add_argument("--out", help="the folder for results.json, grades.csv and summary.md")
    parser.add_argument("--gradescope", metavar="ROOT", default=None,
                        help="grade ROOT/submission into ROOT/results/results.json, as Gradescope runs it")
    parser.add_argument("--data", default=None, help="MiniPlaces in the official layout (default: the demo dataset)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="grade (again) only these students")
    parser.add_argument("--regrade", action="store_true", help="grade everyone, even unchanged submissions")
    parser.add_argument("--rubric", default=None, help="a TOML rubric laid over the default one")
    parser.add_argument("--test-labels", default=None, help="the staff's labels of the test images (the challenge's "
                                                             "errors; default: the val labels)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="Part II's training check in bf16 autocast, the reference's too (default: as GRADES was "
                             "graded before, else where the CPU computes bf16 natively and faster); --no-amp: fp32")

    def grade(argv):
        args = parser.parse_args(argv)
        if args.jobs < 1:
            parser.error("--jobs must be at least 1")
        if args.gradescope is None and (args.submissions is None or args.out is None):
            parser.error("give SUBMISSIONS and --out (or --gradescope ROOT)")
        if args.gradescope is not None:
            gradescope.run(args.gradescope, rubric_path=args.rubric, data=args.data,
                           say=lambda line: print(line, flush=True), amp=args.amp)
            return
        batch.grade_folder(args.submissions, args.out, data=args.data, jobs=args.jobs, only=args.only,
                           regrade=args.regrade, rubric_path=args.rubric, test_labels=args.test_labels,
                           say=lambda line: print(line, flush=True), amp=args.amp)

    # A signal (SIGTERM too) unwinds through the sandbox's finally, which kills the submission's processes.
    return cli.run(grade, argv)


if __name__ == "__main__":
    sys.exit(main())
