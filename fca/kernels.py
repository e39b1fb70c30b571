"""Blur kernels: construction, per-sample convolution, and their second moments.

A kernel here is a K x K array (K odd), non-negative, summing to 1, and shared by
the colour channels. `conv_per_sample` applies a different kernel to each image of
a batch as one grouped convolution (the batch folded into groups), with reflect
padding so the output has the input's size. This is the operation the seed
reproduction got wrong (it multiplied element-wise).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def check_kernel(k: np.ndarray, name: str = "kernel") -> np.ndarray:
    """Validate a 2-D kernel (square, odd size, finite, non-negative, positive sum); return it as float64 normalised to sum 1."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name}: expected a square 2-D array, got shape {k.shape}")
    if k.shape[0] % 2 == 0:
        raise ValueError(f"{name}: kernel size must be odd, got {k.shape[0]}")
    if not np.isfinite(k).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if (k < 0).any():
        raise ValueError(f"{name}: has negative entries (min {k.min():.3g})")
    if k.sum() <= 0:
        raise ValueError(f"{name}: sums to {k.sum():.3g}, must be positive")
    return k / k.sum()


def anisotropic_gaussian(size: int, sigma_x: float, sigma_y: float, theta_deg: float = 0.0) -> np.ndarray:
    """K x K Gaussian with std sigma_x along direction theta and sigma_y across it, sum 1."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    r = size // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    t = math.radians(theta_deg)
    u = math.cos(t) * xx + math.sin(t) * yy
    v = -math.sin(t) * xx + math.cos(t) * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def gaussian(size: int, sigma: float) -> np.ndarray:
    """Isotropic K x K Gaussian, sum 1 (the paper's default: 13, sigma 3 = variance 9)."""
    return anisotropic_gaussian(size, sigma, sigma, 0.0)


def delta(size: int) -> np.ndarray:
    """The identity kernel: 1 at the centre."""
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def conv_per_sample(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own kernel.

    x: [B, C, H, W]; kernels: [B, K, K] (or [K, K], shared by the batch), K odd.
    Returns [B, C, H, W]: reflect-padded 'same' convolution, one kernel for all C.
    The kernel is flipped so this is a true convolution (matters for asymmetric kernels).
    """
    if kernels.dim() == 2:
        kernels = kernels.expand(x.shape[0], -1, -1)
    b, c, h, w = x.shape
    if kernels.shape[0] != b:
        raise ValueError(f"{kernels.shape[0]} kernels for a batch of {b}")
    k = kernels.shape[-1]
    if k % 2 == 0 or kernels.shape[-2] != k:
        raise ValueError(f"kernels must be square with odd size, got {tuple(kernels.shape[-2:])}")
    pad = k // 2
    if pad >= h or pad >= w:
        raise ValueError(f"a {k}x{k} kernel needs images larger than {pad} pixels, got {h}x{w}")
    weight = kernels.flip(-1, -2).to(x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # [B*C, 1, K, K]
    padded = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, weight, groups=b * c).view(b, c, h, w)


def centre_of_mass(k: torch.Tensor) -> torch.Tensor:
    """[..., K, K] -> [..., 2] (row, col) offsets from the kernel's centre."""
    size = k.shape[-1]
    r = torch.arange(size, dtype=k.dtype, device=k.device) - size // 2
    total = k.sum((-2, -1))
    my = (k.sum(-1) * r).sum(-1) / total
    mx = (k.sum(-2) * r).sum(-1) / total
    return torch.stack([my, mx], -1)


def second_moment(k: torch.Tensor) -> torch.Tensor:
    """Covariance of a kernel about its centre of mass: [..., K, K] -> [..., 2, 2] (row, col)."""
    size = k.shape[-1]
    r = torch.arange(size, dtype=k.dtype, device=k.device) - size // 2
    k = k / k.sum((-2, -1), keepdim=True)
    mu = centre_of_mass(k)
    dy = r.view(-1, 1) - mu[..., 0, None, None]
    dx = r.view(1, -1) - mu[..., 1, None, None]
    syy = (k * dy * dy).sum((-2, -1))
    sxx = (k * dx * dx).sum((-2, -1))
    sxy = (k * dx * dy).sum((-2, -1))
    return torch.stack([torch.stack([syy, sxy], -1), torch.stack([sxy, sxx], -1)], -2)


def effective_sigma(k: torch.Tensor) -> torch.Tensor:
    """Square root of the mean eigenvalue of the second moment: [..., K, K] -> [...]."""
    s = second_moment(k)
    return torch.sqrt(0.5 * (s[..., 0, 0] + s[..., 1, 1]))


def cov_rel_error(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """||S_pred - S_ref||_F / ||S_ref||_F for kernels [..., K, K] -> [...]."""
    sp, sr = second_moment(pred), second_moment(ref)
    return torch.linalg.matrix_norm(sp - sr) / torch.linalg.matrix_norm(sr)
