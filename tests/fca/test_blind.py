import math
from collections import Counter

import numpy as np
import pytest
import torch

from fca.blind import (
    FAMILIES,
    BlindConfig,
    OrderConfig,
    add_gaussian_noise,
    add_poisson_noise,
    blind_degrade,
    blind_pairs,
    draw_kernel,
    generalized_gaussian,
    make_kernel,
    plateau,
    random_kernel,
    sinc_kernel,
)
from fca.jpeg import jpeg_round_trip
from fca.config import ConfigError, build_config
from fca.kernels import anisotropic_gaussian, angle_difference, principal_axis, second_moment


def _t(k: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(k)


# ------------------------------------------------------------------------------------ config


def test_defaults_are_real_esrgan_x4plus():
    c = BlindConfig()
    assert c.first.kernel_probs == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert (c.first.sigma, c.first.beta_generalized, c.first.beta_plateau) == ((0.2, 3.0), (0.5, 4.0), (1.0, 2.0))
    assert (c.first.kernel_size, c.first.sinc_prob, c.first.blur_prob) == ((7, 21), 0.1, 1.0)
    assert (c.first.resize_probs, c.first.resize_range) == ((0.2, 0.7, 0.1), (0.15, 1.5))
    assert (c.first.gaussian_noise_prob, c.first.noise_sigma, c.first.poisson_scale, c.first.grey_noise_prob) == (0.5, (1.0, 30.0), (0.05, 3.0), 0.4)
    assert c.jpeg_quality == c.jpeg_quality2 == (30, 95)
    assert c.second_order is False and c.final_sinc_prob == 0.8
    s = c.second
    assert (s.blur_prob, s.sigma, s.beta_generalized, s.beta_plateau, s.sinc_prob) == (0.8, (0.2, 1.5), (0.5, 4.0), (1.0, 2.0), 0.1)
    assert (s.resize_probs, s.resize_range, s.noise_sigma, s.poisson_scale) == ((0.3, 0.4, 0.3), (0.3, 1.2), (1.0, 25.0), (0.05, 2.5))
    assert (s.gaussian_noise_prob, s.grey_noise_prob, s.kernel_probs) == (0.5, 0.4, c.first.kernel_probs)


@pytest.mark.parametrize("bad, words", [
    ({"kernel_probs": (0.5, 0.5, 0.1, 0, 0, 0)}, "sum to 1"),
    ({"kernel_probs": (0.5, 0.5)}, "6 probabilities"),
    ({"kernel_size": (8, 21)}, "odd"),
    ({"sigma": (3.0, 0.2)}, "<= the second"),
    ({"beta_plateau": (1.2, 2.0)}, "contain 1"),
    ({"resize_probs": (0.2, 0.7, 0.2)}, "sum to 1"),
    ({"sinc_prob": 1.5}, "<= 1"),
])
def test_order_config_rejects_bad_values(bad, words):
    with pytest.raises(ValueError, match=words):
        OrderConfig(**bad)


def test_build_config_names_the_bad_key():
    raw = {"jpeg_quality": [30, 101]}
    with pytest.raises(ConfigError, match="jpeg_quality"):
        build_config(BlindConfig, raw, "blind", required=())
    assert build_config(BlindConfig, {"second_order": True}, "blind", required=()).second_order


# ------------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("k", [
    make_kernel({"family": "iso", "size": 21, "sigma_x": 2.0, "sigma_y": 2.0, "theta_deg": 0.0}),
    make_kernel({"family": "aniso", "size": 15, "sigma_x": 3.0, "sigma_y": 0.7, "theta_deg": -40.0}),
    generalized_gaussian(21, 2.0, 1.0, 20.0, 0.5),
    generalized_gaussian(9, 2.0, 1.0, 20.0, 4.0),
    plateau(21, 1.0, 2.5, 70.0, 1.0),
    plateau(7, 0.3, 0.3, 0.0, 2.0),
])
def test_positive_kernels_sum_to_one_and_peak_in_the_centre(k):
    c = k.shape[0] // 2
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert k.min() >= 0
    assert k[c, c] == k.max()


def test_isotropic_gaussian_second_moment_is_sigma_squared_per_axis():
    k = make_kernel({"family": "iso", "size": 41, "sigma_x": 2.5, "sigma_y": 2.5, "theta_deg": 0.0})
    s = second_moment(_t(k))
    assert s.diagonal().numpy() == pytest.approx([6.25, 6.25], rel=1e-4)
    assert abs(float(s[0, 1])) < 1e-9


@pytest.mark.parametrize("theta, expected", [(30.0, 30.0), (-60.0, 120.0), (100.0, 100.0)])
def test_anisotropic_gaussian_axes_and_angle_are_what_was_asked(theta, expected):
    k = _t(make_kernel({"family": "aniso", "size": 41, "sigma_x": 4.0, "sigma_y": 1.5, "theta_deg": theta}))
    ratio, angle = principal_axis(k)
    assert float(ratio) == pytest.approx(4.0 / 1.5, rel=1e-3)
    assert float(angle_difference(angle, torch.tensor(expected))) < 0.1
    assert torch.linalg.eigvalsh(second_moment(k)).numpy() == pytest.approx([2.25, 16.0], rel=1e-3)


def test_generalized_gaussian_with_beta_one_is_the_gaussian_and_beta_sets_the_tails():
    ref = anisotropic_gaussian(21, 3.0, 1.2, 37.0)  # fca.kernels' independent implementation
    np.testing.assert_allclose(generalized_gaussian(21, 3.0, 1.2, 37.0, 1.0), ref, atol=1e-14)
    # The log profile is -0.5 (d / sigma)^(2 beta): doubling d multiplies it by 2^(2 beta).
    for beta in (0.5, 2.0):
        k = generalized_gaussian(41, 4.0, 4.0, 0.0, beta)
        c = 20
        ratio = math.log(k[c, c] / k[c, c + 6]) / math.log(k[c, c] / k[c, c + 3])
        assert ratio == pytest.approx(2 ** (2 * beta), rel=1e-6)


def test_generalized_and_plateau_anisotropic_kernels_point_along_theta():
    for k in (generalized_gaussian(41, 4.0, 1.5, 55.0, 2.0), plateau(41, 3.0, 1.0, 55.0, 2.0)):
        ratio, angle = principal_axis(_t(k))
        assert float(ratio) > 1.5
        assert float(angle_difference(angle, torch.tensor(55.0))) < 0.5


@pytest.mark.parametrize("beta", [1.0, 1.5, 2.0])
def test_plateau_decays_like_a_power_of_the_distance(beta):
    k = plateau(81, 1.5, 1.5, 0.0, beta)
    c = 40
    slope = math.log(k[c, c + 40] / k[c, c + 10]) / math.log(4.0)  # along a row, 10 -> 40 px
    assert slope == pytest.approx(-2 * beta, abs=0.02)
    # Heavy tails: far more weight 10 px out than a Gaussian of the same sigma has.
    g = anisotropic_gaussian(81, 1.5, 1.5, 0.0)
    assert k[c, c + 10] > 1e6 * g[c, c + 10]


@pytest.mark.parametrize("size, cutoff", [(21, math.pi / 2), (21, math.pi / 3), (41, math.pi / 4)])
def test_sinc_is_a_low_pass_with_the_asked_cutoff(size, cutoff):
    k = sinc_kernel(size, cutoff)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert k.min() < 0  # the ringing lobes
    n = 256
    spectrum = np.abs(np.fft.fft2(k, (n, n)))
    f = np.fft.fftfreq(n) * 2 * math.pi
    omega = np.hypot(f[:, None], f[None, :])
    passband = spectrum[omega < 0.7 * cutoff]
    stopband = spectrum[(omega > 1.3 * cutoff) & (omega <= math.pi)]
    assert passband.min() > 0.8 and passband.max() < 1.15  # flat below the cutoff (Gibbs ripple aside)
    assert stopband.max() < 0.12 and stopband.mean() < 0.02  # small above it


def test_kernel_families_are_drawn_with_the_configured_probabilities():
    stage = OrderConfig()
    rng = np.random.default_rng(0)
    draws = [draw_kernel(stage, rng) for _ in range(20000)]
    counts = Counter(d["family"] for d in draws)
    names = ("sinc", *FAMILIES)
    probs = np.array([stage.sinc_prob, *((1 - stage.sinc_prob) * np.array(stage.kernel_probs))])
    observed = np.array([counts[n] for n in names])
    expected = probs * len(draws)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 22.46  # chi-square, 6 degrees of freedom, p = 0.001
    assert sorted({d["size"] for d in draws}) == [7, 9, 11, 13, 15, 17, 19, 21]
    for d in draws:
        if d["family"] == "sinc":
            assert (math.pi / 3 if d["size"] < 13 else math.pi / 5) <= d["cutoff"] <= math.pi
        elif d["family"].endswith("_iso") or d["family"] == "iso":
            assert d["sigma_x"] == d["sigma_y"] and d["theta_deg"] == 0.0
        else:
            assert 0.2 <= min(d["sigma_x"], d["sigma_y"]) and max(d["sigma_x"], d["sigma_y"]) <= 3.0
    plateau_betas = np.array([d["beta"] for d in draws if d["family"].startswith("plateau")])
    assert np.mean(plateau_betas == 1.0) == pytest.approx(0.5, abs=0.05)  # Real-ESRGAN's U(1, 1) half
    assert plateau_betas.max() <= 2.0


def test_random_kernel_is_a_normalised_odd_kernel_in_range():
    rng = np.random.default_rng(1)
    for _ in range(40):
        k = random_kernel(BlindConfig(), rng)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
        assert k.sum() == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------------------------------------------ noise


def test_gaussian_noise_has_the_asked_std_and_grey_noise_is_shared_by_the_channels():
    x = torch.full((1, 3, 128, 128), 0.5)
    y = add_gaussian_noise(x, 20.0, np.random.default_rng(0))
    assert float((y - x).std()) == pytest.approx(20 / 255, rel=0.03)
    assert float((y - x).mean()) == pytest.approx(0.0, abs=2e-3)
    assert not torch.equal(y[:, 0], y[:, 1])
    g = add_gaussian_noise(x, 20.0, np.random.default_rng(0), grey=True)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 0], g[:, 2])
    assert float((g - x).std()) == pytest.approx(20 / 255, rel=0.03)


def test_poisson_noise_variance_grows_with_brightness():
    # Every column a different 8-bit level, all 256 present: Real-ESRGAN's v is 256,
    # so the noise variance is scale^2 * q / 256.
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    x = levels.view(1, 1, 1, 256).expand(1, 3, 256, 256).contiguous()
    scale = 1.5
    noise = add_poisson_noise(x, scale, np.random.default_rng(0)) - x
    dark, bright = noise[..., 40:60], noise[..., 190:210]
    var_dark, var_bright = float(dark.var()), float(bright.var())
    assert var_dark == pytest.approx(scale**2 * float(levels[40:60].mean()) / 256, rel=0.1)
    assert var_bright == pytest.approx(scale**2 * float(levels[190:210].mean()) / 256, rel=0.1)
    assert var_bright > 3 * var_dark
    grey = add_poisson_noise(x, scale, np.random.default_rng(0), grey=True)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])


def test_poisson_noise_follows_real_esrgan_on_flat_images():
    # One distinct value: v = 1, the variance is scale^2 * q (Real-ESRGAN's quirk, kept on purpose).
    x = torch.full((1, 3, 128, 128), 0.5, dtype=torch.float64)
    noise = add_poisson_noise(x, 0.05, np.random.default_rng(0)) - x
    assert float(noise.var()) == pytest.approx(0.05**2 * 0.5, rel=0.1)


# ------------------------------------------------------------------------------------ JPEG


def _gradient(size: int = 64) -> torch.Tensor:
    yy, xx = np.mgrid[0:size, 0:size]
    g = 0.15 + 0.7 * (xx + yy) / (2.0 * (size - 1))
    return torch.from_numpy(np.broadcast_to(g, (1, 3, size, size)).copy()).float()


def _block_edge_share(y: torch.Tensor) -> float:
    """Share of the squared neighbour differences that sit on 8x8 block boundaries (7 of 63 pairs: 0.11 on a ramp)."""
    a = y[0].mean(0).double().numpy()
    edges = total = 0.0
    for d in (np.diff(a, axis=1), np.diff(a, axis=0).T):
        edges += float((d[:, 7::8] ** 2).sum())
        total += float((d**2).sum())
    return edges / total


def test_jpeg_blocks_a_smooth_gradient_at_low_quality_and_keeps_it_at_95():
    x = _gradient()
    assert _block_edge_share(x) == pytest.approx(7 / 63, abs=0.01)
    assert _block_edge_share(jpeg_round_trip(x, 10)) > 0.6
    kept = jpeg_round_trip(x, 95)
    assert _block_edge_share(kept) < 0.2
    assert float((kept - x).abs().max()) <= 2 / 255


# ------------------------------------------------------------------------------------ the recipe


def _hr(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images (blurred noise), so resizing and JPEG behave as on photos."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("second_order", [False, True])
@pytest.mark.parametrize("scale", [2, 4])
def test_blind_degrade_gives_8bit_lr_of_the_exact_size(scale, second_order):
    hr = _hr(3, 48, 64)
    lr = blind_degrade(hr, scale, BlindConfig(second_order=second_order), np.random.default_rng(0))
    assert lr.shape == (3, 3, 48 // scale, 64 // scale)
    assert lr.dtype == hr.dtype
    assert float(lr.min()) >= 0 and float(lr.max()) <= 1
    levels = lr.double() * 255
    assert float((levels - levels.round()).abs().max()) < 1e-4


@pytest.mark.parametrize("second_order", [False, True])
def test_blind_degrade_is_reproducible_from_the_seed_and_draws_per_image(second_order):
    hr = _hr(1, 32, 32).expand(3, -1, -1, -1)  # the same image three times
    config = BlindConfig(second_order=second_order)
    a = blind_degrade(hr, 4, config, np.random.default_rng(7))
    b = blind_degrade(hr, 4, config, np.random.default_rng(7))
    c = blind_degrade(hr, 4, config, np.random.default_rng(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])  # each image its own draw


@pytest.mark.parametrize("second_order", [False, True])
def test_blind_degrade_keeps_the_picture_where_it_was(second_order):
    # Noise-free, mild settings, grey images (4:2:0 chroma aside): the LR is close to the HR
    # box-averaged, and far from it flipped (nothing mirrored, transposed or shifted).
    quiet = OrderConfig(noise_sigma=(0.0, 0.0), poisson_scale=(0.0, 0.0), sigma=(0.2, 0.5), sinc_prob=0.0,
                        resize_probs=(0.0, 0.0, 1.0))
    config = BlindConfig(first=quiet, jpeg_quality=(95, 95), second_order=second_order, second=quiet,
                         jpeg_quality2=(95, 95), final_sinc_prob=0.0)
    hr = _hr(2, 64, 96, seed=3)[:, :1].expand(-1, 3, -1, -1)
    lr = blind_degrade(hr, 4, config, np.random.default_rng(0))
    ref = torch.nn.functional.avg_pool2d(hr, 4)
    assert float((lr - ref).abs().mean()) < 0.01
    assert float((lr - ref.flip(-1)).abs().mean()) > 0.15
    assert float((lr - ref.flip(-2)).abs().mean()) > 0.15


def test_blind_degrade_rejects_sizes_that_are_not_multiples_of_the_scale():
    with pytest.raises(ValueError, match="multiple"):
        blind_degrade(torch.rand(1, 3, 30, 32), 4, BlindConfig(), np.random.default_rng(0))


def test_blind_pairs_repeats_each_hr_with_independent_degradations():
    hr = _hr(2, 32, 32)
    lr, hr_rep = blind_pairs(hr, 2, BlindConfig(), np.random.default_rng(0), copies=3)
    assert lr.shape == (6, 3, 16, 16) and hr_rep.shape == (6, 3, 32, 32)
    for i in range(6):
        assert torch.equal(hr_rep[i], hr[i // 3])
    assert not torch.equal(lr[0], lr[1]) and not torch.equal(lr[1], lr[2])
