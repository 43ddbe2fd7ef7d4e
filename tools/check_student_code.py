"""Check a student_code.py end to end in about a minute on a CPU, with a verdict per part.

    python tools/check_student_code.py                      # code/student_code.py
    python tools/check_student_code.py path/to/student_code.py [--data data/miniplaces_demo]

Part I: test_conv's checks, saying what differs from F.conv2d and by how much; Part II:
default_model learns a batch of demo images, and trains step for step with CustomConv2d as with
nn.Conv2d; Part III: the saliency map is the input gradient's, and the PGD attack stays within
epsilon and lowers the loss towards the least likely label (harness/selfcheck.py). The first run
generates the demo dataset (about 5 s). Exits 0 when every part passes, 1 when one fails, 2 for a
bad argument, 4 when the file cannot be imported.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness import cli, paths, selfcheck, student  # noqa: E402


def main(argv=None):
    """Entry point; returns the exit code: 0 every part passes, 1 some part fails, 2 a user error, 4 the
    file cannot be imported (the codes of harness.cli otherwise)."""
    return cli.run(check, argv)


def check(argv):
    parser = cli.ArgumentParser(description="Check a student_code.py end to end, with a verdict per part.")
    parser.add_argument("file", nargs="?", default=str(paths.CODE_DIR / student.FILE_NAME),
                        help="the student's file (default: code/student_code.py)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="the network learns in bf16 autocast (default: where the CPU computes bf16 natively; "
                             "--no-amp forces fp32)")
    parser.add_argument("--data", default=None, help="a demo dataset's folder (default: data/miniplaces_demo, "
                                                     "generated when absent)")
    args = parser.parse_args(argv)
    path = student.use_file(args.file)
    student.load()
    print(f"Checking {path} (half a minute or so on a CPU)", flush=True)
    start = time.perf_counter()
    verdicts = selfcheck.run(say=lambda line: print(line, flush=True), data=args.data, amp=args.amp)
    passed = sum(verdict.passed for verdict in verdicts)
    print(f"{passed} of {len(verdicts)} parts pass ({time.perf_counter() - start:.0f} s)")
    return 0 if passed == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
