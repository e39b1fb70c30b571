"""The report stage's inputs: a wrong or older file is one error naming it and what it lacks."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    from pipeline.params import Params

    monkeypatch.setenv("FCA_TRACKING", "off")
    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())

    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v

    for name, kind in typing.get_type_hints(Params).items():
        raw[name] = plain(dataclasses.asdict(kind())) | raw.get(name, {})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "evaluation").mkdir()
    np.savez(tmp_path / "evaluation" / "arrays.npz", kernels_pred=np.zeros((1, 3, 3)))
    (tmp_path / "metrics.json").write_text(json.dumps({"kernel": {}}))
    (tmp_path / "fdc.json").write_text(json.dumps({"acc_s2.0": 0.9, "same_mean": 0.1}))
    (tmp_path / "density.csv").write_text("frequency,real\n0.1,1\n")
    args = ["report", "--params", str(tmp_path / "params.yaml"), "--patches", str(tmp_path), "--evaluation", str(tmp_path / "evaluation"),
            "--degraded", str(tmp_path), "--metrics", str(tmp_path / "metrics.json"), "--fdc-metrics", str(tmp_path / "fdc.json"), "--density", str(tmp_path / "density.csv"),
            "--fdc-curve", str(tmp_path / "fdc.csv"), "--generator-curve", str(tmp_path / "gen.csv"), "--out", str(tmp_path / "figures"),
            "--readme", str(tmp_path / "README.md")]
    return tmp_path, args


def test_arrays_of_another_version_are_named(inputs, capsys):
    tmp, args = inputs
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fca report: error: {tmp}/evaluation/arrays.npz: no array 'kernel_true', 'kernel_oracle', ")
    assert "Traceback" not in err and len(err.splitlines()) == 2


def test_metrics_that_are_not_an_object_are_named(inputs, capsys):
    tmp, args = inputs
    (tmp / "metrics.json").write_text("[1, 2]")
    assert cli.main(args) == 2
    assert f"fca report: error: {tmp}/metrics.json: expected a JSON object of metrics, got a list" in capsys.readouterr().err


def test_fdc_metrics_that_are_not_an_object_are_named(inputs, capsys):
    """The FDC's accuracies come from train-fdc's reports/fdc.json (no longer copied into metrics.json)."""
    tmp, args = inputs
    (tmp / "fdc.json").write_text('"0.9"')
    assert cli.main(args) == 2
    assert f"fca report: error: {tmp}/fdc.json: expected a JSON object of metrics, got a str" in capsys.readouterr().err
