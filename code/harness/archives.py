"""A checkpoint handed over inside an archive, as course staff publish them: a zip, a tar (plain or
gzip-, bzip2- or xz-compressed: .tar.gz, .tgz, ...) or one file compressed alone (.gz, .bz2, .xz).

    with archives.unpacked(path, "--resume") as (source, member):
        torch.load(source, ...)

`source` is `path` itself when the file is no archive: torch.save's own format is a zip too, told
apart by its `<folder>/data.pkl` member, and the legacy format (and anything else) is left to
torch.load to judge, as before. Otherwise it is an unnamed temporary file holding the archive's one
checkpoint (in memory up to SPOOL_BYTES, on disk beyond; gone when closed, even after a crash) and
`member` is that checkpoint's name inside the archive. An archive holding no checkpoint or several,
or a damaged one, is an ArchiveError: one line saying what the file is, what it holds and how to
extract it.
"""
import bz2
import contextlib
import gzip
import lzma
import pickle
import re
import shlex
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch

from .cli import UserError

SPOOL_BYTES = 256 * 2**20  # a checkpoint larger than this is unpacked to a temporary file, not memory
HEAD_BYTES = 512  # enough for a tar header's magic (offset 257) and a zip entry's first name
# What a checkpoint member starts with: the legacy torch.save format begins with its pickled magic
# number; the zip format's first entry is `<folder>/data.pkl`.
LEGACY_TORCH_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
TORCH_ZIP_RECORD = re.compile(r"[^/]+/data\.pkl")
ZIP_HEADS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty zip's end record
# The tar layout of torch.save before PyTorch 0.4 (torch.load reads it): members without a folder.
TORCH_TAR_MEMBERS = {"storages", "tensors", "pickle"}
# Member names that mark a checkpoint whatever its content (a damaged one then gets torch's reason).
CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".ckpt")
# Files that archivers add beside the real ones (macOS's resource forks, Finder and Explorer caches).
JUNK = re.compile(r"(^|.*/)(__MACOSX/.*|\._[^/]*|\.DS_Store|Thumbs\.db|desktop\.ini)")
# Files compressed alone: magic bytes -> (what it is, how to open it, the command that extracts it).
COMPRESSED = {
    b"\x1f\x8b": ("gzip", gzip.open, "gunzip -k"),
    b"BZh": ("bzip2", bz2.open, "bunzip2 -k"),
    b"\xfd7zXZ\x00": ("xz", lzma.open, "unxz -k"),
}
TAR_MODES = {None: "", "gzip": "gz", "bzip2": "bz2", "xz": "xz"}  # tarfile.open's "r:<mode>"
# What reading a damaged (or encrypted) archive raises; gzip.BadGzipFile is an OSError without errno.
UNREADABLE = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, ValueError,
              NotImplementedError, RuntimeError)


class ArchiveError(UserError):
    """An archive holding no checkpoint, several, or damaged."""


def is_checkpoint_member(name, head):
    """Whether a file named `name` (in an archive) starting with the bytes `head` is a checkpoint."""
    if name.lower().endswith(CHECKPOINT_SUFFIXES) or head.startswith(LEGACY_TORCH_HEAD):
        return True
    first = _first_zip_record(head)
    return first is not None and TORCH_ZIP_RECORD.fullmatch(first) is not None


def _first_zip_record(head):
    """The name of the first entry of a zip file that starts with `head`, or None."""
    if not head.startswith(b"PK\x03\x04") or len(head) < 30:
        return None
    length = int.from_bytes(head[26:28], "little")
    return head[30:30 + length].decode("utf-8", "replace")


class _Zip:
    what, command = "a zip archive", "unzip"

    def __init__(self, archive):
        self.archive = archive

    def members(self):
        return [info.filename for info in self.archive.infolist() if not info.is_dir()]

    def open(self, name):
        return self.archive.open(name)

    def close(self):
        self.archive.close()


class _Tar:
    command = "tar -xf"

    def __init__(self, archive, what):
        self.archive, self.what = archive, what

    def members(self):
        return [member.name for member in self.archive.getmembers() if member.isfile()]

    def open(self, name):
        return self.archive.extractfile(name)

    def close(self):
        self.archive.close()


class _Compressed:
    """One file compressed alone: its one member is named after the file without the suffix."""

    def __init__(self, path, compression, opener, command):
        self.path, self.opener, self.command = path, opener, command
        self.what = f"a {compression}-compressed file"

    def members(self):
        return [self.path.stem if self.path.suffix else self.path.name]

    def open(self, name):
        return self.opener(self.path, "rb")

    def close(self):
        pass


def _open_archive(path):
    """The archive in `path`, or None when it is none (a checkpoint, or a file torch.load will refuse).

    Raises UNREADABLE errors, or OSError without errno, for a damaged compressed file, with `.what`
    set to what the file is.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return None  # torch.load says why, as it always did
    if head.startswith(ZIP_HEADS):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError):
            return None  # a truncated checkpoint or zip: torch.load names what is missing, as before
        if any(TORCH_ZIP_RECORD.fullmatch(name) for name in archive.namelist()):
            archive.close()
            return None  # torch.save's own zip
        return _Zip(archive)
    compressed = next((entry for magic, entry in COMPRESSED.items() if head.startswith(magic)), None)
    if head[257:262] == b"ustar" or compressed:
        archive = _open_tar(path, compressed[0] if compressed else None)
        if archive is not None:
            return archive
    if compressed:
        return _Compressed(Path(path), *compressed)
    return None


def _open_tar(path, compression):
    """The tar archive in `path` (compressed with `compression`, or not), or None when it is a torch
    checkpoint of before PyTorch 0.4, or a compressed file without a tar inside."""
    what = f"a {compression}-compressed file" if compression else "a tar archive"
    try:
        try:
            archive = tarfile.open(path, f"r:{TAR_MODES[compression]}")
        except tarfile.ReadError:
            if not compression:
                raise  # a tar header's magic but no tar: a damaged one
            return None
        what = f"a {compression}-compressed tar archive" if compression else what
        names = {member.name for member in archive.getmembers()}
    except (*UNREADABLE, OSError) as exc:
        exc.what = what
        raise
    if names >= TORCH_TAR_MEMBERS:
        archive.close()
        return None
    return _Tar(archive, what)


def _listing(names, limit=5):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@contextlib.contextmanager
def unpacked(path, flag="--resume"):
    """(source, member) for torch.load: `path` and None when it is no archive, else a temporary file
    holding the archive's one checkpoint and its name in the archive. ArchiveError (one line naming
    `flag`) for an archive holding no checkpoint or several, or one that cannot be read."""
    with contextlib.ExitStack() as cleanup:
        yield _unpack(Path(path), flag, cleanup)


def _unpack(path, flag, cleanup):
    """unpacked()'s (source, member); the temporary copy is closed (removed) by `cleanup`."""
    archive = None
    try:
        archive = _open_archive(path)
        if archive is None:
            return path, None
        cleanup.callback(archive.close)
        names = [name for name in archive.members() if not JUNK.fullmatch(name)]
        found = []
        for name in names:
            with archive.open(name) as member:
                if is_checkpoint_member(name, member.read(HEAD_BYTES)):
                    found.append(name)
        if len(found) != 1:
            holds = (f"{len(found)} checkpoints ({_listing(found)})" if found else
                     f"no checkpoint ({_listing(names)})" if names else "no checkpoint (it is empty)")
            then = "one of them" if found else "a checkpoint"
            raise ArchiveError(f"{flag}: {path} is {archive.what} holding {holds}: extract it with "
                               f"{_command(archive, path)} and give {flag} {then}")
        copy = cleanup.enter_context(tempfile.SpooledTemporaryFile(SPOOL_BYTES))
        with archive.open(found[0]) as member:
            shutil.copyfileobj(member, copy)
        copy.seek(0)
        return copy, found[0]
    except UNREADABLE + (OSError,) as exc:
        if isinstance(exc, OSError) and exc.errno is not None and archive:  # the disk: no room for the copy, say
            raise ArchiveError(f"{flag}: cannot unpack {path} ({exc.strerror}): extract it with "
                               f"{_command(archive, path)} and give {flag} the checkpoint") from None
        what = archive.what if archive else getattr(exc, "what", "an archive")
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ArchiveError(f"{flag}: {path} is {what} that cannot be read ({reason}): download it again") from None


def _command(archive, path):
    return f"`{archive.command} {shlex.quote(str(path))}`"
