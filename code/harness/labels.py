"""The dataset's text files: label files ('<image path> <label>' lines) and categories.txt ('/a/abbey 0').

Saved as UTF-8 with or without a byte-order mark, with LF or CRLF line ends. Every mistake raises
DataError, one line naming the file and line.
"""
import os
import re
from pathlib import Path

from .cli import DataError, one_line

_DRIVE = re.compile(r"^[A-Za-z]:")
_UNUSUAL_PATH_TOKENS = ("..", "\\", ":", "//", "./")
# "utf-8-sig" drops the byte-order mark that Windows editors write ("UTF-8 with BOM"), which would
# otherwise stick to the first image path or class name; without a BOM it reads plain UTF-8.
TEXT_ENCODING = "utf-8-sig"


def _read_lines(path):
    """(line number, stripped text) for each non-blank line of a UTF-8 text file, with or without a BOM,
    with LF or CRLF line ends."""
    try:
        text = Path(path).read_text(encoding=TEXT_ENCODING)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({one_line(error)})") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def check_relative_path(rel_path, where):
    """Reject paths that are absolute or climb out of images/ ('..'); `where` is 'file:line'.

    Returns the path normalised to forward slashes without '.' or empty parts.
    """
    if not any(token in rel_path for token in _UNUSUAL_PATH_TOKENS) and rel_path[0] != "/":
        return rel_path  # the common case (100,000 lines in the full train.txt): nothing to normalise
    if rel_path.startswith(("/", "\\")) or _DRIVE.match(rel_path):
        raise DataError(f"{where}: image path '{rel_path}' is absolute; paths are relative to images/")
    parts = rel_path.replace("\\", "/").split("/")
    if ".." in parts:
        raise DataError(f"{where}: image path '{rel_path}' leaves images/ ('..' is not allowed)")
    return "/".join(part for part in parts if part not in ("", "."))


def parse_label_file(path, num_classes):
    """[(relative image path, label, line number)] from lines '<path> <label>'; blank lines are skipped.

    An image listed twice is refused: it would count twice in every accuracy and prediction file.
    """
    samples = []
    first_line = {}  # image path -> the line that listed it first
    for number, line in _read_lines(path):
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{where}: expected '<image path> <label>', got '{line[:80]}'")
        rel_path, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(f"{where}: label '{label_text}' is not an integer") from None
        if not 0 <= label < num_classes:
            raise DataError(f"{where}: label {label} is outside 0..{num_classes - 1} (num_classes={num_classes})")
        rel_path = check_relative_path(rel_path, where)
        if rel_path in first_line:
            raise DataError(f"{where}: image {rel_path} is listed twice (first on line {first_line[rel_path]})")
        first_line[rel_path] = number
        samples.append((rel_path, label, number))
    if not samples:
        raise DataError(f"{path}: no images listed")
    return samples


def parse_categories(path):
    """Class names by index from lines '/a/abbey 0' (the '/<letter>/' prefix is dropped: 'abbey')."""
    names = {}
    for number, line in _read_lines(path):
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 2 or not fields[1].isdigit():
            raise DataError(f"{where}: expected '<category> <index>', got '{line[:80]}'")
        index = int(fields[1])
        if index in names:
            raise DataError(f"{where}: index {index} is listed twice")
        names[index] = re.sub(r"^/[^/]/", "", fields[0]).lstrip("/")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: indices must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]


def class_names_from_folders(train_dir):
    """Sorted class names from images/train/<letter>/<class...>/ folders that hold files."""
    names = set()
    for folder, _, files in os.walk(train_dir):
        if files:
            parts = Path(folder).relative_to(train_dir).parts
            names.add("/".join(parts[1:]) if len(parts) > 1 else "/".join(parts))
    return sorted(name for name in names if name)
