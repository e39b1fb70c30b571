"""Super-resolution networks: the referee's small probe `SRNet` (docs/design.md, "SR probe") and
`EDSR`, the EDSR-baseline-style net that the train_sr stage trains as a product.

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

import math

import torch
from torch import nn

from fca.resample import upscale


class ResBlock(nn.Module):
    """conv 3x3 - ReLU - conv 3x3, scaled by `res_scale`, plus the identity (no batch norm,
    as in EDSR): [B, C, h, w] -> [B, C, h, w]."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = float(res_scale)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.res_scale == 1.0:  # no multiply: SRNet's numbers stay what they were
            return x + self.body(x)
        return x + self.body(x) * self.res_scale


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


# EDSR subtracts the training set's mean colour from its input (DIV2K's RGB mean, in [0, 1]).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def upsample_stages(scale: int) -> list[int]:
    """The pixel-shuffle factors of EDSR's upsampler: x2 stages for a power of two, else one x3
    stage for 3, else one stage of the whole scale (EDSR itself stops at 2, 3, 4)."""
    if scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    return [scale]


class Upsample(nn.Sequential):
    """conv (C -> f*f*C) + pixel shuffle by f, for each factor f of `upsample_stages(scale)`."""

    def __init__(self, scale: int, channels: int) -> None:
        layers: list[nn.Module] = []
        for f in upsample_stages(scale):
            layers += [nn.Conv2d(channels, channels * f * f, 3, padding=1), nn.PixelShuffle(f)]
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR-baseline (Lim et al. 2017): [B, 3, h, w] in [0, 1] -> [B, 3, s*h, s*w], not clamped.

    conv_first, `blocks` residual blocks without batch norm and a conv_after_body around a
    long skip, the pixel-shuffle upsampler, conv_last (BasicSR's names). With
    `bicubic_skip` the output is bicubic_up(lr) + the net's residual, with conv_last
    zero-initialised so that the untrained net is exactly bicubic upscaling (as SRNet):
    a demo-sized budget then refines bicubic instead of first re-learning it. Without it,
    the plain EDSR: mean colour subtracted at the input and added back at the output.
    """

    def __init__(self, scale: float, blocks: int = 16, channels: int = 64, res_scale: float = 1.0, bicubic_skip: bool = False) -> None:
        super().__init__()
        if float(scale) != int(scale) or int(scale) < 1:
            raise ValueError(f"EDSR: pixel shuffle needs an integer scale >= 1, got {scale}")
        if blocks < 1 or channels < 1:
            raise ValueError(f"EDSR: blocks and channels must be >= 1, got {blocks}, {channels}")
        self.scale, self.blocks, self.bicubic_skip = int(scale), int(blocks), bool(bicubic_skip)
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels, res_scale) for _ in range(blocks)])
        self.conv_after_body = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = Upsample(self.scale, channels)
        self.conv_last = nn.Conv2d(channels, 3, 3, padding=1)
        if self.bicubic_skip:
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def margin(self) -> int:
        """LR pixels around a tile that reach its output: each 3x3 conv at LR size reaches one
        pixel, the upsampler's and the last conv a fraction of one, bicubic up two. A tile
        computed with this margin equals the same region of the whole image (fca.upscale)."""
        lr_convs = 1 + 2 * self.blocks + 1
        hr_reach = sum(1 / f for f in _cumulative(upsample_stages(self.scale))) + 1 / self.scale
        return lr_convs + math.ceil(hr_reach) + (2 if self.bicubic_skip else 0)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(lr - self.mean)
        feat = feat + self.conv_after_body(self.body(feat))
        out = self.conv_last(self.upsample(feat))
        if self.bicubic_skip:
            return upscale(lr, self.scale, "bicubic") + out
        return out + self.mean


def _cumulative(factors: list[int]) -> list[int]:
    """The resolution (in LR units) at which each upsampler conv runs: 1, f1, f1*f2, ..."""
    out, r = [], 1
    for f in factors:
        out.append(r)
        r *= f
    return out
