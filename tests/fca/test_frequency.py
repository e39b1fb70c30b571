import math

import pytest
import torch

from fca.frequency import (
    bin_centres,
    high_frequency_share,
    jensen_shannon,
    log_l1,
    mean_density,
    radial_density,
    radial_power,
    symmetric_kl,
    white_noise_variance,
    white_ring_power,
)
from fca.kernels import conv_per_sample, gaussian
from fca.resample import downscale


def sinusoid(freq: float, angle_deg: float, size: int = 64) -> torch.Tensor:
    """[1, 1, size, size] cosine with radial frequency `freq` cycles/pixel."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    a = math.radians(angle_deg)
    wave = torch.cos(2 * math.pi * freq * (math.cos(a) * xx + math.sin(a) * yy))
    return (0.5 + 0.4 * wave)[None, None]


@pytest.mark.parametrize("freq,angle", [(0.1, 0), (0.2, 90), (0.3, 45), (0.05, 30), (0.4, 0)])
def test_pure_sinusoid_lands_in_its_bin(freq, angle):
    bins = 16
    d = radial_density(sinusoid(freq, angle, 128), bins)[0]
    expected = math.ceil(freq / 0.5 * bins) - 1
    assert int(d.argmax()) == expected
    # The Hann window spreads power only into the neighbouring rings.
    assert d[max(0, expected - 1) : expected + 2].sum() > 0.9


def test_density_is_normalised_and_shape():
    x = torch.rand(3, 3, 40, 56)
    d = radial_density(x, 20)
    assert d.shape == (3, 20)
    torch.testing.assert_close(d.sum(1), torch.ones(3))
    assert (d >= 0).all()


def test_density_ignores_brightness_and_contrast_offset():
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(radial_density(x * 0.5 + 0.2, 8), radial_density(x, 8), atol=1e-6, rtol=1e-5)


def _photo_like(n=4, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Brownian-ish images: integrated noise gives a natural 1/f^2 power spectrum.
    noise = torch.randn(n, 1, size, size, generator=g)
    f = torch.fft.fft2(noise)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.fftfreq(size).view(1, -1)
    r = torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / size)
    img = torch.fft.ifft2(f / r).real
    img = (img - img.amin((2, 3), keepdim=True)) / (img.amax((2, 3), keepdim=True) - img.amin((2, 3), keepdim=True))
    return img.repeat(1, 3, 1, 1)


def test_blur_lowers_and_downscaling_raises_the_high_frequency_share():
    x = _photo_like()
    base = high_frequency_share(mean_density(x, 16))
    blurred = high_frequency_share(mean_density(conv_per_sample(x, torch.from_numpy(gaussian(13, 2.0)).float()), 16))
    down = high_frequency_share(mean_density(downscale(x, 4), 16))
    assert blurred < 0.5 * base
    assert down > 1.5 * base


def test_distances_are_zero_on_equal_and_positive_otherwise():
    p = torch.softmax(torch.randn(16), 0)
    q = torch.softmax(torch.randn(16), 0)
    for dist in (log_l1, symmetric_kl, jensen_shannon):
        assert float(dist(p, p)) == pytest.approx(0.0, abs=1e-9)
        assert float(dist(p, q)) > 0
        assert float(dist(p, q)) == pytest.approx(float(dist(q, p)))


def test_density_is_differentiable():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    radial_density(x, 8)[:, -1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bin_centres_cover_zero_to_nyquist():
    c = bin_centres(10)
    assert c[0] == pytest.approx(0.025) and c[-1] == pytest.approx(0.475)


def test_too_many_bins_for_a_tiny_patch_is_an_error():
    with pytest.raises(ValueError, match="too many"):
        radial_density(torch.rand(1, 1, 4, 4), 64)


# --- polar density: radius x orientation ---------------------------------------------------------

def _oriented_blur(img: torch.Tensor, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    from fca.kernels import anisotropic_gaussian, conv_per_sample

    return conv_per_sample(img, torch.from_numpy(anisotropic_gaussian(13, sigma_x, sigma_y, theta)).float())


def _noise_image(size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_polar_density_sums_to_one_and_refines_the_radial_density():
    from fca.frequency import polar_density

    x = _noise_image()
    d = polar_density(x, 16, 8)
    assert d.shape == (1, 16, 8) and torch.allclose(d.sum((1, 2)), torch.ones(1), atol=1e-5)
    # With one sector it is the radial density (up to how the f_x = 0 column is counted: here by
    # its share of the ring's coefficients, there once per coefficient).
    one = polar_density(x, 16, 1)[..., 0]
    assert torch.allclose(one, radial_density(x, 16), atol=0.01)


def test_polar_density_sees_the_direction_of_a_blur():
    from fca.frequency import polar_density

    x = _noise_image(seed=1)
    along_x = polar_density(_oriented_blur(x, 3.0, 0.6, 0.0), 8, 4)[0]
    along_y = polar_density(_oriented_blur(x, 3.0, 0.6, 90.0), 8, 4)[0]
    # Blur along x removes horizontal frequencies (sector 0: f along x) and keeps vertical ones (sector 2).
    high = slice(4, 8)
    assert along_x[high, 0].sum() < 0.2 * along_x[high, 2].sum()
    assert along_y[high, 2].sum() < 0.2 * along_y[high, 0].sum()
    assert (along_x - along_y).abs().sum() > 0.3


def test_tile_polar_density_averages_tiles():
    from fca.frequency import polar_density, tile_polar_density, tiles_of

    x = _noise_image(64, seed=2)
    t = tiles_of(x, 32)
    assert t.shape == (1, 4, 3, 32, 32)
    assert tiles_of(x, 32, 16).shape == (1, 9, 3, 32, 32)
    expected = polar_density(t[0], 8, 4).mean(0)
    assert torch.allclose(tile_polar_density(x, 32, 8, 4)[0], expected, atol=1e-6)


@pytest.mark.parametrize("h, w", [(32, 32), (24, 31)])
def test_white_ring_power_is_the_expected_ring_power_of_unit_white_noise(h, w):
    noise = torch.randn(4000, 1, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    measured = radial_power(noise, 6).mean(0)
    expected = white_ring_power(h, w, 6)
    torch.testing.assert_close(measured[1:], expected[1:], rtol=0.03, atol=0)
    torch.testing.assert_close(measured[0], expected[0], rtol=0.08, atol=0)  # the patch mean taken out lowers the first ring a little


def test_white_noise_variance_is_each_images_luma_noise_variance_and_ignores_a_flat_crops_gradient():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 3, 32, 32, generator=g) * torch.tensor([0.01, 0.03]).repeat(32).view(64, 1, 1, 1)
    luma = (0.299**2 + 0.587**2 + 0.114**2) * torch.tensor([0.01, 0.03]).repeat(32).double() ** 2
    torch.testing.assert_close(white_noise_variance(noise, 8).mean(), luma.mean(), rtol=0.05, atol=0)
    assert float((white_noise_variance(noise, 8) / luma)[1::2].mean()) == pytest.approx(1.0, abs=0.05)
    ramp = torch.linspace(-0.05, 0.05, 32).view(1, 1, 1, 32)  # a flat crop's leftover gradient
    torch.testing.assert_close(white_noise_variance(noise + ramp, 8).mean(), luma.mean(), rtol=0.1, atol=0)


def test_ring_to_cell_turns_a_rings_power_into_each_of_its_cells_power_for_white_noise():
    from fca.frequency import polar_power, radial_power, ring_to_cell

    x = torch.randn(512, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cells = polar_power(x, 8, 4).mean(0)  # [8, 4]
    rings = radial_power(x, 8).mean(0) * ring_to_cell(32, 32, 8, 4).double()
    torch.testing.assert_close(cells, rings[:, None].expand(8, 4), rtol=0.08, atol=0)
    assert not torch.allclose(cells, radial_power(x, 8).mean(0)[:, None].expand(8, 4), rtol=0.3)  # unscaled: ~2x off
