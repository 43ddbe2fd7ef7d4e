"""What the grader writes: GRADES/<name>/results.json (Gradescope's schema), GRADES/grades.csv (a row a
student, a column a check, a first row of maximum points) and GRADES/summary.md (pass rates, the most
common failure messages, similar pairs, the machine and versions, a histogram of scores as PNG).
"""
import collections
import csv
import io
import json
import platform
import re
from pathlib import Path

import torch

from .. import files

SUMMARY = "summary.md"
CSV = "grades.csv"
HISTOGRAM = "scores.png"


def write_results(out, name, results):
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    files.write_json(results, folder / "results.json")


def read_results(out, name):
    try:
        return json.loads((Path(out) / name / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_csv(out, rubric, everyone):
    """grades.csv: name, total, then one column per check; the first row holds the maximum points."""
    names = [item.name for item in rubric.items]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "total", *names])
    writer.writerow(["(maximum)", f"{rubric.max_score:g}", *(f"{item.points:g}" for item in rubric.items)])
    for student, results in sorted(everyone.items()):
        scores = {test["name"]: test["score"] for test in results.get("tests", [])}
        writer.writerow([student, f"{results.get('score', 0):g}", *(f"{scores.get(n, 0):g}" for n in names)])
    files.write_text(Path(out) / CSV, buffer.getvalue())


def _message(output):
    """A failure's most telling line (the smallest failing case rather than a count) with its measured
    values blanked, so that the same mistake clusters: 'stride 2, padding 1: grad_input differs by up to #'."""
    lines = [line for line in output.strip().splitlines() if line.strip()] or [""]
    line = next((line for line in lines if not re.match(r"^\d+ of \d+ ", line)), lines[0])
    line = line.removeprefix("smallest failing case: ")
    line = re.sub(r"\S*/student_code\.py", "student_code.py", line)
    return re.sub(r"\d+\.\d+(e[-+]?\d+)?|\d+e[-+]?\d+|\d+%", "#", line)[:160]


def machine_lines(isolation, seed=0):
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    return [f"- machine: {platform.node()}, {cpu}, {os.cpu_count()} CPUs, {platform.platform()}",
            f"- Python {platform.python_version()}, torch {torch.__version__}, seeds 0 (torch, every probe)",
            f"- isolation: {isolation}"]


def write_summary(out, rubric, everyone, pairs, isolation, version, changes=()):
    """summary.md and scores.png."""
    lines = ["# Grading summary\n", f"{len(everyone)} submissions, grader version {version}, "
             f"maximum {rubric.max_score:g} points.\n"]
    scores = [r.get("score", 0) for r in everyone.values()]
    if scores:
        lines.append(f"Mean {sum(scores) / len(scores):.2f}, min {min(scores):g}, max {max(scores):g}. "
                     f"Histogram: [{HISTOGRAM}]({HISTOGRAM})\n")
    lines += ["## Pass rate per check\n", "| check | points | passed | pass rate |", "|---|---|---|---|"]
    failures = collections.Counter()
    for item in rubric.items:
        tests = [t for r in everyone.values() for t in r.get("tests", []) if t["name"] == item.name]
        passed = sum(t["status"] == "passed" for t in tests)
        lines.append(f"| {item.name} | {item.points:g} | {passed}/{len(tests)} | "
                     f"{passed / len(tests):.0%} |" if tests else f"| {item.name} | {item.points:g} | 0/0 | - |")
        failures.update(f"{item.name}: {_message(t['output'])}" for t in tests if t["status"] == "failed"
                        and not t["output"].startswith("not attempted: no results/"))  # the pass rate says it
    lines += ["", "## Most common failure messages\n"]
    lines += [f"- {count} submission{'s' if count > 1 else ''}: {message}" for message, count in failures.most_common(15)]
    lines += ["", "## Suspiciously similar submissions\n"]
    lines += [f"- {a} and {b}: {why}, similarity {score:.2f}" for a, b, score, why in pairs] or ["- none"]
    if changes:
        lines += ["", "## Scores changed by this run\n", *[f"- {line}" for line in changes]]
    lines += ["", "## Machine, versions and seeds\n", *machine_lines(isolation)]
    files.write_text(Path(out) / SUMMARY, "\n".join(lines) + "\n")
    if scores:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(scores, bins=min(20, max(5, len(set(scores)))), range=(0, max(rubric.max_score, 1)))
        ax.set_xlabel("score")
        ax.set_ylabel("submissions")
        ax.set_title(f"{len(scores)} submissions")
        fig.tight_layout()
        files.save_figure(fig, Path(out) / HISTOGRAM)
