"""Fixtures shared by the trainers' tests."""

from __future__ import annotations

import pytest

from fca.train import hardware


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """fake_cpu(cpuinfo): from then on the trainers read `cpuinfo` as this CPU's /proc/cpuinfo
    (so `cpu_bf16: auto` chooses as it would on that CPU)."""

    def set_(cpuinfo: str) -> None:
        (tmp_path / "cpuinfo").write_text(cpuinfo)
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")

    return set_
