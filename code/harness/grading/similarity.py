"""Pairs of suspiciously similar submissions: token shingles of student_code.py after removing the
starter's lines, and identical handed-in model or prediction files.

Each file is reduced to the lines the starter does not have (whitespace-normalized), tokenized with
Python's tokenize (names kept, comments and strings dropped), cut into shingles of SHINGLE tokens;
two submissions are listed when the Jaccard similarity of their shingle sets reaches THRESHOLD.
"""
import hashlib
import io
import itertools
import tokenize
from pathlib import Path

SHINGLE = 12
THRESHOLD = 0.8
MIN_SHINGLES = 30  # fewer own tokens than this (an untouched starter) is not compared
SKIPPED = (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
           tokenize.ENCODING, tokenize.ENDMARKER)


def own_lines(text, starter_text):
    starter = {line.strip() for line in starter_text.splitlines() if line.strip()}
    return "\n".join(line for line in text.splitlines() if line.strip() and line.strip() not in starter)


def shingles(text):
    tokens = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type not in SKIPPED:
                tokens.append(token.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        tokens = text.split()
    return {tuple(tokens[i:i + SHINGLE]) for i in range(max(len(tokens) - SHINGLE + 1, 0))}


def similar_pairs(folders, starter_text=""):
    """[(name_a, name_b, similarity, why)] over {name: staging folder}, most similar first."""
    sets, hashes = {}, {}
    for name, folder in folders.items():
        code = Path(folder) / "student_code.py"
        if code.is_file():
            lines = own_lines(code.read_text(encoding="utf-8", errors="replace"), starter_text)
            # the lines are unique per file after normalizing: join them dedented for tokenize
            found = shingles("\n".join(line.strip() for line in lines.splitlines()))
            if len(found) >= MIN_SHINGLES:
                sets[name] = found
        for kind in ("model.pth.tar", "predictions_test.txt", "predictions_val.txt"):
            path = Path(folder) / "results" / kind
            if path.is_file():
                hashes.setdefault((kind, hashlib.sha256(path.read_bytes()).hexdigest()), []).append(name)
    pairs = []
    for a, b in itertools.combinations(sorted(sets), 2):
        score = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
        if score >= THRESHOLD:
            pairs.append((a, b, score, "code"))
    for (kind, _), names in hashes.items():
        for a, b in itertools.combinations(sorted(names), 2):
            pairs.append((a, b, 1.0, f"identical {kind}"))
    return sorted(pairs, key=lambda p: -p[2])
