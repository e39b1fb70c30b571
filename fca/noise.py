"""Camera noise: the synthetic real domain's noise model and the generator's noise bank.

The model (`NoiseConfig`, params `patches.noise`), per pixel and channel of an image x in [0, 1]:

- gaussian:          y = x + sigma * n,                        n ~ N(0, 1)
- poisson_gaussian:  y = gain * Poisson(x / gain) + sigma * n  (variance gain * x + sigma^2)

then clipped to [0, 1] and, with `jpeg_quality` > 0, rounded to 8 bits and passed through
a JPEG encode/decode at that quality (PIL, 4:2:0 chroma). `none` is no noise at all: the
input is returned as it is (the same tensor).

The patches stage applies it to R at the HR pixel grid and the referee to L_true at the LR
pixel grid, with the same per-pixel model (a camera that produces the LR image directly),
each patch drawing from a torch.Generator of its own seeded by (patches.seed, file name,
view) (`patch_generator`), so L_true is the same whenever it is computed.

The generator's noise option (`generator.noise: patches`, Real-SR style): `collect_noise_bank`
cuts LR-sized crops from the real training images, keeps the flat ones and takes out their
smooth part (`detrend`); `fca.models.generator_arch.Generator` adds randomly drawn ones to its output, scaled
to each pixel's brightness by the domain's noise level (`fit_noise_level`,
`generator.noise_scale: brightness`) or as they are (`constant`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from fca.config import param
from fca.frequency import to_luma, white_noise_variance
from fca.jpeg import jpeg_round_trip
from fca.kernels import conv_per_sample, gaussian

NOISE_TYPES = ("none", "gaussian", "poisson_gaussian")


@dataclass(frozen=True)
class NoiseConfig:
    """The synthetic real domain's camera noise; `type` picks the keys that belong."""

    VARIANTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "none": (),
        "gaussian": ("sigma", "jpeg_quality"),
        "poisson_gaussian": ("sigma", "gain", "jpeg_quality"),
    }
    type: str = param("none", choices=NOISE_TYPES)
    sigma: float | None = param(None, ge=0, le=1, help="Gaussian read noise, std in [0, 1] units")
    gain: float | None = param(None, gt=0, le=1, help="poisson_gaussian: shot-noise scale, variance gain * x")
    jpeg_quality: int | None = param(None, ge=0, le=100, help="JPEG round trip at this quality after the noise (0: off)")

    @property
    def active(self) -> bool:
        return self.type != "none"

    def as_dict(self) -> dict:
        """The keys that belong to `type` (what summary.json stores; `noise_from_dict` reads it back)."""
        return {"type": self.type} | {k: getattr(self, k) for k in self.VARIANTS[self.type]}


def noise_from_dict(raw: dict | None) -> NoiseConfig:
    """`NoiseConfig.as_dict` back (None or a missing entry: no noise)."""
    if not raw:
        return NoiseConfig()
    if raw.get("type") not in NoiseConfig.VARIANTS:
        raise ValueError(f"noise type {raw.get('type')!r}: expected one of {list(NoiseConfig.VARIANTS)}")
    return NoiseConfig(**{k: raw[k] for k in ("type", *NoiseConfig.VARIANTS[raw["type"]]) if k in raw})


def noise_variance(x: torch.Tensor, config: NoiseConfig) -> torch.Tensor:
    """The model's per-pixel variance at clean value x (before clipping and JPEG)."""
    if config.type == "none":
        return torch.zeros_like(x)
    var = torch.full_like(x, (config.sigma or 0.0) ** 2)
    if config.type == "poisson_gaussian":
        var = var + config.gain * x.clamp_min(0)
    return var


def add_noise(x: torch.Tensor, config: NoiseConfig, rng: torch.Generator) -> torch.Tensor:
    """x [..., 3, H, W] in [0, 1] -> the noisy image (same shape and dtype), every draw from `rng` (CPU).

    `none` returns x itself. Noise is drawn in float64 on the CPU whatever x's dtype, so the same rng
    gives the same image on any device."""
    if config.type == "none":
        return x
    x64 = x.detach().double().cpu()
    y = x64
    if config.type == "poisson_gaussian":
        y = torch.poisson(x64.clamp_min(0) / config.gain, generator=rng) * config.gain
    if config.sigma:
        y = y + config.sigma * torch.randn(x64.shape, generator=rng, dtype=torch.float64)
    y = y.clamp(0, 1)
    if config.jpeg_quality:
        y = jpeg_round_trip(y, config.jpeg_quality)
    return y.to(device=x.device, dtype=x.dtype)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text (the same in every process and Python version)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def patch_generator(seed: int, name: str, view: str) -> torch.Generator:
    """The torch.Generator of one patch's noise: seeded by (patches.seed, its file name, view)
    where view is `hr` (R), `lr` (L_true) or `oracle` (the referee's oracle LR)."""
    return torch.Generator().manual_seed(stable_seed("fca.noise", seed, name, view))


def apply_patch_noise(x: torch.Tensor, names: list[str] | tuple[str, ...], config: NoiseConfig, seed: int, view: str) -> torch.Tensor:
    """Each patch of x [N, 3, H, W] with noise from its own `patch_generator(seed, names[i], view)`; `none`: x itself."""
    if config.type == "none":
        return x
    if len(names) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} patches but {len(names)} names")
    return torch.stack([add_noise(x[i], config, patch_generator(seed, n, view)) for i, n in enumerate(names)])


@dataclass(frozen=True)
class PatchNoise:
    """The domain's noise for a list of patches (in order): `self(x, view)` is `apply_patch_noise`."""

    config: NoiseConfig
    seed: int
    names: tuple[str, ...]

    def __call__(self, x: torch.Tensor, view: str) -> torch.Tensor:
        return apply_patch_noise(x, self.names, self.config, self.seed, view)


# --------------------------------------------------------------------------- noise bank (generator.noise: patches)


def flat_crops(images: torch.Tensor, side: int, max_std: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The flat side x side crops of images [N, 3, H, W] in [0, 1] on a non-overlapping grid.

    Flat: every channel's std over the crop is below `max_std`, and no pixel is clipped (0 or 1:
    clipping removes noise). Returns (crops [M, 3, side, side] with each channel's mean removed,
    their stds [M] (the largest over the channels), the removed means [M, 3]), in image then
    raster order."""
    x = images.float()
    n, c, h, w = x.shape
    if h < side or w < side:
        raise ValueError(f"images of {h}x{w} are smaller than a {side}-pixel noise crop")
    ny, nx = h // side, w // side
    crops = x[:, :, : ny * side, : nx * side].reshape(n, c, ny, side, nx, side).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, side, side)
    std = crops.flatten(2).std(2).amax(1)
    clipped = ((crops <= 0) | (crops >= 1)).flatten(1).any(1)
    keep = (std < max_std) & ~clipped
    flat = crops[keep]
    means = flat.mean((2, 3), keepdim=True)
    return flat - means, std[keep], means.flatten(1)


def _some_flat_crops(images: torch.Tensor, side: int, max_std: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`flat_crops`, or one error naming the param to change when there are none."""
    found = flat_crops(images, side, max_std)
    if len(found[0]) == 0:
        raise ValueError(f"no flat {side}-pixel crops (every channel's std below {max_std}, nothing clipped) in the "
                         f"{images.shape[0]} real training images: raise generator.noise_max_std")
    return found


@dataclass(frozen=True)
class NoiseLevel:
    """The domain's white luma noise variance as a function of luma brightness mu: intercept + slope * mu
    (Poisson-Gaussian camera noise: read noise plus shot noise that grows with the signal).
    Beyond the brightness range of the flat crops it was fitted on the line is extrapolated, as
    the camera's model is: holding it at the range's ends gave a photo whose flat regions are all
    bright (astronaut, 0.53 .. 0.84) 2.3x the camera's noise in its shadows."""

    intercept: float
    slope: float

    def variance(self, mu: torch.Tensor) -> torch.Tensor:
        return (self.intercept + self.slope * mu).clamp_min(0.0)

    def as_list(self) -> list[float]:
        return [self.intercept, self.slope]


def fit_noise_level(images: torch.Tensor, side: int, max_std: float, bins: int = 16) -> NoiseLevel:
    """The noise level of real images [N, 3, H, W] from their flat crops (`flat_crops`): each crop's
    white luma variance (`white_noise_variance`) against its luma mean, a least-squares line.

    Why a line: with shot noise a bright tile is noisier than the flat crops' (often darker)
    average, so one variance for the domain under-subtracts the noise of textured tiles and the
    blur fitted to what remains comes out too sharp (presets/noisy.yaml: the bank's variance is
    0.7 of the textured tiles'). With a single brightness, or a line that falls with brightness
    (camera noise does not; crops of a narrow brightness range give such lines by chance), the
    fit is a constant, the crops' mean."""
    flat, _, means = _some_flat_crops(images, side, max_std)
    var = white_noise_variance(flat, bins)
    mu = to_luma(means.view(-1, 3, 1, 1)).flatten().double()
    constant = NoiseLevel(float(var.mean()), 0.0)
    if len(flat) < 2 or float(mu.std()) < 1e-3:
        return constant
    design = torch.stack([torch.ones_like(mu), mu], 1)
    intercept, slope = torch.linalg.lstsq(design, var.unsqueeze(1)).solution.flatten().tolist()
    if slope <= 0:
        return constant
    return NoiseLevel(float(intercept), float(slope))


def detrend(crops: torch.Tensor, sigma: float) -> torch.Tensor:
    """crops [M, C, P, P] less their Gaussian-smoothed copy (std `sigma` px, reflect-padded); 0: as they are.

    Why: a crop flat enough to be noise still holds smooth shading and blurred texture (on
    presets/noisy.yaml a third of the flat crops' power, and neighbouring pixels correlated at
    0.38 where the camera's noise is white). Smoothing at a few pixels keeps nearly all of
    white noise (97 % of its power at sigma 3) and any noise correlation shorter than that."""
    if sigma <= 0:
        return crops
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(crops.shape[-2:]) // 2) - 1)
    smooth = torch.from_numpy(gaussian(size, sigma)).to(crops)
    return crops - conv_per_sample(crops, smooth)


def collect_noise_bank(images: torch.Tensor, side: int, count: int, max_std: float, seed: int,
                       level: NoiseLevel | None = None, detrend_sigma: float = 0.0) -> torch.Tensor:
    """A bank of `count` zero-mean noise patches [count, 3, side, side] from the flat crops of the real
    images (`flat_crops`, then `detrend` at `detrend_sigma` px): a seeded random choice of them,
    cycled when there are fewer than `count`.

    level: None, the crops as they are; or the domain's noise level (`fit_noise_level`), and each
    crop is divided by the std `level` gives its own luma mean: unit-level noise with the
    camera's spatial and colour structure, which the generator scales to each pixel's
    brightness (`Generator.noise_for`). Why: a flat crop's noise is that of its brightness
    (shot noise), and flat regions are not the typical brightness of a scene."""
    flat, _, means = _some_flat_crops(images, side, max_std)
    flat = detrend(flat, detrend_sigma)
    if level is not None:
        var = level.variance(to_luma(means.view(-1, 3, 1, 1)).flatten())
        # A line fitted to few crops can reach 0 at a crop's brightness: no crop is scaled up more
        # than 10x beyond the median crop's level (such a crop's own noise was below the line's).
        var = var.clamp_min(0.01 * float(var.median()) + 1e-12)
        flat = flat / var.sqrt().view(-1, 1, 1, 1)
    order = torch.randperm(len(flat), generator=torch.Generator().manual_seed(stable_seed("fca.noise.bank", seed)))
    return flat[order[torch.arange(count) % len(flat)]].contiguous()


# --------------------------------------------------------------------------- the referee's view of a noise model


def noise_by_brightness(a: torch.Tensor, b: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The noise of two draws a, b [N, 3, h, w] of the same images (the same signal, independent
    noise): its per-pixel, per-channel variance E[(a - b)^2] / 2 in each luma-brightness bin of
    their mean ([bins] for edges [bins + 1]; NaN for an empty bin), and the horizontal lag-1
    correlation of a - b (0 for white noise).

    Why two draws: the referee sees a generator's noise without its internals, and a camera's
    without its noise-free image. Why bin by the mean: for Gaussian noise of one variance
    a - b is independent of a + b, so the binning selects no noise."""
    diff, mean = (a - b).double(), to_luma(((a + b) / 2).float()).double()
    sq = diff.pow(2).mean(1) / 2
    bin_of = torch.bucketize(mean.flatten(), edges.double()[1:-1])
    total = torch.zeros(len(edges) - 1, dtype=torch.float64).index_add_(0, bin_of, sq.flatten())
    count = torch.bincount(bin_of, minlength=len(edges) - 1).double()
    lag1 = float((diff[..., 1:] * diff[..., :-1]).mean() / diff.pow(2).mean().clamp_min(1e-30))
    return total / count, lag1
