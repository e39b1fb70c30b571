"""Frequency density: the quantity the whole method is about (docs/design.md, "Frequency density").

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
LUMA = (0.299, 0.587, 0.114)
_EPS = 1e-12


def to_luma(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] or [B, 1, H, W] in [0, 1] -> [B, H, W] luma."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected [B, 1|3, H, W], got {tuple(x.shape)}")
    if x.shape[1] == 1:
        return x[:, 0]
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
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
    power = radial_power(x, bins)
    return power / (power.sum(1, keepdim=True) + _EPS)


def _column_weight(w: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """rfft2 keeps only half the columns: the mirrored ones count twice so rings are fair."""
    weight = torch.full((w // 2 + 1,), 2.0, dtype=dtype, device=device)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    return weight


def radial_power(x: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Mean power of each ring (`radial_density` before normalising): [B, C, H, W] -> [B, bins]."""
    y = to_luma(x)
    h, w = y.shape[-2:]
    window, index, counts = _ring_geometry(h, w, bins)
    window, index, counts = window.to(y), index.to(y.device), counts.to(y)
    y = (y - y.mean(dim=(-2, -1), keepdim=True)) * window
    power = torch.fft.rfft2(y).abs().pow(2) * _column_weight(w, y.dtype, y.device)
    flat = power.flatten(1)
    sums = torch.zeros(flat.shape[0], bins + 1, dtype=y.dtype, device=y.device)
    sums.index_add_(1, index.flatten(), flat)
    return sums[:, :bins] / counts


def radial_cross_power(x: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """The ring-mean channel cross-spectra Re(F_c conj(F_d)) of each image, windowed as `radial_power`
    (channel means removed): [B, C, H, W] -> [B, C, C, bins]. `radial_power` of luma is the luma
    weights' quadratic form over it (what `fca.noise.NoiseSpectrum` uses for noise of any colour
    correlation)."""
    h, w = x.shape[-2:]
    window, index, counts = _ring_geometry(h, w, bins)
    window, index, counts = window.to(x), index.to(x.device), counts.to(x)
    f = torch.fft.rfft2((x - x.mean(dim=(-2, -1), keepdim=True)) * window)
    prod = (f.unsqueeze(2) * f.conj().unsqueeze(1)).real * _column_weight(w, x.dtype, x.device)  # [B, C, C, H, W//2+1]
    flat = prod.flatten(3)
    sums = torch.zeros(*flat.shape[:3], bins + 1, dtype=x.dtype, device=x.device)
    sums.index_add_(3, index.flatten(), flat)
    return sums[..., :bins] / counts


def white_ring_power(h: int, w: int, bins: int) -> torch.Tensor:
    """The expected `radial_power` of white luma noise of variance 1 on an h x w patch: [bins]
    float64. Every coefficient of the windowed FFT has expected power sum(window^2)."""
    window, index, counts = _ring_geometry(h, w, bins)
    per_coefficient = float(window.double().pow(2).sum()) * _column_weight(w, torch.float64).expand(h, -1)
    sums = torch.zeros(bins + 1, dtype=torch.float64).index_add_(0, index.flatten(), per_coefficient.flatten())
    return sums[:bins] / counts.double()


def white_noise_variance(x: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """The luma variance of the white part of each image [N, C, H, W] -> [N] (float64): its ring
    power (`radial_power`) over that of unit white noise (`white_ring_power`), averaged over
    the upper half of the rings. Noise is close to white there, while what little structure
    a flat crop still holds (gradients, texture) lives in the lower rings."""
    h, w = x.shape[-2:]
    power = torch.cat([radial_power(x[start : start + 256].double(), bins) for start in range(0, x.shape[0], 256)])
    return (power / white_ring_power(h, w, bins).to(power.device))[:, bins // 2 :].mean(1)


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


@functools.lru_cache(maxsize=32)
def _polar_geometry(h: int, w: int, radial_bins: int, angular_bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hann window [H, W], (ring, sector) cell per rfft2 coefficient [H, W//2+1], column weights, cell sizes."""
    window = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))
    fy = torch.fft.fftfreq(h).view(-1, 1).expand(h, w // 2 + 1)
    fx = torch.fft.rfftfreq(w).view(1, -1).expand(h, w // 2 + 1)
    ring = torch.ceil(torch.sqrt(fy**2 + fx**2) / 0.5 * radial_bins - 1e-9).long() - 1  # as in `_ring_geometry`
    # The spectrum of a real image is point-symmetric, so an orientation lives in [0, pi).
    angle = torch.remainder(torch.atan2(fy, fx), torch.pi)
    sector = torch.clamp((angle / torch.pi * angular_bins).long(), 0, angular_bins - 1)
    cell = ring * angular_bins + sector
    cell[(ring >= radial_bins) | (ring < 0)] = radial_bins * angular_bins
    weight = torch.full((w // 2 + 1,), 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    counts = torch.zeros(radial_bins * angular_bins + 1).index_add_(0, cell.flatten(), weight.expand(h, -1).flatten())
    counts = counts[:-1]
    if (counts.view(radial_bins, angular_bins).sum(1) == 0).any():
        raise ValueError(f"{radial_bins} radial bins is too many for a {h}x{w} patch: some rings are empty")
    return window, cell, weight, counts


def polar_density(x: torch.Tensor, radial_bins: int = 16, angular_bins: int = 4) -> torch.Tensor:
    """Frequency density over radius *and* orientation: [B, C, H, W] -> [B, radial_bins, angular_bins], each summing to 1.

    The radial density (`radial_density`) averages power over all orientations, so a kernel and
    its rotated copy give the same curve; splitting each ring into `angular_bins` sectors over
    [0, pi) lets a loss or an estimator see which way a blur points. Sector j holds frequency
    vectors whose angle atan2(f_y, f_x) (rows = y) lies in [j, j+1) * pi / angular_bins:
    blur along the x axis removes power from sector 0 (horizontal frequencies).
    """
    mean_power = polar_power(x, radial_bins, angular_bins)
    return mean_power / (mean_power.sum((1, 2), keepdim=True) + _EPS)


def polar_power(x: torch.Tensor, radial_bins: int = 16, angular_bins: int = 4) -> torch.Tensor:
    """Mean power of each (ring, sector) cell (`polar_density` before normalising):
    [B, C, H, W] -> [B, radial_bins, angular_bins]. A ring's cells average to about its
    `radial_power` (they split it by orientation), so isotropic noise has its ring power in each."""
    y = to_luma(x)
    h, w = y.shape[-2:]
    window, cell, weight, counts = _polar_geometry(h, w, radial_bins, angular_bins)
    y = (y - y.mean(dim=(-2, -1), keepdim=True)) * window.to(y)
    f = torch.fft.rfft2(y)
    power = (f.real * f.real + f.imag * f.imag) * weight.to(y)  # |f|^2 without abs()'s square root: ~4x faster
    sums = torch.zeros(power.shape[0], radial_bins * angular_bins + 1, dtype=y.dtype, device=y.device)
    sums.index_add_(1, cell.flatten().to(y.device), power.flatten(1))
    counts = counts.to(y)
    mean_power = sums[:, :-1] / counts.clamp_min(1)
    # The innermost rings of a small patch have fewer coefficients than sectors: an empty
    # sector takes its ring's mean power (no orientation is measurable there).
    ring_sums = sums[:, :-1].view(-1, radial_bins, angular_bins).sum(2, keepdim=True)
    ring_mean = (ring_sums / counts.view(radial_bins, angular_bins).sum(1, keepdim=True)).expand(-1, -1, angular_bins)
    return torch.where(counts.view(radial_bins, angular_bins) > 0, mean_power.view(-1, radial_bins, angular_bins), ring_mean)


def ring_to_cell(h: int, w: int, radial_bins: int, angular_bins: int) -> torch.Tensor:
    """[radial_bins]: the factor that turns a ring's `radial_power` into the `polar_power` of each of
    its cells for isotropic content (noise). Both sum the half spectrum with mirrored columns
    counted twice; `radial_power` divides by the ring's coefficients, `polar_power` by its cells'
    weighted counts, so the two differ by about 2 (exactly: this ratio)."""
    _, _, ring_counts = _ring_geometry(h, w, radial_bins)
    cell_counts = _polar_geometry(h, w, radial_bins, angular_bins)[3]
    return ring_counts / cell_counts.view(radial_bins, angular_bins).sum(1)


def tiles_of(x: torch.Tensor, side: int, stride: int | None = None) -> torch.Tensor:
    """side x side tiles of each image, `stride` apart (default: side, not overlapping):
    [B, C, H, W] -> [B, n, C, side, side]."""
    if x.shape[-2] < side or x.shape[-1] < side:
        raise ValueError(f"cannot cut {side}x{side} tiles from {x.shape[-2]}x{x.shape[-1]} images")
    stride = stride or side
    t = x.unfold(2, side, stride).unfold(3, side, stride)  # [B, C, nh, nw, side, side]
    return t.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], -1, x.shape[1], side, side)


def tile_polar_density(x: torch.Tensor, side: int, radial_bins: int, angular_bins: int, stride: int | None = None) -> torch.Tensor:
    """Each image's polar density, averaged over its side x side tiles: [B, C, H, W] -> [B, radial_bins, angular_bins].

    One image's density is noisy (a periodogram); the mean over its tiles is the image's own
    estimate at the scale of a `side`-pixel patch, so a large image and a `side`-pixel LR patch
    are measured alike."""
    t = tiles_of(x, side, stride)
    b, n = t.shape[:2]
    return polar_density(t.reshape(b * n, *t.shape[2:]), radial_bins, angular_bins).view(b, n, radial_bins, angular_bins).mean(1)
