"""A folder of submissions: one entry per student, named after the student.

    NAME/        a folder holding student_code.py (at its top or in code/), their own modules beside it,
                 and results/ when they hand in the challenge
    NAME.zip     as tools/zip_submission.py makes it (code/, writeup/, results/), unpacked safely
    NAME.py      a bare student_code.py

Each becomes a staging folder with student_code.py at its top (plus results/ when present), and a hash
of its files: the grader skips a student whose hash and grader version are unchanged.
"""
import hashlib
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..cli import UserError

FILE_NAME = "student_code.py"
MAX_UNPACKED_BYTES = 200 * 2**20


@dataclass(frozen=True)
class Submission:
    name: str
    source: Path  # the staging folder: student_code.py, their modules, results/
    digest: str
    problem: str = ""  # why it cannot be graded (no student_code.py, a bad zip)


def discover(folder, staging, only=None):
    """[Submission] of `folder`'s entries, sorted by name; `only`: those names alone."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (give the folder of the students' submissions)")
    entries = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink():
            continue
        if entry.is_dir():
            entries[entry.name] = entry
        elif entry.suffix in (".zip", ".py"):
            entries[entry.stem] = entry
    if only:
        unknown = [name for name in only if name not in entries]
        if unknown:
            raise UserError(f"{folder}: no submission called {unknown[0]!r}")
    staging = Path(staging)
    result = []
    for name, entry in entries.items():
        if only and name not in only:
            continue
        target = staging / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        problem = _stage(entry, target)
        result.append(Submission(name, target, digest(target), problem))
    return result


def _stage(entry, target):
    if entry.suffix == ".py" and entry.is_file():
        shutil.copyfile(entry, target / FILE_NAME)
        return ""
    if entry.suffix == ".zip" and entry.is_file():
        unpacked = target.with_name(target.name + ".unzipped")
        if unpacked.exists():
            shutil.rmtree(unpacked)
        problem = _unzip(entry, unpacked)
        if problem:
            return problem
        entry = unpacked
    found = sorted(entry.rglob(FILE_NAME), key=lambda p: len(p.parts))
    found = [p for p in found if not any(part.startswith(".") or part == "__MACOSX"
                                         for part in p.relative_to(entry).parts)]
    if not found:
        return f"no {FILE_NAME} in the submission"
    code = found[0].parent
    for path in code.iterdir():  # the student's file and their own modules beside it
        if path.is_file() and not path.is_symlink() and path.suffix == ".py":
            shutil.copyfile(path, target / path.name)
    results = next((p for p in (code / "results", code.parent / "results") if p.is_dir()), None)
    if results is not None:
        shutil.copytree(results, target / "results", symlinks=False,
                        ignore=lambda d, names: [n for n in names if (Path(d) / n).is_symlink()])
    return ""


def _unzip(path, target):
    """Extract `path` into `target`, refusing absolute paths, '..', links and more than MAX_UNPACKED_BYTES."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
                return f"the zip unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MB"
            for member in members:
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith("/") or ".." in parts or (member.external_attr >> 16) & 0o170000 == 0o120000:
                    return f"the zip holds an unsafe path: {member.filename[:80]}"
            target.mkdir(parents=True)
            archive.extractall(target)
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a readable zip ({exc})"
    return ""


def digest(folder):
    """sha256 of the folder's relative paths and contents."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
