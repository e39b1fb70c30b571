"""A non-learned per-image kernel: fit one kernel per image to that image's own frequency density.

The method's premise is that a real image and its degraded LR version have the same
frequency density (at their own pixel scales). So for a real image x one can search,
with no network and no training, for the kernel k that makes down(x) (*) k match x's own
polar density (radius x orientation, averaged over x's LR-sized tiles). This is the
ceiling of *density-based* estimation, one image at a time, and the honest comparison
for a learned estimator that reads a kernel in one forward pass: the referee reports
both, and their time per image.

The kernel is an anisotropic Gaussian in the smooth parameters of
`fca.kernels.gaussian_from_params` (width, anisotropy, direction), fitted by Adam from an
isotropic start; all images of a batch are fitted at once but independently.
"""

from __future__ import annotations

import math
import time

import torch

from fca.frequency import polar_density, tile_polar_density
from fca.kernels import conv_per_sample, gaussian_from_params
from fca.resample import downscale


def fit_kernels_by_density(
    hr: torch.Tensor,
    scale: float,
    size: int,
    *,
    radial_bins: int | None = None,
    angular_bins: int = 4,
    steps: int = 200,
    lr: float = 0.05,
    floor: float = 2.5e-5,
    init_sigma: float = 1.2,
) -> tuple[torch.Tensor, float]:
    """Per-image kernels [N, size, size] (float64) for real images hr [N, 3, H, W], and the seconds it took.

    Minimises, for each image separately, the floored log-L1 distance (`fca.losses.floored_log_l1`,
    here over radius x angle cells) between the polar density of down(x) (*) k and the mean polar
    density of x's (H / scale)-pixel tiles. The floor is the 16-bin spectral loss's 1e-4 spread
    over 4 sectors."""
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"baseline: expected [N, 3, H, W] images, got {tuple(hr.shape)}")
    start = time.perf_counter()
    hr = hr.float()
    with torch.no_grad():
        down = downscale(hr, scale)
        side = min(down.shape[-2:])
        radial_bins = radial_bins or min(16, side // 2)  # 16 where the LR side allows (32 px and up)
        target = tile_polar_density(hr, side, radial_bins, angular_bins)
    params = torch.zeros(hr.shape[0], 3)
    params[:, 0] = math.log(init_sigma)
    params.requires_grad_(True)
    opt = torch.optim.Adam([params], lr=lr)
    for _ in range(steps):
        density = polar_density(conv_per_sample(down, gaussian_from_params(params, size)), radial_bins, angular_bins)
        loss = (torch.log(density + floor) - torch.log(target + floor)).abs().flatten(1).mean(1)
        opt.zero_grad()
        loss.sum().backward()  # a sum: each image's parameters get their own image's gradient
        opt.step()
    kernels = gaussian_from_params(params.detach().double(), size)
    return kernels, time.perf_counter() - start
