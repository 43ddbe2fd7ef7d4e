"""How long tools/grade.py takes for a batch: N copies of our solution (every check, full marks) graded
on the demo dataset, with --jobs J, printing one line.

    python bench/bench_grade.py [--copies 4] [--jobs 1]

The first run of a fresh output folder includes building the inputs, training the reference network
(cached afterwards in bench/out/grade-cache) and measuring the reference solution; the line gives that
set-up and the per-submission time separately.
"""
import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "code"))

from harness import paths  # noqa: E402
from harness.grading import batch  # noqa: E402

OUT = paths.REPO_ROOT / "bench" / "out"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    subs, grades = OUT / "grade-submissions", OUT / "grade-results"
    for folder in (subs, grades):
        shutil.rmtree(folder, ignore_errors=True)
    subs.mkdir(parents=True)
    for index in range(args.copies):
        shutil.copyfile(paths.CODE_DIR / "student_code.py", subs / f"student{index:02d}.py")
    stamps = {}
    start = time.perf_counter()

    def say(line):
        now = time.perf_counter() - start
        if line.startswith("inputs ready"):
            stamps["inputs"] = now
        if re.match(r"^\[#* *\] 1/", line):
            stamps["first"] = now
        print(f"{now:6.1f} s  {line}", flush=True)

    batch.grade_folder(subs, grades, jobs=args.jobs, say=say, cache=OUT / "grade-cache")
    total = time.perf_counter() - start
    per = (total - stamps.get("first", total)) / max(args.copies - 1, 1)
    load = os.getloadavg()[0]
    print(f"{args.copies} submissions, --jobs {args.jobs}: {total:.0f} s in all; set-up (inputs, reference network, "
          f"reference solution) {stamps.get('first', total) - per:.0f} s; {per:.1f} s per further submission "
          f"(load average {load:.1f}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
