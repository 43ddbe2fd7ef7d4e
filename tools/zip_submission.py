"""Pack the hand-in, as the assignment's zip_submission.py: code/, writeup/ (when present) and results/.
code/harness/, the staff's library, is left out: the 2019 zip took code/ when it held only the course's
files and the student's, and staff need not tell which harness module a student edited.

    python tools/zip_submission.py [--output submission.zip]

Paths inside the zip are relative to the repository root (code/main.py, results/model.pth.tar, ...).
Never packed: data/, logs/, checkpoints outside results/ (*.pth, *.pth.tar, *.pt, *.ckpt), caches
(__pycache__, .pytest_cache, *.pyc), hidden files (e.g. unfinished atomic writes) and symbolic links.
The zip is written atomically to the repository root unless --output says otherwise. A warning (one
line each, the zip is still written) names what makes it bigger than the hand-in needs: a model file in
results/ besides model.pth.tar over the challenge's 10 MB limit, and a zip over UPLOAD_LIMIT_BYTES (50 MB),
which a course site may refuse, with its largest files.
"""
import os
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness import archives, cli, files, models, paths  # noqa: E402
from harness.cli import UserError  # noqa: E402

PACKED_FOLDERS = ("code", "writeup", "results")
REQUIRED_FOLDERS = ("code", "results")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".git"}
HARNESS_DIR = "code/harness"  # the staff's library: never handed in
SKIPPED_SUFFIXES = (".pyc", ".pyo")
CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".ckpt")
# What predict.py writes; a hand-in without them gets a warning, not a refusal.
EXPECTED_RESULTS = ("model.pth.tar", "predictions_test.txt", "predictions_val.txt")
CHALLENGE_MODEL = "results/model.pth.tar"
# A zip that a course site may refuse: 50 MB, Canvas's default user file quota (Instructure, "Canvas File
# Quotas"), which uploads to ungraded assignments count against. Graded submissions do not, and schools
# raise it (UW-Madison: 512 MB), so it is a cautious figure for a warning; sources in docs/hand-in.md.
UPLOAD_LIMIT_BYTES = 50_000_000
LARGEST_SHOWN = 3


def _is_checkpoint(name):
    return name.lower().endswith(CHECKPOINT_SUFFIXES)


def collect_files(repo_root=paths.REPO_ROOT, output=None):
    """([(file path, name in the zip)], [warnings]) of what the hand-in holds, sorted by name."""
    repo_root = Path(repo_root)
    output = Path(output).resolve() if output else None
    packed, warnings = [], []
    for folder in REQUIRED_FOLDERS:
        if not (repo_root / folder).is_dir():
            raise UserError(f"{repo_root / folder}: folder not found (run from a checkout of the assignment)")
    for folder in PACKED_FOLDERS:
        top = repo_root / folder
        if not top.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(top):  # symlinked folders are not followed
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith(".")
                                 and (Path(dirpath) / d).relative_to(repo_root).as_posix() != HARNESS_DIR)
            for name in sorted(filenames):
                path = Path(dirpath) / name
                arcname = path.relative_to(repo_root).as_posix()
                if name.startswith(".") or name.endswith(SKIPPED_SUFFIXES) or path.resolve() == output:
                    continue
                if path.is_symlink():
                    warnings.append(f"skipped {arcname}: a symbolic link")
                elif folder != "results" and _is_checkpoint(name):
                    warnings.append(f"skipped {arcname}: checkpoints go in results/ only")
                else:
                    packed.append((path, arcname))
    present = {arcname for _, arcname in packed}
    missing = [name for name in EXPECTED_RESULTS if f"results/{name}" not in present]
    if missing:
        warnings.append(f"results/ lacks {', '.join(missing)} (make them with tools/predict.py)")
    return packed, warnings


def check_model_size(repo_root=paths.REPO_ROOT):
    """Refuse a results/model.pth.tar at or over the challenge's limit (models.MAX_MODEL_BYTES)."""
    model = Path(repo_root) / "results" / "model.pth.tar"
    if model.is_file():
        models.check_model_size(model.stat().st_size, model)


def _megabytes(num_bytes):
    return f"{num_bytes / 1e6:.1f} MB"


def _is_model_file(path, arcname):
    """A checkpoint by its name or by its first bytes (torch.save's zip or legacy format)."""
    with open(path, "rb") as f:
        return archives.is_checkpoint_member(arcname, f.read(archives.HEAD_BYTES))


def size_warnings(output, packed):
    """One line for each model file in results/ besides the challenge's own at or over its 10 MB limit
    (models.MAX_MODEL_BYTES), and one when the zip is over UPLOAD_LIMIT_BYTES, naming its largest files
    (by the bytes they take in the zip)."""
    warnings = []
    for path, arcname in packed:
        size = path.stat().st_size
        if (arcname.startswith("results/") and arcname != CHALLENGE_MODEL and size >= models.MAX_MODEL_BYTES
                and _is_model_file(path, arcname)):
            warnings.append(f"{arcname}: {_megabytes(size)}, a model file over the challenge's 10 MB limit; the "
                            f"hand-in needs only {CHALLENGE_MODEL} (tools/predict.py writes it)")
    total = Path(output).stat().st_size
    if total > UPLOAD_LIMIT_BYTES:
        with zipfile.ZipFile(output) as archive:
            largest = sorted(archive.infolist(), key=lambda info: info.compress_size, reverse=True)[:LARGEST_SHOWN]
        names = ", ".join(f"{info.filename} ({_megabytes(info.compress_size)})" for info in largest)
        warnings.append(f"{output}: {_megabytes(total)}, over the {UPLOAD_LIMIT_BYTES / 1e6:g} MB a course site may "
                        f"refuse (Canvas's default quota; docs/hand-in.md); the largest files: {names}")
    return warnings


def make_zip(repo_root=paths.REPO_ROOT, output=None):
    """Write the zip atomically; returns (zip path, [names packed], [warnings]), the warnings about
    skipped and missing files first, then about sizes."""
    repo_root = Path(repo_root)
    output = Path(output) if output else repo_root / "submission.zip"
    check_model_size(repo_root)
    packed, warnings = collect_files(repo_root, output)

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, arcname in packed:
                archive.write(path, arcname)

    files.atomic_write(output, write)  # one line when it cannot: a full disk, a read-only folder
    return output, [arcname for _, arcname in packed], warnings + size_warnings(output, packed)


def main(argv=None):
    """Entry point; returns the exit code (0, or those of harness.cli: 2 a user error, 5 the disk is full)."""
    return cli.run(zip_submission, argv)


def zip_submission(argv):
    parser = cli.ArgumentParser(description="Zip code/, writeup/ and results/ into submission.zip.")
    parser.add_argument("--output", default=str(paths.REPO_ROOT / "submission.zip"), help="zip file to write")
    args = parser.parse_args(argv)
    output, names, warnings = make_zip(paths.REPO_ROOT, args.output)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for name in names:
        print(f"  {name}")
    print(f"{output}: {len(names)} files, {output.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    sys.exit(main())
