import math

import numpy as np
import pytest
import skimage.data
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fca.metrics import mean_psnr_y, pooled_psnr, pooled_psnr_y, psnr, psnr_y, rgb_to_y, ssim_y


def _photo_pair():
    """A photo crop and a noisy, shifted copy: [2, 3, 64, 80] each, in [0, 1]."""
    img = torch.from_numpy(skimage.data.astronaut()[100:200, 150:250].astype(np.float64) / 255).permute(2, 0, 1)
    a = torch.stack([img[:, :64, :80], img[:, 20:84, 10:90]])
    gen = torch.Generator().manual_seed(0)
    b = (a + 0.05 * torch.randn(a.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return a, b


def test_rgb_to_y_matches_matlab_rgb2ycbcr_range():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]).view(3, 3, 1, 1)
    y = rgb_to_y(x).flatten()
    assert y[0] == pytest.approx(16 / 255)
    assert y[1] == pytest.approx(235 / 255)
    assert y[2] == pytest.approx((16 + 65.481) / 255)


def test_ssim_y_matches_skimage_gaussian_ssim():
    a, b = _photo_pair()
    ours = ssim_y(a, b, border=4)
    for i in range(a.shape[0]):
        ya = rgb_to_y(a[i : i + 1])[0, 4:-4, 4:-4].numpy()
        yb = rgb_to_y(b[i : i + 1])[0, 4:-4, 4:-4].numpy()
        ref = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-9)  # float64 both: equal to ~1e-15
    assert ours.shape == (2,)
    assert float(ours[0]) < 0.95  # the noise is visible to SSIM


def test_ssim_of_identical_images_is_one_and_drops_with_blur():
    a, _ = _photo_pair()
    assert torch.allclose(ssim_y(a, a), torch.ones(2, dtype=torch.float64))
    blurred = torch.nn.functional.avg_pool2d(a, 5, stride=1, padding=2, count_include_pad=False)
    assert (ssim_y(a, blurred) < 0.99).all()


def test_psnr_y_matches_skimage_on_y_and_crops_border():
    a, b = _photo_pair()
    ours = psnr_y(a, b, border=4)
    for i in range(2):
        ya = rgb_to_y(a[i : i + 1])[0, 4:-4, 4:-4].numpy()
        yb = rgb_to_y(b[i : i + 1])[0, 4:-4, 4:-4].numpy()
        assert float(ours[i]) == pytest.approx(peak_signal_noise_ratio(ya, yb, data_range=1.0), abs=1e-9)
    # A large error confined to the border is ignored with border cropping, not without.
    c = a.clone()
    c[..., :2, :] = 1 - c[..., :2, :]
    assert math.isinf(mean_psnr_y(a, c, border=2))
    assert mean_psnr_y(a, c, border=0) < 30


def test_psnr_matches_skimage_over_all_channels():
    a, b = _photo_pair()
    for i in range(2):
        ref = peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=1.0)
        assert float(psnr(a, b)[i]) == pytest.approx(ref, abs=1e-9)  # float64 both: equal to ~1e-15


def test_psnr_known_value():
    a = torch.zeros(1, 3, 8, 8)
    b = torch.full((1, 3, 8, 8), 0.1)
    assert float(psnr(a, b)) == pytest.approx(20.0)
    # On Y the offset is scaled by (65.481 + 128.553 + 24.966) / 255 = 219 / 255.
    assert float(psnr_y(a, b)) == pytest.approx(-20 * math.log10(0.1 * 219 / 255))


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_y(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="RGB"):
        ssim_y(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="border"):
        psnr_y(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), border=4)


def test_pooled_psnr_takes_the_mse_over_all_images():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.cat([torch.full((1, 3, 8, 8), 0.1), torch.full((1, 3, 8, 8), 0.01)])
    # Per-image PSNRs are 20 and 40 dB (mean 30); pooled MSE is (0.01 + 0.0001) / 2.
    assert float(psnr(a, b).mean()) == pytest.approx(30.0)
    assert pooled_psnr(a, b) == pytest.approx(-10 * math.log10((0.01 + 0.0001) / 2))
    c = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert pooled_psnr_y(c, c.flip(-1), 2) == pytest.approx(float(psnr_y(c, c.flip(-1), 2)))
