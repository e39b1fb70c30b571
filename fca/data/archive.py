"""Safe extraction of .zip and .tar(.gz/.bz2/.xz) archives.

Every entry is checked before anything is written: absolute paths, '..'
components, links that point outside the destination, paths that go through a
link, and special files (devices, fifos) are refused with an error that names
the archive and the entry. Extraction goes into a temporary sibling folder that
is renamed into place at the end, so a failure leaves no partial output.

Archive bombs are refused too, from the headers before anything is written and again
while writing (a header may lie):
- a byte budget: the members' total uncompressed size must not exceed `max_bytes`
  (default 64 GiB: DIV2K's training set is 3.5 GB);
- a compression ratio: a zip member may not expand more than `max_ratio` (default
  200) times its compressed size (counted as at least RATIO_FLOOR_BYTES, so small,
  very compressible files such as a short text of spaces pass), nor a compressed tar
  as a whole more than `max_ratio` times the archive's size. Photos compress by
  1-3x; a zip bomb by ~1000x (deflate's limit) per layer.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from fca.fsutil import atomic_dir

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MAX_BYTES = 64 * 2**30
MAX_RATIO = 200.0
RATIO_FLOOR_BYTES = 1024
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive that is unreadable or holds an entry we refuse to extract."""

    def __init__(self, archive: str | os.PathLike, entry: str | None, reason: str) -> None:
        self.archive, self.entry = Path(archive), entry
        where = f"{self.archive}" + (f": entry {entry!r}" if entry is not None else "")
        super().__init__(f"{where}: {reason}")


def is_archive(path: str | os.PathLike) -> bool:
    """True when the file name ends with a supported archive suffix."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _inside(name: str) -> str | None:
    """Why `name` (an entry path) would land outside the destination, or None if it is safe."""
    name = name.replace("\\", "/")  # Windows-made archives
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' path component"
    return None


def _link_target_escapes(entry: str, target: str, hard: bool) -> bool:
    """Does a link at `entry` pointing to `target` resolve outside the archive root?

    Symlink targets are relative to the link's folder; hardlink targets are
    archive paths (relative to the root).
    """
    target = target.replace("\\", "/")
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        return True
    base = "" if hard else posixpath.dirname(entry.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, target))
    return resolved == ".." or resolved.startswith("../")


def _check_tar(archive: Path, tf: tarfile.TarFile) -> None:
    links: set[str] = set()
    for m in tf.getmembers():
        why = _inside(m.name)
        if why is None and (m.issym() or m.islnk()) and _link_target_escapes(m.name, m.linkname, m.islnk()):
            why = f"{'symlink' if m.issym() else 'hardlink'} to {m.linkname!r} points outside the destination"
        if why is None and not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            why = "special file (device, fifo) not allowed"
        norm = posixpath.normpath(m.name.replace("\\", "/"))
        # A later entry written through an earlier symlink could escape even with a clean name.
        if why is None and any(norm.startswith(link + "/") for link in links):
            why = "path goes through a symlink in the archive"
        if why is not None:
            raise ArchiveError(archive, m.name, f"refused: {why}")
        if m.issym():
            links.add(norm)


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        why = _inside(info.filename)
        if why is None and stat.S_ISLNK(info.external_attr >> 16):
            why = "symlink entries are not supported in zip archives"
        if why is not None:
            raise ArchiveError(archive, info.filename, f"refused: {why}")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _check_budget_zip(archive: Path, zf: zipfile.ZipFile, max_bytes: int, max_ratio: float) -> None:
    total = 0
    for info in zf.infolist():
        ratio = info.file_size / max(info.compress_size, RATIO_FLOOR_BYTES)
        if ratio > max_ratio:
            raise ArchiveError(archive, info.filename, f"refused: expands {info.file_size / max(info.compress_size, 1):.0f}:1 "
                               f"({_size(info.compress_size)} -> {_size(info.file_size)}), more than the limit of {max_ratio:g}:1 (a zip bomb?)")
        total += info.file_size
        if total > max_bytes:
            raise ArchiveError(archive, info.filename, f"refused: the members up to this one hold {_size(total)} uncompressed, "
                               f"more than the budget of {_size(max_bytes)}")


def _check_budget_tar(archive: Path, tf: tarfile.TarFile, max_bytes: int, max_ratio: float) -> None:
    total, largest = 0, None
    for m in tf.getmembers():
        if not m.isfile():
            continue
        total += m.size
        if largest is None or m.size > largest.size:
            largest = m
        if total > max_bytes:
            raise ArchiveError(archive, m.name, f"refused: the members up to this one hold {_size(total)} uncompressed, "
                               f"more than the budget of {_size(max_bytes)}")
    packed = archive.stat().st_size
    if largest is not None and total / max(packed, RATIO_FLOOR_BYTES) > max_ratio:
        raise ArchiveError(archive, largest.name, f"refused: the archive expands {total / max(packed, 1):.0f}:1 "
                           f"({_size(packed)} -> {_size(total)}; largest member shown), more than the limit of {max_ratio:g}:1 (an archive bomb?)")


class _Budget:
    """Counts the bytes actually written; a member writing more than its header said, or the
    archive more than the budget, stops the extraction."""

    def __init__(self, archive: Path, max_bytes: int) -> None:
        self.archive, self.left = archive, max_bytes

    def copy(self, src: Any, dst: Any, name: str, declared: int) -> None:
        written = 0
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                return
            written += len(chunk)
            if written > declared:
                raise ArchiveError(self.archive, name, f"refused: holds more data than its header says ({_size(declared)}): a lying header")
            if written > self.left:
                raise ArchiveError(self.archive, name, "refused: extraction went over the byte budget")
            dst.write(chunk)

    def spend(self, n: int) -> None:
        self.left -= n


def _extract_zip(archive: Path, zf: zipfile.ZipFile, dest: Path, budget: _Budget) -> None:
    for info in zf.infolist():
        parts = [p for p in info.filename.split("/") if p not in ("", ".")]
        if not parts:
            continue
        target = dest.joinpath(*parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, open(target, "wb") as dst:  # zipfile checks the CRC at the end
                budget.copy(src, dst, info.filename, info.file_size)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            raise ArchiveError(archive, info.filename, f"cannot extract: {type(e).__name__}: {e}") from e
        budget.spend(target.stat().st_size)


def _extract_tar(archive: Path, tf: tarfile.TarFile, dest: Path, budget: _Budget) -> None:
    for m in tf.getmembers():
        if m.isfile() and m.size > budget.left:
            raise ArchiveError(archive, m.name, "refused: extraction went over the byte budget")
        # The 'data' filter repeats the checks against the real file system.
        tf.extract(m, dest, filter="data")
        if m.isfile():
            budget.spend(m.size)  # tarfile copies exactly the header's size


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, max_bytes: int = MAX_BYTES, max_ratio: float = MAX_RATIO) -> Path:
    """Extract `archive` into the new folder `dest` (which must not exist); return `dest`.

    Raises ArchiveError (naming the archive and the entry) for a refused entry, an
    archive over the byte budget `max_bytes` (total uncompressed size) or the compression
    ratio `max_ratio` (see the module docstring), or an unreadable archive; in every
    failure case `dest` is not created.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest}: extraction target already exists")
    budget = _Budget(archive, max_bytes)
    try:
        with atomic_dir(dest) as tmp:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    _check_zip(archive, zf)
                    _check_budget_zip(archive, zf, max_bytes, max_ratio)
                    _extract_zip(archive, zf, tmp, budget)  # raises BadZipFile on a CRC mismatch
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive, "r:*") as tf:
                    _check_tar(archive, tf)
                    _check_budget_tar(archive, tf, max_bytes, max_ratio)
                    _extract_tar(archive, tf, tmp, budget)
            else:
                raise ArchiveError(archive, None, "not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as e:
        entry = getattr(getattr(e, "tarinfo", None), "name", None)
        raise ArchiveError(archive, entry, f"cannot extract: {type(e).__name__}: {e}") from e
    return dest
