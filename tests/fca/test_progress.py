"""Progress: a tqdm bar on a terminal only; elsewhere a log line every 10 % or 30 s, never carriage returns."""

from __future__ import annotations

import dataclasses
import io
import logging
import re
from pathlib import Path

import torch

from fca.progress import LogProgress, NullProgress, progress_bar, track

ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fca.progress"]


def test_a_terminal_gets_a_tqdm_bar_and_anything_else_log_lines():
    from tqdm import tqdm

    term = _Terminal()
    bar = progress_bar(total=10, desc="x", stream=term)
    assert isinstance(bar, tqdm)
    bar.update(10)
    bar.close()
    assert "\r" in term.getvalue()  # what a terminal wants
    assert isinstance(progress_bar(total=10, desc="x", stream=io.StringIO()), LogProgress)
    assert isinstance(progress_bar(total=10, desc="x", enabled=False, stream=_Terminal()), NullProgress)


def test_log_lines_every_tenth_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="fca.progress")
    out = io.StringIO()
    bar = progress_bar(total=300, initial=30, desc="train_fdc", unit="step", stream=out)
    for _ in range(270):
        bar.update(1)
        bar.set_postfix(loss=f"{0.5:.3f}", s="2.00")
    bar.close()
    bar.close()  # twice is harmless
    lines = _lines(caplog)
    assert out.getvalue() == ""  # nothing written to the stream itself
    assert len(lines) == 9, lines  # 30 -> 300 in steps of 30
    assert lines[0].startswith("train_fdc: 60/300 step (20%)") and "loss=0.500 s=2.00" in lines[0]
    assert lines[-1].startswith("train_fdc: 300/300 step (100%)")
    assert all("\r" not in line and len(line) < 200 for line in lines)


def test_log_lines_by_time_and_for_unknown_totals(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="fca.progress")
    clock = [0.0]
    monkeypatch.setattr("fca.progress.time.monotonic", lambda: clock[0])
    bar = progress_bar(total=None, desc="download", unit="B", unit_scale=True, stream=io.StringIO(), every_seconds=30)
    for _ in range(5):
        clock[0] += 10
        bar.update(3 * 2**20)
    bar.close()
    lines = _lines(caplog)
    assert lines == ["download: 9 MiB, 307 KiB/s, 30 s elapsed", "download: 15 MiB, 307 KiB/s, 50 s elapsed"]


def test_track_reports_like_a_bar(caplog):
    caplog.set_level(logging.INFO, logger="fca.progress")
    assert list(track(range(20), desc="degrade", unit="img", stream=io.StringIO())) == list(range(20))
    lines = _lines(caplog)
    assert len(lines) == 10 and lines[-1].startswith("degrade: 20/20 img (100%)")
    caplog.clear()
    assert list(track(iter(range(3)), desc="g", enabled=False)) == [0, 1, 2]
    assert _lines(caplog) == []


def test_a_trainer_writes_log_lines_not_a_bar_into_a_log_file(capsys, caplog):
    """Under `dvc repro` stderr is a file: train_fdc used to write one 85 kB line of carriage returns there."""
    from fca.kernels import conv_per_sample, gaussian
    from fca.train.fdc import FDCConfig, train_fdc

    caplog.set_level(logging.INFO, logger="fca.progress")
    g = torch.Generator().manual_seed(0)
    patches = conv_per_sample(torch.rand(6, 3, 64, 64, generator=g), torch.from_numpy(gaussian(5, 1.0)).float()).clamp(0, 1)
    cfg = FDCConfig(patch_size=16, channels=4, batch_size=3, steps=20, lr=1e-3, eval_every=20, eval_scales=[2.0], eval_repeats=1, checkpoint_every=20)
    train_fdc(dataclasses.replace(cfg), patches, patches[:2], progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = _lines(caplog)
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("train_fdc: 20/20 step (100%)"), lines


def test_every_progress_report_goes_through_fca_progress():
    """No module draws its own tqdm bar (it would write carriage returns into log files)."""
    offenders = []
    for path in sorted((ROOT / "fca").rglob("*.py")) + sorted((ROOT / "pipeline").rglob("*.py")):
        if path.name == "progress.py":
            continue
        if re.search(r"^\s*(from tqdm|import tqdm)", path.read_text(), re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
