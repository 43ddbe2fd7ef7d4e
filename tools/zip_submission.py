"""Pack the hand-in, as the assignment's zip_submission.py: code/, writeup/ (when present) and results/.
code/harness/, the staff's library, is left out: the 2019 zip took code/ when it held only the course's
files and the student's, and staff need not tell which harness module a student edited.

    python tools/zip_submission.py [--output submission.zip]

Paths inside the zip are relative to the repository root (code/main.py, results/model.pth.tar, ...).
Never packed: data/, logs/, checkpoints outside results/ (*.pth, *.pth.tar, *.pt, *.ckpt), caches
(__pycache__, .pytest_cache, *.pyc), hidden files (e.g. unfinished atomic writes) and symbolic links.
The zip is written atomically to the repository root unless --output says otherwise.
"""
import os
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness import cli, files, models, paths  # noqa: E402
from harness.cli import UserError  # noqa: E402

PACKED_FOLDERS = ("code", "writeup", "results")
REQUIRED_FOLDERS = ("code", "results")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".git"}
HARNESS_DIR = "code/harness"  # the staff's library: never handed in
SKIPPED_SUFFIXES = (".pyc", ".pyo")
CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".ckpt")
# What predict.py writes; a hand-in without them gets a warning, not a refusal.
EXPECTED_RESULTS = ("model.pth.tar", "predictions_test.txt", "predictions_val.txt")


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


def make_zip(repo_root=paths.REPO_ROOT, output=None):
    """Write the zip atomically; returns (zip path, [names packed], [warnings])."""
    repo_root = Path(repo_root)
    output = Path(output) if output else repo_root / "submission.zip"
    check_model_size(repo_root)
    packed, warnings = collect_files(repo_root, output)

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, arcname in packed:
                archive.write(path, arcname)

    try:
        files.atomic_write(output, write)
    except OSError as exc:
        raise UserError(f"--output: cannot write {output} ({exc.strerror or exc})") from None
    return output, [arcname for _, arcname in packed], warnings


def main(argv=None):
    """Entry point; returns the exit code (0, or 2 for a user error)."""
    parser = cli.ArgumentParser(description="Zip code/, writeup/ and results/ into submission.zip.")
    parser.add_argument("--output", default=str(paths.REPO_ROOT / "submission.zip"), help="zip file to write")
    try:
        args = parser.parse_args(argv)
        output, names, warnings = make_zip(paths.REPO_ROOT, args.output)
    except UserError as exc:
        cli.print_user_error(exc)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for name in names:
        print(f"  {name}")
    print(f"{output}: {len(names)} files, {output.stat().st_size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
