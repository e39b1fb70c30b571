import math

import numpy as np
import torch

from fca.baseline import fit_kernels_by_density
from fca.data.builtin import dead_leaves
from fca.kernels import anisotropic_gaussian, angle_difference, conv_per_sample, effective_sigma, principal_axis


def _scenes(n: int) -> torch.Tensor:
    """Sharp 128 px dead-leaves scenes (scale-invariant, like the premise wants): [n, 3, 128, 128]."""
    imgs = [torch.from_numpy(dead_leaves(128, np.random.default_rng(10 + i))).permute(2, 0, 1).float() for i in range(n)]
    return torch.stack(imgs)


def test_per_image_density_fit_orders_widths_and_finds_directions():
    clean = _scenes(4)
    specs = [(1.0, 1.0, 0.0), (2.8, 2.6, 0.0), (3.0, 1.0, 30.0), (3.0, 1.0, 120.0)]
    kernels = torch.stack([torch.from_numpy(anisotropic_gaussian(13, *s)) for s in specs]).float()
    real = (torch.stack([conv_per_sample(c[None], k)[0] for c, k in zip(clean, kernels)]).clamp(0, 1) * 255).round() / 255
    fitted, seconds = fit_kernels_by_density(real, 4, 13, steps=150)
    sig = effective_sigma(fitted)
    assert fitted.shape == (4, 13, 13) and torch.allclose(fitted.sum((1, 2)), torch.ones(4, dtype=fitted.dtype))
    assert sig[1] > sig[0] + 0.5  # a wide blur reads wider than a narrow one
    _, angle = principal_axis(fitted[2:])
    err = angle_difference(angle, torch.tensor([30.0, 120.0]).double())
    assert (err < 25).all(), err  # the direction of an elongated blur is found
    assert seconds > 0 and math.isfinite(seconds)
