"""What every stage shares: expected errors are one line naming the path; bugs keep their traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import yaml

from fca.fsutil import OutputBusyError, atomic_file
from pipeline import stage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def params(tmp_path):
    """A params file every stage accepts (the tiny one; keys it lacks at their defaults)."""
    from pipeline.params import with_defaults

    raw = with_defaults(yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text()))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(body, params, capsys, monkeypatch, debug=False):
    if debug:
        monkeypatch.setenv("FCA_DEBUG", "1")
    else:
        monkeypatch.delenv("FCA_DEBUG", raising=False)
    code = stage.run("x", ["--params", str(params)], lambda: stage.parser("x", "test"), lambda args, p: body())
    return code, capsys.readouterr().err


def _raise(e):
    def body():
        raise e
    return body


def _rename_onto_non_empty(tmp_path):
    def body():
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "f").write_text("x")
        os.rename(tmp_path / "a", tmp_path / "b")  # the real error: ENOTEMPTY with both paths
    return body


def _disk_full(tmp_path):
    def body():
        with atomic_file(tmp_path / "model.pt"), open("/dev/full", "wb") as f:  # a write on a full disk: ENOSPC, no path
            f.write(b"x" * 100)
            f.flush()
    return body


@pytest.mark.parametrize("case, expected", [
    ("enospc", "fca x: error: {tmp}/model.pt: No space left on device\n"),
    ("enospc-raw", "fca x: error: No space left on device (ENOSPC)\n"),
    ("eacces", "fca x: error: /data/out: Permission denied\n"),
    ("enotempty", "fca x: error: {tmp}/a -> {tmp}/b: Directory not empty\n"),
    ("busy", "fca x: error: out is being written by another process (pid 123); wait for it to finish or choose another output\n"),
])
def test_expected_os_errors_are_one_line_naming_the_path(tmp_path, params, capsys, monkeypatch, case, expected):
    body = {
        "enospc": _disk_full(tmp_path),
        "enospc-raw": _raise(OSError(errno.ENOSPC, "No space left on device")),
        "eacces": _raise(PermissionError(errno.EACCES, "Permission denied", "/data/out")),
        "enotempty": _rename_onto_non_empty(tmp_path),
        "busy": _raise(OutputBusyError("out", 123)),
    }[case]
    code, err = _run(body, params, capsys, monkeypatch)
    assert code == 2
    assert err == expected.format(tmp=tmp_path) + "(set FCA_DEBUG=1 for the full traceback)\n"
    assert not (tmp_path / "model.pt").exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name or ".lock" in p.name]
    with pytest.raises(OSError if case != "busy" else OutputBusyError):
        _run(body, params, capsys, monkeypatch, debug=True)


def test_a_bug_keeps_its_traceback(params, capsys, monkeypatch):
    with pytest.raises(KeyError):
        _run(_raise(KeyError("internal")), params, capsys, monkeypatch)
    with pytest.raises(ZeroDivisionError):
        _run(_raise(ZeroDivisionError()), params, capsys, monkeypatch)


@pytest.mark.parametrize("env, value, message", [
    ("FCA_THREADS", "many", "'many' (or env FCA_THREADS): expected a whole number from 0 to 4096"),
    ("FCA_THREADS", "99999999999999999999999", "(or env FCA_THREADS): expected a whole number from 0 to 4096"),
    ("FCA_MAX_PIXELS", "-1", "'-1' (or env FCA_MAX_PIXELS): expected a whole number from 0 to"),
])
def test_bad_runtime_settings_are_a_usage_error_not_a_traceback(env, value, message, params, monkeypatch, capsys):
    monkeypatch.setenv(env, value)

    def build():
        p = stage.parser("x", "test")
        stage.add_device(p)
        stage.add_max_pixels(p, too_big="an error")
        return p

    with pytest.raises(SystemExit) as info:
        stage.run("x", ["--params", str(params)], build, lambda args, p: None)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_max_pixels_option():
    p = stage.parser("x", "t")
    stage.add_max_pixels(p, too_big="an error")
    from fca.data.images import DEFAULT_MAX_PIXELS

    assert stage.max_pixels(p.parse_args([])) == DEFAULT_MAX_PIXELS
    assert stage.max_pixels(p.parse_args(["--max-pixels", "5000"])) == 5000
    assert stage.max_pixels(p.parse_args(["--max-pixels", "0"])) is None  # no limit
