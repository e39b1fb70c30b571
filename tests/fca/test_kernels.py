import numpy as np
import pytest
import torch

from fca.kernels import (
    MOTION_SIGMA,
    anisotropic_gaussian,
    check_kernel,
    conv_per_sample,
    cov_rel_error,
    delta,
    effective_sigma,
    gaussian,
    motion_fits,
    motion_kernel,
    random_kernel,
    second_moment,
)


def test_gaussian_sums_to_one_and_has_its_sigma():
    k = gaussian(31, 3.0)
    assert k.sum() == pytest.approx(1.0)
    assert float(effective_sigma(torch.from_numpy(k))) == pytest.approx(3.0, rel=1e-3)


def test_truncated_13x13_sigma3_has_smaller_effective_sigma():
    # Truncating to 13x13 cuts the tails: the second moment is clearly below sigma 3.
    assert 2.6 < float(effective_sigma(torch.from_numpy(gaussian(13, 3.0)))) < 2.8


def test_anisotropic_second_moment_follows_theta():
    k = torch.from_numpy(anisotropic_gaussian(41, 4.0, 1.0, 90.0))
    s = second_moment(k)
    # theta 90 deg puts the long axis along rows (y).
    assert float(s[0, 0]) == pytest.approx(16.0, rel=1e-2)
    assert float(s[1, 1]) == pytest.approx(1.0, rel=1e-2)
    assert abs(float(s[0, 1])) < 1e-6


def test_conv_per_sample_matches_scipy_reference_per_image():
    from scipy.ndimage import convolve

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 20, 17, generator=g, dtype=torch.float64)
    k = torch.rand(3, 5, 5, generator=g, dtype=torch.float64)
    k = k / k.sum((1, 2), keepdim=True)
    out = conv_per_sample(x, k).numpy()
    for b in range(3):
        for c in range(3):
            ref = convolve(x[b, c].numpy(), k[b].numpy(), mode="mirror")
            np.testing.assert_allclose(out[b, c], ref, atol=1e-12)


def test_delta_kernel_is_identity_and_sum_one_keeps_means():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(conv_per_sample(x, torch.from_numpy(delta(7)).float()), x)
    blurred = conv_per_sample(x, torch.from_numpy(gaussian(5, 1.0)).float())
    torch.testing.assert_close(blurred.mean((2, 3)), x.mean((2, 3)), atol=1.5e-2, rtol=0)


def test_conv_rejects_even_kernels_and_batch_mismatch():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="odd"):
        conv_per_sample(x, torch.ones(2, 4, 4) / 16)
    with pytest.raises(ValueError, match="3 kernels for a batch of 2"):
        conv_per_sample(x, torch.ones(3, 3, 3) / 9)


def test_check_kernel_names_the_problem():
    with pytest.raises(ValueError, match="odd"):
        check_kernel(np.ones((4, 4)), "k.npy")
    with pytest.raises(ValueError, match="negative"):
        check_kernel(-np.ones((3, 3)), "k.npy")
    with pytest.raises(ValueError, match="square"):
        check_kernel(np.ones((3, 5)), "k.npy")
    assert check_kernel(np.ones((3, 3)) * 2).sum() == pytest.approx(1.0)


def test_cov_rel_error_zero_for_same_and_grows_with_width():
    a = torch.from_numpy(gaussian(21, 2.0))
    assert float(cov_rel_error(a, a)) == pytest.approx(0.0, abs=1e-9)
    b = torch.from_numpy(gaussian(21, 2.2))
    assert float(cov_rel_error(b, a)) == pytest.approx(0.21, abs=0.02)


def _principal_axis(k: np.ndarray) -> tuple[float, float]:
    """(angle in degrees in [0, 180) of the second moment's long axis, measured like theta: 0 = x, 90 = y; its variance)."""
    s = second_moment(torch.from_numpy(k)).numpy()  # (row, col)
    w, v = np.linalg.eigh(s)
    row, col = v[:, -1]
    return float(np.degrees(np.arctan2(row, col)) % 180.0), float(w[-1])


def _angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


@pytest.mark.parametrize("length,angle", [(9.0, 0.0), (9.0, 30.0), (4.0, 120.0), (10.0, 45.0), (7.5, 90.0), (6.0, 163.0)])
def test_motion_kernel_is_a_normalised_segment_of_its_length_and_angle(length, angle):
    k = motion_kernel(13, length, angle)
    assert k.shape == (13, 13) and k.dtype == np.float64
    assert k.sum() == pytest.approx(1.0, abs=1e-12) and (k >= 0).all()
    axis, var_along = _principal_axis(k)
    assert _angle_gap(axis, angle) < 2.0
    # A uniform segment of length L has variance L^2 / 12 along it, plus the smoothing Gaussian's.
    measured = float(np.sqrt(12 * (var_along - MOTION_SIGMA**2)))
    assert measured == pytest.approx(length, abs=0.25)
    across = float(np.linalg.eigvalsh(second_moment(torch.from_numpy(k)).numpy())[0])
    assert 0.15 < across < 0.3  # about sigma^2 = 0.25 wide, not one pixel, not smeared
    assert (k > 1e-3).sum() > 2 * length  # anti-aliased and smoothed: more than a one-pixel line


def test_motion_kernel_must_fit():
    assert motion_fits(13, 10.0) and not motion_fits(13, 10.5)
    with pytest.raises(ValueError, match="does not fit a 13 x 13 kernel"):
        motion_kernel(13, 11.0, 0.0)
    with pytest.raises(ValueError, match="odd"):
        motion_kernel(12, 3.0, 0.0)


def test_random_kernel_draws_in_range_and_is_seeded():
    rng = np.random.default_rng(0)
    draws = [random_kernel(rng, 13, ("anisotropic", "motion"), (1.0, 3.5), (3.0, 9.0)) for _ in range(200)]
    families = [info["family"] for _, info in draws]
    assert 60 < families.count("motion") < 140  # uniform over the two
    for k, info in draws:
        assert k.shape == (13, 13) and k.sum() == pytest.approx(1.0) and (k >= 0).all()
        if info["family"] == "anisotropic":
            assert 1.0 <= info["sigma_x"] <= 3.5 and 1.0 <= info["sigma_y"] <= 3.5
            assert 0.0 <= info["theta_deg"] < 180.0
            np.testing.assert_array_equal(k, anisotropic_gaussian(13, info["sigma_x"], info["sigma_y"], info["theta_deg"]))
        else:
            assert 3.0 <= info["length"] <= 9.0 and 0.0 <= info["angle_deg"] < 180.0
            np.testing.assert_array_equal(k, motion_kernel(13, info["length"], info["angle_deg"]))
    sigmas = np.array([[i["sigma_x"], i["sigma_y"]] for _, i in draws if i["family"] == "anisotropic"])
    assert sigmas.min() < 1.3 and sigmas.max() > 3.2  # the whole range is used
    rng = np.random.default_rng(0)
    again = [random_kernel(rng, 13, ("anisotropic", "motion"), (1.0, 3.5), (3.0, 9.0)) for _ in range(200)]
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(draws, again))
    other = random_kernel(np.random.default_rng(1), 13, ("anisotropic", "motion"), (1.0, 3.5), (3.0, 9.0))
    assert not np.array_equal(other[0], draws[0][0])
    with pytest.raises(ValueError, match="families"):
        random_kernel(np.random.default_rng(0), 13, ("box",), (1.0, 3.5), (3.0, 9.0))



@pytest.mark.parametrize("sx,sy,theta", [(2.5, 1.2, 30.0), (1.0, 1.0, 0.0), (0.8, 3.0, 135.0), (3.0, 1.5, -60.0)])
def test_smooth_gaussian_parameters_give_the_anisotropic_gaussian(sx, sy, theta):
    import math

    from fca.kernels import anisotropic_gaussian, gaussian_from_params, gaussian_params

    p = gaussian_params(torch.tensor([sx]).double(), torch.tensor([sy]).double(), torch.tensor([math.radians(theta)]).double())
    k = gaussian_from_params(p, 13)[0]
    assert torch.allclose(k, torch.from_numpy(anisotropic_gaussian(13, sx, sy, theta)), atol=1e-9)
    # The same kernel with the axes swapped and the direction turned by 90 degrees: the same parameters.
    q = gaussian_params(torch.tensor([sy]).double(), torch.tensor([sx]).double(), torch.tensor([math.radians(theta + 90)]).double())
    assert torch.allclose(p, q, atol=1e-6)


def test_principal_axis_reads_direction_and_elongation():
    from fca.kernels import angle_difference, anisotropic_gaussian, principal_axis

    for theta in (0.0, 20.0, 90.0, 150.0):
        ratio, angle = principal_axis(torch.from_numpy(anisotropic_gaussian(21, 3.0, 1.0, theta)))
        assert float(ratio) == pytest.approx(3.0, rel=0.02)
        assert float(angle_difference(angle, torch.tensor(theta).double())) < 0.5
    assert float(angle_difference(torch.tensor(179.0), torch.tensor(1.0))) == pytest.approx(2.0)
    assert float(angle_difference(torch.tensor(10.0), torch.tensor(100.0))) == pytest.approx(90.0)


def pixel_integrated_gaussian(size: int, sx: float, sy: float, theta_deg: float, points: int = 4) -> np.ndarray:
    """A Gaussian (sx along theta, sy across) averaged over points x points spots spread evenly over each pixel, sum 1."""
    import math

    r = size // 2
    fine = (np.arange(-r, r + 1)[:, None] + (np.arange(points) + 0.5) / points - 0.5).ravel()
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    t = math.radians(theta_deg)
    u, v = math.cos(t) * xx + math.sin(t) * yy, -math.sin(t) * xx + math.cos(t) * yy
    k = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)).reshape(size, points, size, points).sum((1, 3))
    return k / k.sum()


@pytest.mark.parametrize("sx,sy,theta", [(2.5, 1.2, 30.0), (1.0, 1.0, 0.0), (0.6, 2.0, 120.0)])
def test_the_gaussian_profile_gives_the_gaussian_integrated_over_each_pixel(sx, sy, theta):
    import math

    from fca.kernels import gaussian_params, gaussian_profile, profile_kernels

    p = gaussian_params(torch.tensor([sx]).double(), torch.tensor([sy]).double(), torch.tensor([math.radians(theta)]).double())
    k = profile_kernels(p, gaussian_profile().double(), 13)[0]
    torch.testing.assert_close(k, torch.from_numpy(pixel_integrated_gaussian(13, sx, sy, theta)), atol=1e-9, rtol=1e-6)
    # ...which is not the Gaussian sampled at the pixel centres: the check above tells them apart
    assert float((k - torch.from_numpy(anisotropic_gaussian(13, sx, sy, theta))).abs().max()) > 1e-4


def test_a_flat_profile_is_a_disk_with_a_soft_edge():
    import math

    from fca.kernels import flat_profile, gaussian_params, profile_kernels

    one = torch.tensor([2.0]).double()
    k = profile_kernels(gaussian_params(one, one, torch.zeros(1).double()), flat_profile(radius=2.0).double(), 21)[0]
    r = torch.arange(-10, 11).double()
    dist = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)  # px; the disk's edge is at 2 x sigma 2 = 4 px
    inside, outside = k[dist <= 3], k[dist >= 5.5]
    assert float(inside.min() / inside.max()) > 0.5  # a flat top: a Gaussian of this width falls to 0.32 at 3 px
    assert float(outside.max()) < 0.05 * float(inside.min())
    assert float(k[10, 10] / k[10, 10 + 3]) < math.exp(0.5)


def test_profile_kernels_never_rise_away_from_the_centre_and_learn_from_every_segment():
    from fca.kernels import PROFILE_SEGMENTS, PROFILE_SUPERSAMPLE, elliptic_radius2, gaussian_params, profile_kernels, profile_log

    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(4, PROFILE_SEGMENTS, generator=g, dtype=torch.float64)).requires_grad_(True)
    params = gaussian_params(torch.tensor([3.0, 1.0, 2.0, 0.7]).double(), torch.tensor([1.0, 1.0, 0.5, 0.7]).double(),
                             torch.tensor([0.3, 0.0, 2.0, 0.0]).double())
    k = profile_kernels(params, logits, 21)
    rho2 = elliptic_radius2(params, 21, PROFILE_SUPERSAMPLE)
    logf = profile_log(rho2, logits)
    for i in range(4):  # at every point the kernel integrates, sorted by elliptic radius, the profile never rises
        order = torch.argsort(rho2[i].flatten())
        values = logf[i].flatten()[order]
        assert bool((values[1:] <= values[:-1] + 1e-12).all())
        assert int(k[i].argmax()) == 21 * 10 + 10  # one blob, at the centre
    # every segment the grid reaches moves the kernel (here: all of them for the widest kernel)
    k[0].pow(2).sum().backward()
    assert bool((logits.grad[0] != 0).all())
