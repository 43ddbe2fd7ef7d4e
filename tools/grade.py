"""Grade a folder of students' submissions: scores, feedback and a class summary out, hostile code contained.

    python tools/grade.py SUBMISSIONS --out GRADES [--data DATA] [--jobs N] [--only NAME ...] [--regrade]
                          [--rubric FILE]

SUBMISSIONS holds one entry per student, named after the student: a folder (student_code.py, their own
modules, results/), a .zip as zip_submission.py makes it, or a bare NAME.py. Each runs in child processes
of its own (harness/grading/sandbox.py). Writes GRADES/<name>/results.json (Gradescope's schema),
GRADES/grades.csv and GRADES/summary.md. Without --data the checks use the generated demo dataset.
Details: docs/grading.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package

from harness import cli  # noqa: E402
from harness.grading import batch  # noqa: E402


def main(argv=None):
    parser = cli.ArgumentParser(description="Grade a folder of submissions (see docs/grading.md).")
    parser.add_argument("submissions", help="the folder of submissions: NAME/, NAME.zip or NAME.py per student")
    parser.add_argument("--out", required=True, help="the folder for results.json, grades.csv and summary.md")
    parser.add_argument("--data", default=None, help="MiniPlaces in the official layout (default: the demo dataset)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="grade (again) only these students")
    parser.add_argument("--regrade", action="store_true", help="grade everyone, even unchanged submissions")
    parser.add_argument("--rubric", default=None, help="a TOML rubric laid over the default one")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        batch.grade_folder(args.submissions, args.out, data=args.data, jobs=args.jobs, only=args.only,
                           regrade=args.regrade, rubric_path=args.rubric, say=lambda line: print(line, flush=True))
    except cli.UserError as exc:
        cli.print_user_error(exc)
        return cli.EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
