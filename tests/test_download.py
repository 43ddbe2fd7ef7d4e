"""download_data against tiny local archives through file:// URLs (no network): the happy path, resume,
HTTP 206 responses, checksum mismatch, truncated archives, hostile members and count checks."""
import hashlib
import io
import tarfile

import pytest
from PIL import Image

import download_data
from custom_dataloader import MiniPlacesLoader
from download_data import DownloadError

COUNTS = {"train": 2, "val": 1, "test": 1}


def jpeg_bytes(color):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def add_bytes(tar, name, payload, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(payload)
    tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)


def make_archive(path, prefix="", extra=()):
    """A MiniPlaces-shaped data.tar.gz: 2 train, 1 val, 1 test image, plus an objects/ file to skip."""
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, f"{prefix}images/train/a/abbey/00000001.jpg", jpeg_bytes((200, 0, 0)))
        add_bytes(tar, f"{prefix}images/train/b/bakery/shop/00000001.jpg", jpeg_bytes((0, 200, 0)))
        add_bytes(tar, f"{prefix}images/val/00000001.jpg", jpeg_bytes((0, 0, 200)))
        add_bytes(tar, f"{prefix}images/test/00000001.jpg", jpeg_bytes((9, 9, 9)))
        add_bytes(tar, f"{prefix}objects/train/a/abbey/00000001.xml", b"<annotation/>")
        for name, payload, kind, linkname in extra:
            add_bytes(tar, name, payload, kind, linkname)
    return path


def make_devkit(folder):
    folder.mkdir()
    (folder / "train.txt").write_text("train/a/abbey/00000001.jpg 0\ntrain/b/bakery/shop/00000001.jpg 1\n")
    (folder / "val.txt").write_text("val/00000001.jpg 1\n")
    (folder / "categories.txt").write_text("/a/abbey 0\n/b/bakery/shop 1\n")
    return folder


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path):
    """Source files (served as file:// URLs) and the argv that points download_data at them."""
    archive = make_archive(tmp_path / "src.tar.gz")
    devkit = make_devkit(tmp_path / "devkit")
    data_dir = tmp_path / "data"
    argv = ["--data-dir", str(data_dir), "--url", archive.as_uri(), "--md5", md5(archive),
            "--devkit-url", devkit.as_uri(), "--expected-counts", *map(str, COUNTS.values())]
    return archive, data_dir, argv


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ")
    return err


@pytest.mark.parametrize("prefix", ["", "data/"])
def test_download_extract_and_check(tmp_path, server, capsys, prefix):
    archive, data_dir, argv = server
    make_archive(archive, prefix=prefix)
    argv[argv.index("--md5") + 1] = md5(archive)
    assert download_data.main(argv) == 0
    out = capsys.readouterr()
    assert "MiniPlaces is ready" in out.out and "100.0%" in out.err  # the progress line
    assert sorted(p.name for p in data_dir.iterdir()) == ["categories.txt", "images", "train.txt", "val.txt"]
    assert not (data_dir / "objects").exists()
    dataset = MiniPlacesLoader(data_dir, num_classes=2, split="train")
    assert dataset.classes == ["abbey", "bakery/shop"] and dataset[1][1] == 1
    # A second run finds everything in place and only re-checks the counts.
    assert download_data.main(argv) == 0


def test_resumes_partial_download(server):
    archive, data_dir, argv = server
    data_dir.mkdir()
    payload = archive.read_bytes()
    (data_dir / "data.tar.gz.part").write_bytes(payload[: len(payload) // 2])
    assert download_data.download(archive.as_uri(), data_dir / "data.tar.gz") == data_dir / "data.tar.gz"
    assert (data_dir / "data.tar.gz").read_bytes() == payload
    assert not (data_dir / "data.tar.gz.part").exists()


def test_partial_longer_than_source_is_reported(server):
    archive, data_dir, _ = server
    data_dir.mkdir()
    (data_dir / "data.tar.gz.part").write_bytes(archive.read_bytes() + b"junk")
    with pytest.raises(DownloadError, match=r"data\.tar\.gz\.part: longer than the file at file://"):
        download_data.download(archive.as_uri(), data_dir / "data.tar.gz")


class FakeResponse(io.BytesIO):
    """What urlopen returns for an HTTP server that honours Range (status 206)."""

    def __init__(self, payload, status, length=None):
        super().__init__(payload)
        self.status = status
        self.headers = {"Content-Length": str(len(payload) if length is None else length)}


def test_http_range_request_appends_the_rest(tmp_path):
    payload = bytes(range(256)) * 50
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(payload[:1000])
    requests = []

    def opener(request, timeout):
        requests.append(request.get_header("Range"))
        return FakeResponse(payload[1000:], status=206)

    download_data.download("http://example.invalid/file.bin", dest, opener=opener)
    assert requests == ["bytes=1000-"] and dest.read_bytes() == payload


def test_interrupted_transfer_keeps_part_file(tmp_path):
    dest = tmp_path / "file.bin"

    def opener(request, timeout):
        return FakeResponse(b"x" * 100, status=200, length=500)  # the connection closed early

    with pytest.raises(DownloadError, match=r"file\.bin\.part: download stopped at 100 of 500 bytes; run again"):
        download_data.download("http://example.invalid/file.bin", dest, opener=opener)
    assert (tmp_path / "file.bin.part").stat().st_size == 100 and not dest.exists()


def test_unreachable_url_explains_manual_placement(server, capsys):
    _, data_dir, argv = server
    argv[argv.index("--url") + 1] = (data_dir.parent / "missing.tar.gz").as_uri()
    assert download_data.main(argv) == 2
    line = error_line(capsys)
    assert "cannot download file://" in line and "by hand into" in line


def test_checksum_mismatch(server, capsys):
    _, data_dir, argv = server
    argv[argv.index("--md5") + 1] = "0" * 32
    assert download_data.main(argv) == 2
    line = error_line(capsys)
    assert f"{data_dir / 'data.tar.gz'}: MD5" in line and "does not match the expected 0000" in line


@pytest.mark.parametrize("check_md5", [True, False])
def test_truncated_archive(server, capsys, check_md5):
    archive, data_dir, argv = server
    good_md5 = md5(archive)
    archive.write_bytes(archive.read_bytes()[:-300])  # the source itself is cut short
    argv[argv.index("--md5") + 1] = good_md5 if check_md5 else ""
    assert download_data.main(argv) == 2
    line = error_line(capsys)
    assert ("does not match the expected" in line) if check_md5 else ("truncated or corrupt archive" in line)
    assert not (data_dir / "images").exists()


@pytest.mark.parametrize("name,kind,linkname", [
    ("images/../../evil.jpg", tarfile.REGTYPE, ""),
    ("/tmp/evil.jpg", tarfile.REGTYPE, ""),
    ("images/train/link.jpg", tarfile.SYMTYPE, "/etc/passwd"),
])
def test_rejects_members_escaping_the_target(server, capsys, tmp_path, name, kind, linkname):
    archive, data_dir, argv = server
    make_archive(archive, extra=[(name, b"evil", kind, linkname)])
    argv[argv.index("--md5") + 1] = ""
    assert download_data.main(argv) == 2
    assert f"archive member '{name}'" in error_line(capsys)
    assert not (tmp_path / "evil.jpg").exists() and not (data_dir / "images").exists()
    assert [p.name for p in data_dir.iterdir()] == ["data.tar.gz"]  # no staging folder left


def test_count_check(server, capsys):
    _, _, argv = server
    argv[argv.index("--expected-counts") + 1] = "100000"
    assert download_data.main(argv) == 2
    assert "wrong image counts: train 2 (expected 100000)" in error_line(capsys)
