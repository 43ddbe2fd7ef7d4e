"""Write the students' starter student_code.py from our solution (code/student_code.py), whose solution
regions are marked `# BEGIN SOLUTION` / `# END SOLUTION` (harness/grading/starter.py).

    python tools/make_starter.py [--solution code/student_code.py] --out starter/student_code.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package

from harness import cli, files, paths  # noqa: E402
from harness.grading import starter  # noqa: E402


def main(argv=None):
    parser = cli.ArgumentParser(description="Write the students' starter student_code.py from our solution.")
    parser.add_argument("--solution", default=str(paths.CODE_DIR / "student_code.py"),
                        help="our solution, with its regions marked")
    parser.add_argument("--out", required=True, help="where to write the starter (a file)")
    try:
        args = parser.parse_args(argv)
        try:
            text = Path(args.solution).read_text(encoding="utf-8")
        except OSError as exc:
            raise cli.UserError(f"{args.solution}: cannot read it ({exc.strerror})") from None
        try:
            made = starter.make(text)
        except ValueError as exc:
            raise cli.UserError(f"{args.solution}: {exc}") from None
        out = Path(args.out)
        if out.resolve() == Path(args.solution).resolve():
            raise cli.UserError("--out must not be the solution itself")
        out.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(out, made)
    except cli.UserError as exc:
        cli.print_user_error(exc)
        return cli.EXIT_USER_ERROR
    print(f"wrote {out} ({len(made.splitlines())} lines; the solution has {len(text.splitlines())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
