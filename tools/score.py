"""Top-1 ... top-5 error of a MiniPlaces prediction file, as the challenge devkit's eval_cls computes it.

    python tools/score.py results/predictions_val.txt data/val.txt [--num-classes 100]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness import scoring  # noqa: E402
from harness import cli  # noqa: E402
from harness.cli import ArgumentParser, UserError  # noqa: E402


def get_args_parser():
    parser = ArgumentParser(description="Top-1 ... top-5 error of a MiniPlaces prediction file (devkit eval_cls).")
    parser.add_argument("predictions", help="prediction file, e.g. results/predictions_val.txt")
    parser.add_argument("ground_truth", help="label file, e.g. data/val.txt")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="labels lie in 0..N-1 (default: categories.txt next to the label file, else 100)")
    return parser


def main(argv=None):
    """Entry point; returns the exit code (0, or those of harness.cli: 2 for a user error ...)."""
    return cli.run(score, argv)


def score(argv):
    args = get_args_parser().parse_args(argv)
    if args.num_classes is not None and args.num_classes < scoring.NUM_GUESSES:
        raise UserError(f"--num-classes must be at least {scoring.NUM_GUESSES}, got {args.num_classes}")
    errors, count = scoring.score_files(args.predictions, args.ground_truth, args.num_classes)
    print(scoring.format_error_table(errors, count))


if __name__ == "__main__":
    sys.exit(main())
