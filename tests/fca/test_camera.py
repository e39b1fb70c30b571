"""The simulated camera (fca.camera): each stage against a hand computation, then the whole pipeline."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from fca.camera import (
    CameraConfig,
    bayer_masks,
    camera,
    camera_lr,
    demosaic,
    demosaic_bilinear,
    demosaic_malvar,
    disk_psf,
    motion_psf,
    mosaic,
    optics_blur,
    psf_kernel,
    raw_noise,
    sharpen,
    to_linear,
    tone_curve,
    white_balance,
)
from fca.config import ConfigError, build_config
from fca.jpeg import to_8bit
from fca.kernels import effective_sigma, second_moment
from fca.resample import downscale

CLEAN = CameraConfig(psf="none", shot_gain=0.0, read_std=0.0, sharpen_amount=0.0, jpeg_quality=0)


def _rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _moment(k: np.ndarray) -> np.ndarray:
    """The (row, col) covariance of a kernel."""
    return second_moment(torch.from_numpy(k)).numpy()


def _along(s: np.ndarray, angle_deg: float) -> tuple[float, float]:
    """A (row, col) covariance's variance along the direction angle_deg (0: x, 90: y) and across it."""
    a = math.radians(angle_deg)
    d, p = np.array([math.sin(a), math.cos(a)]), np.array([math.cos(a), -math.sin(a)])
    return float(d @ s @ d), float(p @ s @ p)


def _lag1(d: torch.Tensor) -> float:
    """Horizontal lag-1 correlation of a zero-mean field [..., H, W]."""
    return float((d[..., 1:] * d[..., :-1]).mean() / d.pow(2).mean())


# --------------------------------------------------------------------------- optics


@pytest.mark.parametrize("psf", ["none", "gaussian", "anisotropic", "disk", "motion", "sum"])
def test_every_psf_is_odd_non_negative_and_sums_to_1(psf):
    k = psf_kernel(CameraConfig(psf=psf, theta_deg=30.0, angle_deg=60.0))
    assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert (k >= 0).all() and k.sum() == pytest.approx(1.0, abs=1e-12)


def test_gaussian_and_anisotropic_psfs_have_their_second_moments():
    s = _moment(psf_kernel(CameraConfig(psf="gaussian", sigma=1.3)))
    assert np.allclose(np.diag(s), 1.3**2, rtol=0.01) and abs(s[0, 1]) < 1e-9
    along, across = _along(_moment(psf_kernel(CameraConfig(psf="anisotropic", sigma_x=2.5, sigma_y=1.0, theta_deg=30.0))), 30.0)
    assert along == pytest.approx(2.5**2, rel=0.01) and across == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("radius", [2.0, 3.3, 4.0])
def test_disk_psf_is_flat_inside_zero_outside_with_a_disk_s_second_moment(radius):
    k = disk_psf(radius)
    r = k.shape[0] // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    dist = np.hypot(yy, xx)
    inside, outside = dist + math.sqrt(0.5) < radius, dist - math.sqrt(0.5) > radius  # whole pixel in / out
    assert np.allclose(k[inside], k.max()) and (k[outside] == 0).all()
    edge = ~inside & ~outside
    assert ((k[edge] < k.max()) | np.isclose(k[edge], k.max())).all() and (k[edge] > 0).any()  # anti-aliased rim
    # The continuous disk's r^2 / 4 per axis, plus 1/12 for the pixels' area (a 1 px box).
    assert np.allclose(np.diag(_moment(k)), radius**2 / 4 + 1 / 12, atol=0.05)


@pytest.mark.parametrize("length, angle", [(9.0, 0.0), (9.0, 30.0), (6.5, 90.0), (12.0, 135.0)])
def test_motion_psf_is_a_line_of_its_length_along_its_angle(length, angle):
    along, across = _along(_moment(motion_psf(length, angle)), angle)
    # length^2 / 12 along the line, plus the bilinear split's 1/6 (exactly, for a line sampled uniformly)
    assert along == pytest.approx(length**2 / 12 + 1 / 6, abs=0.02)
    assert across <= 1 / 6 + 0.01
    if angle in (0.0, 90.0):
        assert across == pytest.approx(0.0, abs=1e-9)


def test_motion_of_length_0_is_the_identity():
    k = motion_psf(0.0, 40.0)
    assert k[k.shape[0] // 2, k.shape[1] // 2] == 1.0 and k.sum() == 1.0


def test_sum_psf_is_the_weighted_sum_of_its_parts():
    cfg = CameraConfig(psf="sum", sum_of=("motion", "gaussian"), sum_weight=0.3, length=11.0, angle_deg=45.0, sigma=1.0)
    k = psf_kernel(cfg)
    a, b = psf_kernel(dataclasses.replace(cfg, psf="motion")), psf_kernel(dataclasses.replace(cfg, psf="gaussian"))
    assert np.allclose(_moment(k), 0.3 * _moment(a) + 0.7 * _moment(b), atol=1e-9)
    size = k.shape[0]
    pad = (size - b.shape[0]) // 2
    assert a.shape[0] == size and np.allclose(k, 0.3 * a + 0.7 * np.pad(b, pad))


def test_default_psf_has_a_clearly_visible_effective_sigma():
    sigma = float(effective_sigma(torch.from_numpy(psf_kernel(CameraConfig()))))
    assert 1.5 <= sigma <= 2.5


def test_optics_blur_of_an_impulse_is_the_kernel_in_that_channel_only():
    k = psf_kernel(CameraConfig(psf="anisotropic", sigma_x=2.0, sigma_y=0.7, theta_deg=30.0))
    r = k.shape[0] // 2
    x = torch.zeros(1, 3, 21, 21, dtype=torch.float64)
    x[0, 1, 10, 10] = 1.0
    y = optics_blur(x, k)
    assert torch.allclose(y[0, 1, 10 - r : 11 + r, 10 - r : 11 + r], torch.from_numpy(k))
    assert y[0, 0].abs().max() == 0 and y[0, 2].abs().max() == 0
    assert optics_blur(x, np.ones((1, 1))) is x


# --------------------------------------------------------------------------- tone and colour


def test_to_linear_by_hand_and_the_isp_undoes_it():
    x = torch.rand(2, 3, 5, 5, generator=_rng(), dtype=torch.float64)
    gains = (2.0, 1.0, 1.6)
    lin = to_linear(x, 2.2, gains)
    assert float(to_linear(torch.full((1, 3, 1, 1), 0.5, dtype=torch.float64), 2.2, gains)[0, 0]) == pytest.approx(0.5**2.2 / 2.0)
    assert torch.allclose(lin[:, 2], x[:, 2] ** 2.2 / 1.6)
    assert torch.allclose(white_balance(lin, gains)[:, 0], x[:, 0] ** 2.2)
    assert torch.allclose(tone_curve(white_balance(lin, gains), 2.2), x, atol=1e-12)
    assert float(tone_curve(torch.tensor([1.7, -0.2]), 2.2).max()) == 1.0  # clipped first


# --------------------------------------------------------------------------- sensor


def test_mosaic_keeps_the_rggb_channel_at_each_of_the_four_positions():
    c, i, j = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(6), indexing="ij")
    x = (100 * c + 10 * i + j).double().unsqueeze(0)  # value says channel, row, column
    raw = mosaic(x)
    assert raw.shape == (1, 1, 4, 6)
    assert raw[0, 0, 0, 0] == 0 + 0 and raw[0, 0, 0, 1] == 100 + 1  # R, G on the red rows
    assert raw[0, 0, 1, 0] == 100 + 10 and raw[0, 0, 1, 1] == 200 + 11  # G, B on the blue rows
    assert raw[0, 0, 3, 5] == 200 + 35 and raw[0, 0, 2, 4] == 24  # and the pattern repeats
    assert bayer_masks(4, 6).sum(0).eq(1).all()


def test_raw_noise_variance_is_shot_plus_read_on_flat_fields():
    shot, read = 0.001, 0.02
    for level in (0.2, 0.6):
        raw = torch.full((1, 1, 128, 128), level, dtype=torch.float64)
        y = raw_noise(raw, shot, read, _rng(3))
        expect = shot * level + read**2  # 0.0006 and 0.001: intercept and slope both matter
        assert float((y - raw).var()) == pytest.approx(expect, rel=0.05)
        assert float(y.mean()) == pytest.approx(level, abs=4 * math.sqrt(expect / raw.numel()))


def test_raw_noise_is_clipped_at_0_and_white():
    assert float(raw_noise(torch.zeros(1, 1, 16, 16), 0.01, 0.05, _rng()).min()) == 0.0
    raw = torch.full((1, 1, 128, 128), 0.3, dtype=torch.float64)
    d = raw_noise(raw, 0.01, 0.005, _rng(1)) - raw_noise(raw, 0.01, 0.005, _rng(2))
    assert abs(_lag1(d)) < 0.03 and abs(_lag1(d.transpose(-1, -2))) < 0.03


def test_raw_noise_same_seed_same_bits_other_seed_other_noise():
    raw = torch.full((2, 1, 8, 8), 0.4, dtype=torch.float32)
    a, b, c = (raw_noise(raw, 0.01, 0.005, _rng(s)) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float32


# --------------------------------------------------------------------------- demosaicing


@pytest.mark.parametrize("method", ["bilinear", "malvar"])
@pytest.mark.parametrize("size", [(6, 6), (5, 7)])
def test_demosaic_of_a_constant_colour_is_that_colour(method, size):
    x = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, *size)
    assert torch.allclose(demosaic(mosaic(x), method), x, atol=1e-12)


def test_bilinear_demosaic_of_a_hand_made_4x4_raw():
    r = torch.rand(4, 4, generator=_rng(5), dtype=torch.float64)
    y = demosaic_bilinear(r.view(1, 1, 4, 4))[0]
    # (1, 1), a blue pixel: G from its 4 edge neighbours, R from its 4 diagonal ones
    assert y[2, 1, 1] == r[1, 1]
    assert y[1, 1, 1] == pytest.approx(float(r[0, 1] + r[1, 0] + r[1, 2] + r[2, 1]) / 4)
    assert y[0, 1, 1] == pytest.approx(float(r[0, 0] + r[0, 2] + r[2, 0] + r[2, 2]) / 4)
    # (2, 1), green on a red row: R from left and right, B from above and below
    assert y[1, 2, 1] == r[2, 1]
    assert y[0, 2, 1] == pytest.approx(float(r[2, 0] + r[2, 2]) / 2)
    assert y[2, 2, 1] == pytest.approx(float(r[1, 1] + r[3, 1]) / 2)
    # (0, 0), red in the corner: the border mirrored, so G is the mean of (0, 1) and (1, 0), B is (1, 1)
    assert y[1, 0, 0] == pytest.approx(float(r[0, 1] + r[1, 0]) / 2)
    assert y[2, 0, 0] == pytest.approx(float(r[1, 1]))
    # (2, 3), green at the right border: R's right neighbour mirrors to its left one
    assert y[0, 2, 3] == pytest.approx(float(r[2, 2]))


def test_malvar_demosaic_of_a_hand_made_raw():
    r = torch.rand(8, 8, generator=_rng(6), dtype=torch.float64)
    y = demosaic_malvar(r.view(1, 1, 8, 8))[0]
    g = lambda *p: float(sum(r[i, j] for i, j in p))  # noqa: E731 - sum of raw values at (row, col) pairs
    plus_far = g((0, 2), (4, 2), (2, 0), (2, 4))  # same colour, 2 px away from (2, 2)
    # at R (2, 2): G = (4 R + 2 * (4 G neighbours) - (4 R two away)) / 8, B likewise from the diagonals
    assert y[1, 2, 2] == pytest.approx((4 * g((2, 2)) + 2 * g((1, 2), (3, 2), (2, 1), (2, 3)) - plus_far) / 8)
    assert y[2, 2, 2] == pytest.approx((6 * g((2, 2)) + 2 * g((1, 1), (1, 3), (3, 1), (3, 3)) - 1.5 * plus_far) / 8)
    # at G (2, 3) on a red row: R from left/right, B from above/below
    diag = g((1, 2), (1, 4), (3, 2), (3, 4))
    assert y[0, 2, 3] == pytest.approx((5 * g((2, 3)) + 4 * g((2, 2), (2, 4)) - g((2, 1), (2, 5)) - diag + 0.5 * g((0, 3), (4, 3))) / 8)
    assert y[2, 2, 3] == pytest.approx((5 * g((2, 3)) + 4 * g((1, 3), (3, 3)) - g((0, 3), (4, 3)) - diag + 0.5 * g((2, 1), (2, 5))) / 8)
    # at G (3, 2) on a blue row: R from above/below
    diag = g((2, 1), (2, 3), (4, 1), (4, 3))
    assert y[0, 3, 2] == pytest.approx((5 * g((3, 2)) + 4 * g((2, 2), (4, 2)) - g((1, 2), (5, 2)) - diag + 0.5 * g((3, 0), (3, 4))) / 8)
    assert torch.equal(y[0, 2, 2], r[2, 2]) and torch.equal(y[2, 3, 3], r[3, 3]) and torch.equal(y[1, 2, 3], r[2, 3])


def test_malvar_is_edge_aware_where_bilinear_fringes():
    # A grey pattern of fine detail: Malvar borrows the sampled channel's curvature, bilinear cannot.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    grey = 0.5 + 0.4 * torch.sin(2 * math.pi * (xx + 0.5 * yy) / 7)
    x = grey.double().expand(1, 3, 32, 32)
    err = {m: float((demosaic(mosaic(x), m) - x)[..., 4:-4, 4:-4].pow(2).mean()) for m in ("bilinear", "malvar")}
    assert err["malvar"] < 0.25 * err["bilinear"]


# --------------------------------------------------------------------------- ISP finish


def test_sharpening_raises_high_frequencies_and_overshoots_at_an_edge():
    x = torch.rand(1, 3, 24, 24, generator=_rng(2), dtype=torch.float64)
    x = optics_blur(0.25 + 0.5 * x, psf_kernel(CameraConfig(psf="gaussian", sigma=1.0)))
    lap = lambda t: (4 * t[..., 1:-1, 1:-1] - t[..., :-2, 1:-1] - t[..., 2:, 1:-1] - t[..., 1:-1, :-2] - t[..., 1:-1, 2:]).pow(2).mean()  # noqa: E731
    assert float(lap(sharpen(x, 0.5, 1.0))) > 1.5 * float(lap(x))
    step = torch.full((1, 3, 8, 16), 0.3, dtype=torch.float64)
    step[..., 8:] = 0.7
    s = sharpen(step, 0.5, 1.0)
    assert float(s.max()) > 0.72 and float(s.min()) < 0.28  # halos on both sides of the edge
    assert torch.allclose(sharpen(torch.full_like(step, 0.4), 0.5, 1.0), torch.full_like(step, 0.4))
    assert sharpen(step, 0.0, 1.0) is step


# --------------------------------------------------------------------------- the whole camera


def test_a_noiseless_camera_without_optics_returns_a_constant_colour_on_8_bits():
    # 79.05, 158.1 and 224.4 of 255: away from a rounding edge (0.3 is 76.5)
    x = torch.tensor([0.31, 0.62, 0.88], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 6, 8)
    assert torch.equal(camera(x, CLEAN, _rng()), to_8bit(x))


def test_camera_returns_8_bit_images_in_range_with_x_s_shape_and_dtype():
    x = torch.rand(2, 3, 32, 32, generator=_rng(1))
    y = camera(x, CameraConfig(), _rng(2))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)


def test_camera_same_seed_same_bits_other_seed_other_noise():
    x = torch.rand(1, 3, 24, 24, generator=_rng(1), dtype=torch.float64)
    cfg = CameraConfig()
    a, b, c = (camera(x, cfg, _rng(s)) for s in (4, 4, 5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_camera_noise_is_correlated_after_demosaicing_while_the_raw_noise_is_white():
    x = torch.full((1, 3, 64, 64), 0.5, dtype=torch.float64)
    cfg = CameraConfig()
    d = (camera(x, cfg, _rng(1)) - camera(x, cfg, _rng(2)))[..., 6:-6, 6:-6]
    assert _lag1(d) > 0.1 and _lag1(d.transpose(-1, -2)) > 0.1
    assert float(torch.corrcoef(d[0].flatten(1))[0, 1]) > 0.2  # and across channels (R with G)
    lin = mosaic(to_linear(x, cfg.gamma, cfg.wb_gains))
    raw = raw_noise(lin, cfg.shot_gain, cfg.read_std, _rng(1)) - raw_noise(lin, cfg.shot_gain, cfg.read_std, _rng(2))
    assert abs(_lag1(raw)) < 0.03


def test_camera_lr_is_the_camera_on_the_downscaled_scene():
    x = torch.rand(1, 3, 32, 32, generator=_rng(1), dtype=torch.float64)
    cfg = CameraConfig()
    lr = camera_lr(x, 2, cfg, _rng(3))
    assert lr.shape == (1, 3, 16, 16)
    assert torch.equal(lr, camera(downscale(x, 2), cfg, _rng(3)))
    assert not torch.equal(lr, camera_lr(x, 2, cfg, _rng(4)))


def test_config_is_validated_by_build_config():
    assert build_config(CameraConfig, dataclasses.asdict(CameraConfig()), "camera") == CameraConfig()
    assert build_config(CameraConfig, {"wb_gains": [1, 1, 1]}, "camera", required=()).wb_gains == (1.0, 1.0, 1.0)
    for bad, key in (({"jpeg_quality": 101}, "jpeg_quality"), ({"psf": "box"}, "psf"),
                     ({"demosaic": "nearest"}, "demosaic"), ({"wb_gains": [1, 1]}, "wb_gains"),
                     ({"jpeg_subsampling": "4:1:1"}, "jpeg_subsampling"), ({"sum_of": ["disk", "disk"]}, "sum_of")):
        with pytest.raises(ConfigError, match=key):
            build_config(CameraConfig, bad, "camera", required=())
