"""Generator and discriminator losses (DESIGN.md "Generator loss").

- `spectral_loss`: the direct, differentiable frequency-density distance (L1 of
  log densities above a noise floor) between a batch of generated LR images and real-domain patches
  at the same pixel scale. Always computed in fp32 (FFT, logs).
- `lsgan_d_loss` / `lsgan_g_loss`: least-squares GAN losses for the wavelet discriminator.
- `fdc_generator_loss`: asks the frozen comparator for C(G(x), x) = 0,
  C(G(x), x_U) = +1, C(G(x), x_D) = -1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fca.frequency import radial_density

# Default density floor of the spectral loss (a share of the patch's total power), see `floored_log_l1`.
DEFAULT_FLOOR = 1e-4


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size, size], the centre (H, W >= size)."""
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def batch_density(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Mean frequency density of a batch, in fp32 outside autocast: [B, C, H, W] -> [bins]."""
    with torch.autocast(x.device.type, enabled=False):
        return radial_density(x.float(), bins).mean(0)


def floored_log_l1(p: torch.Tensor, q: torch.Tensor, floor: float = DEFAULT_FLOOR) -> torch.Tensor:
    """Mean |log(p + floor) - log(q + floor)| over the last axis, for densities that sum to 1.

    Why a floor: in the top bins of a blurred patch the power is 1e-5..1e-9 of the
    total and comes from 8-bit quantisation noise, window leakage and kernel
    truncation, not from the blur. A plain log-L1 (eps 1e-12) weighs those bins
    like the others and its minimum then moves far from the right kernel (with
    8-bit real patches it prefers the sharpest kernel). With a floor of 1e-4 the
    loss compares the bins where the signal lives; see
    benchmarks/generator_experiments.py for the measurement.
    """
    return (torch.log(p + floor) - torch.log(q + floor)).abs().mean(-1)


def density_loss(fake_lr: torch.Tensor, target_density: torch.Tensor, bins: int, floor: float = DEFAULT_FLOOR) -> torch.Tensor:
    """Floored log-L1 between the batch's mean density and a target density [bins]: a scalar, differentiable in fake_lr."""
    if target_density.shape != (bins,):
        raise ValueError(f"target density has shape {tuple(target_density.shape)}, expected ({bins},)")
    with torch.autocast(fake_lr.device.type, enabled=False):
        return floored_log_l1(batch_density(fake_lr, bins), target_density.float().to(fake_lr.device), floor)


def spectral_loss(fake_lr: torch.Tensor, real_hr_patches: torch.Tensor, bins: int, floor: float = DEFAULT_FLOOR) -> torch.Tensor:
    """Density distance of G(x) [B, 3, h, w] to real-domain patches [N, 3, H, W] (H, W >= h, w).

    The real patches are centre-cropped to the LR size: a real LR image has the
    real domain's density *at its own pixel scale*, and the Hann-windowed density
    depends on the patch size, so both sides must be measured on equal-sized patches.
    """
    h, w = fake_lr.shape[-2:]
    if h != w:
        raise ValueError(f"spectral_loss expects square LR patches, got {h}x{w}")
    real = centre_crop(real_hr_patches, h).detach()
    return density_loss(fake_lr, batch_density(real, bins), bins, floor)


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
