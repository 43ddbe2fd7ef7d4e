"""The students' starter student_code.py made from our solution, as nbgrader and otter-assign do, so the
staff keep one file (tools/make_starter.py).

In our file, a solution region is marked by two comment lines at the indentation of its code:

    # BEGIN SOLUTION              the region becomes `raise NotImplementedError("...")` (where a body was)
    # BEGIN SOLUTION (removed)    the region disappears (helpers, the team's extra networks)
    # END SOLUTION

Everything else (signatures, docstrings, the 2019 names, vis_grad_attention) stays as it is, so the
starter imports, runs in the harness and scores 0 without crashing.
"""
import re

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION( \(removed\))?\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
PROMPT = "YOUR CODE HERE"


def make(text):
    """The starter of our solution's `text`; ValueError for markers that do not pair up, or for a text
    with none (its starter would be the whole solution)."""
    if not any(BEGIN.match(line) for line in text.splitlines()):
        raise ValueError("no '# BEGIN SOLUTION' region: its starter would hand out the whole solution")
    out, region, removed, indent, begin_line = [], False, False, "", 0
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if region:
                raise ValueError(f"line {number}: BEGIN SOLUTION inside the region begun at line {begin_line}")
            region, indent, removed, begin_line = True, begin.group(1), bool(begin.group(2)), number
            if not removed:
                out.append(f"{indent}# {PROMPT}\n{indent}raise NotImplementedError(\"{PROMPT}\")\n")
        elif end:
            if not region:
                raise ValueError(f"line {number}: END SOLUTION without a BEGIN SOLUTION")
            region = False
        elif not region:
            out.append(line)
    if region:
        raise ValueError(f"line {begin_line}: BEGIN SOLUTION is never ended")
    return re.sub(r"\n{4,}", "\n\n\n", "".join(out))


def strip_markers(text):
    """Our solution without its marker lines (what a student who solves everything would hand in)."""
    return "".join(line for line in text.splitlines(keepends=True) if not (BEGIN.match(line) or END.match(line)))
