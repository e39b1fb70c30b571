import dataclasses
import math

import numpy as np
import pytest
import skimage.data
import torch

from fca.evaluate import EvaluateConfig, flatten_metrics, real_lr_views, referee, referee_no_reference
from fca.kernels import conv_per_sample, cov_rel_error, delta, effective_sigma, gaussian
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
    assert m["density"]["gap_ours"] == pytest.approx(m["density"]["gap_oracle"], abs=1e-9)
    assert m["density"]["skl_ours"] == pytest.approx(m["density"]["skl_oracle"], abs=1e-9)
    assert m["kernel"]["cov_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert m["kernel"]["sigma_pred"] == pytest.approx(m["kernel"]["sigma_oracle"])
    assert m["kernel"]["lr_psnr_ours"] == pytest.approx(m["kernel"]["lr_psnr_oracle"], abs=1e-6)
    assert m["sr"]["psnr_ours"] == pytest.approx(m["sr"]["psnr_oracle"], abs=1e-6)
    assert m["sr"]["ssim_ours"] == pytest.approx(m["sr"]["ssim_oracle"], abs=1e-8)
    assert math.isnan(m["sr"]["gain_fraction"]) or m["sr"]["gain_fraction"] == pytest.approx(1.0)
    assert np.allclose(result["arrays"]["kernel_oracle"], k_or.numpy())


def test_the_oracle_is_closer_to_the_truth_than_bicubic(oracle_run):
    m = oracle_run[1]["metrics"]
    assert m["kernel"]["lr_psnr_oracle"] > m["kernel"]["lr_psnr_bicubic"] + 10
    assert m["density"]["gap_oracle"] < m["density"]["gap_bicubic"]
    assert m["density"]["gap_reduction"] > 0
    assert m["kernel"]["sigma_true"] == pytest.approx(1.5, abs=0.1)
    # against L_true's own density the ceiling is gone: the oracle closes nearly all of the gap
    assert m["density"]["gap_reduction_true_oracle"] > 0.9
    assert m["density"]["gap_reduction_true"] == pytest.approx(m["density"]["gap_reduction_true_oracle"], abs=1e-9)
    lo, hi = oracle_run[1]["intervals"]["density"]["gap_reduction_true"]
    assert lo <= m["density"]["gap_reduction_true"] <= hi and hi - lo < 0.2


def test_a_generator_that_only_downscales_scores_as_bicubic(data):
    m = _run(data, torch.from_numpy(delta(K)))["metrics"]
    assert m["density"]["gap_ours"] == pytest.approx(m["density"]["gap_bicubic"], abs=1e-9)
    assert m["density"]["gap_reduction"] == pytest.approx(0.0, abs=1e-9)
    assert m["density"]["gap_reduction_true"] == pytest.approx(0.0, abs=1e-9)
    assert m["kernel"]["lr_psnr_ours"] == pytest.approx(m["kernel"]["lr_psnr_bicubic"], abs=1e-6)
    assert m["kernel"]["sigma_pred"] == pytest.approx(0.0)
    assert m["sr"]["psnr_ours"] == pytest.approx(m["sr"]["psnr_bicubic"], abs=1e-6)
    assert math.isnan(m["sr"]["gain_fraction"]) or m["sr"]["gain_fraction"] == pytest.approx(0.0, abs=1e-6)


def test_result_layout(data, oracle_run):
    _, result, calls = oracle_run
    flat = flatten_metrics(result["metrics"])
    for kind in ("bicubic", "ours", "oracle"):
        for key in (f"density.gap_{kind}", f"density.skl_{kind}", f"kernel.lr_psnr_{kind}", f"sr.psnr_{kind}", f"sr.ssim_{kind}"):
            assert key in flat
    for key in ("density.gap_reduction", "kernel.cov_rel_error", "kernel.sigma_pred", "kernel.sigma_oracle", "kernel.sigma_true", "sr.gain_fraction", "sr.psnr_bicubic_upsampling"):
        assert key in flat
    a = result["arrays"]
    assert a["density_real"].shape == a["density_ours"].shape == a["density_bins"].shape == (6,)
    assert a["kernels_pred"].shape == (3, K, K) and a["kernel_oracle"].shape == a["kernel_oracle_smooth"].shape == (K, K)
    assert a["sample_sr_ours"].shape == (2, 3, 64, 64) and a["sample_lr_true"].shape == (2, 3, 16, 16)
    assert a["sr_loss_bicubic"].shape == (15,)
    assert calls == [(kind, step) for kind in ("bicubic", "ours", "oracle", "blind") for step in range(1, 16)]


def test_bad_settings_name_the_key(data):
    with pytest.raises(ValueError, match="evaluate.density_bins"):
        _run(data, torch.from_numpy(delta(K)), dataclasses.replace(CONFIG, density_bins=8))
    with pytest.raises(ValueError, match="integer scale"):
        referee(data["clean_val"], data["real_val"], data["k_gt"], 2.5, _stand_in(torch.from_numpy(delta(K))), data["clean_train"], data["real_train"], CONFIG)


# --- mixed-kernel domain: a kernel per image --------------------------------------------------

MIXED_CONFIG = dataclasses.replace(CONFIG, sr_seeds=1, bootstrap=200, baseline_steps=5)
KM = 9


@pytest.fixture(scope="module")
def mixed():
    """Each crop blurred by its own anisotropic Gaussian (widths 1.0 .. 2.6, various directions)."""
    from fca.kernels import anisotropic_gaussian

    clean_train = torch.cat([_crops(skimage.data.astronaut(), 4), _crops(skimage.data.coffee(), 3)])
    clean_val = torch.cat([_crops(skimage.data.chelsea(), 3), _crops(skimage.data.rocket(), 2)])
    k_train = torch.stack([torch.from_numpy(anisotropic_gaussian(KM, 1.0 + 0.25 * i, 1.0 + 0.1 * i, 30 * i)) for i in range(7)])
    k_val = torch.stack([torch.from_numpy(anisotropic_gaussian(KM, sx, sy, t)) for sx, sy, t in
                         ((1.0, 1.0, 0), (2.6, 1.2, 20), (1.6, 1.5, 90), (2.4, 1.1, 120), (1.3, 1.2, 60))])
    real_val = torch.stack([conv_per_sample(c[None], k)[0] for c, k in zip(clean_val, k_val)])
    real_train = torch.stack([conv_per_sample(c[None], k)[0] for c, k in zip(clean_train, k_train)])
    down, true = real_lr_views(clean_val, real_val, k_val, SCALE)
    from fca.oracle import fit_oracle_kernels_per_image

    (oracles,) = fit_oracle_kernels_per_image(down, true, KM)
    return {"clean_val": clean_val, "real_val": real_val, "k_val": k_val, "clean_train": clean_train, "real_train": real_train,
            "k_train": k_train, "oracles": oracles, "down": down, "true": true}


def _reader(images: torch.Tensor, kernels: torch.Tensor):
    """A stand-in generator that 'reads' each known image's kernel (looked up by its content); others get the first."""
    keys = [float(img.double().sum()) for img in images]

    def degrade(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ks = torch.stack([kernels[keys.index(float(img.double().sum()))] if float(img.double().sum()) in keys else kernels[0] for img in hr])
        return conv_per_sample(downscale(hr, SCALE), ks), ks

    return degrade


def _run_mixed(mixed, degrade):
    return referee(mixed["clean_val"], mixed["real_val"], mixed["k_val"], SCALE, degrade, mixed["clean_train"], mixed["real_train"],
                   MIXED_CONFIG, k_train=mixed["k_train"])


def test_mixed_domain_a_generator_that_reads_each_images_oracle_scores_as_the_oracle(mixed):
    result = _run_mixed(mixed, _reader(mixed["real_val"], mixed["oracles"]))
    a = result["metrics"]["adapt"]
    assert a["sigma_pearson"] == pytest.approx(1.0, abs=1e-9)
    assert a["cov_rel_error_median"] == pytest.approx(0.0, abs=1e-9)
    assert a["angle_error_median"] == pytest.approx(0.0, abs=1e-6)
    assert a["angle_images"] >= 2  # the oracles of the three elongated kernels have axis ratio >= 1.5
    assert a["lr_psnr_ours"] == pytest.approx(a["lr_psnr_oracle"], abs=1e-6)
    assert a["gain_db"] > 3  # per-image kernels beat the best single kernel on a mixed domain
    assert result["metrics"]["kernel"]["shape_error_exact"] == pytest.approx(0.0, abs=1e-9)
    assert "global" in {k.removeprefix("psnr_") for k in result["metrics"]["sr"] if k.startswith("psnr_")}
    assert result["arrays"]["kernels_oracle"].shape == (5, KM, KM) and result["arrays"]["kernels_baseline"].shape == (5, KM, KM)
    assert a["seconds_per_image_baseline"] > 0 and a["speedup_over_baseline"] > 0


def test_mixed_domain_one_kernel_for_every_image_gains_nothing_over_the_best_single_kernel(mixed):
    k_global = fit_oracle_kernel(mixed["down"], mixed["true"], KM)
    a = _run_mixed(mixed, _stand_in(k_global))["metrics"]["adapt"]
    assert a["gain_db"] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(a["sigma_pearson"])  # a constant prediction has no correlation
    assert a["cov_rel_error_median"] > 0.2


def test_single_kernel_domain_has_no_adapt_section(oracle_run):
    assert "adapt" not in oracle_run[1]["metrics"]


def test_sr_numbers_carry_bootstrap_intervals_that_hold_the_estimate(oracle_run):
    result = oracle_run[1]
    sr, bounds = result["metrics"]["sr"], result["intervals"]["sr"]
    for kind in ("bicubic", "ours", "oracle"):
        lo, hi = bounds[f"psnr_{kind}"]
        assert lo <= sr[f"psnr_{kind}"] <= hi and hi - lo > 0


def test_every_verdict_number_carries_an_interval_that_holds_it(oracle_run, mixed):
    result = oracle_run[1]
    kernel, bounds = result["metrics"]["kernel"], result["intervals"]["kernel"]
    for key in ("cov_rel_error", "shape_error", "lr_psnr_gain_db"):
        lo, hi = bounds[key]
        assert lo - 1e-9 <= kernel[key] <= hi + 1e-9, key
    assert bounds["lr_psnr_gain_db"][0] > 0  # the oracle's LR beats bicubic's on every resample
    # A generator that reads each image's oracle only roughly: intervals with width, holding the estimate.
    noisy = mixed["oracles"] + 0.02 * torch.rand(mixed["oracles"].shape, generator=torch.Generator().manual_seed(3))
    noisy = noisy / noisy.sum((-2, -1), keepdim=True)
    r = _run_mixed(mixed, _reader(mixed["real_val"], noisy))
    a, ab = r["metrics"]["adapt"], r["intervals"]["adapt"]
    for key in ("sigma_pearson", "cov_rel_error_median", "angle_error_median", "gain_db"):
        lo, hi = ab[key]
        assert lo - 1e-6 <= a[key] <= hi + 1e-6 and hi > lo, key


def test_adapt_intervals_resample_images_not_pixels():
    """Two images: one read exactly, one badly. The cov error median's interval spans both images'
    errors, so it must reach the bad one's (a bootstrap over pixels or bins would not)."""
    from fca.evaluate import adapt_intervals
    from fca.kernels import anisotropic_gaussian

    oracle = torch.stack([torch.from_numpy(anisotropic_gaussian(9, s, s, 0.0)).float() for s in (1.0, 1.5, 2.0, 2.5)])
    pred = oracle.clone()
    pred[3] = torch.from_numpy(anisotropic_gaussian(9, 1.0, 1.0, 0.0)).float()
    views = {"ours": torch.zeros(4, 3, 4, 4), "global": torch.full((4, 3, 4, 4), 0.1), "true": torch.zeros(4, 3, 4, 4) + 0.01}
    bounds = adapt_intervals(pred, oracle, views, 400, np.random.default_rng(0))
    bad = float(cov_rel_error(pred[3:], oracle[3:])[0])
    assert bounds["cov_rel_error_median"][0] == pytest.approx(0.0, abs=1e-9)
    assert bounds["cov_rel_error_median"][1] == pytest.approx(bad, rel=1e-6)


def test_paired_bootstrap_interval_of_a_gain_shrinks_when_the_kinds_move_together():
    from fca.evaluate import sr_intervals

    rng = np.random.default_rng(0)
    base = rng.uniform(1e-3, 2e-3, size=(2, 40))
    paired = {"bicubic": base, "ours": base * 0.8, "oracle": base * 0.7}
    unpaired = {"bicubic": base, "ours": rng.permutation(base * 0.8, axis=1), "oracle": rng.permutation(base * 0.7, axis=1)}
    a = sr_intervals(paired, 300, np.random.default_rng(1))["gain_fraction"]
    b = sr_intervals(unpaired, 300, np.random.default_rng(1))["gain_fraction"]
    assert a[1] - a[0] < 0.5 * (b[1] - b[0])  # the same crops for every kind: per-crop difficulty cancels


# --- no-reference mode: real photos, no known kernel ------------------------------------------

NOREF_CONFIG = dataclasses.replace(CONFIG, bootstrap=200)


def _photos(blur_sigma: float | None) -> torch.Tensor:
    """'Photos' whose blur the referee is not told: crops blurred at HR by a Gaussian of blur_sigma px (None: as they are)."""
    clean = torch.cat([_crops(skimage.data.chelsea(), 3), _crops(skimage.data.astronaut(), 3), _crops(skimage.data.coffee(), 2)])
    return clean if blur_sigma is None else conv_per_sample(clean, torch.from_numpy(gaussian(13, blur_sigma)))


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return _photos(2.0)


def _noref(photos: torch.Tensor, degrade) -> dict:
    return referee_no_reference(photos, SCALE, degrade, NOREF_CONFIG)


def test_no_reference_a_generator_that_adds_the_missing_blur_moves_the_lr_density_towards_the_photos(photos):
    """Photos with a 2 px camera blur: bicubic down(x) shrinks it to 0.5 LR px and comes out too sharp per
    pixel; G = down(x) (*) a Gaussian of sigma 1.5 adds blur at LR, so its density is the closer to x's."""
    result = _noref(photos, _stand_in(torch.from_numpy(gaussian(K, 1.5))))
    m, bounds = result["metrics"]["noref"], result["intervals"]["noref"]
    assert m["image_gap_ours_median"] < m["image_gap_bicubic_median"]
    assert m["image_skl_ours_median"] < m["image_skl_bicubic_median"]
    assert m["gap_ours"] < m["gap_bicubic"] and m["skl_ours"] < m["skl_bicubic"] and m["gap_reduction"] > 0.2
    assert m["image_gap_change_median"] < 0 and m["image_closer_share"] == 1.0
    lo, hi = bounds["image_gap_change_median"]
    assert lo <= m["image_gap_change_median"] <= hi < 0  # the whole interval says closer
    assert m["kernel_sigma_median"] == pytest.approx(float(effective_sigma(torch.from_numpy(gaussian(K, 1.5)))))


def test_no_reference_blurring_sharp_photos_moves_the_lr_density_away_from_them():
    """The other direction: photos as they are (no camera blur to add), the same G overblurs."""
    m = _noref(_photos(None), _stand_in(torch.from_numpy(gaussian(K, 1.5))))["metrics"]["noref"]
    assert m["image_gap_ours_median"] > m["image_gap_bicubic_median"]
    assert m["gap_ours"] > m["gap_bicubic"] and m["gap_reduction"] < 0
    assert m["image_gap_change_median"] > 0 and m["image_closer_share"] < 0.5  # a crop of soft fur may already lack the top bins


def test_no_reference_a_generator_that_only_downscales_scores_as_bicubic(photos):
    m = _noref(photos, _stand_in(torch.from_numpy(delta(K))))["metrics"]["noref"]
    for name in ("gap", "skl", "image_gap", "image_skl"):
        suffix = "_median" if name.startswith("image") else ""
        assert m[f"{name}_ours{suffix}"] == pytest.approx(m[f"{name}_bicubic{suffix}"], abs=1e-9)
    assert m["image_gap_change_median"] == pytest.approx(0.0, abs=1e-9) and m["image_closer_share"] == 0.0
    assert m["kernel_sigma_median"] == pytest.approx(0.0) and m["kernels_differ"] == 0.0


def test_no_reference_distances_pair_each_lr_image_with_its_own_photo(photos):
    """Per image, G(x_i) against x_i itself, on the cycles/pixel axis with the configured bins."""
    from fca.frequency import log_l1, radial_density, symmetric_kl

    kernel = torch.from_numpy(gaussian(K, 1.0))
    a = _noref(photos, _stand_in(kernel))["arrays"]
    lr = conv_per_sample(downscale(photos, SCALE), kernel)
    bins = NOREF_CONFIG.density_bins
    for i in range(len(photos)):
        d_lr, d_hr = radial_density(lr[i : i + 1].double(), bins), radial_density(photos[i : i + 1].double(), bins)
        assert a["image_gap_ours"][i] == pytest.approx(float(log_l1(d_lr, d_hr)[0]), rel=1e-6)
        assert a["image_skl_ours"][i] == pytest.approx(float(symmetric_kl(d_lr, d_hr)[0]), rel=1e-6)
    assert not np.allclose(a["image_gap_ours"], a["image_gap_ours"].mean())  # the photos differ: one number each


def test_no_reference_result_has_no_known_kernel_sections(photos):
    result = _noref(photos, _stand_in(torch.from_numpy(gaussian(K, 1.0))))
    flat = flatten_metrics(result["metrics"])
    assert set(result["metrics"]) == {"noref"} and set(result["intervals"]) == {"noref"}
    assert all(k.startswith("noref.") for k in flat)
    for key in ("gap_bicubic", "gap_ours", "skl_bicubic", "skl_ours", "gap_reduction", "image_gap_bicubic_median", "image_gap_ours_median",
                "image_skl_bicubic_median", "image_skl_ours_median", "image_gap_change_median", "image_closer_share",
                "kernel_sigma_median", "kernel_sigma_p05", "kernel_sigma_p95", "kernel_axis_ratio_median", "kernel_oriented_share",
                "kernels_differ", "images"):
        assert f"noref.{key}" in flat, key
    m, bounds = result["metrics"]["noref"], result["intervals"]["noref"]
    for key in ("image_gap_bicubic_median", "image_gap_ours_median", "image_skl_ours_median", "image_gap_change_median"):
        lo, hi = bounds[key]
        assert lo <= m[key] <= hi, key
    a = result["arrays"]
    assert not {"kernel_true", "kernel_oracle", "kernel_oracle_smooth", "sample_lr_true", "density_oracle", "density_l_true"} & set(a)
    assert a["density_real"].shape == a["density_ours"].shape == a["density_bicubic"].shape == a["density_bins"].shape == (6,)
    assert a["image_gap_ours"].shape == a["kernel_sigma"].shape == (8,) and a["kernels_pred"].shape == (8, K, K)
    assert a["sample_hr_real"].shape == (2, 3, 64, 64) and a["sample_lr_ours"].shape == a["sample_lr_bicubic"].shape == (2, 3, 16, 16)


def test_no_reference_per_image_kernels_show_their_spread(photos):
    """A G that gives each photo its own kernel: the widths spread, and the elongated ones have a direction."""
    from fca.kernels import anisotropic_gaussian

    shapes = [(1.0, 1.0, 0), (2.4, 1.0, 30), (2.4, 1.0, 120), (1.4, 1.3, 0), (2.0, 1.0, 60), (0.8, 0.8, 0), (1.6, 1.6, 0), (2.2, 0.9, 90)]
    kernels = torch.stack([torch.from_numpy(anisotropic_gaussian(KM, sx, sy, t)) for sx, sy, t in shapes])
    result = _noref(photos, _reader(photos, kernels))
    m, a = result["metrics"]["noref"], result["arrays"]
    assert m["kernels_differ"] == 1.0
    assert m["kernel_oriented_share"] == pytest.approx(4 / 8)  # the four with sigma_x / sigma_y >= 2
    assert m["kernel_sigma_p05"] < m["kernel_sigma_median"] < m["kernel_sigma_p95"]
    oriented = a["kernel_oriented"]
    assert list(oriented) == [False, True, True, False, True, False, False, True]
    from fca.kernels import angle_difference

    want = torch.tensor([t for (_, _, t), o in zip(shapes, oriented) if o], dtype=torch.float64)
    assert float(angle_difference(torch.from_numpy(a["kernel_angle"][oriented]), want).max()) < 2.0


def test_paired_bootstrap_needs_arrays_of_one_shape():
    from fca.evaluate import paired_bootstrap

    with pytest.raises(ValueError, match=r"paired bootstrap: the arrays must share one shape, got \{'a': \(3,\), 'b': \(4,\)\}"):
        paired_bootstrap({"a": np.zeros(3), "b": np.zeros(4)}, lambda v: {}, 10, np.random.default_rng(0))


def test_seconds_per_image_times_every_image_once_after_a_warm_up_batch():
    from fca.evaluate import seconds_per_image

    seen: list[int] = []
    hr = torch.zeros(10, 3, 8, 8)
    assert seconds_per_image(lambda x: seen.append(x.shape[0]), hr, 4) > 0
    assert seen == [4, 4, 4, 2]  # the warm-up batch, then the 10 images in batches of 4


def test_a_noisy_domain_gets_the_noise_section_and_it_tells_the_cameras_noise_from_a_flat_one(data):
    # The stand-in generator adds the camera's noise model (fresh draws each call): every bin's
    # ratio is near 1. One noise level for all pixels (the camera's at mid-grey) is too strong in
    # the shadows, and the section says so.
    from fca.noise import NoiseConfig, PatchNoise, apply_patch_noise

    camera = NoiseConfig(type="poisson_gaussian", sigma=0.005, gain=0.004)
    names_val, names_train = tuple(f"v{i}" for i in range(3)), tuple(f"t{i}" for i in range(7))
    noise_val, noise_train = PatchNoise(camera, 0, names_val), PatchNoise(camera, 0, names_train)
    real_val = apply_patch_noise(data["real_val"], names_val, camera, 0, "hr")
    real_train = apply_patch_noise(data["real_train"], names_train, camera, 0, "hr")
    k = torch.from_numpy(gaussian(K, 1.5 / SCALE))

    def run(noise_std):
        calls = iter(range(1000))

        def degrade(hr):
            lr = conv_per_sample(downscale(hr, SCALE), k)
            g = torch.Generator().manual_seed(next(calls))
            return lr + noise_std(lr) * torch.randn(lr.shape, generator=g), k.expand(hr.shape[0], -1, -1)

        return referee(data["clean_val"], real_val, data["k_gt"], SCALE, degrade, data["clean_train"], real_train, CONFIG,
                       noise_val=noise_val, noise_train=noise_train)

    per_pixel = run(lambda lr: (camera.sigma**2 + camera.gain * lr.clamp(0, 1)).sqrt())
    n = per_pixel["metrics"]["noise"]
    assert 0.75 < n["variance_ratio_min"] <= n["variance_ratio_max"] < 1.3
    assert abs(n["lag1_camera"]) < 0.1 and abs(n["lag1_ours"]) < 0.1
    assert per_pixel["arrays"]["noise_var_camera"].shape == (6,)
    assert np.all(np.diff(per_pixel["arrays"]["noise_brightness"]) > 0)
    flat = run(lambda lr: math.sqrt(camera.sigma**2 + camera.gain * 0.5)).get("metrics")["noise"]
    assert flat["variance_ratio_max"] > 2  # these crops' shadows (luma ~0.2) get far more noise than the camera gives them
    assert "noise" not in _run(data, k)["metrics"]  # a noise-free domain: no noise section


def test_a_camera_domain_is_judged_against_the_cameras_own_lr_photos():
    """patches.blur.type: camera: L_true is the camera's photo of the shrunk scene (its own draw), the
    oracle pairs are the camera's own, the noise check reads the camera's noise, and the SR probe
    trains on the blind recipe's pairs too. A generator that only blurs (no noise) shows a noise
    far below the camera's."""
    from fca.camera import CameraConfig, PatchCamera, psf_kernel

    def tiles(img: np.ndarray, n: int) -> torch.Tensor:  # 128 px: LR densities of 32 px images are stable enough
        t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)
        return torch.stack([t[:, 128 * (i // 2) : 128 * (i // 2 + 1), 128 * (i % 2) : 128 * (i % 2 + 1)] for i in range(n)])

    data = {"clean_val": tiles(skimage.data.astronaut(), 4), "clean_train": tiles(skimage.data.coffee(), 4)}
    cfg = CameraConfig(psf="gaussian", sigma=1.2, jpeg_quality=0, sharpen_amount=0.0, shot_gain=0.001, read_std=0.002)
    cams = {split: PatchCamera(cfg, 0, tuple(f"{split}{i}.png" for i in range(len(data[f"clean_{split}"])))) for split in ("val", "train")}
    real = {split: cams[split](data[f"clean_{split}"], "hr") for split in ("val", "train")}
    psf = torch.from_numpy(psf_kernel(cfg))
    down, l_true = real_lr_views(data["clean_val"], real["val"], psf, SCALE, camera=cams["val"])
    assert torch.equal(l_true, cams["val"](downscale(data["clean_val"], SCALE), "lr"))  # the camera again, at LR
    assert not torch.equal(l_true, cams["val"](downscale(data["clean_val"], SCALE), "oracle"))  # an independent draw
    k_or = fit_oracle_kernel(down, l_true, K)
    result = referee(data["clean_val"], real["val"], psf, SCALE, _stand_in(k_or), data["clean_train"], real["train"], CONFIG,
                     camera_val=cams["val"], camera_train=cams["train"])
    m = result["metrics"]
    assert m["density"]["gap_reduction_true_oracle"] > 0.9  # the oracle LR is the camera's: L_true's density, another draw
    assert m["noise"]["variance_camera"] > 1e-5 and m["noise"]["variance_ratio_max"] < 0.05  # the stand-in adds no noise
    assert {"psnr_blind", "gain_db_over_blind", "gain_fraction_blind"} <= set(m["sr"])
    assert result["arrays"]["sample_sr_blind"].shape == result["arrays"]["sample_sr_ours"].shape


def test_no_reference_describes_gs_noise_model(photos):
    """Without a camera to compare with, the page describes G's noise: its std at grey levels (the bank's
    variance times the level there), its neighbour and channel correlations, and where its level is read."""
    from fca.noise import NoiseLevel

    stand_in = _stand_in(torch.from_numpy(gaussian(K, 1.5)))
    assert not [k for k in _noref(photos, stand_in)["metrics"]["noref"] if k.startswith("noise")]  # G adds no noise
    white = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    m = referee_no_reference(photos, SCALE, stand_in, NOREF_CONFIG, noise=(white, NoiseLevel.constant(4e-4)))["metrics"]["noref"]
    for key in ("noise_std_b20", "noise_std_b50", "noise_std_b80"):
        assert m[key] == pytest.approx(0.02, rel=0.03)
    assert abs(m["noise_lag1_h"]) < 0.03 and abs(m["noise_lag1_v"]) < 0.03
    assert max(abs(m["noise_corr_rg"]), abs(m["noise_corr_rb"]), abs(m["noise_corr_gb"])) < 0.03
    assert m["noise_level_by_luma"] == 0.0
    knots = torch.linspace(0.3, 0.7, 6, dtype=torch.float64).repeat(3, 1)
    falling = NoiseLevel(knots, 1e-3 * (1.2 - knots), "luma")  # measured over 0.3 .. 0.7, falls with brightness
    shared = white[:, :1].expand(-1, 3, -1, -1)
    result = referee_no_reference(photos, SCALE, stand_in, NOREF_CONFIG, noise=(shared, falling))
    m, a = result["metrics"]["noref"], result["arrays"]
    assert m["noise_corr_rg"] == pytest.approx(1.0) and m["noise_level_by_luma"] == 1.0
    assert m["noise_std_b50"] == pytest.approx((1e-3 * 0.7 * float(shared.var())) ** 0.5, rel=1e-3)
    assert m["noise_std_b20"] > m["noise_std_b50"] > m["noise_std_b80"]
    assert (m["noise_measured_lo"], m["noise_measured_hi"]) == pytest.approx((0.3, 0.7))
    assert a["noise_model_std"].shape == (3, len(a["noise_model_brightness"])) and np.all(np.diff(a["noise_model_std"][0]) < 0)
