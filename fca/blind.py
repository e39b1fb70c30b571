"""The practitioners' blind degradation recipe (Real-ESRGAN's), the baseline a learned degradation must beat.

Instead of learning how a camera degrades images, Real-ESRGAN (xinntao/Real-ESRGAN,
options/train_realesrgan_x4plus.yml) makes LR training images from HR ones by random
degradations drawn from wide ranges, hoping the real one is among them. One *order* is

    blur (a random kernel: Gaussian, generalized Gaussian, plateau, or sinc)
    -> resize by a random factor (up, down or keep, random interpolation)
    -> noise (Gaussian or Poisson, colour or grey)

The first order is followed by a JPEG round trip. With `second_order`, a second order with
milder ranges follows, and the recipe ends with [resize to the LR size + a sinc filter] and
a JPEG round trip in random order. Without it, the image is resized to the LR size after the
first JPEG. The last step always quantises to 8 bits.

What follows Real-ESRGAN where it matters for what the degradations look like:
- the resizes are torch's `F.interpolate` *without* antialiasing (not `fca.resample.resize`,
  which antialiases): the aliasing of a non-antialiased shrink is part of the recipe;
- the second order's resize factor is relative to the final LR size, the first's to the HR size;
- Poisson noise uses Real-ESRGAN's (skimage's) definition, see `add_poisson_noise`;
- generalized and plateau betas are drawn half the time below 1 and half the time above 1,
  so with the plateau range [1, 2] half the plateau kernels have beta exactly 1.

Every random choice comes from the `np.random.Generator` passed in (`rng`), so one seed gives
the same LR images bit for bit. The work is done on the CPU in float32 (as Real-ESRGAN; torch's
float64 depthwise convolution is some 50x slower), one image at a time (each image gets its
own draw and, along the way, its own size).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special

from fca.config import check_field, param
from fca.frequency import to_luma
from fca.kernels import anisotropic_gaussian
from fca.jpeg import jpeg_round_trip

# Real-ESRGAN's kernel families (kernel_list), in the order of `OrderConfig.kernel_probs`.
FAMILIES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
SMALL_SINC = 13  # sinc kernels smaller than this get a cutoff >= pi/3, larger ones >= pi/5


def _check_range(name: str, r: tuple[float, float], around: float | None = None) -> None:
    lo, hi = r
    if lo > hi:
        raise ValueError(f"{name} = {list(r)}: the first value must be <= the second")
    if around is not None and not lo <= around <= hi:
        raise ValueError(f"{name} = {list(r)}: must contain {around}")


def _check_probs(name: str, p: tuple[float, ...], n: int) -> None:
    if len(p) != n:
        raise ValueError(f"{name} = {list(p)}: expected {n} probabilities")
    if abs(sum(p) - 1.0) > 1e-6:
        raise ValueError(f"{name} = {list(p)}: must sum to 1 (sum {sum(p):.6g})")


def _check_declared(cfg: object) -> None:
    """Apply the param(...) constraints at construction too, not only through `build_config`."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(value):
            check_field(f, value, f.name)


@dataclass(frozen=True)
class OrderConfig:
    """One order of the recipe: blur, resize, noise. Defaults: Real-ESRGAN x4plus's first order."""

    blur_prob: float = param(1.0, ge=0, le=1, help="probability of blurring at all (Real-ESRGAN: 1 first, second_blur_prob 0.8 second)")
    kernel_probs: tuple[float, ...] = param((0.45, 0.25, 0.12, 0.03, 0.12, 0.03), ge=0, le=1,
                                            help=f"probabilities of the kernel families {list(FAMILIES)} (kernel_prob), sum 1")
    kernel_size: tuple[int, int] = param((7, 21), ge=3, le=51, odd=True, help="[lo, hi] of the kernel side, drawn uniformly among the odd sizes")
    sigma: tuple[float, float] = param((0.2, 3.0), gt=0, le=100, help="[lo, hi] of the kernels' sigma_x and sigma_y (px; blur_sigma)")
    beta_generalized: tuple[float, float] = param((0.5, 4.0), gt=0, le=100, help="[lo, hi] of the generalized Gaussian's beta (betag_range), contains 1")
    beta_plateau: tuple[float, float] = param((1.0, 2.0), gt=0, le=100, help="[lo, hi] of the plateau kernel's beta (betap_range), contains 1")
    sinc_prob: float = param(0.1, ge=0, le=1, help="probability that the kernel is a sinc (circular low-pass) instead")
    resize_probs: tuple[float, float, float] = param((0.2, 0.7, 0.1), ge=0, le=1, help="probabilities of resizing up, down, or keeping the size; sum 1")
    resize_range: tuple[float, float] = param((0.15, 1.5), gt=0, le=16, help="[lo, hi] of the resize factor (down: U(lo, 1), up: U(1, hi)), contains 1")
    gaussian_noise_prob: float = param(0.5, ge=0, le=1, help="probability of Gaussian noise; Poisson noise otherwise")
    noise_sigma: tuple[float, float] = param((1.0, 30.0), ge=0, le=255, help="[lo, hi] of the Gaussian noise's std, in 8-bit levels (of 255)")
    poisson_scale: tuple[float, float] = param((0.05, 3.0), ge=0, le=100, help="[lo, hi] of the Poisson noise's scale")
    grey_noise_prob: float = param(0.4, ge=0, le=1, help="probability that the noise is grey (the same in the three channels)")

    def __post_init__(self) -> None:
        _check_declared(self)
        _check_probs("kernel_probs", self.kernel_probs, len(FAMILIES))
        _check_probs("resize_probs", self.resize_probs, 3)
        for name in ("kernel_size", "sigma", "noise_sigma", "poisson_scale"):
            _check_range(name, getattr(self, name))
        for name in ("beta_generalized", "beta_plateau", "resize_range"):
            _check_range(name, getattr(self, name), around=1.0)


SECOND_ORDER = OrderConfig(
    blur_prob=0.8, sigma=(0.2, 1.5), resize_probs=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
    noise_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5),
)


@dataclass(frozen=True)
class BlindConfig:
    """Real-ESRGAN x4plus's degradation ranges (first order; the second with `second_order`)."""

    first: OrderConfig = param(OrderConfig(), help="the first order's blur, resize and noise")
    jpeg_quality: tuple[int, int] = param((30, 95), ge=1, le=100, help="[lo, hi] of the first JPEG's quality (jpeg_range), drawn as an integer")
    second_order: bool = param(False, help="add Real-ESRGAN's second order and its final sinc + JPEG (the full recipe)")
    second: OrderConfig = param(SECOND_ORDER, help="the second order's ranges (used with second_order)")
    jpeg_quality2: tuple[int, int] = param((30, 95), ge=1, le=100, help="[lo, hi] of the final JPEG's quality (jpeg_range2, second_order)")
    final_sinc_prob: float = param(0.8, ge=0, le=1, help="probability of the final sinc filter (second_order)")

    def __post_init__(self) -> None:
        _check_declared(self)
        _check_range("jpeg_quality", self.jpeg_quality)
        _check_range("jpeg_quality2", self.jpeg_quality2)


# ------------------------------------------------------------------------------------ kernels


def _check_size(size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta_deg: float) -> np.ndarray:
    """d^T S^-1 d on the K x K grid of offsets d = (x, y) = (column, row) from the centre.

    S has std sigma_x along the direction theta_deg (0 along x, 90 along y, as
    `fca.kernels.anisotropic_gaussian`'s theta) and sigma_y across it.
    """
    _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    r = size // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    t = math.radians(theta_deg)
    along = math.cos(t) * xx + math.sin(t) * yy  # coordinates in the kernel's principal axes
    across = -math.sin(t) * xx + math.cos(t) * yy
    return (along / sigma_x) ** 2 + (across / sigma_y) ** 2


def generalized_gaussian(size: int, sigma_x: float, sigma_y: float, theta_deg: float, beta: float) -> np.ndarray:
    """K x K generalized Gaussian exp(-0.5 (d^T S^-1 d)^beta), sum 1.

    beta = 1 is the Gaussian; beta < 1 has a sharper peak and heavier tails, beta > 1 is
    flatter on top with a steeper fall-off (Real-ESRGAN's generalized_iso / _aniso).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    k = np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta_deg) ** beta)
    return k / k.sum()


def plateau(size: int, sigma_x: float, sigma_y: float, theta_deg: float, beta: float) -> np.ndarray:
    """K x K plateau kernel 1 / (1 + (d^T S^-1 d)^beta), sum 1.

    Flat near the centre and falling off like (sigma / d)^(2 beta) far from it: heavy
    tails that a Gaussian does not have (Real-ESRGAN's plateau_iso / _aniso).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    k = 1.0 / (1.0 + _quadratic_form(size, sigma_x, sigma_y, theta_deg) ** beta)
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """K x K circular low-pass filter of angular cutoff `cutoff` (radians per pixel, in (0, pi]), sum 1.

    The ideal filter's impulse response, cutoff * J1(cutoff r) / (2 pi r), cut to K x K
    without a window: the ringing and overshoot it makes at edges is what Real-ESRGAN
    wants it for. Unlike the other kernels it has negative lobes.
    """
    _check_size(size)
    if not 0 < cutoff <= math.pi:
        raise ValueError(f"cutoff must be in (0, pi], got {cutoff}")
    h = size // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1].astype(np.float64)
    r = np.hypot(xx, yy)
    r[h, h] = 1.0  # placeholder, replaced by the limit below
    k = cutoff * special.j1(cutoff * r) / (2 * math.pi * r)
    k[h, h] = cutoff**2 / (4 * math.pi)  # lim r->0 of the above
    return k / k.sum()


def _categorical(rng: np.random.Generator, probs: tuple[float, ...]) -> int:
    """Index i with probability probs[i] (one uniform draw; categories of probability 0 never come up)."""
    edges = list(itertools.accumulate(probs))
    return min(bisect.bisect_right(edges, rng.uniform() * edges[-1]), len(probs) - 1)


def _draw_size(rng: np.random.Generator, size_range: tuple[int, int]) -> int:
    lo, hi = size_range
    return int(lo + 2 * rng.integers((hi - lo) // 2 + 1))


def _draw_beta(rng: np.random.Generator, beta_range: tuple[float, float]) -> float:
    """Half the time below 1, half above, as Real-ESRGAN (so both shapes are as common whatever the range)."""
    lo, hi = beta_range
    return float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi))


def _draw_cutoff(rng: np.random.Generator, size: int) -> float:
    """A sinc cutoff: U(pi/3, pi) for small kernels, U(pi/5, pi) from SMALL_SINC up (lower cutoffs need room)."""
    return float(rng.uniform(math.pi / 3 if size < SMALL_SINC else math.pi / 5, math.pi))


def draw_kernel(config: OrderConfig | BlindConfig, rng: np.random.Generator) -> dict:
    """Draw one kernel's description: `family` ("sinc" or one of FAMILIES), `size` and its parameters.

    The kernel itself is `make_kernel(description)`; drawing apart from building lets
    the statistics of many draws be checked cheaply. A BlindConfig means its first order.
    sinc: `cutoff`; the others: `sigma_x`, `sigma_y`, `theta_deg` (iso: sigma_y = sigma_x,
    theta 0; aniso: independent sigmas, theta ~ U(-180, 180)), and `beta` for the
    generalized and plateau families.
    """
    stage = config.first if isinstance(config, BlindConfig) else config
    size = _draw_size(rng, stage.kernel_size)
    if rng.uniform() < stage.sinc_prob:
        return {"family": "sinc", "size": size, "cutoff": _draw_cutoff(rng, size)}
    family = FAMILIES[_categorical(rng, stage.kernel_probs)]
    lo, hi = stage.sigma
    sigma_x = float(rng.uniform(lo, hi))
    if family.split("_")[-1] == "iso":
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y, theta = float(rng.uniform(lo, hi)), float(rng.uniform(-180.0, 180.0))
    info = {"family": family, "size": size, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta_deg": theta}
    if family.startswith("generalized"):
        info["beta"] = _draw_beta(rng, stage.beta_generalized)
    elif family.startswith("plateau"):
        info["beta"] = _draw_beta(rng, stage.beta_plateau)
    return info


def make_kernel(info: dict) -> np.ndarray:
    """The K x K kernel (float64, sum 1) that `draw_kernel` described."""
    family, size = info["family"], info["size"]
    if family == "sinc":
        return sinc_kernel(size, info["cutoff"])
    shape = (size, info["sigma_x"], info["sigma_y"], info["theta_deg"])
    if family in ("iso", "aniso"):
        return anisotropic_gaussian(*shape)
    if family.startswith("generalized"):
        return generalized_gaussian(*shape, info["beta"])
    if family.startswith("plateau"):
        return plateau(*shape, info["beta"])
    raise ValueError(f"unknown kernel family {family!r}; expected sinc or one of {list(FAMILIES)}")


def random_kernel(config: OrderConfig | BlindConfig, rng: np.random.Generator) -> np.ndarray:
    """One random blur kernel [K, K] (float64, sum 1) of an order's ranges (a BlindConfig: its first order)."""
    return make_kernel(draw_kernel(config, rng))


def blur(x: torch.Tensor, kernel: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Convolve every channel of x [B, C, H, W] with one K x K kernel: same size, reflect padding.

    Images too small to reflect a K x K kernel's border (Real-ESRGAN would fail there; the
    second order can shrink an image that far) are padded by replicating the edge instead.
    """
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    size = k.shape[-1]
    pad = size // 2
    c, h, w = x.shape[-3:]
    mode = "reflect" if pad < min(h, w) else "replicate"
    weight = k.flip(-1, -2).expand(c, 1, size, size)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), weight, groups=c)


# ------------------------------------------------------------------------------------ noise


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def _back(y: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.clip(y, 0.0, 1.0)).to(device=like.device, dtype=like.dtype)


def add_gaussian_noise(x: torch.Tensor, sigma: float, rng: np.random.Generator, grey: bool = False) -> torch.Tensor:
    """x [B, 3, H, W] in [0, 1] plus N(0, (sigma / 255)^2) per pixel, clipped to [0, 1].

    `sigma` is in 8-bit levels, as Real-ESRGAN's noise_range. `grey`: one noise image shared
    by the three channels (luminance noise), instead of independent noise per channel.
    """
    a = _as_numpy(x)
    shape = (a.shape[0], 1, *a.shape[2:]) if grey else a.shape
    return _back(a + rng.standard_normal(shape) * (sigma / 255.0), x)


def _levels(q: np.ndarray) -> float:
    """Real-ESRGAN's (skimage's) photon count per unit of value: 2^ceil(log2(number of distinct values))."""
    return float(2.0 ** math.ceil(math.log2(len(np.unique(q)))))


def add_poisson_noise(x: torch.Tensor, scale: float, rng: np.random.Generator, grey: bool = False) -> torch.Tensor:
    """x [B, 3, H, W] in [0, 1] plus Real-ESRGAN's Poisson noise times `scale`, clipped to [0, 1].

    Real-ESRGAN's definition (from skimage's random_noise), kept so the baseline is what
    practitioners train on: per image, q = x rounded to 8 bits, v = 2^ceil(log2(number of
    distinct values of q)), and the noise is scale * (Poisson(q v) / v - q), so its variance
    is scale^2 q / v. The "photon count" v depends on the picture, not on a camera: at most
    256 for 8-bit images (variance scale^2 q / 256 on richly textured ones), and far lower,
    so the noise far stronger, on flat images with few distinct values.
    `grey`: the noise is computed on the luma (BT.601) and shared by the three channels.
    """
    a = _as_numpy(x)
    src = to_luma(x.detach().to("cpu", torch.float64)).numpy()[:, None] if grey else a
    q = np.clip(np.round(src * 255.0), 0, 255) / 255.0
    noise = np.empty_like(q)
    for i in range(q.shape[0]):
        v = _levels(q[i])
        noise[i] = rng.poisson(q[i] * v) / v - q[i]
    return _back(a + scale * noise, x)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8-bit levels (multiples of 1/255), as an image file stores it."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


# ------------------------------------------------------------------------------------ the recipe


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Real-ESRGAN's resize: F.interpolate, no antialiasing (its aliasing is part of the recipe)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _random_mode(rng: np.random.Generator) -> str:
    return RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]


def _draw_factor(stage: OrderConfig, rng: np.random.Generator) -> float:
    kind = _categorical(rng, stage.resize_probs)  # up, down, keep
    lo, hi = stage.resize_range
    return float(rng.uniform(1.0, hi)) if kind == 0 else float(rng.uniform(lo, 1.0)) if kind == 1 else 1.0


def _add_random_noise(x: torch.Tensor, stage: OrderConfig, rng: np.random.Generator) -> torch.Tensor:
    if rng.uniform() < stage.gaussian_noise_prob:
        sigma = float(rng.uniform(*stage.noise_sigma))
        return add_gaussian_noise(x, sigma, rng, grey=bool(rng.uniform() < stage.grey_noise_prob))
    scale = float(rng.uniform(*stage.poisson_scale))
    return add_poisson_noise(x, scale, rng, grey=bool(rng.uniform() < stage.grey_noise_prob))


def _order(x: torch.Tensor, stage: OrderConfig, rng: np.random.Generator, base: tuple[int, int], rounding) -> torch.Tensor:
    """One order: blur, resize to `base` * a random factor (sizes rounded by `rounding`), noise."""
    if rng.uniform() < stage.blur_prob:
        x = blur(x, random_kernel(stage, rng))
    factor = _draw_factor(stage, rng)
    size = (max(1, rounding(base[0] * factor)), max(1, rounding(base[1] * factor)))
    x = _interpolate(x, size, _random_mode(rng))
    return _add_random_noise(x, stage, rng)


def _jpeg(x: torch.Tensor, quality: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    return jpeg_round_trip(x.clamp(0, 1), int(rng.integers(quality[0], quality[1] + 1)))


def _final_sinc(x: torch.Tensor, config: BlindConfig, rng: np.random.Generator) -> torch.Tensor:
    """Real-ESRGAN's last filter: with final_sinc_prob a sinc of cutoff U(pi/3, pi), else nothing."""
    if rng.uniform() >= config.final_sinc_prob:
        return x
    size = _draw_size(rng, config.second.kernel_size)
    return blur(x, sinc_kernel(size, float(rng.uniform(math.pi / 3, math.pi))))


def _degrade_one(x: torch.Tensor, scale: int, config: BlindConfig, rng: np.random.Generator) -> torch.Tensor:
    """One image [1, 3, H, W] float32 -> its LR [1, 3, H/scale, W/scale], 8-bit levels."""
    h, w = x.shape[-2:]
    lr_size = (h // scale, w // scale)
    x = _order(x, config.first, rng, (h, w), round)  # first factor: relative to the HR size
    x = _jpeg(x, config.jpeg_quality, rng)
    if not config.second_order:
        return quantize(_interpolate(x, lr_size, _random_mode(rng)))
    x = _order(x, config.second, rng, lr_size, int)  # second factor: relative to the LR size
    if rng.uniform() < 0.5:  # resize + sinc, then JPEG
        x = _final_sinc(_interpolate(x, lr_size, _random_mode(rng)), config, rng)
        x = _jpeg(x, config.jpeg_quality2, rng)
    else:  # JPEG, then resize + sinc
        x = _jpeg(x, config.jpeg_quality2, rng)
        x = _final_sinc(_interpolate(x, lr_size, _random_mode(rng)), config, rng)
    return quantize(x)


def blind_degrade(hr: torch.Tensor, scale: int, config: BlindConfig, rng: np.random.Generator) -> torch.Tensor:
    """HR images [N, 3, H, W] in [0, 1] -> LR [N, 3, H / scale, W / scale] by the blind recipe.

    Each image gets its own random degradation, drawn from `rng` in order, so a seed gives
    the same output bit for bit. H and W must be multiples of `scale` (the LR image is
    then exactly aligned with its HR). The output has hr's dtype and device, values
    in [0, 1] on 8-bit levels (multiples of 1/255).
    """
    if hr.dim() != 4 or hr.shape[1] != 3:
        raise ValueError(f"expected HR images [N, 3, H, W], got {tuple(hr.shape)}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {scale}")
    src = hr.detach().to("cpu", torch.float32)
    out = [_degrade_one(src[i : i + 1], scale, config, rng) for i in range(src.shape[0])]
    lr = torch.cat(out) if out else src.new_empty((0, 3, h // scale, w // scale))
    return lr.to(device=hr.device, dtype=hr.dtype)


def blind_pairs(
    hr: torch.Tensor, scale: int, config: BlindConfig, rng: np.random.Generator, copies: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR) training pairs: each HR image `copies` times (adjacent), each copy with its own degradation.

    More copies show an SR net more of the recipe's degradations per HR image.
    Returns lr [N * copies, 3, H / scale, W / scale] and hr [N * copies, 3, H, W].
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    hr_rep = hr.repeat_interleave(copies, dim=0)
    return blind_degrade(hr_rep, scale, config, rng), hr_rep
