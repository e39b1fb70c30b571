"""A small super-resolution network: the referee's downstream probe (docs/design.md, "SR probe").

EDSR-like body (conv head, `blocks` residual blocks of `channels`, conv) and an
ESPCN-style sub-pixel tail (one conv to 3*s*s channels, pixel shuffle by the integer
scale s) -- the cheapest upsampler, which matters for a probe trained three times on a
CPU -- plus a global bicubic skip:

    sr(lr) = bicubic_up(lr, s) + residual(lr)

The skip, with the last conv zero-initialised, makes the untrained net exactly bicubic
upscaling. With a small training budget the comparison between pair types then measures
what each kind of pairs teaches on top of a common, sensible starting point, instead of
how far each run got from a random init (and a tiny net does not spend its steps
re-learning the low frequencies bicubic already gets right).
"""

from __future__ import annotations

import torch
from torch import nn

from fca.resample import upscale


class ResBlock(nn.Module):
    """conv 3x3 - ReLU - conv 3x3, plus the identity: [B, C, h, w] -> [B, C, h, w]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRNet(nn.Module):
    """[B, 3, h, w] in [0, 1] -> [B, 3, s*h, s*w] (not clamped; `sr_predict` clamps)."""

    def __init__(self, scale: float, blocks: int = 3, channels: int = 32) -> None:
        super().__init__()
        if float(scale) != int(scale) or int(scale) < 1:
            raise ValueError(f"SRNet: pixel shuffle needs an integer scale >= 1, got {scale}")
        if blocks < 1 or channels < 1:
            raise ValueError(f"SRNet: blocks and channels must be >= 1, got {blocks}, {channels}")
        self.scale = int(scale)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)], nn.Conv2d(channels, channels, 3, padding=1))
        self.tail = nn.Conv2d(channels, 3 * self.scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(self.scale)
        # Start exactly at bicubic (see the module docstring).
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.head(lr)
        feat = feat + self.body(feat)
        residual = self.shuffle(self.tail(feat))
        return upscale(lr, self.scale, "bicubic") + residual
