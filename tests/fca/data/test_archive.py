import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from fca.data.archive import ArchiveError, is_archive, safe_extract


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _tar(path, entries):
    """entries: (name, bytes) for files, (name, ('sym'|'hard', target)) for links."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "sym" else tarfile.LNKTYPE
                info.linkname = data[1]
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _nothing_left(root, dest):
    """Only the archive itself is in `root`: no dest, no temp folders, nothing outside."""
    assert not dest.exists()
    assert sorted(p.name for p in root.iterdir()) == ["in"]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "in").mkdir()
    return tmp_path


def test_zip_and_tar_extract(root):
    z = _zip(root / "in" / "a.zip", [("top/a.txt", b"A"), ("top/sub/b.txt", b"B")])
    out = safe_extract(z, root / "out_zip")
    assert (out / "top" / "a.txt").read_bytes() == b"A" and (out / "top/sub/b.txt").read_bytes() == b"B"

    t = _tar(root / "in" / "a.tar.gz", [("d/f.txt", b"F"), ("d/link", ("sym", "f.txt")), ("d/hard", ("hard", "d/f.txt"))])
    out = safe_extract(t, root / "out_tar")
    assert (out / "d" / "link").is_symlink() and (out / "d" / "link").read_bytes() == b"F"
    assert (out / "d" / "hard").read_bytes() == b"F"
    assert sorted(p.name for p in root.iterdir()) == ["in", "out_tar", "out_zip"]  # no temp folders left
    with pytest.raises(FileExistsError):
        safe_extract(t, root / "out_tar")


@pytest.mark.parametrize(
    "name, why",
    [("ok.txt", None), ("../evil.txt", "'..'"), ("a/../../evil.txt", "'..'"), ("/tmp/evil.txt", "absolute")],
)
def test_zip_refuses_escaping_paths(root, name, why):
    z = _zip(root / "in" / "bad.zip", [("fine.txt", b"x"), (name, b"evil")])
    if why is None:
        assert (safe_extract(z, root / "out") / name).read_bytes() == b"evil"
        return
    with pytest.raises(ArchiveError, match=why) as info:
        safe_extract(z, root / "out")
    assert "bad.zip" in str(info.value) and name in str(info.value)
    _nothing_left(root, root / "out")


@pytest.mark.parametrize(
    "entries, bad",
    [
        ([("ok.txt", b"x"), ("../evil.txt", b"e")], "../evil.txt"),
        ([("ok.txt", b"x"), ("/abs/evil.txt", b"e")], "/abs/evil.txt"),
        ([("ok.txt", b"x"), ("link", ("sym", "../../outside"))], "link"),
        ([("d/link", ("sym", "/etc/passwd"))], "d/link"),
        ([("hard", ("hard", "../outside"))], "hard"),
        # a clean name written through an in-archive symlink that itself stays inside
        ([("d/up", ("sym", "..")), ("d/up/x.txt", b"e")], "d/up/x.txt"),
    ],
)
def test_tar_refuses_escapes(root, entries, bad):
    t = _tar(root / "in" / "bad.tar.gz", entries)
    with pytest.raises(ArchiveError) as info:
        safe_extract(t, root / "out")
    assert "bad.tar.gz" in str(info.value) and repr(bad) in str(info.value)
    _nothing_left(root, root / "out")
    assert not (root / "outside").exists() and not (root / "evil.txt").exists()


def test_corrupt_and_unknown_archives(root):
    z = _zip(root / "in" / "c.zip", [("a.txt", b"A" * 10000)])
    data = bytearray(z.read_bytes())
    data[40:60] = b"\0" * 20  # damage the compressed data: CRC check fails
    z.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="c.zip"):
        safe_extract(z, root / "out")
    (root / "in" / "n.zip").write_text("not an archive")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        safe_extract(root / "in" / "n.zip", root / "out")
    assert sorted(p.name for p in root.iterdir()) == ["in"]


def test_is_archive():
    assert is_archive("x.ZIP") and is_archive("a/b.tar.gz") and is_archive("b.tgz")
    assert not is_archive("x.png") and not is_archive("x.gz")


# ---------------------------------------------------------------- archive bombs


def _zip_deflated(path, entries):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def test_a_zip_bomb_is_refused_from_its_headers_before_anything_is_written(root):
    z = _zip_deflated(root / "in" / "bomb.zip", [("ok.txt", b"hello"), ("zeros.bin", bytes(8 * 2**20))])
    assert z.stat().st_size < 20_000  # 8 MiB of zeros in ~8 KB: 1000:1
    with pytest.raises(ArchiveError, match=r"bomb.zip: entry 'zeros.bin': refused: expands \d+:1 .*limit of 200:1") as info:
        safe_extract(z, root / "out")
    assert info.value.entry == "zeros.bin"
    _nothing_left(root, root / "out")
    # the limit is an argument; small, very compressible members pass (ratio counted against >= 1 KiB)
    out = safe_extract(z, root / "out", max_ratio=2000)
    assert (out / "zeros.bin").stat().st_size == 8 * 2**20
    spaces = _zip_deflated(root / "in" / "text.zip", [("notes.txt", b" " * 100_000)])
    assert (safe_extract(spaces, root / "out2") / "notes.txt").stat().st_size == 100_000


def test_the_byte_budget_counts_all_members(root):
    rnd = [os.urandom(100_000) for _ in range(3)]
    z = _zip_deflated(root / "in" / "big.zip", [(f"f{i}.bin", d) for i, d in enumerate(rnd)])
    with pytest.raises(ArchiveError, match=r"big.zip: entry 'f2.bin': refused: .*more than the budget of 244.1 KiB"):
        safe_extract(z, root / "out", max_bytes=250_000)
    _nothing_left(root, root / "out")
    t = _tar(root / "in" / "big.tar.gz", [(f"f{i}.bin", d) for i, d in enumerate(rnd)])
    with pytest.raises(ArchiveError, match=r"big.tar.gz: entry 'f2.bin': refused: .*budget"):
        safe_extract(t, root / "out", max_bytes=250_000)
    _nothing_left(root, root / "out")
    assert sorted(p.name for p in safe_extract(t, root / "out", max_bytes=300_000).iterdir()) == [".fca-output", "f0.bin", "f1.bin", "f2.bin"]


def test_a_tar_bomb_is_refused(root):
    t = _tar(root / "in" / "bomb.tar.gz", [("a.txt", b"a"), ("zeros.bin", bytes(8 * 2**20))])
    with pytest.raises(ArchiveError, match=r"bomb.tar.gz: entry 'zeros.bin': refused: the archive expands \d+:1"):
        safe_extract(t, root / "out")
    _nothing_left(root, root / "out")


def test_a_lying_zip_header_cannot_write_more_than_it_declares(root):
    data = bytes(2**20)
    z = _zip_deflated(root / "in" / "liar.zip", [("x.bin", data)])
    raw = bytearray(z.read_bytes())
    # declare 100 bytes (local header and central directory) for 1 MiB of data
    local, central = raw.index(b"PK\x03\x04"), raw.index(b"PK\x01\x02")
    raw[local + 22 : local + 26] = (100).to_bytes(4, "little")
    raw[central + 24 : central + 28] = (100).to_bytes(4, "little")
    z.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match=r"liar.zip: entry 'x.bin': cannot extract"):
        safe_extract(z, root / "out", max_bytes=1000)
    _nothing_left(root, root / "out")


def test_the_writer_stops_at_the_declared_size_and_the_budget():
    from fca.data.archive import _Budget

    with pytest.raises(ArchiveError, match=r"a.zip: entry 'm': refused: holds more data than its header says"):
        _Budget(Path("a.zip"), 10**6).copy(io.BytesIO(bytes(5000)), io.BytesIO(), "m", 1000)
    with pytest.raises(ArchiveError, match=r"a.zip: entry 'm': refused: extraction went over the byte budget"):
        _Budget(Path("a.zip"), 4000).copy(io.BytesIO(bytes(5000)), io.BytesIO(), "m", 5000)
    sink = io.BytesIO()
    _Budget(Path("a.zip"), 5000).copy(io.BytesIO(bytes(5000)), sink, "m", 5000)
    assert len(sink.getvalue()) == 5000
