"""Download MiniPlaces into data/ in the official layout (images/train|val|test, train.txt, val.txt,
categories.txt).

    python tools/download_data.py [--data-dir data]

Steps: download MIT's data.tar.gz (about 460 MB) with a progress line, resuming a partial download
(data.tar.gz.part, HTTP Range); check its MD5; extract images/ safely (members that would land outside
the target are rejected); fetch the devkit's train.txt, val.txt and categories.txt; count the images
(100,000 train, 10,000 val, 10,000 test). Each finished step is skipped on the next run, so a failed run
can simply be started again. Without network, place the files by hand (the error message says where)
and run it again to check and extract them. The URLs are flags, so tests use file:// URLs.
"""
import argparse
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))  # the harness package and student_code.py

from harness.cli import UserError  # noqa: E402
from harness import cli, paths  # noqa: E402

ARCHIVE_URL = "http://miniplaces.csail.mit.edu/data/data.tar.gz"
ARCHIVE_MD5 = "265825ec94f79390e4f1e38045a69059"
DEVKIT_URL = "https://raw.githubusercontent.com/CSAILVision/miniplaces/master/data"
DEVKIT_FILES = ("train.txt", "val.txt", "categories.txt")
EXPECTED_COUNTS = {"train": 100_000, "val": 10_000, "test": 10_000}
CHUNK_BYTES = 1 << 20
PROGRESS_SECONDS = 0.5
TIMEOUT_SECONDS = 60


class DownloadError(UserError):
    """A download, checksum, extraction or count problem, as one line."""


def _manual_hint(data_dir):
    return (f"download {ARCHIVE_URL} and {DEVKIT_URL}/{{{','.join(DEVKIT_FILES)}}} by hand into "
            f"{data_dir}, then run this script again to check and extract them")


# ---------------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------------
class Progress:
    """One self-overwriting line: name, percent, MB done/total, speed; at most every 0.5 s."""

    def __init__(self, name, total, start=0, stream=None):
        self.name, self.total, self.done = name, total, start
        self.start_bytes, self.t0, self.last = start, time.monotonic(), 0.0
        self.stream = stream or sys.stderr

    def update(self, nbytes, final=False):
        self.done += nbytes
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        rate = (self.done - self.start_bytes) / max(now - self.t0, 1e-6) / 1e6
        total = f"/{self.total / 1e6:.1f}" if self.total else ""
        percent = f"{100.0 * self.done / self.total:5.1f}% " if self.total else ""
        self.stream.write(f"\r  {self.name} {percent}{self.done / 1e6:.1f}{total} MB  {rate:.1f} MB/s ")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _open_url(url, offset, opener):
    request = urllib.request.Request(url, headers={"User-Agent": "miniplaces-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return opener(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # range past the end: the partial file is already complete
            return None
        raise


def download(url, dest, opener=urllib.request.urlopen):
    """Fetch `url` into `dest`, resuming from `dest`.part; the final rename happens only when complete.

    A server that honours Range answers 206 and only the rest is sent; otherwise (200, or file:// URLs)
    the bytes already on disk are read past and the file is continued, so nothing is written twice.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open_url(url, offset, opener)
        if response is None:
            os.replace(part, dest)
            return dest
        with response:
            resumed = getattr(response, "status", None) == 206
            length = response.headers.get("Content-Length")
            total = (int(length) + (offset if resumed else 0)) if length else None
            if offset and not resumed and not _skip(response, offset):
                raise DownloadError(f"{part}: longer than the file at {url}; delete it and run again")
            progress = Progress(dest.name, total, start=offset)
            with open(part, "ab") as out:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    out.write(chunk)
                    progress.update(len(chunk))
            progress.update(0, final=True)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"cannot download {url}: {reason}. Run again to resume; without network, "
                            f"{_manual_hint(dest.parent)}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{part}: download stopped at {size} of {total} bytes; run again to resume")
    os.replace(part, dest)
    return dest


def _skip(response, nbytes):
    """Read past the first `nbytes` of a response that ignored the Range header; False if it is shorter."""
    while nbytes > 0:
        chunk = response.read(min(nbytes, CHUNK_BYTES))
        if not chunk:
            return False
        nbytes -= len(chunk)
    return True


def md5sum(path):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path, expected):
    actual = md5sum(path)
    if actual != expected.lower():
        raise DownloadError(f"{path}: MD5 {actual} does not match the expected {expected}; the file is "
                            f"corrupt or incomplete: delete it and run again")


# ---------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------
def _safe_member_path(member):
    """The member's relative path, or DownloadError when it is a link, a device, absolute or uses '..'."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")):
        raise DownloadError(f"archive member '{member.name}' would be written outside the target folder")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"archive member '{member.name}' is a link or special file; refusing to extract")
    return path


def _images_prefix(path):
    """The part of `path` before its 'images' component ('' or e.g. 'data/'), or None."""
    if "images" not in path.parts:
        return None
    index = path.parts.index("images")
    return PurePosixPath(*path.parts[:index + 1])


def extract_images(archive, data_dir):
    """Extract the archive's images/ folder into data_dir/images, via a temporary folder renamed at the end.

    Files outside images/ (the archive also holds object annotations) are skipped.
    """
    data_dir = Path(data_dir)
    staging = data_dir / f".images.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    count = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = _safe_member_path(member)
                images_root = _images_prefix(path)
                if images_root is None:
                    continue
                target = staging.joinpath(*path.relative_to(images_root).parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                count += 1
        if count == 0:
            raise DownloadError(f"{archive}: no images/ folder in the archive")
        final = data_dir / "images"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DownloadError(f"{archive}: truncated or corrupt archive ({' '.join(str(error).split())}); "
                            f"delete it and run again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count


# ---------------------------------------------------------------------------------------------------
# Checks and the driver
# ---------------------------------------------------------------------------------------------------
def count_images(data_dir):
    """{split: number of .jpg files under images/<split>}."""
    counts = {}
    for split in EXPECTED_COUNTS:
        folder = Path(data_dir) / "images" / split
        counts[split] = sum(name.lower().endswith(".jpg") for _, _, names in os.walk(folder) for name in names)
    return counts


def check_counts(data_dir, expected):
    counts = count_images(data_dir)
    wrong = [f"{split} {counts[split]} (expected {expected[split]})" for split in expected
             if counts[split] != expected[split]]
    if wrong:
        raise DownloadError(f"{Path(data_dir) / 'images'}: wrong image counts: {', '.join(wrong)}; "
                            f"delete the folder and run again")
    return counts


def fetch(args):
    """Run every step that is not done yet; returns the image counts."""
    data_dir = Path(args.data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / "data.tar.gz"
    expected = dict(zip(EXPECTED_COUNTS, args.expected_counts))

    have_images = (data_dir / "images").is_dir() and count_images(data_dir) == expected
    if not have_images:
        if not archive.exists():
            print(f"downloading {args.url}", file=sys.stderr)
            download(args.url, archive)
        if args.md5:
            print(f"checking MD5 of {archive}", file=sys.stderr)
            check_md5(archive, args.md5)
        print(f"extracting {archive} into {data_dir / 'images'}", file=sys.stderr)
        extract_images(archive, data_dir)
    for name in DEVKIT_FILES:
        if not (data_dir / name).exists():
            download(f"{args.devkit_url.rstrip('/')}/{name}", data_dir / name)
    counts = check_counts(data_dir, expected)
    if not args.keep_archive and archive.exists():
        archive.unlink()
    return counts


def get_args_parser():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=str(paths.DEFAULT_DATA_DIR), help="target folder")
    parser.add_argument("--url", default=ARCHIVE_URL, help="URL of data.tar.gz")
    parser.add_argument("--md5", default=ARCHIVE_MD5, help="expected MD5 of data.tar.gz ('' skips the check)")
    parser.add_argument("--devkit-url", default=DEVKIT_URL,
                        help="folder URL holding train.txt, val.txt and categories.txt")
    parser.add_argument("--expected-counts", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        default=list(EXPECTED_COUNTS.values()), help="image counts to check")
    parser.add_argument("--keep-archive", action="store_true", help="keep data.tar.gz after extracting")
    return parser


def main(argv=None):
    """Entry point; returns the exit code (0; 2 a flag, a file or the network; 5 the disk is full;
    130 Ctrl-C: run again to resume the download)."""
    return cli.run(download_miniplaces, argv)


def download_miniplaces(argv):
    args = get_args_parser().parse_args(argv)
    counts = fetch(args)
    print(f"MiniPlaces is ready in {args.data_dir}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
