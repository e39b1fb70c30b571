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

The generator's noise option (`generator.noise: patches`, Real-SR style): `flat_crops` cuts
LR-sized crops from the real training images, keeps those that hold noise alone and takes out
their smooth part (`detrend`); `collect_noise_bank` draws the bank from them, and
`fca.models.generator_arch.Generator` adds randomly drawn ones to its output, scaled per channel
to each pixel's brightness by the domain's noise level (`fit_noise_level`,
`generator.noise_scale: brightness`) or as they are (`constant`). `NoiseSpectrum` is what the
bank's noise puts into the spectral target's rings.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from fca.config import param
from fca.frequency import LUMA, polar_power, radial_cross_power, tiles_of, to_luma, white_noise_variance
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

FLAT_RATIO = 1.25  # generator.noise_flat_ratio's default
LEVEL_KNOTS = 6  # brightness knots of a NoiseLevel (per channel)
CLIPPED_SHARE = 0.005  # a crop with more of a channel's pixels at 0 or 1 is clipped (`flat_crops`)
# A crop holds noise only if its upper rings have at least this share of their mean power in their weakest
# orientation sector (`isotropy`). Noise has about the same power in every direction: the simulated camera's
# flat crops (demosaiced, JPEG) have a median share of 0.79 and 695 of 697 reach 0.5. Texture a blur left in
# one direction does not: a motion streak's flattest crops have a median share of 0.15, and taking their
# across-streak detail for noise (3.5 8-bit levels) emptied the signal target's upper rings and the streak's
# kernel came back a wide blob; the 50 of them that reach 0.5 hold 0.24 levels, below the 8-bit rounding.
ISOTROPY = 0.5


def is_clipped(crops: torch.Tensor) -> torch.Tensor:
    """[M, C, P, P] -> [M] bool: more than CLIPPED_SHARE of some channel's pixels at 0 or 1 (clipping takes noise out)."""
    return ((crops <= 0) | (crops >= 1)).flatten(2).float().mean(2).amax(1) > CLIPPED_SHARE


def channel_white_variance(x: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """Each channel's white variance (`white_noise_variance` of that channel alone): [N, 3, H, W] -> [N, 3] float64."""
    return torch.stack([white_noise_variance(x[:, c : c + 1], bins) for c in range(x.shape[1])], 1)


@dataclass(frozen=True)
class FlatCrops:
    """The noise-only crops of a set of real images (`flat_crops`)."""

    crops: torch.Tensor  # [M, 3, P, P]: each channel's mean removed, then detrended
    means: torch.Tensor  # [M, 3]: each channel's mean (its brightness)
    white: torch.Tensor  # [M, 3] float64: each channel's white variance (`channel_white_variance`)


def flat_crops(images: torch.Tensor, side: int, detrend_sigma: float = 0.0, flat_ratio: float = FLAT_RATIO,
               bins: int = 16) -> FlatCrops:
    """The crops of images [N, 3, H, W] in [0, 1] that hold noise and little else, found from the data.

    Every side x side crop on a non-overlapping grid (`tiles_of`) loses its channel means and is detrended (`detrend`
    at `detrend_sigma` px). Its *excess* is its luma variance over its white luma variance
    (`white_noise_variance`, the upper half of the rings): for noise it is a property of the
    noise's spectrum (about 1 for white noise, below 1 for sharpened noise), for any structure
    left it is larger, as structure lives in the lower rings. A crop is flat when its excess is at
    most `flat_ratio` times the 5th percentile's of all the crops, and it is not clipped (more than
    CLIPPED_SHARE of a channel's pixels at 0 or 1: clipping takes noise out; a few pixels
    beyond 2.5 std of strong noise take out little), not constant, and isotropic (`ISOTROPY`: texture
    that a blur left along one direction is not noise).

    Why not a std threshold: one set by hand must sit just above the camera's noise, which a
    user does not know; on a simulated camera whose noise std is 0.05, a 0.05 threshold kept 32
    of 5392 crops, the least noisy, and G's noise came out 0.6-0.9 of the camera's."""
    bins = min(bins, side // 2)  # a side-pixel crop fills side / 2 rings
    crops = tiles_of(images.float(), side).flatten(0, 1)
    clipped = is_clipped(crops)
    means = crops.mean((2, 3))
    crops = detrend(crops - means[..., None, None], detrend_sigma)
    luma_white = white_noise_variance(crops, bins)
    usable = ~clipped & (luma_white > 1e-12) & (isotropy(crops, bins) >= ISOTROPY)
    if not bool(usable.any()):
        return FlatCrops(crops[:0], means[:0], torch.zeros(0, 3, dtype=torch.float64))
    excess = to_luma(crops).flatten(1).double().var(1) / luma_white.clamp_min(1e-30)
    limit = flat_ratio * float(torch.quantile(excess[usable], 0.05))
    keep = usable & (excess <= limit)
    return FlatCrops(crops[keep], means[keep], channel_white_variance(crops[keep], bins))


def isotropy(crops: torch.Tensor, bins: int) -> torch.Tensor:
    """The upper half of each crop's rings: the power of its weakest of 4 orientation sectors over their mean
    (1 for isotropic content, near 0 for texture along one direction): [M, C, P, P] -> [M] float64."""
    upper = torch.cat([polar_power(crops[i : i + 256].double(), bins, 4)[:, bins // 2 :].mean(1) for i in range(0, crops.shape[0], 256)])
    return upper.min(1).values / upper.mean(1).clamp_min(1e-30)


def _resample_knots(kx: torch.Tensor, ky: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A piecewise-linear curve through (kx, ky) as LEVEL_KNOTS evenly spaced knots over its range
    (a range under 0.02: a constant over [0, 1])."""
    if len(kx) < 2 or float(kx[-1] - kx[0]) < 0.02:
        return torch.linspace(0, 1, LEVEL_KNOTS, dtype=torch.float64), torch.full((LEVEL_KNOTS,), float(ky.median()), dtype=torch.float64)
    grid = torch.linspace(float(kx[0]), float(kx[-1]), LEVEL_KNOTS, dtype=torch.float64)
    return grid, _piecewise(grid, kx, ky)


def _piecewise(x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear curve through knots (kx increasing, ky) at x. Beyond the knots it goes
    on along the least-squares line through all of them (one noisy end bin must not set the
    trend), kept within 1/4 .. 4 times the end knot's value."""
    i = torch.searchsorted(kx, x.contiguous()).clamp(1, len(kx) - 1)
    x0, x1, y0, y1 = kx[i - 1], kx[i], ky[i - 1], ky[i]
    y = y0 + (x - x0) * (y1 - y0) / (x1 - x0).clamp_min(1e-12)
    xc = kx - kx.mean()
    slope = (xc * ky).sum() / xc.pow(2).sum().clamp_min(1e-12)
    below = (ky[0] + (x - kx[0]) * slope).clamp(float(ky[0]) / 4, float(ky[0]) * 4)
    above = (ky[-1] + (x - kx[-1]) * slope).clamp(float(ky[-1]) / 4, float(ky[-1]) * 4)
    return torch.where(x < kx[0], below, torch.where(x > kx[-1], above, y))


LEVEL_BY = ("channel", "luma")  # what a NoiseLevel's curves are read at (`NoiseLevel.by`)
CAP_GRID = 9  # colours per axis of a NoiseLevel's colour cap (`tile_colour_noise`)
CAP_NEIGHBOURS = 16  # tiles nearest in colour whose white variances a cap colour reads
CAP_QUANTILE = 0.25  # which of them: a low quantile (texture only adds power; the least textured tiles are nearest the noise)


def colour_lookup(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of table [3, G, G, G] (per channel, indexed by R, G, B over [0, 1]) at the colours
    of x [..., 3, H, W]: the same shape, float64."""
    flat = x.detach().double().clamp(0, 1).movedim(-3, -1).reshape(-1, 3)
    grid = (flat[:, [2, 1, 0]] * 2 - 1).view(1, -1, 1, 1, 3)  # grid_sample's (x, y, z) index (W, H, D) = (B, G, R)
    out = F.grid_sample(table.to(device=x.device, dtype=torch.float64)[None], grid, mode="bilinear", align_corners=True)[0, :, :, 0, 0]
    return out.T.reshape(*x.shape[:-3], x.shape[-2], x.shape[-1], 3).movedim(-1, -3)


def level_brightness(x: torch.Tensor, by: str) -> torch.Tensor:
    """The brightness a `NoiseLevel` reads channel c's curve at, float64: x [..., 3, H, W] -> the same
    shape; `channel`: x itself, `luma`: the pixel's luma in every channel."""
    x = x.double()
    if by == "channel":
        return x
    luma = (x * torch.tensor(LUMA, dtype=torch.float64, device=x.device).view(3, 1, 1)).sum(-3, keepdim=True)
    return luma.expand_as(x)


@dataclass(frozen=True, eq=False)
class NoiseLevel:
    """The domain's noise variance as a function of brightness, per channel: for channel c a
    piecewise-linear curve through LEVEL_KNOTS knots (brightness `knots[c]`, variance `values[c]`),
    continued beyond them along the line that fits the knots best (within 1/4 .. 4 times the end value).
    `by` says which brightness the curves are read at: each channel's own value (`channel`) or the
    pixel's luma (`luma`, every channel's curve at the same brightness); `fit_noise_level` picks it.

    Why any shape and per channel: raw shot noise grows with the signal, but a tone curve
    (gamma) stretches the shadows, so in display values a camera's noise falls with brightness;
    white balance gives each channel its own gain, and a crop's colour sets each channel's
    brightness apart from its luma. A line in luma (the fit this replaces) turned such a camera's
    noise into one constant: 2.7x too low in its shadows, 2.4-3.5x too high in its highlights.

    Why `by`: where the channels' noise is drawn apart (noise added per channel) a channel's noise
    follows its own value; a camera mixes them. Demosaicing fills each pixel's missing colours from
    its neighbours' other colours, and 4:2:0 JPEG keeps chroma at a quarter of the pixels, so each
    channel's noise is mostly the pixel's luma noise: on the simulated camera (presets/camera.yaml)
    the flat crops' blue noise has no correlation with their blue value (-0.00 in log variance) and
    -0.79 with their luma, and curves read at each channel's value missed the camera's noise by
    0.85-1.5x at the crops' own colours."""

    knots: torch.Tensor  # [3, LEVEL_KNOTS] float64, increasing per channel
    values: torch.Tensor  # [3, LEVEL_KNOTS] float64, >= 0
    by: str = "channel"
    cap: torch.Tensor | None = None  # [3, CAP_GRID, CAP_GRID, CAP_GRID]: at most this variance at each colour (`capped`)

    def __post_init__(self) -> None:
        if self.by not in LEVEL_BY:
            raise ValueError(f"NoiseLevel.by = {self.by!r}: expected one of {list(LEVEL_BY)}")

    def variance(self, x: torch.Tensor) -> torch.Tensor:
        """Each pixel's noise variance, per channel: x [..., 3, H, W] -> the same shape (x's dtype)."""
        kx, ky = self.knots.to(x.device), self.values.to(x.device)
        b = level_brightness(x, self.by)
        out = torch.stack([_piecewise(b.select(-3, c).contiguous(), kx[c], ky[c]) for c in range(3)], -3)
        if self.cap is not None:
            out = torch.minimum(out, colour_lookup(self.cap, x))
        return out.clamp_min(0.0).to(x.dtype)

    def capped(self, cap: torch.Tensor) -> "NoiseLevel":
        """This level, at each colour at most `cap`'s variance there (`tile_colour_noise`).

        Why: the curves are read at one brightness, luma or a channel's value, but a camera's noise
        depends on the pixel's hue too (demosaicing mixes the bright channels' shot noise into a dark
        channel, whose tone curve is steep: on the simulated camera a cyan field is 1.7x as noisy as a
        grey one of the same luma, a red one 0.9x), and the flat crops are of the few colours that lie
        flat in the scenes (warm ones there), so at the other colours the curves were 1.2x the camera's
        noise. Every tile's upper rings hold the noise at the tile's colour, and texture there only
        adds power: so the tiles can lower the curves where they see less noise, never raise them."""
        return NoiseLevel(self.knots, self.values, self.by, cap.double())

    def of_means(self, means: torch.Tensor) -> torch.Tensor:
        """The variance at each crop's channel means [M, 3] -> [M, 3] float64."""
        return self.variance(means.double()[..., None, None])[..., 0, 0]

    def as_tensor(self) -> torch.Tensor:
        """[2, 3, LEVEL_KNOTS]: knots then values (the generator's `noise_level` buffer; `by` is `by_code`)."""
        # Filled by copies, not torch.stack: load_generator builds a skeleton under
        # `torch.device("meta")`, where stack goes through torch._refs and imports torch._dynamo
        # (measured 1.4 s of every command that loads a generator).
        out = torch.empty(2, *self.knots.shape)
        out[0].copy_(self.knots)
        out[1].copy_(self.values)
        return out

    @property
    def by_code(self) -> int:
        """`by` as the index in LEVEL_BY (the generator's `noise_level_by` buffer)."""
        return LEVEL_BY.index(self.by)

    @classmethod
    def from_tensor(cls, t: torch.Tensor, by_code: int = 0, cap: torch.Tensor | None = None) -> "NoiseLevel":
        """From the generator's buffers: `as_tensor`, `by_code` and the cap (all zeros: none)."""
        t = t.detach().double().cpu()
        cap = None if cap is None or not bool(cap.any()) else cap.detach().double().cpu()
        return cls(t[0], t[1], LEVEL_BY[int(by_code)], cap)

    @classmethod
    def constant(cls, variance: float = 1.0) -> "NoiseLevel":
        """The same variance at every brightness and channel ((1.0): a bank's crops as they are)."""
        # On the CPU whatever the default device: under load_generator's `torch.device("meta")`
        # linspace would import torch's symbolic shapes (1 s) to make a tensor with no values.
        knots = torch.linspace(0, 1, LEVEL_KNOTS, dtype=torch.float64, device="cpu").repeat(3, 1)
        return cls(knots, torch.full((3, LEVEL_KNOTS), float(variance), dtype=torch.float64, device="cpu"))

    def is_constant_one(self) -> bool:
        return bool((self.values == 1.0).all())


def fit_noise_level(found: FlatCrops) -> NoiseLevel:
    """The domain's noise level from its flat crops (`flat_crops`): per channel, the crops in up to
    six brightness bins of equal count (at least 8 crops each), each bin's median white variance
    at its median brightness, resampled to LEVEL_KNOTS knots (`NoiseLevel`). Medians: a crop
    with some structure left reads noisier, and a few such crops must not move the curve.

    The brightness is each channel's own mean or the crop's luma (`NoiseLevel.by`), whichever the
    crops follow more closely: the smaller median |log(white variance / the curve's)| over the crops
    and channels. Both fits have the same knots, so neither wins by having more of them."""
    if len(found.means) == 0:
        raise ValueError("fit_noise_level: no flat crops")
    fits = [_fit_level(found, by) for by in LEVEL_BY]
    return min(fits, key=lambda level: level_misfit(level, found))


def _fit_level(found: FlatCrops, by: str) -> NoiseLevel:
    """`fit_noise_level`'s curves with the brightness read `by` each channel's mean or the crops' luma."""
    brightness = level_brightness(found.means[..., None, None], by)[..., 0, 0]
    knots, values = [], []
    for c in range(3):
        mu, var = brightness[:, c], found.white[:, c].double()
        order = torch.argsort(mu)
        groups = torch.tensor_split(order, max(1, min(6, len(mu) // 8)))
        kx = torch.stack([mu[g].median() for g in groups])
        ky = torch.stack([var[g].median() for g in groups])
        kx, ky = _resample_knots(kx, ky)
        knots.append(kx)
        values.append(ky)
    return NoiseLevel(torch.stack(knots), torch.stack(values), by)


def level_misfit(level: NoiseLevel, found: FlatCrops) -> float:
    """The median |log(white variance / the level's)| of flat crops, over crops and channels (0: every crop on the curve)."""
    predicted = level.of_means(found.means).clamp_min(1e-30)
    return float((found.white.double().clamp_min(1e-30) / predicted).log().abs().median())


def tile_colour_noise(images: torch.Tensor, side: int, bins: int = 16) -> torch.Tensor:
    """The noise variance the tiles of images [N, 3, H, W] show at each colour, per channel: a table
    [3, CAP_GRID, CAP_GRID, CAP_GRID] over R, G, B in [0, 1] (`colour_lookup`), each entry the CAP_QUANTILE
    quantile of the white variances (`channel_white_variance`: the upper half of the rings) of the
    CAP_NEIGHBOURS unclipped side-pixel tiles nearest in mean colour. Used as `NoiseLevel.capped`'s cap:
    a tile's texture only adds to its upper rings, so the least textured tiles of a colour are the
    nearest to its noise, and where the nearest tiles are far (a colour the scenes lack) it is their
    noise. Why a low quantile, not the median: most tiles of a scene hold texture; on the simulated
    camera (presets/camera.yaml) the level capped by the 16 tiles' median was 1.10x the camera's pixel
    noise on the validation scenes (1.04-1.16 by brightness) and by their lower quartile 1.00x
    (0.93-1.10); the flat-crop curves alone 1.29x (docs/results.md). A quartile of 16 pure-noise tiles
    reads a few per cent under their noise (each tile's white variance scatters by about that)."""
    bins = min(bins, side // 2)
    tiles = tiles_of(images.float(), side).flatten(0, 1)
    tiles = tiles[~is_clipped(tiles)]
    if len(tiles) == 0:
        raise ValueError("tile_colour_noise: every tile is clipped")
    means = tiles.mean((2, 3)).double()
    white = channel_white_variance(tiles - tiles.mean((2, 3), keepdim=True), bins)
    axis = torch.linspace(0, 1, CAP_GRID, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    k = min(CAP_NEIGHBOURS, len(means))
    # A few grid colours at a time: the distances of all 729 to a large set's tiles would not fit in memory.
    nearest = torch.cat([torch.cdist(grid[i : i + 32], means).topk(k, largest=False).indices for i in range(0, len(grid), 32)])
    return white[nearest].quantile(CAP_QUANTILE, dim=1).T.reshape(3, CAP_GRID, CAP_GRID, CAP_GRID)


def detrend(crops: torch.Tensor, sigma: float) -> torch.Tensor:
    """crops [M, C, P, P] less their Gaussian-smoothed copy (std `sigma` px, reflect-padded); 0: as they are.

    Why: a crop flat enough to be noise still holds smooth shading and blurred texture (on
    presets/noisy.yaml a third of the flat crops' power, and neighbouring pixels correlated at
    0.38 where the camera's noise is white). Smoothing at a few pixels keeps nearly all of
    white noise (97 % of its power at sigma 3) and any noise correlation shorter than that."""
    if sigma <= 0 or len(crops) == 0:
        return crops
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(crops.shape[-2:]) // 2) - 1)
    smooth = torch.from_numpy(gaussian(size, sigma)).to(crops)
    return crops - conv_per_sample(crops, smooth)


def collect_noise_bank(found: FlatCrops, count: int, seed: int, level: NoiseLevel | None = None) -> torch.Tensor:
    """A bank of `count` zero-mean noise patches [count, 3, P, P] from flat crops (`flat_crops`): a
    seeded random choice of them, cycled when there are fewer than `count`.

    level: None, the crops as they are; or the domain's noise level (`fit_noise_level`), and each
    crop's channel is divided by the std `level` gives that channel's mean: unit-level noise
    with the camera's spatial and cross-channel structure, which the generator scales to each
    pixel's brightness (`Generator.noise_for`). Why: a flat crop's noise is that of its
    brightness, and flat regions are not the typical brightness of a scene."""
    if len(found.crops) == 0:
        raise ValueError("collect_noise_bank: no flat crops")
    crops = found.crops
    if level is not None:
        var = level.of_means(found.means)
        # A curve fitted to few crops can come near 0 at a crop's brightness: no crop is scaled up
        # more than 10x beyond the median crop's level (such a crop's own noise was below the curve).
        var = var.clamp_min(0.01 * float(var.median()) + 1e-12)
        crops = crops / var.sqrt().float()[..., None, None]
    order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(stable_seed("fca.noise.bank", seed)))
    return crops[order[torch.arange(count) % len(crops)]].contiguous()


@dataclass(frozen=True, eq=False)
class NoiseSpectrum:
    """What a noise bank adds to a tile of given channel means, in the spectral target's terms:
    the luma ring power (`radial_power`) and luma variance of the bank's noise at that brightness.

    cross [3, 3, bins]: the bank's mean channel cross-spectra (`radial_cross_power`); cov [3, 3]:
    its mean channel covariance. At a tile with channel noise stds s (`level`), the noise's luma
    ring power is sum_cc' w_c w_c' s_c s_c' cross[c, c'] (w: luma weights).

    Why the measured spectrum and not white noise of the measured level: a camera's noise is
    demosaiced, sharpened and compressed, so its power is not flat over the rings; subtracting a
    flat level from R's rings took out too much at the top and the fitted blur came out 1.6x
    too wide on a simulated camera."""

    level: NoiseLevel
    cross: torch.Tensor
    cov: torch.Tensor

    @property
    def negligible(self) -> bool:
        """Whether the noise is below one 8-bit level (std 1/255) at every brightness and channel: the
        rounding of 8-bit photos, not a camera's noise. The trainer then adds none and fits the blur
        as without noise. Taking it out of the spectral target only empties the top rings of a
        blurred domain (where the rounding is all there is) and raises the loss's floor over them,
        which widened the kernels of noise-free domains (the default's cov error 0.031 -> 0.067);
        adding it cost the mixed domain 0.7 dB of LR PSNR against L_true (6.22 -> 5.51 dB over the
        best single kernel)."""
        return bool((self.level.values * self.cov.diagonal().max() <= (1 / 255) ** 2).all())

    def _scaled(self, tiles: torch.Tensor) -> torch.Tensor:
        """luma weight times the noise std per channel of each tile [M, 3, h, w]: [M, 3] float64. The
        std is the root of the level's variance averaged over the tile's pixels, a clipped pixel
        (0 or 1) counting as none: a tile's brightness varies, and a camera's clipped highlights
        and shadows hold no noise."""
        x = tiles.detach().double().cpu()
        var = self.level.variance(x) * ((x > 0) & (x < 1))
        return (torch.tensor(LUMA, dtype=torch.float64) * var.mean((2, 3)).sqrt()).to(tiles.device)

    def ring_power(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tiles [M, 3, h, w] -> [M, bins] the noise's luma ring power in each."""
        a = self._scaled(tiles)
        return torch.einsum("mc,md,cdb->mb", a, a, self.cross.to(a))

    def luma_variance(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tiles [M, 3, h, w] -> [M] the noise's luma variance in each."""
        a = self._scaled(tiles)
        return torch.einsum("mc,md,cd->m", a, a, self.cov.to(a))


def noise_spectrum(bank: torch.Tensor, level: NoiseLevel | None, bins: int) -> NoiseSpectrum:
    """The `NoiseSpectrum` of a bank [M, 3, P, P] (unit-level with `level`, as they are with None)."""
    x = bank.double()
    cross = radial_cross_power(x, bins).mean(0)
    flat = x.flatten(2)
    flat = flat - flat.mean(2, keepdim=True)
    cov = torch.einsum("mcp,mdp->cd", flat, flat) / (flat.shape[0] * flat.shape[2])
    return NoiseSpectrum(level if level is not None else NoiseLevel.constant(), cross, cov)


def neighbour_correlation(noise: torch.Tensor) -> tuple[float, float]:
    """The correlation of horizontally and vertically neighbouring pixels of zero-mean noise [N, C, H, W]
    (0, 0 for white noise; demosaicing and JPEG make a camera's positive)."""
    x = noise.double()
    power = x.pow(2).mean().clamp_min(1e-30)
    return float((x[..., 1:] * x[..., :-1]).mean() / power), float((x[..., 1:, :] * x[..., :-1, :]).mean() / power)


def channel_correlation(noise: torch.Tensor) -> torch.Tensor:
    """The correlation matrix [3, 3] float64 of zero-mean noise [N, 3, H, W]'s channels (identity for noise drawn
    per channel; near 1 off the diagonal where a camera's noise is mostly its luma's)."""
    flat = noise.double().transpose(0, 1).flatten(1)
    cov = flat @ flat.T / flat.shape[1]
    std = cov.diagonal().sqrt().clamp_min(1e-30)
    return cov / std[:, None] / std[None, :]


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
    return total / count, neighbour_correlation(diff)[0]
