"""Frequency density: the quantity the whole method is about (DESIGN.md section 1).

For a patch: luma, minus its mean, times a 2-D Hann window, |FFT|^2, power
averaged over rings of equal radial frequency (bins over 0..0.5 cycles/pixel),
bins normalised to sum to 1. Because the bins are in cycles/pixel, patches of
different sizes (HR and LR) land on the same axis and can be compared.

Everything is differentiable torch, so the same code is the `spectral` loss.
"""

from __future__ import annotations

import functools

import torch

# ITU-R BT.601 luma weights, as in most SR evaluation code.
_LUMA = (0.299, 0.587, 0.114)
_EPS = 1e-12


def to_luma(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] or [B, 1, H, W] in [0, 1] -> [B, H, W] luma."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected [B, 1|3, H, W], got {tuple(x.shape)}")
    if x.shape[1] == 1:
        return x[:, 0]
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1)


@functools.lru_cache(maxsize=32)
def _ring_geometry(h: int, w: int, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hann window [H, W], ring index per rfft2 coefficient [H, W//2+1], ring sizes [bins]."""
    window = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))
    fy = torch.fft.fftfreq(h).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    radius = torch.sqrt(fy**2 + fx**2)  # cycles/pixel
    # Bin i holds radii in (i, i+1] * 0.5 / bins: half-open at the bottom so that an
    # N-pixel patch fills N/2 bins (its axis frequencies k/N each land in one), and DC
    # (radius 0) and the corners beyond Nyquist go to an extra bin that is dropped.
    index = torch.ceil(radius / 0.5 * bins - 1e-9).long() - 1
    index[(index >= bins) | (index < 0)] = bins
    counts = torch.bincount(index.flatten(), minlength=bins + 1)[:bins].float()
    if (counts == 0).any():
        raise ValueError(f"{bins} bins is too many for a {h}x{w} patch: some rings are empty")
    return window, index, counts


def radial_density(x: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Frequency density of each image in a batch.

    x: [B, C, H, W] in [0, 1] (C = 1 or 3). Returns [B, bins], each row summing to 1;
    bin i covers radial frequencies (i, i+1] * 0.5 / bins cycles/pixel.
    """
    y = to_luma(x)
    h, w = y.shape[-2:]
    window, index, counts = _ring_geometry(h, w, bins)
    window, index, counts = window.to(y), index.to(y.device), counts.to(y)
    y = (y - y.mean(dim=(-2, -1), keepdim=True)) * window
    power = torch.fft.rfft2(y).abs().pow(2)
    # rfft2 keeps only half the columns: count the mirrored ones twice so rings are fair.
    weight = torch.full((w // 2 + 1,), 2.0, dtype=y.dtype, device=y.device)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    power = power * weight
    flat = power.flatten(1)
    sums = torch.zeros(flat.shape[0], bins + 1, dtype=y.dtype, device=y.device)
    sums.index_add_(1, index.flatten(), flat)
    mean_power = sums[:, :bins] / counts
    return mean_power / (mean_power.sum(1, keepdim=True) + _EPS)


def bin_centres(bins: int) -> torch.Tensor:
    """Radial frequency at the centre of each bin, cycles/pixel: [bins]."""
    return (torch.arange(bins, dtype=torch.float64) + 0.5) * 0.5 / bins


def mean_density(images: torch.Tensor, bins: int = 32, batch: int = 64) -> torch.Tensor:
    """Density of a set of images (mean over them): [N, C, H, W] -> [bins]."""
    total = torch.zeros(bins, dtype=torch.float64, device=images.device)
    for start in range(0, images.shape[0], batch):
        total += radial_density(images[start : start + batch].double(), bins).sum(0)
    return total / images.shape[0]


def log_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of log densities (natural log), over the last axis."""
    return (torch.log(p + _EPS) - torch.log(q + _EPS)).abs().mean(-1)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p||q) + KL(q||p) over the last axis (densities that sum to 1)."""
    lp, lq = torch.log(p + _EPS), torch.log(q + _EPS)
    return ((p - q) * (lp - lq)).sum(-1)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log) over the last axis."""
    m = 0.5 * (p + q)
    lm = torch.log(m + _EPS)
    return 0.5 * (p * (torch.log(p + _EPS) - lm)).sum(-1) + 0.5 * (q * (torch.log(q + _EPS) - lm)).sum(-1)


def high_frequency_share(density: torch.Tensor, above: float = 0.25) -> torch.Tensor:
    """Share of power above `above` cycles/pixel: density [..., bins] -> [...]."""
    bins = density.shape[-1]
    mask = bin_centres(bins).to(density.device) >= above
    return density[..., mask].sum(-1)
