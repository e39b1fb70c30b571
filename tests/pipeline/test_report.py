"""The report stage's inputs: a wrong or older file is one error naming it and what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    from pipeline.params import with_defaults

    monkeypatch.setenv("FCA_TRACKING", "off")
    raw = with_defaults(yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text()))
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


def _training_and_degraded_inputs(tmp: Path) -> None:
    """The inputs both kinds of report read alike: the training curves and one degraded validation patch."""
    from fca.data.images import save_png

    (tmp / "fdc.csv").write_text("step,acc_s1.2\n1,0.8\n2,0.9\n")
    (tmp / "gen.csv").write_text("step,loss_total,kernel_sigma\n1,0.5,1.0\n2,0.4,1.2\n")
    (tmp / "manifest.csv").write_text("file,status\na.png,ok\n")
    save_png(tmp / "val" / "real" / "a.png", np.full((64, 64, 3), 0.5))
    save_png(tmp / "lr" / "a.png", np.full((16, 16, 3), 0.5))


def _noref_evaluation(tmp: Path, noisy: bool = False) -> None:
    """What evaluate writes for photos without a known kernel: a real no-reference run on a tiny case
    (noisy: G adds noise, white at std 0.02)."""
    import torch

    from fca.evaluate import EvaluateConfig, referee_no_reference
    from fca.kernels import anisotropic_gaussian, conv_per_sample
    from fca.noise import NoiseLevel
    from fca.resample import downscale
    from pipeline.evaluate import density_curves, metrics_json

    photos = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kernels = torch.stack([torch.from_numpy(anisotropic_gaussian(5, 0.6 + 0.2 * i, 0.6, 30 * i)) for i in range(6)]).float()
    noise = (torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1)), NoiseLevel.constant(4e-4)) if noisy else None
    result = referee_no_reference(photos, 4, lambda hr: (conv_per_sample(downscale(hr, 4), kernels[: len(hr)]), kernels[: len(hr)]),
                                  EvaluateConfig(density_bins=6, samples=2, bootstrap=50), noise=noise)
    np.savez(tmp / "evaluation" / "arrays.npz", **result["arrays"])
    (tmp / "metrics.json").write_text(json.dumps(metrics_json(result)))
    density_curves(result["arrays"]).to_csv(tmp / "density.csv", index=False)


def _drawn_density_curves(monkeypatch) -> list[str]:
    from pipeline import report

    drawn: list[str] = []
    plain = report.density_figure
    monkeypatch.setattr(report, "density_figure", lambda freq, curves, title: drawn.extend(curves) or plain(freq, curves, title))
    return drawn


def _drawn_sigma_curves(monkeypatch) -> list[str]:
    """The curves of the training figure's kernel-width panel, as the report draws them."""
    from pipeline import report

    drawn: list[str] = []
    plain = report.curves_figure

    def spy(panels):
        drawn.extend(name for title, _, curves in panels if "kernel sigma" in title for name in curves)
        return plain(panels)

    monkeypatch.setattr(report, "curves_figure", spy)
    return drawn


@pytest.mark.parametrize("noisy", [False, True])
def test_a_domain_without_a_known_kernel_gets_the_no_reference_page_and_figures(inputs, monkeypatch, noisy):
    """With G's noise (evaluate's noref.noise_* metrics) the page adds the noise model's figure and table."""
    tmp, args = inputs
    _training_and_degraded_inputs(tmp)
    _noref_evaluation(tmp, noisy)
    drawn, sigma = _drawn_density_curves(monkeypatch), _drawn_sigma_curves(monkeypatch)
    assert cli.main(args) == 0
    assert sigma == ["ours"]  # no oracle width to draw beside G's
    page = (tmp / "README.md").read_text()
    assert "no known kernel, so there is no verdict" in "\n".join(page.splitlines()[:4])
    assert "## Verdict" not in page and "| pass |" not in page and "**miss**" not in page
    assert "| G(x), ours |" in page and "G gives each photo its own kernel." in page
    figures = {p.stem for p in (tmp / "figures").glob("*.png")}
    assert figures == {"density", "noref_distances", "kernel_histograms", "kernels", "crops", "training", "degraded"} | ({"noise_model"} if noisy else set())
    for role in figures:
        assert f"](figures/{role}.png)" in page, role
    assert drawn == ["real", "bicubic", "ours"]  # the empty oracle and clean columns are not drawn
    assert "## Noise model" in page and ("G adds no noise" in page) != noisy
    if noisy:
        assert "| noise std at grey 0.2 / 0.5 / 0.8 (8-bit levels, mean over channels) | 5.1 / 5.1 / 5.1 |" in page
        assert "The level is read at each channel's own value" in page


@pytest.mark.parametrize("noisy", [False, True])
def test_a_known_kernel_gets_the_verdict_page_and_its_figures_as_before(inputs, monkeypatch, noisy):
    """A noisy domain (evaluate's `noise` section) adds the noise figure and its section; nothing else changes."""
    tmp, args = inputs
    _training_and_degraded_inputs(tmp)
    k = np.full((5, 5), 1 / 25)
    hr, lr = np.full((1, 3, 64, 64), 0.5, np.float32), np.full((1, 3, 16, 16), 0.5, np.float32)
    noise_arrays = {"noise_brightness": np.array([0.2, 0.5, 0.8]), "noise_var_camera": np.array([1e-4, 2e-4, 3e-4]),
                    "noise_var_ours": np.array([1.1e-4, 2e-4, 2.7e-4])} if noisy else {}
    np.savez(tmp / "evaluation" / "arrays.npz", kernels_pred=np.stack([k, k]), kernel_true=k, kernel_oracle=k, kernel_oracle_smooth=k, sample_hr_real=hr,
             sample_lr_true=lr, sample_sr_bicubic=hr, sample_sr_ours=hr, sample_sr_oracle=hr, **noise_arrays)
    noise = {"noise": {"variance_camera": 2e-4, "variance_ours": 1.93e-4, "variance_ratio_min": 0.9, "variance_ratio_max": 1.1,
                       "lag1_camera": 0.0, "lag1_ours": 0.04}} if noisy else {}
    (tmp / "metrics.json").write_text(json.dumps({"density": {"gap_reduction_true": 0.95}, "kernel": {"cov_rel_error": 0.05, "sigma_oracle": 1.1},
                                                  "sr": {"gain_fraction": 0.5}} | noise))
    (tmp / "density.csv").write_text("frequency,real,bicubic,ours,oracle,clean\n0.1,0.5,0.4,0.45,0.5,0.6\n0.3,0.5,0.6,0.55,0.5,0.4\n")
    drawn, sigma = _drawn_density_curves(monkeypatch), _drawn_sigma_curves(monkeypatch)
    assert cli.main(args) == 0
    assert sigma == ["ours", "oracle"]
    page = (tmp / "README.md").read_text()
    assert page.startswith("# FCA run report\n") and "## Verdict" in page and "no verdict" not in page
    assert "(`kernel.cov_rel_error`) | 0.050 | <= 0.1 | pass |" in page and "(`sr.gain_fraction`) | 0.500 | >= 0.9 | **miss** |" in page
    assert {p.stem for p in (tmp / "figures").glob("*.png")} == {"density", "kernels", "crops", "training", "degraded"} | ({"noise"} if noisy else set())
    assert drawn == ["real", "bicubic", "ours", "oracle", "clean"]
    assert ("## Noise" in page) == noisy
    if noisy:
        assert "![noise by brightness](figures/noise.png)" in page and "Ours / camera in the bins: 0.90 .. 1.10" in page


def test_no_reference_arrays_of_another_version_are_named(inputs, capsys):
    tmp, args = inputs
    (tmp / "metrics.json").write_text(json.dumps({"noref": {}}))
    assert cli.main(args) == 2
    assert f"fca report: error: {tmp}/evaluation/arrays.npz: no array 'kernel_sigma', " in capsys.readouterr().err


def test_the_sr_models_of_train_sr_get_their_section_and_figure(inputs, monkeypatch):
    """With train-sr's scores and figure the page shows both; on real photos (no scores) it says why there is no table."""
    tmp, args = inputs
    _training_and_degraded_inputs(tmp)
    _noref_evaluation(tmp)
    _drawn_density_curves(monkeypatch), _drawn_sigma_curves(monkeypatch)
    from PIL import Image

    Image.new("RGB", (40, 20)).save(tmp / "sr.png")
    (tmp / "sr.json").write_text(json.dumps({"images": 3, "scale": 4}))
    assert cli.main(args + ["--sr-metrics", str(tmp / "sr.json"), "--sr-figure", str(tmp / "sr.png")]) == 0
    page = (tmp / "README.md").read_text()
    assert "## An SR model trained on the pairs" in page and "no score" in page and "](figures/sr_model.png)" in page
    assert (tmp / "figures" / "sr_model.png").read_bytes() == (tmp / "sr.png").read_bytes()
    kinds = (("upscaling", 20.0), ("bicubic", 21.0), ("blind", 21.75), ("ours", 22.5))
    scores = {f"{m}_{k}": v for m in ("psnr_y", "ssim_y") for k, v in kinds}
    (tmp / "sr.json").write_text(json.dumps(scores | {"images": 3, "scale": 4}))
    assert cli.main(args + ["--sr-metrics", str(tmp / "sr.json"), "--sr-figure", str(tmp / "sr.png")]) == 0
    page = (tmp / "README.md").read_text()
    assert "| SR trained on our pairs | 22.50 |" in page and "| SR trained on the blind recipe's pairs | 21.75 |" in page


def test_sr_metrics_without_the_figure_is_an_error(inputs, capsys):
    tmp, args = inputs
    assert cli.main(args + ["--sr-metrics", str(tmp / "sr.json")]) != 0
    assert "--sr-metrics and --sr-figure go together" in capsys.readouterr().err


def test_the_header_names_the_cpu_threads_torch_precision_and_jpeg_behind_the_numbers(tmp_path):
    from pipeline.report import machine_info

    (tmp_path / "runtime.json").write_text(json.dumps({"cpu": "Intel Xeon", "cpu_flags": "avx2 avx512f amx_bf16", "threads": 1,
                                                        "torch": "2.13.0", "generator_precision": "bf16",
                                                        "generator_jpeg": "quality 85, 4:2:0"}))
    assert machine_info(tmp_path) == {"CPU": "Intel Xeon (avx2 avx512f amx_bf16)", "threads": "1", "torch": "2.13.0",
                                      "generator precision": "bf16", "G's JPEG": "quality 85, 4:2:0"}
    assert machine_info(tmp_path / "elsewhere")["generator precision"] == "unknown"  # an evaluation from before runtime.json


def test_metrics_from_before_our_keys_said_ours_are_one_error_naming_the_key(inputs, capsys):
    """Read under the new names such a file would fill our method's rows with n/a beside a whole verdict."""
    tmp, args = inputs
    _training_and_degraded_inputs(tmp)
    (tmp / "metrics.json").write_text(json.dumps({"density": {"gap_reduction_true": 0.95}, "sr": {"gain_fraction": 0.9, "psnr_fca": 25.0}}))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp}/metrics.json: key 'sr.psnr_fca' is from an fca evaluate before our method's keys said `ours` (now 'sr.psnr_ours')" in err
    assert "run fca evaluate again" in err and "Traceback" not in err
    assert not (tmp / "README.md").exists()


def test_the_page_names_the_probe_and_train_sr_nets_from_the_params(inputs, monkeypatch):
    """The report stage's params (dvc.yaml) give each SR net's size and budget to the page's account of their PSNRs."""
    tmp, args = inputs
    _training_and_degraded_inputs(tmp)
    k = np.full((5, 5), 1 / 25)
    hr, lr = np.full((1, 3, 64, 64), 0.5, np.float32), np.full((1, 3, 16, 16), 0.5, np.float32)
    np.savez(tmp / "evaluation" / "arrays.npz", kernels_pred=np.stack([k, k]), kernel_true=k, kernel_oracle=k, kernel_oracle_smooth=k, sample_hr_real=hr,
             sample_lr_true=lr, sample_sr_bicubic=hr, sample_sr_ours=hr, sample_sr_oracle=hr)
    (tmp / "metrics.json").write_text(json.dumps({"kernel": {"sigma_oracle": 1.1}, "sr": {"psnr_bicubic": 23.0, "psnr_ours": 25.0, "seeds": 2}}))
    scores = {f"{m}_{k}": v for m in ("psnr_y", "ssim_y") for k, v in (("upscaling", 22.9), ("bicubic", 23.0), ("ours", 24.0))}
    (tmp / "sr.json").write_text(json.dumps(scores))
    from PIL import Image

    Image.new("RGB", (40, 20)).save(tmp / "sr.png")
    _drawn_density_curves(monkeypatch)
    assert cli.main(args + ["--sr-metrics", str(tmp / "sr.json"), "--sr-figure", str(tmp / "sr.png")]) == 0
    params = yaml.safe_load((tmp / "params.yaml").read_text())
    probe, model = params["evaluate"]["sr"], params["train_sr"]
    text = " ".join((tmp / "README.md").read_text().split())
    assert "Our pairs score 24.00 dB here and 25.00 dB in the SR probe above" in text
    assert (f"2 small nets per kind of pairs ({probe['blocks']} block{'s' * (probe['blocks'] != 1)} of {probe['channels']} channels, "
            f"{probe['steps']} steps each)") in text
    assert (f"one EDSR-style net ({model['blocks']} block{'s' * (model['blocks'] != 1)} of {model['channels']} channels, "
            f"{model['steps']} steps)") in text
