"""Adaptation generator G(x) = bicubic_down(x, s) (*) k(x) (DESIGN.md "Adaptation generator G").

The kernel estimator follows the paper's Fig. 2: three parallel first convs
(1x3, 3x1, 3x3, concatenated), a stride-2 conv, residual dense blocks (our
reading of "residual Ds"), residual blocks, adaptive average pooling to K x K,
1x1 conv, ReLU, 1x1 conv to one channel, softmax over the K*K logits.

Ours: the logits are `prior + head(x)`, where `prior` is a learnable K x K map
that starts as the log of an isotropic Gaussian (`init_sigma`), and the last
1x1 conv of the head is zero-initialised. So the first kernel is that Gaussian
for every image, and training moves (a) the image-independent prior, which is
what a single real camera blur needs, and (b) an image-dependent correction.
Why: pooled conv features carry almost no information about *where* in the
K x K grid a cell lies (only zero padding at the borders does), so without a
positional prior the head cannot even form a centred blob; and a zero-initialised
head with no prior starts as a uniform K x K box, whose sinc response has
spectral zeros. A moderate Gaussian (default sigma 1.2) is a mild blur near the
bicubic baseline whose tails are still a few logits from any plausible camera
blur; Adam moves logits by about one LR-sized step each, so the start's distance
in logit space is what counts. Measured on the bundled photos (oracle sigma 2.67,
benchmarks/generator_experiments.py, 300 steps): start 1.2 -> 2.74 (+3 %);
near-delta 0.5 -> 1.65 (stuck: its outer logits start ~70 below the centre);
0.8 -> 2.24; a uniform box (zero head, no prior) -> 2.94 (+10 %, keeps heavy tails).

The `gaussian` parameterisation predicts (log sigma_x, log sigma_y, theta) per
image the same way: a learnable prior vector plus a zero-initialised head on
globally pooled features, then builds a differentiable anisotropic Gaussian.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fca.kernels import conv_per_sample
from fca.resample import downscale

KERNEL_PARAMS = ("free", "gaussian")
# Gaussian parameterisation: sigmas are kept in [_SIGMA_MIN, kernel_size] so the kernel stays finite.
_SIGMA_MIN = 0.2


class ResidualDenseBlock(nn.Module):
    """RDN-style block: `layers` densely connected 3x3 convs, 1x1 fusion, scaled residual. [B,C,H,W] -> [B,C,H,W]."""

    def __init__(self, channels: int, growth: int, layers: int = 3, res_scale: float = 0.2):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels + i * growth, growth, 3, padding=1) for i in range(layers))
        self.fuse = nn.Conv2d(channels + layers * growth, channels, 1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return x + self.res_scale * self.fuse(torch.cat(feats, 1))


class ResidualBlock(nn.Module):
    """conv 3x3, ReLU, conv 3x3, plus the input. [B,C,H,W] -> [B,C,H,W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def gaussian_kernels(log_sigma_x: torch.Tensor, log_sigma_y: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable anisotropic Gaussians: per-image [B] parameters (theta in radians) -> [B, K, K], each summing to 1.

    Same convention as `fca.kernels.anisotropic_gaussian`: sigma_x along direction theta, sigma_y across it.
    """
    r = size // 2
    coords = torch.arange(-r, r + 1, dtype=torch.float32, device=theta.device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    sx = log_sigma_x.float().exp().clamp(_SIGMA_MIN, float(size))[:, None, None]
    sy = log_sigma_y.float().exp().clamp(_SIGMA_MIN, float(size))[:, None, None]
    c, s = torch.cos(theta.float())[:, None, None], torch.sin(theta.float())[:, None, None]
    u = c * xx + s * yy
    v = -s * xx + c * yy
    logits = -0.5 * ((u / sx) ** 2 + (v / sy) ** 2)
    return torch.softmax(logits.flatten(1), 1).view(-1, size, size)


class KernelEstimator(nn.Module):
    """x_hr [B, 3, H, W] in [0, 1] -> kernels [B, K, K], non-negative, each summing to 1 (computed in fp32)."""

    def __init__(
        self,
        kernel_size: int = 13,
        channels: int = 64,
        dense_blocks: int = 5,
        res_blocks: int = 2,
        kernel_param: str = "free",
        init_sigma: float = 1.2,
    ):
        super().__init__()
        if kernel_param not in KERNEL_PARAMS:
            raise ValueError(f"kernel_param = {kernel_param!r}: expected one of {KERNEL_PARAMS}")
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size = {kernel_size}: must be a positive odd number")
        if init_sigma <= 0:
            raise ValueError(f"init_sigma = {init_sigma}: must be positive")
        self.kernel_size = kernel_size
        self.kernel_param = kernel_param
        c = channels
        # Paper Fig. 2: three parallel first convs (an "inception" head) see horizontal, vertical and 2-D structure.
        self.branches = nn.ModuleList(
            [nn.Conv2d(3, c, (1, 3), padding=(0, 1)), nn.Conv2d(3, c, (3, 1), padding=(1, 0)), nn.Conv2d(3, c, 3, padding=1)]
        )
        self.down = nn.Conv2d(3 * c, c, 3, stride=2, padding=1)
        self.body = nn.Sequential(
            *[ResidualDenseBlock(c, max(1, c // 2)) for _ in range(dense_blocks)],
            *[ResidualBlock(c) for _ in range(res_blocks)],
        )
        r = kernel_size // 2
        if kernel_param == "free":
            self.pool = nn.AdaptiveAvgPool2d(kernel_size)
            self.head = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, 1, 1))
            yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
            self.prior = nn.Parameter(-(xx**2 + yy**2) / (2 * init_sigma**2))  # [K, K] log of a Gaussian
        else:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, 3, 1))
            self.prior = nn.Parameter(torch.tensor([math.log(init_sigma), math.log(init_sigma), 0.0]))
        # Zero-init the last layer: the first kernel is exactly the prior, for every image.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The image-independent kernel parameters (they live in logit / log-sigma space and want a larger step)."""
        return [self.prior]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, C, H/2, W/2] (autocast-friendly: convs only)."""
        y = F.leaky_relu(torch.cat([b(x) for b in self.branches], 1), 0.2)
        y = F.leaky_relu(self.down(y), 0.2)
        return self.body(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        out = self.head(self.pool(self.features(x)))
        # The normalisation runs in fp32 even under autocast: the kernel must sum to 1 exactly.
        with torch.autocast(x.device.type, enabled=False):
            out = out.float()
            if self.kernel_param == "free":
                logits = out[:, 0] + self.prior.float()  # [B, K, K]
                return torch.softmax(logits.flatten(1), 1).view(-1, k, k)
            p = out[:, :, 0, 0] + self.prior.float()  # [B, 3]
            return gaussian_kernels(p[:, 0], p[:, 1], p[:, 2], k)


class Generator(nn.Module):
    """G(x) = bicubic_down(x, s) (*) k(x): x_hr [B, 3, H, W] -> (lr [B, 3, H/s, W/s], kernels [B, K, K])."""

    def __init__(self, scale: float = 4.0, **estimator_kwargs):
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale = {scale}: must be >= 1")
        self.scale = scale
        self.estimator = KernelEstimator(**estimator_kwargs)

    @property
    def kernel_size(self) -> int:
        return self.estimator.kernel_size

    def estimate_kernel(self, x_hr: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, K, K] (fp32, >= 0, sums to 1)."""
        return self.estimator(x_hr)

    def degrade(self, x_hr: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Apply given kernels: bicubic down, then per-sample reflect-padded convolution. Runs in fp32."""
        with torch.autocast(x_hr.device.type, enabled=False):
            return conv_per_sample(downscale(x_hr.float(), self.scale), kernels.float())

    def forward(self, x_hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kernels = self.estimate_kernel(x_hr)
        return self.degrade(x_hr, kernels), kernels
