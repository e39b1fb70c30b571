"""The evaluate stage's files: what it writes to --out and --density (the referee itself is
tested in tests/fca/test_evaluate.py; here it is a stand-in, so the test takes a second)."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from pipeline import cli
from pipeline import evaluate as stage_evaluate

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp: Path) -> Path:
    from pipeline.params import Params

    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())

    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v

    for name, kind in typing.get_type_hints(Params).items():
        raw[name] = plain(dataclasses.asdict(kind())) | raw.get(name, {})
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "params.yaml"


class _Generator:
    scale = 4.0


def _referee(clean_val, real_val, k_val, scale, degrade_fn, clean_train, real_train, cfg, **kwargs):
    n = cfg.density_bins  # evaluate adds the clean patches' density, with as many bins
    arrays = {"density_bins": np.linspace(0.05, 0.45, n), **{f"density_{k}": np.full(n, 0.2) for k in ("real", "bicubic", "fca", "oracle")},
              "sample_hr_real": np.zeros((2, 3, 8, 8), np.float32)}
    return {
        "metrics": {"density": {"gap_bicubic": 0.5, "gap_fca": 0.1, "gap_reduction": 0.8},
                    "kernel": {"cov_rel_error": 0.1, "sigma_pred": 2.0, "sigma_oracle": 2.1},
                    "sr": {"psnr_bicubic": 30.0, "psnr_fca": 31.0, "psnr_oracle": 31.5, "gain_fraction": 0.66}},
        "intervals": {"sr": {"psnr_fca": [30.8, 31.2]}},
        "arrays": arrays,
        "timings_s": {"total": 1.0},
    }  # fmt: skip


def test_metrics_json_has_no_fdc_copy_and_density_csv_has_the_plotted_columns(tmp_path, monkeypatch):
    """One metrics file per purpose: the FDC's accuracies stay in train-fdc's reports/fdc.json
    (`dvc metrics show` lists them once); metrics.json holds the referee's sections, each
    interval beside the number it bounds. density.csv has the columns dvc.yaml's plot draws."""
    monkeypatch.setenv("FCA_TRACKING", "off")
    patches = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(stage_evaluate, "load_patch_set", lambda folder, split: (patches, patches, ["a.png", "b.png"]))
    monkeypatch.setattr(stage_evaluate, "load_patch_kernels", lambda folder, split: torch.ones(1, 3, 3) / 9)
    monkeypatch.setattr(stage_evaluate, "load_generator", lambda path, device: _Generator())
    monkeypatch.setattr(stage_evaluate, "referee", _referee)
    out, density = tmp_path / "reports" / "metrics.json", tmp_path / "reports" / "plots" / "density.csv"
    argv = ["evaluate", "--params", str(_params(tmp_path)), "--patches", str(tmp_path), "--generator", str(tmp_path / "g.pt"),
            "--out", str(out), "--density", str(density), "--arrays", str(tmp_path / "evaluation"), "--device", "cpu", "--threads", "1"]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())
    assert "fdc" not in metrics
    assert set(metrics) == {"density", "kernel", "sr"}
    assert metrics["sr"]["psnr_fca_lo"] == 30.8 and metrics["sr"]["psnr_fca_hi"] == 31.2
    assert tuple(pd.read_csv(density).columns) == stage_evaluate.DENSITY_COLUMNS


def test_evaluate_no_longer_takes_the_fdc_metrics():
    """Its only use was the copy into metrics.json; the report stage reads reports/fdc.json itself."""
    assert "--fdc-metrics" not in stage_evaluate.build().format_help()
    report = next(s for s in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items() if s[0] == "report")[1]
    assert "--fdc-metrics reports/fdc.json" in " ".join(report["cmd"].split()) and "reports/fdc.json" in report["deps"]
