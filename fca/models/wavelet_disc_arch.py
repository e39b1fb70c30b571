"""Wavelet discriminator (docs/design.md, "Wavelet discriminator (WD)").

A one-level Haar DWT splits the image into a low-pass band (LL) and three
high-pass bands (LH, HL, HH). Only the high bands go into a four-layer LSGAN
patch discriminator, so the adversarial signal is about texture and edges, not
colour or brightness, which the bicubic path already gets right.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
with warnings.catch_warnings():
    # pytorch_wavelets imports pkg_resources, which warns on every start; nothing we can act on.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from pytorch_wavelets import DWTForward


class HaarHighBands(nn.Module):
    """[B, C, H, W] -> [B, 3C, ceil(H/2), ceil(W/2)]: the LH, HL, HH Haar bands (the LL band is dropped)."""

    def __init__(self):
        super().__init__()
        self.dwt = DWTForward(J=1, wave="haar", mode="zero")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The wavelet filters are fp32 buffers: run outside autocast in fp32.
        with torch.autocast(x.device.type, enabled=False):
            _, (high,) = self.dwt(x.float())  # high: [B, C, 3, H/2, W/2]
        return high.flatten(1, 2)


class WaveletDiscriminator(nn.Module):
    """x [B, C, H, W] -> patch scores [B, 1, H/8, W/8] (LSGAN: real -> 1, fake -> 0).

    Four conv layers on the high bands: 3C -> c (stride 1), c -> 2c (stride 2),
    2c -> 4c (stride 2), 4c -> 1.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64):
        super().__init__()
        c = channels
        self.bands = HaarHighBands()
        self.net = nn.Sequential(
            nn.Conv2d(3 * in_channels, c, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * c, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.bands(x))
