"""Resampling by a (possibly fractional) scale factor.

Everything in this project that says "bicubic" means torch's antialiased bicubic
(`F.interpolate(mode="bicubic", antialias=True)`), so the generator, the FDC
curriculum, the oracle and the referee all agree on what `down` is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RESAMPLERS = ("bicubic", "bilinear", "area")


def scaled_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """Size of an (h, w) image resized by `factor` (>1 enlarges), at least 1x1."""
    return max(1, round(h * factor)), max(1, round(w * factor))


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize a batch [B, C, H, W] to `size` with an antialiased kernel.

    `mode` is one of RESAMPLERS. Antialiasing only matters when shrinking;
    "area" is box averaging (exact for integer factors).
    """
    if mode not in RESAMPLERS:
        raise ValueError(f"unknown resampler {mode!r}; expected one of {RESAMPLERS}")
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)


def downscale(x: torch.Tensor, scale: float, mode: str = "bicubic") -> torch.Tensor:
    """Shrink [B, C, H, W] by `scale` >= 1: output [B, C, round(H/scale), round(W/scale)]."""
    if scale < 1:
        raise ValueError(f"downscale factor must be >= 1, got {scale}")
    return resize(x, scaled_size(x.shape[-2], x.shape[-1], 1.0 / scale), mode)


def upscale(x: torch.Tensor, scale: float, mode: str = "bicubic") -> torch.Tensor:
    """Enlarge [B, C, H, W] by `scale` >= 1: output [B, C, round(H*scale), round(W*scale)]."""
    if scale < 1:
        raise ValueError(f"upscale factor must be >= 1, got {scale}")
    return resize(x, scaled_size(x.shape[-2], x.shape[-1], scale), mode)
