"""Generator and discriminator losses (docs/design.md, "Generator loss").

- `spectral_loss`: the direct, differentiable frequency-density distance (L1 of
  log densities above a noise floor) between a batch of generated LR images and real-domain patches
  at the same pixel scale. Always computed in fp32 (FFT, logs).
- `lsgan_d_loss` / `lsgan_g_loss`: least-squares GAN losses for the wavelet discriminator.
- `fdc_generator_loss`: asks the frozen comparator for C(G(x), x) = 0,
  C(G(x), x_U) = +1, C(G(x), x_D) = -1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from fca.frequency import polar_density, polar_power, radial_density, radial_power, ring_to_cell, to_luma
from fca.noise import NoiseSpectrum

# Default density floor of the spectral loss (a share of the patch's total power), see `floored_log_l1`.
DEFAULT_FLOOR = 1e-4

# Mean over dim 0 of a batch of per-image values (fca.distributed.Dist.mean in a multi-process job).
BatchMean = Callable[[torch.Tensor], torch.Tensor]


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size, size], the centre (H, W >= size)."""
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def density_cells(x: torch.Tensor, bins: int, angles: int = 1) -> torch.Tensor:
    """The spectral loss's density of each image: [B, C, H, W] -> [B, bins * angles]. angles = 1:
    the radial density; more: each ring split into `angles` orientation sectors (`polar_density`,
    cell r * angles + a). Why sectors: a radial density cannot tell a blur from its rotated copy,
    so a fit on it returns an anisotropic camera blur round (cov error 0.56 for axes 3 x 1.5 px);
    with 4 sectors a kernel fitted alone to a domain of that blur came back with axis ratio
    1.94 at 36 degrees (truth 2.0 at 30), against 2.96 at 151 degrees on the radial density."""
    return radial_density(x, bins) if angles == 1 else polar_density(x, bins, angles).flatten(1)


def _power_cells(x: torch.Tensor, bins: int, angles: int) -> torch.Tensor:
    """`density_cells` before normalising: mean power per cell, [B, bins * angles]."""
    return radial_power(x, bins) if angles == 1 else polar_power(x, bins, angles).flatten(1)


def tile_noise_power(noise: NoiseSpectrum, tiles: torch.Tensor, bins: int) -> torch.Tensor:
    """The noise's ring power in each tile [M, 3, h, w] -> [M, bins] (`NoiseSpectrum.ring_power`), at most
    the tile's own power: scaled down where it exceeds the tile's power summed over the upper half of
    the rings.

    Why: the noise model is the level the flat crops show at a tile's brightness, extrapolated beyond
    the brightness they span; a tile cannot hold more noise than power. On the simulated camera no
    unclipped flat crop is darker than 0.2, and in tiles near 0.07 the model was 1.4-1.7x the
    camera's noise (the raw noise is clipped at black); the cap brings it to the tiles' own upper
    rings, where noise dominates. The sum over half the rings (hundreds of frequencies) fluctuates
    little, so where the model is right the cap takes about 3 % of the noise off on average (32 px
    tiles of white noise at the model's level), the low draws."""
    ring = noise.ring_power(tiles)
    half = bins // 2
    power = radial_power(tiles.to(ring.dtype), bins)[:, half:].sum(1)
    scale = (power / ring[:, half:].sum(1).clamp_min(1e-30)).clamp(max=1.0)
    return ring * scale[:, None]


def _noise_cells(noise: NoiseSpectrum, tiles: torch.Tensor, bins: int, angles: int) -> torch.Tensor:
    """The noise's power in each cell of each tile, [M, bins * angles]: its ring power (`tile_noise_power`), in
    every sector of the ring (the noise is taken as isotropic)."""
    ring = tile_noise_power(noise, tiles, bins)
    if angles == 1:
        return ring
    scale = ring_to_cell(tiles.shape[-2], tiles.shape[-1], bins, angles).to(ring)
    return (ring * scale).repeat_interleave(angles, dim=1)


def batch_density(x: torch.Tensor, bins: int, batch_mean: BatchMean | None = None, angles: int = 1) -> torch.Tensor:
    """Mean frequency density of a batch, in fp32 outside autocast: [B, C, H, W] -> [bins * angles].

    batch_mean averages the per-image densities over dim 0 (default: over this batch;
    in a multi-process job `Dist.mean`, over the global batch)."""
    with torch.autocast(x.device.type, enabled=False):
        per_image = density_cells(x.float(), bins, angles)
        return per_image.mean(0) if batch_mean is None else batch_mean(per_image)


def floored_log_l1(p: torch.Tensor, q: torch.Tensor, floor: float = DEFAULT_FLOOR, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |log(p + floor) - log(q + floor)| over the last axis, for densities that sum to 1;
    with `weights` (one per bin, >= 0, `signal_weights`) their weighted mean.

    Why a floor: in the top bins of a blurred patch the power is 1e-5..1e-9 of the
    total and comes from 8-bit quantisation noise, window leakage and kernel
    truncation, not from the blur. A plain log-L1 (eps 1e-12) weighs those bins
    like the others and its minimum then moves far from the right kernel (with
    8-bit real patches it prefers the sharpest kernel). With a floor of 1e-4 the
    loss compares the bins where the signal lives; see
    benchmarks/generator_experiments.py for the measurement.
    """
    err = (torch.log(p + floor) - torch.log(q + floor)).abs()
    if weights is None:
        return err.mean(-1)
    weights = weights.to(err)
    return (err * weights).sum(-1) / weights.sum().clamp_min(1e-12)


def density_loss(
    fake_lr: torch.Tensor, target: torch.Tensor, bins: int, floor: float = DEFAULT_FLOOR, batch_mean: BatchMean | None = None,
    angles: int = 1, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Floored log-L1 between the batch's mean density and a target density [bins * angles]: a scalar,
    differentiable in fake_lr.

    batch_mean: see `batch_density`; weights: one per cell (`signal_weights`), None: all equal."""
    if target.shape != (bins * angles,):
        raise ValueError(f"target density has shape {tuple(target.shape)}, expected ({bins * angles},)")
    with torch.autocast(fake_lr.device.type, enabled=False):
        return floored_log_l1(batch_density(fake_lr, bins, batch_mean, angles), target.float().to(fake_lr.device), floor, weights)


def target_density(patches: torch.Tensor, side: int, bins: int, min_std: float = 0.02, batch: int = 256,
                   noise: NoiseSpectrum | None = None, angles: int = 1) -> torch.Tensor:
    """The real domain's density at the LR patch size: mean over the non-overlapping side x side tiles
    whose luma std is at least `min_std`. [N, 3, H, W] -> [bins * angles] (`density_cells`).

    Computed once, with no randomness: a per-batch target of 8 crops is noisy, and the
    real domain's density is a property of the whole set. Flat tiles are left out
    because their normalised density is 8-bit quantisation noise (white); on the
    bundled photos 38 % of the 32 px tiles are that flat, and keeping them drags the
    spectral fit to a spiky kernel that imitates the noise (benchmarks/generator_experiments.py).

    noise: the noise bank's spectrum (`fca.noise.NoiseSpectrum`), or None. Given, the target is
    the density of the tiles' *signal*: each tile's rings lose the noise's ring power at the
    tile's pixels' brightness (`tile_noise_power`) and are divided by the tile's
    remaining positive power; the tiles' mean is cut at 0 and renormalised. (Cutting each
    tile at 0 instead would leave a bias in the rings that hold noise alone: a ring's power
    fluctuates around the noise level, and only the upward half would survive.) Flat means the
    same for the signal: a tile stays out when its luma variance less the noise's is below
    min_std^2, or noise alone would let flat tiles in and drag the target blurrier. With orientation
    sectors (angles > 1) each cell of a ring loses the ring's noise power: the noise is taken as
    isotropic (its spectrum is measured per ring).
    """
    tiles = _target_tiles(patches, side, min_std, noise)
    total = torch.zeros(bins * angles, dtype=torch.float64, device=patches.device)
    for start in range(0, tiles.shape[0], batch):
        chunk = tiles[start : start + batch].double()
        if noise is None:
            total += density_cells(chunk, bins, angles).sum(0)
        else:
            signal = _power_cells(chunk, bins, angles) - _noise_cells(noise, chunk, bins, angles)
            positive = signal.clamp_min(0.0).sum(1, keepdim=True)
            # a tile with no power left above the noise's holds no signal to share out: it counts as none
            total += torch.where(positive > 0, signal / positive.clamp_min(1e-30), torch.zeros_like(signal)).sum(0)
    if noise is None:
        return (total / tiles.shape[0]).float()
    total = total.clamp_min(0.0)
    return (total / total.sum()).float()


def _target_tiles(patches: torch.Tensor, side: int, min_std: float, noise: NoiseSpectrum | None) -> torch.Tensor:
    """The side x side tiles of patches [N, 3, H, W] that `target_density` averages."""
    tiles = patches.unfold(2, side, side).unfold(3, side, side)  # [N, 3, nh, nw, side, side]
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, patches.shape[1], side, side)
    luma = to_luma(tiles).flatten(1)
    if noise is None:
        keep = luma.std(1) >= min_std
    else:
        keep = luma.var(1).double() - noise.luma_variance(tiles) >= min_std**2
    if not bool(keep.any()):
        raise ValueError(f"no {side}x{side} tile of the real patches has luma std >= {min_std}"
                         + (" above the noise" if noise is not None else ""))
    return tiles[keep]


def noise_share(patches: torch.Tensor, side: int, bins: int, min_std: float, noise: NoiseSpectrum, batch: int = 256) -> torch.Tensor:
    """Each ring's noise power as a share of the tile's whole power, mean over the tiles
    `target_density(noise=noise)` keeps: [bins]. It is what the signal target subtracts from
    each bin, so the subtraction's error scales with it (`GeneratorConfig.spectral_noise_floor`)."""
    tiles = _target_tiles(patches, side, min_std, noise)
    total = torch.zeros(bins, dtype=torch.float64, device=patches.device)
    for start in range(0, tiles.shape[0], batch):
        chunk = tiles[start : start + batch].double()
        power = radial_power(chunk, bins).sum(1, keepdim=True)
        total += (tile_noise_power(noise, chunk, bins) / (power + 1e-12)).sum(0)
    return (total / tiles.shape[0]).float()


def signal_weights(patches: torch.Tensor, side: int, bins: int, min_std: float, noise: NoiseSpectrum, angles: int = 1,
                   batch: int = 256) -> torch.Tensor:
    """Each cell's weight in the spectral loss on the signal target (`target_density(noise=noise)`): the square
    of the signal's share of the power in that cell, (P - N) / P with P the tiles' mean power and N the
    noise's (`tile_noise_power`), over the tiles the target averages: [bins * angles] in [0, 1].

    Why: where noise holds most of a cell's power, the target's signal there is a small difference of
    two large numbers, and an error e of the noise model (its level, its spectrum) moves the log of
    the signal by about e N / (P - N). The square of the share is about the inverse of that error's
    variance where the signal is weak, and 1 where it is strong, so a cell counts as much as its
    signal can be trusted; a model below the noise, which `tile_noise_power`'s cap cannot see, leaves
    noise in cells that then barely count. On the simulated camera the model (uncapped) is 1.1-1.2x
    the camera's noise in the rings where the signal holds 0.66 .. 0.25 of the power: with equal
    weights the start fit's kernel came out 2.04 px wide (the best linear fit, 1.69), with these
    1.85, with the cap as well 1.70. With no noise to take out the trainer uses none (all cells
    equal, `fca.train.generator._spectral_weights`)."""
    tiles = _target_tiles(patches, side, min_std, noise)
    power = torch.zeros(bins * angles, dtype=torch.float64, device=patches.device)
    noise_power = torch.zeros_like(power)
    for start in range(0, tiles.shape[0], batch):
        chunk = tiles[start : start + batch].double()
        power += _power_cells(chunk, bins, angles).sum(0)
        noise_power += _noise_cells(noise, chunk, bins, angles).sum(0)
    share = ((power - noise_power).clamp_min(0.0) / power.clamp_min(1e-30)).clamp(0.0, 1.0)
    return share.pow(2).float()


def spectral_loss(
    fake_lr: torch.Tensor, real_hr_patches: torch.Tensor, bins: int, floor: float = DEFAULT_FLOOR, min_std: float = 0.02
) -> torch.Tensor:
    """Density distance of G(x) [B, 3, h, h] to real-domain patches [N, 3, H, W] (H, W >= h).

    The real patches are cut into h x h tiles: a real LR image has the real domain's
    density *at its own pixel scale*, and the Hann-windowed density depends on the
    patch size, so both sides are measured on equal-sized patches (see `target_density`).
    """
    h, w = fake_lr.shape[-2:]
    if h != w:
        raise ValueError(f"spectral_loss expects square LR patches, got {h}x{w}")
    target = target_density(real_hr_patches.detach(), h, bins, min_std).to(fake_lr.device)
    return density_loss(fake_lr, target, bins, floor)


def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator: real -> 1, fake -> 0 (least squares), averaged over patches; scores of any shape."""
    return 0.5 * ((d_real.float() - 1).pow(2).mean() + d_fake.float().pow(2).mean())


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator: make the discriminator say 1 on fakes."""
    return (d_fake.float() - 1).pow(2).mean()


def fdc_generator_loss(
    fdc: nn.Module,
    fake_lr: torch.Tensor,
    x_crop: torch.Tensor,
    x_U_crop: torch.Tensor,
    x_D_crop: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error of the comparator's scores against the three targets.

    fake_lr, x_crop, x_U_crop, x_D_crop: [B, 3, P, P], all the same size. x is a
    real-domain crop at native scale; x_U / x_D are real-domain crops upscaled /
    downscaled by the comparator's final curriculum scale (the hardest pairs it
    was trained on, so its finest discrimination). `fdc(a, b) -> [B]` is positive
    when a is denser in high frequencies than b, with C(x_D, x) = +1. G(x) should
    look like x: C(G(x), x) = 0, hence C(G(x), x_U) = C(x, x_U) = +1 and
    C(G(x), x_D) = C(x, x_D) = -1.
    """
    shapes = {tuple(t.shape) for t in (fake_lr, x_crop, x_U_crop, x_D_crop)}
    if len(shapes) != 1:
        raise ValueError(f"fdc_generator_loss: all four inputs must have the same shape, got {sorted(shapes)}")
    c_same = fdc(fake_lr, x_crop).float()
    c_up = fdc(fake_lr, x_U_crop).float()
    c_down = fdc(fake_lr, x_D_crop).float()
    return (c_same.pow(2).mean() + (c_up - 1).pow(2).mean() + (c_down + 1).pow(2).mean()) / 3
