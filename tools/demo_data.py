"""Write the generated demo dataset (harness/demo_data.py says what it holds).

    python tools/demo_data.py [folder] [--seed 0] [--train-per-class 300] [--val-per-class 10] [--test-count 100]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness import demo_data  # noqa: E402
from harness.cli import UserError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(demo_data.__doc__.split("\n\n")[0].split()))
    parser.add_argument("root", nargs="?", default=str(demo_data.DEFAULT_DEMO_DIR),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=demo_data.DEFAULT_TRAIN_PER_CLASS,
                        help="train images per class (default: %(default)s)")
    parser.add_argument("--val-per-class", type=int, default=demo_data.DEFAULT_VAL_PER_CLASS,
                        help="val images per class (default: %(default)s)")
    parser.add_argument("--test-count", type=int, default=demo_data.DEFAULT_TEST_COUNT,
                        help="test images (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        root = demo_data.make_demo_dataset(args.root, args.seed, args.train_per_class, args.val_per_class,
                                 args.test_count)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(f"wrote the demo dataset to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
