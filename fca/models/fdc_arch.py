"""Frequency Density Comparator (FDC): a Siamese encoder whose score difference orders densities.

C(a, b) = mean(E(a)) - mean(E(b)) > 0 means `a` is denser in high frequencies than
`b` (docs/design.md, "Frequency Density Comparator (FDC)"). E maps [B, 3, H, W] to a
[B, 1, H/8, W/8] map; any H, W that are multiples of 8 work (others are floored by
the strided convs), so an LR generator output and a real crop of another size can
be compared.

Choices that are ours:
- The three parallel first convs are 1x3, 3x1 and 3x3 (as in the generator). The
  paper's figure draws three 1x3 kernels, but three parallel convs of one shape
  are one conv with more channels, and a horizontal-only front end is blind to
  vertical frequencies, which a radial density needs.
- Reflect padding for the first convs: with 32 px inputs the 4x4 map is mostly
  border cells, and zero padding of the image would turn its brightness into fake
  edges there. Inside, zero padding (reflect-padding 96 feature maps costs ~40 %
  of the step time on a CPU; the features are zero-mean-ish after BatchNorm).
- `normalize_input`: each image is standardised (minus its mean, over its std)
  before the encoder. A frequency density is normalised power, so it does not
  change with brightness or contrast; building that in removes the easiest
  shortcut (gradient energy) a conv net takes instead of spectral shape.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_STD_FLOOR = 1e-3  # a flat patch must not blow up to noise


class _FirstConvs(nn.Module):
    """Three parallel convs (1x3, 3x1, 3x3), concatenated: [B, 3, H, W] -> [B, 3*ch, H, W].

    Run as one 3x3 conv whose first and second thirds of filters are masked to a
    row and a column: the same function as three convs and a concat, in one op.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 3 * channels, 3, padding=1, padding_mode="reflect")
        mask = torch.zeros(3 * channels, 1, 3, 3)
        mask[:channels, :, 1, :] = 1.0  # 1x3
        mask[channels : 2 * channels, :, :, 1] = 1.0  # 3x1
        mask[2 * channels :] = 1.0  # 3x3
        self.register_buffer("mask", mask, persistent=False)
        with torch.no_grad():
            self.conv.weight.mul_(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.conv.weight * self.mask, self.conv.bias)


class FDC(nn.Module):
    """Siamese frequency density comparator.

    channels: width of the encoder; each first conv has `channels` outputs.
    normalize_input: standardise each image (per-image mean and std over C, H, W) first.
    """

    def __init__(self, channels: int = 64, normalize_input: bool = True):
        super().__init__()
        if channels < 1:
            raise ValueError(f"FDC channels must be >= 1, got {channels}")
        self.normalize_input = normalize_input
        layers: list[nn.Module] = [_FirstConvs(channels), nn.LeakyReLU(0.2)]
        width = 3 * channels
        for _ in range(3):
            layers += [
                nn.Conv2d(width, channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.LeakyReLU(0.2),
            ]
            width = channels
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 1, H/8, W/8] density map (H, W >= 8)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"FDC.encode expects [B, 3, H, W], got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 8:
            raise ValueError(f"FDC.encode needs images of at least 8x8, got {tuple(x.shape[-2:])}")
        if self.normalize_input:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / std.clamp_min(_STD_FLOOR)
        return self.body(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B]: the encoder map averaged over space (higher = denser)."""
        return self.encode(x).mean(dim=(1, 2, 3))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """C(a, b) = score(a) - score(b): [B, 3, Ha, Wa], [B, 3, Hb, Wb] -> [B].

        Same-sized inputs go through the encoder as one batch, so in training mode
        BatchNorm sees both sides together and C(a, a) is exactly 0.
        """
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"FDC compares pairs: batch sizes differ ({a.shape[0]} vs {b.shape[0]})")
        if a.shape == b.shape:
            s = self.score(torch.cat([a, b], dim=0))
            return s[: a.shape[0]] - s[a.shape[0] :]
        return self.score(a) - self.score(b)


def build_fdc(channels: int = 64, normalize_input: bool = True) -> FDC:
    """The FDC for a config (explicit construction, no registry)."""
    return FDC(channels=channels, normalize_input=normalize_input)
