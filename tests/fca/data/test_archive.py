import io
import tarfile
import zipfile

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
