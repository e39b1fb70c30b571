"""Outputs: whole or absent, one writer at a time, the umask's permissions, never a stranger's folder replaced."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fca import fsutil
from fca.fsutil import MARKER, NotOurFolderError, OutputBusyError, atomic_dir, atomic_file, is_fca_output, output_lock, write_json

ROOT = Path(__file__).resolve().parents[2]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for a test; restored afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda m: os.umask(m)
    os.umask(saved)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_outputs_get_the_umask_permissions(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert fsutil.umask() == mask and fsutil.umask() == mask  # reading it does not change it
    with atomic_file(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
        assert _mode(tmp) == 0o600  # private while it is written
    write_json(tmp_path / "m.json", {"a": 1})
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "inner.txt").write_text("y")
        with atomic_file(tmp / "sub" / "g.bin") as t2:  # a file inside a folder being built
            t2.write_bytes(b"z")
    assert _mode(tmp_path / "f.txt") == file_mode
    assert _mode(tmp_path / "m.json") == file_mode
    assert _mode(tmp_path / "d") == dir_mode
    assert _mode(tmp_path / "d" / "sub" / "g.bin") == file_mode
    assert _mode(tmp_path / "d" / "sub") == dir_mode


def test_a_writer_that_replaces_its_temporary_file_still_gets_the_umask_mode(tmp_path, umask):
    umask(0o022)
    with atomic_file(tmp_path / "model.pt") as tmp:
        other = tmp_path / "elsewhere"
        other.write_bytes(b"weights")
        os.chmod(other, 0o600)
        os.replace(other, tmp)  # e.g. a library that writes its own temp file and renames it
    assert _mode(tmp_path / "model.pt") == 0o644


def test_outputs_are_marked_and_leave_no_lock_or_temp_behind(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        assert list(tmp.iterdir()) == []  # the caller gets an empty folder
        (tmp / "a.txt").write_text("a")
    assert is_fca_output(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "a.txt"]
    write_json(tmp_path / "x.json", [1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.json"]


def test_replace_only_a_folder_fca_wrote(tmp_path):
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(NotOurFolderError, match=r"photos: folder exists, is not empty and was not written by fca"):
        with atomic_dir(theirs, replace=True) as tmp:
            (tmp / "new").write_text("x")
    assert sorted(p.name for p in theirs.iterdir()) == ["holiday.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
    # without replace: any non-empty folder is refused
    ours = tmp_path / "ours"
    with atomic_dir(ours) as tmp:
        (tmp / "v1").write_text("1")
    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_dir(ours, replace=False):
            pass
    # ours: replaced as a whole
    with atomic_dir(ours, replace=True) as tmp:
        (tmp / "v2").write_text("2")
    assert sorted(p.name for p in ours.iterdir()) == [MARKER, "v2"]
    # an empty folder (as workflow engines make them) is fine either way
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty, replace=False) as tmp:
        (tmp / "a").write_text("a")
    assert (empty / "a").read_text() == "a"
    # a symbolic link is not followed into someone's folder
    (tmp_path / "link").symlink_to(theirs)
    with pytest.raises(NotADirectoryError, match="symbolic link"):
        with atomic_dir(tmp_path / "link"):
            pass
    assert (theirs / "holiday.jpg").read_bytes() == b"precious"


def test_a_folder_filled_by_someone_else_meanwhile_is_not_deleted(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_dir(out, replace=False) as tmp:
            (tmp / "ours.txt").write_text("ours")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")  # another program, while we worked
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_names_the_output_and_leaves_nothing(tmp_path):
    with pytest.raises(OSError) as info:
        with atomic_file(tmp_path / "big.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "big.bin")
    with pytest.raises(OSError) as info:
        with atomic_dir(tmp_path / "out"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert info.value.filename == str(tmp_path / "out")
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "out2") as tmp:
            (tmp / "half").write_text("x")
            raise ValueError("bad input")
    assert list(tmp_path.iterdir()) == []


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fca.fsutil import OutputBusyError, atomic_dir, atomic_file
    out, me, other, kind = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    go = out.parent / "go"
    while not go.exists():
        time.sleep(0.005)
    try:
        with (atomic_dir(out, replace=False) if kind == "dir" else atomic_file(out)) as tmp:
            (tmp / "who" if kind == "dir" else tmp).write_text(me)
            # hold the output until the other writer has tried
            deadline = time.time() + 60
            while not (out.parent / f"tried-{other}").exists() and time.time() < deadline:
                time.sleep(0.005)
    except OutputBusyError as e:
        (out.parent / f"tried-{me}").write_text(str(e))
        sys.exit(3)
    (out.parent / f"tried-{me}").write_text("ok")
""")


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_two_concurrent_writers_exactly_one_succeeds(tmp_path, kind):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = {me: subprocess.Popen([sys.executable, "-c", _WRITER, str(out), me, other, kind], env=env, stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))}
    (tmp_path / "go").write_text("")
    codes = {me: p.wait(timeout=120) for me, p in procs.items()}
    assert sorted(codes.values()) == [0, 3], {me: p.stderr.read() for me, p in procs.items()}
    winner = next(me for me, c in codes.items() if c == 0)
    loser = next(me for me, c in codes.items() if c == 3)
    assert ((out / "who") if kind == "dir" else out).read_text() == winner
    message = (tmp_path / f"tried-{loser}").read_text()
    assert message == f"{out} is being written by another process (pid {procs[winner].pid}); wait for it to finish or choose another output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "out", "tried-a", "tried-b"]  # no lock, no temporary left


def test_a_lock_held_elsewhere_refuses_at_once(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fca.fsutil import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(tmp_path / "out")],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=rf"out is being written by another process \(pid {holder.pid}\)"):
            with atomic_dir(tmp_path / "out"):
                pytest.fail("entered a locked output")
        with pytest.raises(OutputBusyError):
            with output_lock(tmp_path / "out"):  # in this process too: flock is per open file
                pass
    finally:
        holder.kill()
        holder.wait()
    with atomic_dir(tmp_path / "out") as tmp:  # the dead holder's lock is free (its lock file may remain)
        (tmp / "a").write_text("a")
    assert (tmp_path / "out" / "a").read_text() == "a"


def test_a_writer_refused_before_the_holder_wrote_its_pid_still_names_it(tmp_path):
    # the window CI once hit: the holder's flock has succeeded, its pid is not in the file yet
    lock = tmp_path / ".out.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(0.3)\n"
         "os.write(fd, f'{os.getpid()}\\n'.encode()); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert lock.read_text() == ""
        with pytest.raises(OutputBusyError, match=rf"\(pid {holder.pid}\)"):
            with output_lock(tmp_path / "out"):
                pytest.fail("entered a locked output")
    finally:
        holder.kill()
        holder.wait()


_KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fca.fsutil import atomic_dir, atomic_file
    out = Path(sys.argv[1])
    with atomic_dir(out) as tmp, atomic_file(out.parent / "model.pt") as ftmp:
        (tmp / "half.png").write_bytes(b"half")
        ftmp.write_bytes(b"half")
        print("writing", flush=True)
        time.sleep(60)
""")


def test_the_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-c", _KILLED, str(out)], env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    left = sorted(q.name for q in tmp_path.iterdir())
    assert any(n.startswith(f".out.fca-{p.pid}-") and n.endswith(".tmp") for n in left), left
    assert any(n.startswith(f".model.pt.fca-{p.pid}-") and ".tmp" in n for n in left), left
    # a live writer's temporary folder, and another output whose name starts alike, are left alone
    live = tmp_path / f".out.fca-{os.getppid()}-abcdefgh.tmp"
    live.mkdir()
    other = tmp_path / f".out.1.fca-{p.pid}-abcdefgh.tmp"
    other.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "whole.png").write_bytes(b"whole")
    with atomic_file(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"whole")
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted([other.name, live.name, "model.pt", "out"])
    assert sorted(q.name for q in out.iterdir()) == [MARKER, "whole.png"]


def test_gitignore_covers_temporary_and_lock_names():
    names = [".out.fca-12-abcdefgh.tmp", "reports/.metrics.json.fca-12-abcdefgh.tmp.json", "reports/.fdc.json.lock", "reports/.figures.fca-3-abcdefgh.old"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True)
    assert sorted(out.stdout.split()) == sorted(names), out.stderr
