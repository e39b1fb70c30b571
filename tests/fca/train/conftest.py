"""Fixtures shared by the trainers' tests."""

from __future__ import annotations

import types

import pytest

from fca.train import hardware


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """fake_cpu(trainer_module, cpuinfo, speedup): this CPU's /proc/cpuinfo text, and the trainer's
    precision probe reports `speedup` ('never': a probe that must not run). Returns the list of
    the probe's calls from then on."""

    def set_(trainer: types.ModuleType, cpuinfo: str, speedup: float | str) -> list[int]:
        calls: list[int] = []
        (tmp_path / "cpuinfo").write_text(cpuinfo)
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")

        def fake(fp32_step, bf16_step, *args, **kwargs) -> float:
            calls.append(1)
            if speedup == "never":
                raise AssertionError("the probe ran")
            return speedup

        monkeypatch.setattr(trainer, "probe_speedup", fake)
        return calls

    return set_
