"""Safe extraction of .zip and .tar(.gz/.bz2/.xz) archives.

Every entry is checked before anything is written: absolute paths, '..'
components, links that point outside the destination, paths that go through a
link, and special files (devices, fifos) are refused with an error that names
the archive and the entry. Extraction goes into a temporary sibling folder that
is renamed into place at the end, so a failure leaves no partial output.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path

from fca.fsutil import atomic_dir

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


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


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract `archive` into the new folder `dest` (which must not exist); return `dest`.

    Raises ArchiveError (naming the archive and the entry) for a refused entry or
    an unreadable archive; in every failure case `dest` is not created.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest}: extraction target already exists")
    try:
        with atomic_dir(dest) as tmp:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    _check_zip(archive, zf)
                    zf.extractall(tmp)  # raises BadZipFile on a CRC mismatch
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive, "r:*") as tf:
                    _check_tar(archive, tf)
                    # The 'data' filter repeats the checks against the real file system.
                    tf.extractall(tmp, filter="data")
            else:
                raise ArchiveError(archive, None, "not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        entry = getattr(getattr(e, "tarinfo", None), "name", None)
        raise ArchiveError(archive, entry, f"cannot extract: {type(e).__name__}: {e}") from e
    return dest
