"""fca.train.kernel_start: the best start of a profile kernel, fitted to the spectral loss alone."""

import math

import numpy as np
import torch

from fca.camera import disk_psf
from fca.data.builtin import dead_leaves
from fca.evaluate import shape_error
from fca.kernels import conv_per_sample, gaussian, profile_kernels
from fca.losses import target_density
from fca.resample import downscale
from fca.train.kernel_start import StartFit, kernel_start


def _domain(kernel: torch.Tensor) -> torch.Tensor:
    """Real-domain HR patches [N, 3, 128, 128]: dead-leaves images blurred by `kernel` and rounded to 8 bits."""
    images = torch.stack([torch.from_numpy(dead_leaves(256, np.random.default_rng(seed))).permute(2, 0, 1) for seed in range(3)])
    blurred = conv_per_sample(images, kernel.float())
    patches = blurred.unfold(2, 128, 64).unfold(3, 128, 64).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 128, 128)
    return (patches.clamp(0, 1) * 255).round() / 255


def _start(patches: torch.Tensor, steps: int = 300):
    lr_of = lambda x, k: conv_per_sample(downscale(x, 4.0), k)  # noqa: E731

    def sample(rng: torch.Generator) -> torch.Tensor:
        return patches[torch.randint(0, patches.shape[0], (8,), generator=rng)]

    target = target_density(patches, 32, 16, 0.02, angles=4)
    fit = StartFit(size=13, init_sigma=1.2, steps=steps, lr=0.05, betas=(0.5, 0.99), bins=16, angles=4, floor=2.5e-5, seed=0)
    return kernel_start(lr_of, sample, patches, target, fit)


def _padded(k) -> torch.Tensor:
    k = torch.as_tensor(k, dtype=torch.float64)
    pad = (13 - k.shape[-1]) // 2
    return torch.nn.functional.pad(k, (pad, pad, pad, pad)) if pad > 0 else k


def test_a_disk_domain_starts_from_the_flat_profile_and_ends_near_the_disk():
    disk = _padded(disk_psf(4.0))
    start = _start(_domain(disk))
    assert start.chosen == "flat", start.distances
    assert start.distances["flat"] < start.distances["gaussian"]
    kernel = profile_kernels(start.ellipse[None].double(), start.profile.double(), 13)[0]
    assert float(shape_error(kernel, disk)) < 0.25


def test_a_gaussian_domain_ends_near_its_gaussian_and_the_fit_is_deterministic():
    truth = _padded(gaussian(13, 2.5))
    patches = _domain(truth)
    start = _start(patches, steps=200)
    kernel = profile_kernels(start.ellipse[None].double(), start.profile.double(), 13)[0]
    assert float(shape_error(kernel, truth)) < 0.2
    again = _start(patches, steps=200)
    assert torch.equal(again.ellipse, start.ellipse) and torch.equal(again.profile, start.profile)
    assert math.isfinite(start.distances["gaussian"])


def test_a_later_start_wins_only_by_more_than_the_margin():
    from fca.train.kernel_start import MARGIN, choose

    assert choose({"gaussian": 1.0, "flat": 1.0 / (1 + MARGIN) + 1e-3}) == "gaussian"  # a near tie: the simpler
    assert choose({"gaussian": 1.0, "flat": 1.0 / (1 + MARGIN) - 1e-3}) == "flat"
    assert choose({"gaussian": 0.5, "flat": 1.0}) == "gaussian"
