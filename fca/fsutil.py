"""Filesystem helpers: outputs appear whole or not at all, one writer at a time.

`atomic_file` and `atomic_dir` build an output under a temporary name next to it and
rename it into place at the end, so a crash never leaves half an output under the final
name. Around that they:

- lock the output: an exclusive `fcntl.flock` on the sibling `.<name>.lock` (holding the
  writer's pid) for the whole write. A second writer of the same output, in this or
  another process, fails at once with OutputBusyError ("OUT is being written by another
  process (pid N)") instead of silently replacing the first one's result. The lock file
  is removed when the write ends;
- give the output the permissions the umask allows (files 0o666 & ~umask, folders
  0o777 & ~umask), like any file the user creates; the temporary names stay private
  (0600 / 0700) while they are written;
- remove the leftovers of a killed writer of the same output (temporary names carry the
  writer's pid: `.<name>.fca-<pid>-<random>.tmp`), once that pid is gone;
- mark every folder they make with a `.fca-output` file, and replace an existing
  non-empty folder only when it carries that mark: a folder this tool did not write
  (a user's photos, a home directory) is never deleted to make room for an output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

try:  # POSIX; elsewhere outputs are written without a lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MARKER = ".fca-output"
MARKER_CONTENT = json.dumps({"tool": "fca", "what": "a folder written by the fca pipeline; it may be replaced by it"}) + "\n"
# Errors of the write itself, which say nothing about which output: the output's path is added to them.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}

_umask_lock = threading.Lock()
_building: set[str] = set()  # temporary folders of atomic_dir calls in progress in this process


class OutputBusyError(RuntimeError):
    """Another process (or another writer in this one) is writing the same output."""

    def __init__(self, path: str | os.PathLike, pid: int | None) -> None:
        self.path, self.pid = Path(path), pid
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"{self.path} is being written by another process ({who}); wait for it to finish or choose another output")


class NotOurFolderError(FileExistsError):
    """An existing non-empty folder without the `.fca-output` mark: we refuse to replace it."""


def umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status), else set and restored under a lock."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # other threads creating files meanwhile would see umask 0: keep the window tiny
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new output file: what the umask allows of rw-rw-rw-."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Permissions of a new output folder: what the umask allows of rwxrwxrwx."""
    return 0o777 & ~umask()


def is_fca_output(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder that atomic_dir wrote (it holds the `.fca-output` mark)."""
    return (Path(path) / MARKER).is_file()


def check_replaceable(path: str | os.PathLike, replace: bool) -> None:
    """Raise unless `path` may become an output folder: it is absent, an empty folder, or (with
    `replace`) a folder this tool wrote. Nothing is changed."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink():
        raise NotADirectoryError(f"{path}: is a symbolic link (to {os.readlink(path)}); give the folder itself as the output")
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: exists and is not a folder")
    if not any(path.iterdir()):
        return
    if not replace:
        raise FileExistsError(f"{path}: folder exists and is not empty; choose another output or remove it")
    if not is_fca_output(path):
        raise NotOurFolderError(
            f"{path}: folder exists, is not empty and was not written by fca (no {MARKER} file in it); "
            "refusing to replace it: remove it yourself or choose another output"
        )


# --------------------------------------------------------------------------- locking

# Not filelock (a dependency, used by pipeline.tracking), measured with 4.3.1 by benchmarks/libraries.py: its Unix lock
# leaves the .lock file after release (every output would keep one beside it); unlinking it ourselves made a non-blocking
# contender fail though nobody held it (output_lock retries); another account's leftover lock file: PermissionError.


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _holder_pid(fd: int, wait: float = 1.0) -> int | None:
    """The pid in a lock file another process holds, waiting briefly for it to be written.

    The holder writes its pid just after its flock succeeds, so a writer refused in
    that window would read an empty file (or a killed holder's stale pid).
    """
    deadline = time.monotonic() + wait
    while True:
        pid = _read_pid(fd)
        if pid is not None and _pid_alive(pid):
            return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of output `path` (sibling `.<name>.lock`) or raise OutputBusyError.

    Non-blocking. The lock file holds the holder's pid and is removed on release;
    after taking the lock we check it is still the file at that name (a holder that
    just released it unlinks it), else we start over. Where the file system has no
    flock the write goes on unlocked.
    """
    path = Path(path)
    if fcntl is None:
        yield
        return
    lock = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
        except PermissionError:
            fd = os.open(lock, os.O_RDONLY)  # made by another user: a read-only handle can be flocked too
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            os.close(fd)
            raise OutputBusyError(path, pid) from None
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            fd = None  # this file system has no flock: write unlocked
            break
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its previous holder unlinked it between our open and flock: take the new one
    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                # write, then cut: the file never reads empty, so a refused writer can name us
                data = f"{os.getpid()}\n".encode()
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it: a writer that opened it before sees the unlink and retries
        if fd is not None:
            os.close(fd)


# --------------------------------------------------------------------------- temporary names


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.fca-{os.getpid()}-"


def _stale_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(path.name)}\.fca-(\d+)-[a-z0-9_]+\.(tmp|old)(\..*)?$")


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files/folders a killed writer of `path` left next to it (their pid is gone).

    Call it while holding `output_lock(path)`. Returns what was removed.
    """
    path = Path(path)
    pattern = _stale_pattern(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        p = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed


def _inside_build(path: Path) -> bool:
    """Is `path` inside a temporary folder that an atomic_dir of this process is building? (Nobody else knows it.)"""
    if not _building:
        return False
    full = os.path.abspath(path)
    return any(full.startswith(b + os.sep) for b in _building)


def _name_the_output(e: OSError, path: Path) -> None:
    """A failed write (disk full, quota, read-only file system) names the output it was writing."""
    if e.filename is None and e.errno in _WRITE_ERRNOS:
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


# --------------------------------------------------------------------------- the helpers


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; on success it becomes `path`.

    On an exception the temporary folder is deleted and `path` is left as it was.
    An existing `path` may be an empty folder (it is replaced), or, with replace=True,
    a folder an earlier atomic_dir wrote (it holds the `.fca-output` mark; replaced as a
    whole once the new one is complete). Any other non-empty folder is an error
    (FileExistsError; NotOurFolderError with replace=True) and is not touched. The output
    is locked for the whole block (OutputBusyError for a second writer), gets the
    umask's permissions and the mark.
    """
    path = Path(path)
    check_replaceable(path, replace)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path):
        remove_stale(path)
        check_replaceable(path, replace)  # again, under the lock
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp"))
        key = os.path.abspath(tmp)
        _building.add(key)
        try:
            try:
                yield tmp
            except OSError as e:
                _name_the_output(e, path)
                raise
            finally:
                _building.discard(key)
            (tmp / MARKER).write_text(MARKER_CONTENT)
            os.chmod(tmp, dir_mode())
            _move_into_place(tmp, path, replace)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, path: Path, replace: bool) -> None:
    """Rename the finished folder `tmp` to `path` (an absent path, an empty folder, or, with replace, one of ours)."""
    try:
        os.replace(tmp, path)  # absent or empty: one atomic rename (fails if it became non-empty meanwhile)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    check_replaceable(path, replace)  # someone (not fca: we hold the lock) filled it since the check
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".old"))
    os.replace(path, old / "x")
    try:
        os.replace(tmp, path)
    except OSError:
        os.replace(old / "x", path)  # put the old output back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; it is renamed to `path` on success, deleted on error.

    The output is locked while it is written (OutputBusyError for a second writer) and
    ends with the umask's permissions. Inside a folder that atomic_dir is building (no
    other process can see it) the lock is skipped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = _inside_build(path)
    with contextlib.nullcontext() if private else output_lock(path):
        if not private:
            remove_stale(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=f".tmp{path.suffix}")
        os.close(fd)
        tmp = Path(name)
        try:
            try:
                yield tmp
            except OSError as e:
                _name_the_output(e, path)
                raise
            if tmp.exists():
                os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
