import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from fca.kernels import anisotropic_gaussian, delta, gaussian
from fca.models.generator_arch import Generator, KernelEstimator, gaussian_kernels
from fca.resample import downscale
from tests.fca.test_kernels import pixel_integrated_gaussian



def _generator(**kw) -> Generator:
    torch.manual_seed(0)
    args = dict(scale=4.0, kernel_size=7, channels=8, dense_blocks=1, res_blocks=1)
    args.update(kw)
    return Generator(**args)


def _random_kernels(b: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    kern = torch.rand(b, k, k, generator=g, dtype=torch.float64)
    return kern / kern.sum((-2, -1), keepdim=True)


def test_degrade_matches_scipy_per_image_and_channel():
    x = torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kernels = _random_kernels(3, 7)  # asymmetric: catches a missing flip
    gen = _generator(kernel_size=7)
    out = gen.degrade(x, kernels).double()
    bicubic = downscale(x.float(), 4.0).double().numpy()
    assert out.shape == (3, 3, 16, 12)
    for i in range(3):
        for c in range(3):
            # scipy 'mirror' (d c b | a b c d | c b a) is torch's 'reflect' padding.
            ref = ndimage.convolve(bicubic[i, c], kernels[i].numpy(), mode="mirror")
            np.testing.assert_allclose(out[i, c].numpy(), ref, atol=1e-5)
    # ...and scipy's 'reflect' (edge repeated) is not: the check above can tell them apart.
    other = ndimage.convolve(bicubic[0, 0], kernels[0].numpy(), mode="reflect")
    assert np.abs(out[0, 0].numpy() - other).max() > 1e-3


def test_delta_kernel_returns_the_bicubic_image():
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    gen = _generator(kernel_size=5)
    k = torch.from_numpy(delta(5)).float().expand(2, 5, 5)
    assert torch.equal(gen.degrade(x, k), downscale(x, 4.0))


def test_sum_to_one_kernel_keeps_channel_means():
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    gen = _generator(kernel_size=7)
    k = torch.from_numpy(gaussian(7, 1.5)).float().expand(2, 7, 7)
    out, bic = gen.degrade(x, k), downscale(x, 4.0)
    # reflect padding keeps the mean only approximately (border pixels are re-used)
    torch.testing.assert_close(out.mean((-2, -1)), bic.mean((-2, -1)), atol=5e-3, rtol=0)


@pytest.mark.parametrize("kernel_param", ["free", "gaussian", "profile"])
def test_forward_shapes_and_kernels_are_distributions(kernel_param):
    gen = _generator(kernel_size=7, kernel_param=kernel_param)
    with torch.no_grad():  # move the head off its zero init so kernels differ per image
        for p in gen.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(3, 3, 64, 64)
    lr, kernels = gen(x)
    assert lr.shape == (3, 3, 16, 16)
    assert kernels.shape == (3, 7, 7) and kernels.dtype == torch.float32
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum((-2, -1)), torch.ones(3))
    assert not torch.allclose(kernels[0], kernels[1])  # image-dependent


@pytest.mark.parametrize("kernel_param", ["free", "gaussian", "profile"])
def test_initial_kernel_is_the_init_gaussian_for_every_image(kernel_param):
    gen = _generator(kernel_size=9, kernel_param=kernel_param, init_sigma=1.2)
    kernels = gen.estimate_kernel(torch.rand(2, 3, 64, 64))
    # profile: the same Gaussian integrated over each pixel (fca.kernels.PROFILE_SUPERSAMPLE)
    ref = torch.from_numpy(pixel_integrated_gaussian(9, 1.2, 1.2, 0.0) if kernel_param == "profile" else gaussian(9, 1.2)).float()
    torch.testing.assert_close(kernels, ref.expand(2, 9, 9), atol=1e-6, rtol=0)


def test_gaussian_kernels_match_the_numpy_reference():
    sx, sy, theta_deg = 2.5, 1.0, 30.0
    k = gaussian_kernels(
        torch.tensor([math.log(sx)]), torch.tensor([math.log(sy)]), torch.tensor([math.radians(theta_deg)]), 13
    )
    ref = torch.from_numpy(anisotropic_gaussian(13, sx, sy, theta_deg)).float()
    torch.testing.assert_close(k[0], ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel_param", ["free", "gaussian", "profile"])
def test_gradients_reach_prior_and_head(kernel_param):
    gen = _generator(kernel_size=7, kernel_param=kernel_param)
    x = torch.rand(2, 3, 64, 64)
    lr, kernels = gen(x)
    # a loss that depends on the kernel shape (the sum is constant, so use its square)
    (kernels.pow(2).sum() + lr.pow(2).mean()).backward()
    assert gen.estimator.prior.grad.abs().sum() > 0
    assert gen.estimator.head[-1].weight.grad.abs().sum() > 0
    if kernel_param == "profile":  # a buffer the kernel start sets (fca.train.kernel_start), saved with the weights
        assert "estimator.profile" in gen.state_dict() and not gen.estimator.profile.requires_grad


@pytest.mark.parametrize("estimator", ["paper", "spectral"])
def test_start_from_makes_every_images_first_kernel_the_given_one(estimator):
    from fca.kernels import flat_profile, gaussian_params, profile_kernels

    gen = _generator(kernel_size=13, kernel_param="profile", estimator=estimator, tile=32)
    ellipse = gaussian_params(torch.tensor([2.4]), torch.tensor([1.2]), torch.tensor([math.radians(30.0)]))[0]
    gen.estimator.start_from(ellipse, flat_profile())
    kernels = gen.estimate_kernel(torch.rand(2, 3, 64, 64))
    ref = profile_kernels(ellipse[None], flat_profile(), 13)[0]
    torch.testing.assert_close(kernels, ref.expand(2, 13, 13), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="profile"):
        _generator(kernel_param="gaussian", estimator=estimator, tile=32).estimator.start_from(ellipse, flat_profile())


def test_bf16_autocast_keeps_fp32_kernels_summing_to_one():
    gen = _generator(kernel_size=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lr, kernels = gen(torch.rand(2, 3, 64, 64))
    assert kernels.dtype == torch.float32 and lr.dtype == torch.float32
    torch.testing.assert_close(kernels.sum((-2, -1)), torch.ones(2))


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="kernel_param"):
        KernelEstimator(kernel_param="box")
    with pytest.raises(ValueError, match="odd"):
        KernelEstimator(kernel_size=8)


def test_spectral_estimator_starts_at_its_prior_for_every_image_and_reads_features():
    from fca.models.generator_arch import SpectralKernelEstimator
    from fca.kernels import effective_sigma

    est = SpectralKernelEstimator(kernel_size=9, tile=16, radial_bins=8, angular_bins=4, hidden=8, init_sigma=1.2, edge_channels=2)
    x = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    est.calibrate(x)
    k = est(x)
    assert k.shape == (3, 9, 9) and torch.allclose(k.sum((1, 2)), torch.ones(3))
    assert torch.allclose(k[0], k[1]) and torch.allclose(k[1], k[2])  # zero last layer: the prior for all
    assert float(effective_sigma(k[0].double())) == pytest.approx(1.2, abs=0.05)
    assert est.raw_features(x).shape == (3, 8 * 4 + 1 + 4 * 2)
    # Any input of at least one tile works (an LR image, a large HR image).
    assert est(torch.rand(1, 3, 16, 16)).shape == (1, 9, 9) and est(torch.rand(1, 3, 100, 70)).shape == (1, 9, 9)


def test_edge_sharpness_is_lower_for_a_blurrier_image():
    from fca.kernels import conv_per_sample, gaussian
    from fca.models.generator_arch import edge_sharpness

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    soft = conv_per_sample(x, torch.from_numpy(gaussian(9, 2.0)).float())
    softer = conv_per_sample(x, torch.from_numpy(gaussian(9, 3.0)).float())
    a, b = edge_sharpness(soft, 3), edge_sharpness(softer, 3)
    assert a.shape == (1, 12) and (a > b).all()


def test_upper_quantiles_equal_torch_quantile():
    from fca.models.generator_arch import upper_quantiles

    x = torch.rand(5, 1000, generator=torch.Generator().manual_seed(0))
    qs = torch.linspace(0.9, 0.995, 4)
    assert torch.allclose(upper_quantiles(x, qs), torch.quantile(x, qs, dim=1).T, atol=1e-7)


def test_local_range_equals_max_minus_min_pooling():
    import torch.nn.functional as F

    from fca.models.generator_arch import local_range

    y = torch.rand(3, 1, 23, 17, generator=torch.Generator().manual_seed(0))
    for size in (3, 5):
        expected = F.max_pool2d(y, size, 1, size // 2) + F.max_pool2d(-y, size, 1, size // 2)
        assert torch.equal(local_range(y, size), expected)


def test_edge_sharpness_reads_the_direction_of_a_blur():
    """A blur along x flattens the horizontal differences (direction 0) more than the vertical ones (direction 2), and rotated by 90 degrees the other way round."""
    from fca.kernels import conv_per_sample
    from fca.models.generator_arch import edge_sharpness

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for degrees, sign in ((0.0, 1.0), (90.0, -1.0)):
        k = torch.as_tensor(anisotropic_gaussian(13, 3.0, 0.8, degrees)).float()
        e = edge_sharpness(conv_per_sample(x, k.expand(2, -1, -1)), 2).view(2, 4, 2)
        assert sign * float(e[:, 2].mean() - e[:, 0].mean()) > 0.3


def test_g_ends_with_its_jpeg_round_trip_saved_with_the_weights_and_gradients_pass_straight_through():
    from fca.jpeg import JpegSetting, jpeg_round_trip
    from fca.models.generator_arch import Generator

    torch.manual_seed(0)
    g = Generator(scale=4.0, estimator="paper", kernel_size=5, channels=4, dense_blocks=1, res_blocks=1)
    x = torch.rand(2, 3, 64, 64).requires_grad_(True)
    k = torch.full((2, 5, 5), 1 / 25)
    blurred, out = g.degrade_parts(x, k)
    assert out is blurred and g.jpeg_setting() is None  # no JPEG: G(x) as it was
    g.set_jpeg(JpegSetting(60, "4:2:0", "pixels"))
    blurred, out = g.degrade_parts(x, k)
    torch.testing.assert_close(out, jpeg_round_trip(blurred.detach(), 60, "4:2:0"), atol=1e-6, rtol=0)
    assert float((out - blurred).abs().mean()) > 1e-3  # the round trip changed it
    (grad_out,) = torch.autograd.grad(out.sum(), x)
    (grad_blurred,) = torch.autograd.grad(g.degrade_parts(x, k)[0].sum(), x)
    torch.testing.assert_close(grad_out, grad_blurred)  # straight through
    loaded = Generator(scale=4.0, estimator="paper", kernel_size=5, channels=4, dense_blocks=1, res_blocks=1)
    loaded.load_state_dict(g.state_dict())
    assert loaded.jpeg_setting() == JpegSetting(60, "4:2:0", "weights")
