import dataclasses
import math

import numpy as np
import pytest
import skimage.data
import torch

from fca.evaluate import EvaluateConfig, flatten_metrics, real_lr_views, referee
from fca.kernels import conv_per_sample, delta, gaussian
from fca.oracle import fit_oracle_kernel
from fca.resample import downscale
from fca.train.sr import SRConfig


SCALE = 4
K = 7
CONFIG = EvaluateConfig(density_bins=6, batch_size=4, samples=2, sr=SRConfig(blocks=1, channels=4, steps=15, batch_size=4, patch_size=32, lr=1e-3), seed=0)


def _crops(img: np.ndarray, n: int, size: int = 64) -> torch.Tensor:
    t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)
    return torch.stack([t[:, 100 + size * i : 100 + size * (i + 1), 150 : 150 + size] for i in range(n)])


@pytest.fixture(scope="module")
def data():
    clean_train = torch.cat([_crops(skimage.data.astronaut(), 4), _crops(skimage.data.coffee(), 3)])
    clean_val = _crops(skimage.data.chelsea(), 3)
    k_gt = torch.from_numpy(gaussian(K, 1.5))
    return {
        "clean_val": clean_val,
        "real_val": conv_per_sample(clean_val, k_gt),
        "clean_train": clean_train,
        "real_train": conv_per_sample(clean_train, k_gt),
        "k_gt": k_gt,
    }


def _stand_in(kernel: torch.Tensor):
    """A generator that downscales then blurs with one fixed kernel."""

    def degrade(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return conv_per_sample(downscale(hr, SCALE), kernel), kernel.expand(hr.shape[0], -1, -1)

    return degrade


def _run(data, kernel, config=CONFIG, **kw):
    return referee(data["clean_val"], data["real_val"], data["k_gt"], SCALE, _stand_in(kernel), data["clean_train"], data["real_train"], config, **kw)


@pytest.fixture(scope="module")
def oracle_run(data):
    down, l_true = real_lr_views(data["clean_train"], data["real_train"], data["k_gt"], SCALE)
    k_or = fit_oracle_kernel(down, l_true, K)
    calls = []
    result = _run(data, k_or, on_step=lambda kind, step, m: calls.append((kind, step)))
    return k_or, result, calls


def test_a_generator_that_applies_the_oracle_kernel_scores_as_the_oracle(oracle_run):
    k_or, result, _ = oracle_run
    m = result["metrics"]
    assert m["density"]["gap_fca"] == pytest.approx(m["density"]["gap_oracle"], abs=1e-9)
    assert m["density"]["skl_fca"] == pytest.approx(m["density"]["skl_oracle"], abs=1e-9)
    assert m["kernel"]["cov_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert m["kernel"]["sigma_pred"] == pytest.approx(m["kernel"]["sigma_oracle"])
    assert m["kernel"]["lr_psnr_fca"] == pytest.approx(m["kernel"]["lr_psnr_oracle"], abs=1e-6)
    assert m["sr"]["psnr_fca"] == pytest.approx(m["sr"]["psnr_oracle"], abs=1e-6)
    assert m["sr"]["ssim_fca"] == pytest.approx(m["sr"]["ssim_oracle"], abs=1e-8)
    assert math.isnan(m["sr"]["gain_fraction"]) or m["sr"]["gain_fraction"] == pytest.approx(1.0)
    assert np.allclose(result["arrays"]["kernel_oracle"], k_or.numpy())


def test_the_oracle_is_closer_to_the_truth_than_bicubic(oracle_run):
    m = oracle_run[1]["metrics"]
    assert m["kernel"]["lr_psnr_oracle"] > m["kernel"]["lr_psnr_bicubic"] + 10
    assert m["density"]["gap_oracle"] < m["density"]["gap_bicubic"]
    assert m["density"]["gap_reduction"] > 0
    assert m["kernel"]["sigma_true"] == pytest.approx(1.5, abs=0.1)


def test_a_generator_that_only_downscales_scores_as_bicubic(data):
    m = _run(data, torch.from_numpy(delta(K)))["metrics"]
    assert m["density"]["gap_fca"] == pytest.approx(m["density"]["gap_bicubic"], abs=1e-9)
    assert m["density"]["gap_reduction"] == pytest.approx(0.0, abs=1e-9)
    assert m["kernel"]["lr_psnr_fca"] == pytest.approx(m["kernel"]["lr_psnr_bicubic"], abs=1e-6)
    assert m["kernel"]["sigma_pred"] == pytest.approx(0.0)
    assert m["sr"]["psnr_fca"] == pytest.approx(m["sr"]["psnr_bicubic"], abs=1e-6)
    assert math.isnan(m["sr"]["gain_fraction"]) or m["sr"]["gain_fraction"] == pytest.approx(0.0, abs=1e-6)


def test_result_layout(data, oracle_run):
    _, result, calls = oracle_run
    flat = flatten_metrics(result["metrics"])
    for kind in ("bicubic", "fca", "oracle"):
        for key in (f"density.gap_{kind}", f"density.skl_{kind}", f"kernel.lr_psnr_{kind}", f"sr.psnr_{kind}", f"sr.ssim_{kind}"):
            assert key in flat
    for key in ("density.gap_reduction", "kernel.cov_rel_error", "kernel.sigma_pred", "kernel.sigma_oracle", "kernel.sigma_true", "sr.gain_fraction", "sr.psnr_bicubic_upsampling"):
        assert key in flat
    a = result["arrays"]
    assert a["density_real"].shape == a["density_fca"].shape == a["density_bins"].shape == (6,)
    assert a["kernels_pred"].shape == (3, K, K) and a["kernel_oracle"].shape == (K, K)
    assert a["sample_sr_fca"].shape == (2, 3, 64, 64) and a["sample_lr_true"].shape == (2, 3, 16, 16)
    assert a["sr_loss_bicubic"].shape == (15,)
    assert calls == [(kind, step) for kind in ("bicubic", "fca", "oracle") for step in range(1, 16)]


def test_bad_settings_name_the_key(data):
    with pytest.raises(ValueError, match="evaluate.density_bins"):
        _run(data, torch.from_numpy(delta(K)), dataclasses.replace(CONFIG, density_bins=8))
    with pytest.raises(ValueError, match="integer scale"):
        referee(data["clean_val"], data["real_val"], data["k_gt"], 2.5, _stand_in(torch.from_numpy(delta(K))), data["clean_train"], data["real_train"], CONFIG)
