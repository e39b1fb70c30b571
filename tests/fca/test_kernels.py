import numpy as np
import pytest
import torch

from fca.kernels import (
    anisotropic_gaussian,
    check_kernel,
    conv_per_sample,
    cov_rel_error,
    delta,
    effective_sigma,
    gaussian,
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
