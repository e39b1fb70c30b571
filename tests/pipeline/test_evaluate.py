"""The evaluate stage's files: what it writes to --out and --density (the referee itself is
tested in tests/fca/test_evaluate.py; here it is a stand-in, so the test takes a second)."""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline import cli
from pipeline import evaluate as stage_evaluate

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp: Path) -> Path:
    from pipeline.params import with_defaults

    raw = with_defaults(yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text()))
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "params.yaml"


class _Generator:
    scale = 4.0


def _referee(clean_val, real_val, k_val, scale, degrade_fn, clean_train, real_train, cfg, **kwargs):
    n = cfg.density_bins  # evaluate adds the clean patches' density, with as many bins
    arrays = {"density_bins": np.linspace(0.05, 0.45, n), **{f"density_{k}": np.full(n, 0.2) for k in ("real", "bicubic", "ours", "oracle")},
              "sample_hr_real": np.zeros((2, 3, 8, 8), np.float32)}
    return {
        "metrics": {"density": {"gap_bicubic": 0.5, "gap_ours": 0.1, "gap_reduction": 0.8, "gap_reduction_oracle": 0.85,
                                "gap_reduction_true": 0.95, "gap_reduction_true_oracle": 0.99},
                    "kernel": {"cov_rel_error": 0.1, "sigma_pred": 2.0, "sigma_oracle": 2.1},
                    "sr": {"psnr_bicubic": 30.0, "psnr_ours": 31.0, "psnr_oracle": 31.5, "gain_fraction": 0.66}},
        "intervals": {"sr": {"psnr_ours": [30.8, 31.2]}},
        "arrays": arrays,
        "timings_s": {"total": 1.0},
    }  # fmt: skip


def _known_kernel_stand_ins(tmp_path: Path, monkeypatch) -> None:
    """A patches folder with a known kernel, two 32 px patches and a stand-in generator."""
    monkeypatch.setenv("FCA_TRACKING", "off")
    (tmp_path / "summary.json").write_text(json.dumps({"kernel_type": "gaussian", "kernel_known": True}))
    patches = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(stage_evaluate, "load_patch_set", lambda folder, split: (patches, patches, ["a.png", "b.png"]))
    monkeypatch.setattr(stage_evaluate, "load_patch_kernels", lambda folder, split: torch.ones(1, 3, 3) / 9)
    monkeypatch.setattr(stage_evaluate, "load_generator", lambda path, device: _Generator())
    monkeypatch.setattr(stage_evaluate, "trained_with", lambda path: {"generator_precision": "fp32"})


def test_metrics_json_has_no_fdc_copy_and_density_csv_has_the_plotted_columns(tmp_path, monkeypatch):
    """One metrics file per purpose: the FDC's accuracies stay in train-fdc's reports/fdc.json
    (`dvc metrics show` lists them once); metrics.json holds the referee's sections, each
    interval beside the number it bounds. density.csv has the columns dvc.yaml's plot draws."""
    _known_kernel_stand_ins(tmp_path, monkeypatch)
    monkeypatch.setattr(stage_evaluate, "referee", _referee)
    out, density = tmp_path / "reports" / "metrics.json", tmp_path / "reports" / "plots" / "density.csv"
    argv = ["evaluate", "--params", str(_params(tmp_path)), "--patches", str(tmp_path), "--generator", str(tmp_path / "g.pt"),
            "--out", str(out), "--density", str(density), "--arrays", str(tmp_path / "evaluation"), "--device", "cpu", "--threads", "1"]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())
    assert "fdc" not in metrics
    assert set(metrics) == {"density", "kernel", "sr"}
    assert metrics["sr"]["psnr_ours_lo"] == 30.8 and metrics["sr"]["psnr_ours_hi"] == 31.2
    assert tuple(pd.read_csv(density).columns) == stage_evaluate.DENSITY_COLUMNS


def test_the_arrays_folder_holds_no_wall_time(tmp_path, monkeypatch):
    """Two runs that differ only in their timings write byte-identical --arrays folders (DVC hashes
    the folder: a wall time there re-ran the report after every evaluate), and the timings reach
    the tracker instead."""
    _known_kernel_stand_ins(tmp_path, monkeypatch)
    folders = []
    for run, seconds in enumerate((1.0, 2.5)):
        monkeypatch.setattr(stage_evaluate, "referee", lambda *a, s=seconds, **k: _referee(*a, **k) | {"timings_s": {"total": s}})
        arrays = tmp_path / f"evaluation{run}"
        argv = ["evaluate", "--params", str(_params(tmp_path)), "--patches", str(tmp_path), "--generator", str(tmp_path / "g.pt"),
                "--out", str(tmp_path / "m.json"), "--density", str(tmp_path / "d.csv"), "--arrays", str(arrays), "--device", "cpu",
                "--threads", "1"]
        assert cli.main(argv) == 0
        folders.append({p.name: p.read_bytes() for p in sorted(arrays.iterdir())})
    assert folders[0] == folders[1]

    class Run:
        logged: dict[str, float] = {}

        def log_metrics(self, metrics, step=None):
            self.logged |= metrics

        def log_artifact(self, path, subdir=None):
            pass

    args = argparse.Namespace(out=tmp_path / "m.json", density=tmp_path / "d.csv", arrays=tmp_path / "evaluation2")
    run = Run()
    stage_evaluate.write_outputs(args, _referee(*[None] * 3, 4.0, None, None, None, types.SimpleNamespace(density_bins=4)),
                                 ["a.png", "b.png"], run, torch.device("cpu"), None)
    assert run.logged["seconds.total"] == 1.0 and run.logged["sr.psnr_ours"] == 31.0


def test_a_noisy_domain_prints_its_noise_check(tmp_path, monkeypatch, capsys):
    _known_kernel_stand_ins(tmp_path, monkeypatch)
    noise = {"variance_camera": 2e-4, "variance_ours": 2.1e-4, "variance_ratio_min": 0.9, "variance_ratio_max": 1.1, "lag1_camera": 0.0, "lag1_ours": 0.05}

    def referee(*a, **k):
        result = _referee(*a, **k)
        result["metrics"]["noise"] = noise
        return result

    monkeypatch.setattr(stage_evaluate, "referee", referee)
    argv = ["evaluate", "--params", str(_params(tmp_path)), "--patches", str(tmp_path), "--generator", str(tmp_path / "g.pt"),
            "--out", str(tmp_path / "m.json"), "--density", str(tmp_path / "d.csv"), "--arrays", str(tmp_path / "evaluation"),
            "--device", "cpu", "--threads", "1"]
    assert cli.main(argv) == 0
    assert "noise: ours / camera 0.90 .. 1.10 across brightness, neighbour correlation ours 0.05 vs camera 0.00" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["noise"] == noise


def test_evaluate_no_longer_takes_the_fdc_metrics():
    """Its only use was the copy into metrics.json; the report stage reads reports/fdc.json itself."""
    assert "--fdc-metrics" not in stage_evaluate.build().format_help()
    report = next(s for s in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items() if s[0] == "report")[1]
    assert "--fdc-metrics reports/fdc.json" in " ".join(report["cmd"].split()) and "reports/fdc.json" in report["deps"]


class _Downscaler:
    """A stand-in generator for real photos: bicubic downscale, then a fixed 5 x 5 Gaussian."""

    scale = 4.0

    def __call__(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from fca.kernels import conv_per_sample, gaussian
        from fca.resample import downscale

        k = torch.from_numpy(gaussian(5, 1.0)).float()
        return conv_per_sample(downscale(hr, self.scale), k), k.expand(hr.shape[0], -1, -1)

    def noise_model(self) -> None:
        return None  # it adds no noise


def _refuse(*args, **kwargs):
    raise AssertionError("a domain without a known kernel has no kernels to load and no referee to run")


def test_a_domain_without_a_known_kernel_gets_the_no_reference_section_only(tmp_path, monkeypatch):
    """patches' summary.json says kernel_known: false (blur.type none: the photos as they are). evaluate
    then neither reads the recorded 1x1 delta as k_gt nor runs the referee: metrics.json holds `noref`
    alone, with intervals beside, the density CSV keeps its columns with no oracle or clean curve, and the
    arrays hold what the no-reference report draws."""
    from pipeline.report import NOREF_ARRAYS

    monkeypatch.setenv("FCA_TRACKING", "off")
    (tmp_path / "summary.json").write_text(json.dumps({"kernel_type": "none", "kernel_known": False}))
    photos = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(stage_evaluate, "load_patch_set", lambda folder, split: (photos, photos, ["a.png", "b.png", "c.png"]))
    monkeypatch.setattr(stage_evaluate, "load_patch_kernels", _refuse)
    monkeypatch.setattr(stage_evaluate, "referee", _refuse)
    monkeypatch.setattr(stage_evaluate, "load_generator", lambda path, device: _Downscaler())
    monkeypatch.setattr(stage_evaluate, "trained_with", lambda path: {"generator_precision": "fp32"})
    out, density = tmp_path / "reports" / "metrics.json", tmp_path / "reports" / "plots" / "density.csv"
    argv = ["evaluate", "--params", str(_params(tmp_path)), "--patches", str(tmp_path), "--generator", str(tmp_path / "g.pt"),
            "--out", str(out), "--density", str(density), "--arrays", str(tmp_path / "evaluation"), "--device", "cpu", "--threads", "1"]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"noref"}
    n = metrics["noref"]
    assert n["images"] == 3 and n["image_gap_change_median_lo"] <= n["image_gap_change_median"] <= n["image_gap_change_median_hi"]
    assert n["kernel_sigma_median"] == pytest.approx(1.0, abs=0.1) and n["kernels_differ"] == 0
    curves = pd.read_csv(density)
    assert tuple(curves.columns) == stage_evaluate.DENSITY_COLUMNS
    assert curves[["real", "bicubic", "ours"]].notna().all().all() and curves[["oracle", "clean"]].isna().all().all()
    arrays = np.load(tmp_path / "evaluation" / "arrays.npz")
    assert set(NOREF_ARRAYS) <= set(arrays.files) and list(arrays["sample_names"]) == ["a.png", "b.png", "c.png"][: len(arrays["sample_hr_real"])]


@pytest.mark.parametrize("blur, known", [({"type": "none"}, False), ({"type": "gaussian", "size": 5, "sigma": 1.0}, True)])
def test_the_patches_stage_records_whether_the_kernel_is_known(tmp_path, monkeypatch, blur, known):
    """`none` takes the photos as they are: their kernel is unknown, whatever the 1x1 delta in kernel.npy says."""
    from PIL import Image

    from fca.data.patches import load_kernel_known

    monkeypatch.setenv("FCA_TRACKING", "off")
    raw = yaml.safe_load(_params(tmp_path).read_text())
    raw["patches"].update(stride=128, max_per_image=2, min_std=0.0, val_fraction=0.5, blur=blur)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "raw").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "raw" / f"img{i}.png")
    out = tmp_path / "patches"
    assert cli.main(["patches", "--params", str(tmp_path / "params.yaml"), "--raw", str(tmp_path / "raw"), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["kernel_known"] is known
    assert load_kernel_known(out) is known


def test_kernel_known_of_an_older_summary_follows_its_kernel_type_and_a_bad_value_is_named(tmp_path):
    from fca.data.patches import load_kernel_known

    summary = tmp_path / "summary.json"
    for kind, known in (("none", False), ("random", True)):
        summary.write_text(json.dumps({"kernel_type": kind}))
        assert load_kernel_known(tmp_path) is known
    summary.write_text(json.dumps({"kernel_known": "no"}))
    with pytest.raises(ValueError, match=r"summary.json: kernel_known = 'no', expected true or false"):
        load_kernel_known(tmp_path)
    summary.unlink()
    with pytest.raises(FileNotFoundError, match="no patches summary"):
        load_kernel_known(tmp_path)
