import pytest
import torch
import torch.nn as nn

from fca import losses
from fca.frequency import radial_density, to_luma
from fca.kernels import conv_per_sample, gaussian
from fca.frequency import white_ring_power
from fca.noise import NoiseLevel, NoiseSpectrum, noise_spectrum
from fca.losses import (
    density_loss,
    fdc_generator_loss,
    floored_log_l1,
    lsgan_d_loss,
    lsgan_g_loss,
    noise_share,
    signal_weights,
    spectral_loss,
    tile_noise_power,
    target_density,
)


def _images(n=4, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _blur(x, sigma):
    return conv_per_sample(x, torch.from_numpy(gaussian(9, sigma)).float())


def test_floored_log_l1_ignores_differences_below_the_floor():
    p = torch.tensor([0.5, 0.5 - 1e-9, 1e-9])
    q = torch.tensor([0.5, 0.5 - 1e-7, 1e-7])
    assert floored_log_l1(p, q, 1e-4) < 1e-3 * floored_log_l1(p, q, 1e-12)
    assert floored_log_l1(p, p) == 0


def test_weighted_floored_log_l1_counts_each_bin_by_its_weight():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.5, 0.2, 0.3])
    assert float(floored_log_l1(p, q, 1e-4, torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(abs(float(torch.log(torch.tensor(0.3001 / 0.2001)))) / 2)
    assert float(floored_log_l1(p, q, 1e-4, torch.tensor([1.0, 0.0, 0.0]))) == 0
    torch.testing.assert_close(floored_log_l1(p, q, 1e-4, torch.full((3,), 0.3)), floored_log_l1(p, q, 1e-4))


def test_spectral_loss_zero_for_same_patches_and_orders_blur():
    real = _blur(_images(8, 64), 2.0)
    same = real[..., :32, :32]
    assert float(spectral_loss(same, real[..., :32, :32], 8)) < 1e-6
    sharp, blurred = _images(8, 32, seed=1), _blur(_images(8, 32, seed=1), 2.0)
    assert spectral_loss(blurred, real, 8) < spectral_loss(sharp, real, 8)


def test_spectral_loss_tiles_real_patches_at_the_lr_size():
    real, fake = _images(4, 64), _images(4, 32, seed=1)
    tiles = torch.cat([real[..., :32, :32], real[..., :32, 32:], real[..., 32:, :32], real[..., 32:, 32:]])
    target = radial_density(tiles, 8).mean(0)
    torch.testing.assert_close(spectral_loss(fake, real, 8), density_loss(fake, target, 8))


def test_target_density_leaves_flat_tiles_out():
    textured = _images(2, 32)
    flat = 0.5 + 0.002 * _images(2, 32, seed=3)  # luma std far below 0.02: 8-bit-noise-like
    both = torch.cat([textured, flat])
    torch.testing.assert_close(target_density(both, 32, 8), target_density(textured, 32, 8))
    assert not torch.allclose(target_density(both, 32, 8, min_std=0.0), target_density(textured, 32, 8))
    with pytest.raises(ValueError, match="luma std"):
        target_density(flat, 32, 8)


def _white(std: float, side: int = 32, bins: int = 8) -> NoiseSpectrum:
    """The spectrum of white RGB noise of this std, independent channels."""
    cross = torch.eye(3, dtype=torch.float64)[..., None] * white_ring_power(side, side, bins)
    return NoiseSpectrum(NoiseLevel.constant(std**2), cross, torch.eye(3, dtype=torch.float64))


def test_the_signal_density_of_a_noisy_domain_is_the_noise_free_one():
    # a blurred domain, then white noise: the noise fills the top rings, so the total density
    # looks much sharper than the blur; the bank's white power subtracted gives the blur back
    clean = _blur(_images(32, 64), 2.5)
    g = torch.Generator().manual_seed(5)
    noisy = clean + 0.03 * torch.randn(clean.shape, generator=g)
    level = _white(0.03)
    truth = target_density(clean, 32, 8)
    total = target_density(noisy, 32, 8)
    signal = target_density(noisy, 32, 8, noise=level)
    assert (signal - truth).abs().sum() < 0.1 * (total - truth).abs().sum()
    assert float(signal[-1]) < 0.1 * float(total[-1])
    # a flat tile whose luma std comes from the noise alone is flat for the signal target too
    flat = 0.5 + 0.035 * torch.randn(8, 3, 64, 64, generator=g)  # a little above the level: still flat for the signal
    assert to_luma(flat).std() > 0.02  # would pass the plain min_std test
    torch.testing.assert_close(target_density(torch.cat([noisy, flat]), 32, 8, noise=level), signal)


def test_the_noise_share_is_the_noises_part_of_each_tiles_power():
    # Tiles of the noise alone: the noise is all of every ring's power (in the density's own
    # units, windowed, without DC), so the shares add up to 1.
    g = torch.Generator().manual_seed(6)
    level = _white(0.03)
    pure = 0.5 + 0.03 * torch.randn(16, 3, 64, 64, generator=g)  # mid-grey: no pixel clipped
    assert float(noise_share(pure, 32, 8, 0.0, level).sum()) == pytest.approx(1.0, abs=0.1)
    # The same noise on a blurred domain: a small part of the tiles' power, about the same in every
    # ring (white), while the blurred signal's density falls by orders of magnitude towards the top.
    clean = _blur(_images(16, 64), 2.5)
    noisy = clean + 0.03 * torch.randn(clean.shape, generator=g)
    share = noise_share(noisy, 32, 8, 0.02, level)
    assert float(share.sum()) < 0.5 and float(share.max()) < 1.5 * float(share.min())
    assert float(share[-1]) > 3 * float(target_density(clean, 32, 8)[-1])  # the top ring is the noise's
    # twice the noise variance: twice the share where the signal dominates the power
    quiet = noise_share(noisy, 32, 8, 0.02, _white(0.03 / 2**0.5))
    assert float(share[0] / quiet[0]) == pytest.approx(2.0, rel=0.05)


def test_spectral_loss_is_differentiable_and_fp32_under_autocast():
    real = _blur(_images(4, 64), 2.0)
    fake = _images(4, 32, seed=1).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = spectral_loss(fake, real, 8)
    assert loss.dtype == torch.float32
    loss.backward()
    assert fake.grad.abs().sum() > 0


def test_lsgan_losses():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert lsgan_d_loss(ones, zeros) == 0
    assert lsgan_d_loss(zeros, ones) == 1.0
    assert lsgan_g_loss(ones) == 0
    assert lsgan_g_loss(zeros) == 1.0


class MeanComparator(nn.Module):
    """Stand-in FDC: E(x) = mean of x, C(a, b) = E(a) - E(b) -> [B]; one weight so freezing is testable."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, a, b):
        return self.w * (a.mean((1, 2, 3)) - b.mean((1, 2, 3)))


def test_fdc_generator_loss_targets():
    fdc = MeanComparator()
    z = torch.zeros(2, 3, 8, 8)
    # E(fake) = E(x) = 0, E(x_U) = -1 -> C(fake, x_U) = +1, E(x_D) = +1 -> C(fake, x_D) = -1: all targets met
    assert fdc_generator_loss(fdc, z, z, z - 1, z + 1) == 0
    # fake too dense by 0.5: each of the three scores is off by 0.5
    torch.testing.assert_close(fdc_generator_loss(fdc, z + 0.5, z, z - 1, z + 1), torch.tensor(0.25))
    # the sign convention matters: swapping x_U and x_D is wrong
    assert fdc_generator_loss(fdc, z, z, z + 1, z - 1) > 2


def test_fdc_generator_loss_gradient_reaches_fake_only_when_frozen():
    fdc = MeanComparator().requires_grad_(False)
    fake = torch.rand(2, 3, 8, 8, requires_grad=True)
    fdc_generator_loss(fdc, fake, *torch.rand(3, 2, 3, 8, 8)).backward()
    assert fake.grad.abs().sum() > 0 and fdc.w.grad is None


def test_fdc_generator_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        fdc_generator_loss(MeanComparator(), torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 9, 9), torch.zeros(1, 3, 8, 8))


def test_the_signal_target_takes_out_correlated_noise_by_the_banks_measured_spectrum():
    # Noise correlated between neighbours (a demosaiced camera's is) has its power in the lower
    # and middle rings, not flat over them. Taken out as white noise of the same variance it
    # leaves too much in the middle and takes too much from the top; taken out by the spectrum
    # measured on a bank of the same noise it gives the noise-free density back.
    clean = _blur(_images(32, 64), 2.5)
    g = torch.Generator().manual_seed(7)

    def coloured(shape):
        n = _blur(torch.randn(shape, generator=g), 0.8)
        return 0.03 * n / n.std()

    noisy = clean + coloured(clean.shape)
    bank = coloured((128, 3, 32, 32))
    truth = target_density(clean, 32, 8)
    measured = target_density(noisy, 32, 8, noise=noise_spectrum(bank, None, 8))
    white = target_density(noisy, 32, 8, noise=_white(0.03))
    assert (measured - truth).abs().sum() < 0.3 * (white - truth).abs().sum()
    assert (measured - truth).abs().sum() < 0.1 * (target_density(noisy, 32, 8) - truth).abs().sum()


def test_a_tile_holds_no_more_noise_than_power(monkeypatch):
    # Half the tiles are darker than any flat crop and hold half the noise the model extrapolates to them
    # (a camera's raw noise clipped at black): taken out at the model's level they lose their upper
    # rings' signal and the target turns blurrier; capped at each tile's own upper-ring power it is the
    # noise-free domain's.
    g = torch.Generator().manual_seed(4)
    clean = _blur(_images(32, 64), 1.5)
    stds = torch.tensor([0.03] * 16 + [0.015] * 16).view(-1, 1, 1, 1)
    noisy = clean + stds * torch.randn(clean.shape, generator=g)
    model = _white(0.03)
    truth = target_density(clean, 32, 8)
    signal = target_density(noisy, 32, 8, noise=model)
    with monkeypatch.context() as m:  # the same target with each tile at the model's noise, uncapped
        m.setattr(losses, "tile_noise_power", lambda noise, tiles, bins: noise.ring_power(tiles))
        plain = target_density(noisy, 32, 8, noise=model)
    assert (signal - truth).abs().sum() < 0.5 * (plain - truth).abs().sum()
    assert float(plain[4:].sum()) < 0.1 * float(truth[4:].sum())  # the uncapped target lost its upper rings
    # where the model is right the cap seldom acts: the tiles' noise is about the model's
    right = clean + 0.03 * torch.randn(clean.shape, generator=g)
    right_tiles = right.unfold(2, 32, 32).unfold(3, 32, 32).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 32, 32)
    ratio = tile_noise_power(model, right_tiles, 8).sum(1) / model.ring_power(right_tiles).sum(1)
    assert float(ratio.mean()) > 0.95  # 0.969: a tile's upper rings fluctuate, and the cap takes the low ones


def _aniso(x, theta_deg):
    from fca.kernels import anisotropic_gaussian

    return conv_per_sample(x, torch.from_numpy(anisotropic_gaussian(13, 2.5, 0.8, theta_deg)).float())


def test_orientation_sectors_tell_a_blur_from_its_rotated_copy_where_rings_cannot():
    """A blur along 30 deg and the same blur along 120 deg: the ring density cannot tell the
    two domains apart, the density over rings and 4 orientation sectors can."""
    real = _aniso(_images(16, 64, seed=2), 30.0)
    right, rotated = _aniso(_images(16, 32, seed=3), 30.0), _aniso(_images(16, 32, seed=3), 120.0)
    radial = target_density(real, 32, 8)
    ratio = float(density_loss(rotated, radial, 8) / density_loss(right, radial, 8))
    assert 0.7 < ratio < 1.4, ratio  # measured 0.87: the rotated domain looks as close as the right one
    polar = target_density(real, 32, 8, angles=4)
    assert polar.shape == (32,) and float(polar.sum()) == pytest.approx(1.0, abs=1e-5)
    ratio = float(density_loss(rotated, polar, 8, angles=4) / density_loss(right, polar, 8, angles=4))
    assert ratio > 5, ratio  # measured 17
    with pytest.raises(ValueError, match=r"expected \(32,\)"):
        density_loss(right, radial, 8, angles=4)


def test_the_sectored_signal_target_takes_each_rings_noise_out_of_every_sector():
    """Isotropic noise of a falling spectrum (white noise blurred, as demosaicing does) on a blurred
    domain: with its spectrum taken out, the sectored target is near the noise-free domain's (each
    ring's own noise power leaves each of its sectors)."""
    clean = _aniso(_images(64, 32, seed=4), 30.0)
    noise = _blur(0.1 * torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(5)), 0.7)
    bank = _blur(0.1 * torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(6)), 0.7)
    spectrum = noise_spectrum(bank, None, 8)
    want = target_density(clean, 32, 8, min_std=0.0, angles=4)
    got = target_density(clean + noise, 32, 8, min_std=0.0, noise=spectrum, angles=4)
    kept_noise = target_density(clean + noise, 32, 8, min_std=0.0, angles=4)
    # measured 0.36 of the noise's error left (the radial target: 0.23; 0.87 with the ring power
    # put in the cells unscaled): where the blur leaves a sector almost no signal, the
    # subtraction's fluctuation empties it, which the loss's floor is for
    assert (got - want).abs().sum() < 0.5 * (kept_noise - want).abs().sum()


def test_signal_weights_keep_the_fitted_blur_where_the_noise_model_is_off():
    # A blurred domain with white noise that holds the top rings: the signal target there is R's power
    # less the noise model's, so a model at 0.7 of the noise's variance leaves noise in them that the
    # equal-weight fit reads as detail and answers with a sharper blur; weighted by the signal's share
    # the fit reads the rings the signal holds. (A model above the noise is capped, `tile_noise_power`.)
    g = torch.Generator().manual_seed(7)
    real = conv_per_sample(_images(48, 64, seed=1), torch.from_numpy(gaussian(13, 1.5)).float())
    real = real + 0.02 * torch.randn(real.shape, generator=g)
    too_low = _white(0.02 * 0.7**0.5)
    weights = signal_weights(real, 32, 8, 0.02, too_low)
    assert weights.shape == (8,) and float(weights[0]) > 0.95 and float(weights[-3:].max()) < 0.15
    target = target_density(real, 32, 8, noise=too_low)
    candidates = _images(32, 32, seed=2)
    sigmas = torch.linspace(1.0, 2.5, 31)

    def best(w):
        losses = torch.tensor([float(density_loss(conv_per_sample(candidates, torch.from_numpy(gaussian(13, float(s))).float()),
                                                  target, 8, 1e-4, weights=w)) for s in sigmas])
        return float(sigmas[int(losses.argmin())])

    assert best(None) <= 1.3  # the equal-weight fit: 1.2
    assert best(weights) == pytest.approx(1.5, abs=0.1)  # 1.5
    # noise far below the signal: every cell keeps its full weight, in every sector
    quiet = signal_weights(real, 32, 8, 0.02, _white(1e-4), angles=4)
    assert quiet.shape == (32,) and float(quiet.min()) > 0.99
