"""A simulated camera: a real domain whose answer is known.

A photo is not "HR convolved with a Gaussian plus white noise"; a camera is a pipeline and an
SR model trained on pairs has to have seen each stage's mark. `camera(x, config, rng)` takes
clean images x [N, 3, H, W] in [0, 1] (display values, sRGB-like) through:

1. to linear light: x ** gamma, divided by the white-balance gains (which the ISP multiplies
   back in step 5, so a clean grey stays grey); the raw red and blue are darker than green,
   as on a real sensor under daylight, and noisier relative to their signal;
2. optics: a PSF (`psf_kernel`: Gaussian, anisotropic Gaussian, defocus disk, motion line, or a
   weighted sum of two of them, e.g. a sharp core plus a wide halo), per channel, reflect padding;
3. sensor: an RGGB Bayer mosaic (`mosaic`) -> raw [N, 1, H, W], and in that linear raw domain
   shot noise (variance shot_gain * signal, the Gaussian approximation of Poisson) plus read
   noise (variance read_std^2), clipped at 0 (`raw_noise`);
4. demosaicing (`demosaic`: bilinear, or Malvar-He-Cutler 2004 gradient-corrected): it spreads
   each raw pixel's noise to its neighbours and across channels, so the photo's noise is not
   white, nor independent per channel, though the raw noise is;
5. white balance (per-channel gains), clip to [0, 1], tone curve x ** (1 / gamma);
6. sharpening: an unsharp mask (amount, Gaussian radius; amount 0 = off), which overshoots at
   edges and amplifies the noise's high frequencies;
7. JPEG at `jpeg_quality` with chroma `jpeg_subsampling` (`fca.jpeg.jpeg_round_trip`), or with
   quality 0 just 8-bit quantisation.

Every length (PSF, sharpening radius) is in pixels of the grid the camera sees. The referee's
view of it: R = camera(I) is the photo of a scene I, and L_true = camera_lr(I, s) =
camera(down(I)), the same camera filming the scene at an s times coarser pixel pitch, so it
applies every stage again at LR pixels (the LR photo's blur, noise and JPEG blocks are as large
in LR pixels as R's are in HR pixels). R and L_true take independent noise draws (different
rngs). The oracle training pairs for SR are (camera(down(X)), camera(X)) on the training scenes X.

Noise is drawn in float64 on the CPU from the `torch.Generator` passed in, whatever x's dtype
and device, so one seed gives one photo, bit for bit.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fca.config import param
from fca.jpeg import SUBSAMPLINGS, jpeg_round_trip, to_8bit
from fca.kernels import anisotropic_gaussian, conv_per_sample, gaussian
from fca.resample import downscale

PSF_FAMILIES = ("gaussian", "anisotropic", "disk", "motion")
PSF_TYPES = ("none", *PSF_FAMILIES, "sum")
DEMOSAICS = ("bilinear", "malvar")
SUPERSAMPLE = 16  # sub-pixel samples per pixel side (disk) or per pixel of length (motion): anti-aliasing
GAUSS_TRUNCATE = 4.0  # a Gaussian PSF's kernel reaches this many sigmas (3 would lose 3 % of its variance)


@dataclass(frozen=True)
class CameraConfig:
    """A simulated camera (`camera`); the default looks like a small-sensor phone camera at about ISO 400.

    Each PSF family reads its own fields (gaussian: sigma; anisotropic: sigma_x, sigma_y, theta_deg;
    disk: radius; motion: length, angle_deg), so switching `psf` needs no other change. The default
    PSF, 0.6 of a Gaussian core (sigma 1.5) plus 0.4 of a defocus disk (radius 4), has an effective
    sigma of 1.73 px (`fca.kernels.effective_sigma`). Its noise (shot_gain 0.004, read_std 0.004)
    is, in the final 8-bit photo of a flat grey, a std of about 14, 15, 12 and 11 / 255 at grey levels
    0.1, 0.2, 0.5 and 0.8 (the gamma curve amplifies the shadows' noise, Malvar demosaicing and the
    sharpening raise it, JPEG lowers it); shot_gain 0.01, read_std 0.005 gives 17 to 21 / 255."""

    gamma: float = param(2.2, ge=1, le=4, help="tone curve: linear = display ** gamma, display = linear ** (1 / gamma)")
    wb_gains: tuple[float, float, float] = param((2.0, 1.0, 1.6), gt=0, le=16, help="white-balance gains (R, G, B) the ISP multiplies raw by")
    psf: str = param("sum", choices=PSF_TYPES, help="optics PSF: one family, a weighted sum of two (sum_of), or none")
    sigma: float = param(1.5, gt=0, le=20, help="gaussian: std (px)")
    sigma_x: float = param(2.0, gt=0, le=20, help="anisotropic: std along theta_deg (px)")
    sigma_y: float = param(1.0, gt=0, le=20, help="anisotropic: std across theta_deg (px)")
    theta_deg: float = param(0.0, ge=-180, le=180, help="anisotropic: direction of sigma_x, degrees (0: along x, 90: along y)")
    radius: float = param(4.0, gt=0, le=20, help="disk: radius of the flat-top defocus disk (px)")
    length: float = param(7.0, ge=0, le=40, help="motion: length of the line (px)")
    angle_deg: float = param(0.0, ge=-180, le=180, help="motion: direction of the line, degrees (0: along x, 90: along y)")
    sum_of: tuple[str, str] = param(("gaussian", "disk"), choices=PSF_FAMILIES, help="sum: the two families added (two different ones)")
    sum_weight: float = param(0.6, ge=0, le=1, help="sum: weight of the first family; the second gets 1 - sum_weight")
    shot_gain: float = param(0.004, ge=0, le=1, help="shot noise: variance shot_gain * linear raw signal")
    read_std: float = param(0.004, ge=0, le=1, help="read noise: std in linear raw units")
    demosaic: str = param("malvar", choices=DEMOSAICS, help="bilinear, or Malvar-He-Cutler gradient-corrected interpolation")
    sharpen_amount: float = param(0.5, ge=0, le=10, help="unsharp mask: x + amount * (x - blur(x)); 0: off")
    sharpen_radius: float = param(1.0, gt=0, le=20, help="unsharp mask: std of its Gaussian blur (px)")
    jpeg_quality: int = param(85, ge=0, le=100, help="JPEG quality 1..100; 0: no JPEG, only 8-bit quantisation")
    jpeg_subsampling: str = param("4:2:0", choices=SUBSAMPLINGS, help="JPEG chroma subsampling")

    def __post_init__(self) -> None:
        if self.psf == "sum" and self.sum_of[0] == self.sum_of[1]:
            raise ValueError(f"sum_of = {list(self.sum_of)}: a sum needs two different families "
                             "(two Gaussians: gaussian plus an anisotropic one with sigma_x = sigma_y)")


# --------------------------------------------------------------------------- optics


def _odd_size(extent: float) -> int:
    """The odd kernel side that reaches `extent` px from the centre."""
    return 2 * max(0, math.ceil(extent - 1e-9)) + 1


def disk_psf(radius: float) -> np.ndarray:
    """A flat-top defocus disk of `radius` px, sum 1: each pixel's weight is the fraction of its area
    inside the circle (SUPERSAMPLE^2 sub-pixel samples), so the edge is anti-aliased and the inside flat.

    Its second moment is r^2 / 4 per axis (the continuous disk's) plus about 1/12 px^2: integrating
    over each pixel's area is a convolution with a 1 px box (variance 1/12) before sampling."""
    if radius <= 0:
        raise ValueError(f"disk radius must be positive, got {radius}")
    size = _odd_size(radius + 0.5)
    r = size // 2
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5  # sub-pixel offsets in (-0.5, 0.5)
    pos = (np.arange(-r, r + 1)[:, None] + sub[None, :]).ravel()  # [size * SUPERSAMPLE]
    inside = (pos[:, None] ** 2 + pos[None, :] ** 2) <= radius**2
    k = inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))
    return k / k.sum()


def motion_psf(length: float, angle_deg: float) -> np.ndarray:
    """Linear motion: a line of `length` px through the centre at `angle_deg` (0 along x, 90 along y,
    as `fca.kernels.anisotropic_gaussian`'s theta), sum 1.

    SUPERSAMPLE points per pixel of length, each split between its four nearest pixels by bilinear
    weights (anti-aliased, not a staircase; unlike `fca.kernels.motion_kernel` the line is not
    widened by a Gaussian). Second moment: length^2 / 12 along the line, plus at most 1/6 px^2 per
    axis from the bilinear split; length 0 is the identity."""
    if length < 0:
        raise ValueError(f"motion length must be >= 0, got {length}")
    size = _odd_size(length / 2 + 1)
    r = size // 2
    n = max(1, math.ceil(length * SUPERSAMPLE))
    t = ((np.arange(n) + 0.5) / n - 0.5) * length  # midpoints of n equal pieces of the line
    a = math.radians(angle_deg)
    rows, cols = r + t * math.sin(a), r + t * math.cos(a)
    k = np.zeros((size, size))
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            np.add.at(k, (np.clip(r0 + dr, 0, size - 1), np.clip(c0 + dc, 0, size - 1)), wr * wc)
    return k / k.sum()


def _centre_pad(k: np.ndarray, size: int) -> np.ndarray:
    p = (size - k.shape[0]) // 2
    return np.pad(k, p)


def family_psf(family: str, config: CameraConfig) -> np.ndarray:
    """The kernel of one PSF family with its parameters from `config` (odd size, sum 1, float64)."""
    if family == "gaussian":
        return gaussian(_odd_size(GAUSS_TRUNCATE * config.sigma), config.sigma)
    if family == "anisotropic":
        size = _odd_size(GAUSS_TRUNCATE * max(config.sigma_x, config.sigma_y))
        return anisotropic_gaussian(size, config.sigma_x, config.sigma_y, config.theta_deg)
    if family == "disk":
        return disk_psf(config.radius)
    if family == "motion":
        return motion_psf(config.length, config.angle_deg)
    raise ValueError(f"unknown PSF family {family!r}; expected one of {list(PSF_FAMILIES)}")


def psf_kernel(config: CameraConfig) -> np.ndarray:
    """The camera's optics PSF as a K x K array: K odd, non-negative, sum 1 (`none`: the 1 x 1 identity).

    `sum` is sum_weight * first + (1 - sum_weight) * second, the smaller centre-padded to the larger."""
    if config.psf == "none":
        return np.ones((1, 1))
    if config.psf != "sum":
        return family_psf(config.psf, config)
    a, b = (family_psf(f, config) for f in config.sum_of)
    size = max(a.shape[0], b.shape[0])
    k = config.sum_weight * _centre_pad(a, size) + (1 - config.sum_weight) * _centre_pad(b, size)
    return k / k.sum()


def optics_blur(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """x [N, C, H, W] convolved with `kernel` per channel, reflect padding (same size); a 1 x 1 kernel: x itself."""
    if kernel.shape == (1, 1):
        return x
    return conv_per_sample(x, torch.from_numpy(np.ascontiguousarray(kernel)).to(x.dtype))


# --------------------------------------------------------------------------- tone and colour


def to_linear(x: torch.Tensor, gamma: float, wb_gains: tuple[float, float, float]) -> torch.Tensor:
    """Display values x [N, 3, H, W] (clipped to [0, 1]) -> the linear light the sensor saw: x ** gamma / gains.

    Dividing by the gains the ISP multiplies back (`white_balance`) keeps a scene's colours."""
    return x.clamp(0, 1) ** gamma / _per_channel(wb_gains, x)


def white_balance(x: torch.Tensor, wb_gains: tuple[float, float, float]) -> torch.Tensor:
    """x [N, 3, H, W] with each channel multiplied by its gain (R, G, B); no clipping."""
    return x * _per_channel(wb_gains, x)


def tone_curve(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Linear x -> display values: clip to [0, 1], then x ** (1 / gamma)."""
    return x.clamp(0, 1) ** (1.0 / gamma)


def _per_channel(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    if like.shape[-3] != len(values):
        raise ValueError(f"{len(values)} per-channel values for {like.shape[-3]} channels")
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


# --------------------------------------------------------------------------- sensor


def bayer_masks(h: int, w: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The RGGB colour filter array as masks [3, H, W]: R at (even row, even col), G at (even, odd) and
    (odd, even), B at (odd, odd). Any H, W: reflect padding keeps the pattern at every border."""
    rows = torch.arange(h).view(-1, 1) % 2
    cols = torch.arange(w).view(1, -1) % 2
    red = (rows == 0) & (cols == 0)
    blue = (rows == 1) & (cols == 1)
    return torch.stack([red, ~(red | blue), blue]).to(dtype)


def mosaic(x: torch.Tensor) -> torch.Tensor:
    """x [N, 3, H, W] -> raw [N, 1, H, W]: at each pixel the one channel its RGGB filter passes."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(x.shape)}")
    masks = bayer_masks(x.shape[-2], x.shape[-1], x.dtype).to(x.device)
    return (x * masks).sum(1, keepdim=True)


def raw_noise(raw: torch.Tensor, shot_gain: float, read_std: float, rng: torch.Generator) -> torch.Tensor:
    """raw + N(0, shot_gain * max(raw, 0) + read_std^2) per pixel, clipped at 0: shot noise (the Gaussian
    approximation of Poisson photon counts: variance proportional to the linear signal) plus read noise.

    The draw is float64 on the CPU from `rng` (one standard normal per pixel, in raster order), so a
    seed gives the same raw anywhere; the result has raw's dtype and device. Each pixel's noise is
    independent: the raw noise is white."""
    noise = torch.randn(raw.shape, generator=rng, dtype=torch.float64)
    r64 = raw.detach().to("cpu", torch.float64)
    std = (shot_gain * r64.clamp_min(0) + read_std**2).sqrt()
    return (r64 + std * noise).clamp_min(0).to(device=raw.device, dtype=raw.dtype)


# --------------------------------------------------------------------------- demosaicing

_BILINEAR_G = torch.tensor([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=torch.float64) / 4
_BILINEAR_RB = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float64) / 4

# Malvar, He, Cutler (ICASSP 2004), "High-quality linear interpolation for demosaicing of Bayer-patterned
# color images": bilinear plus a correction by the Laplacian of the channel sampled at the pixel.
_H = 0.5
_MALVAR = torch.tensor([
    [  # G at an R or B pixel
        [0, 0, -1, 0, 0],
        [0, 0, 2, 0, 0],
        [-1, 2, 4, 2, -1],
        [0, 0, 2, 0, 0],
        [0, 0, -1, 0, 0],
    ],
    [  # at a G pixel, the colour of its left and right neighbours
        [0, 0, _H, 0, 0],
        [0, -1, 0, -1, 0],
        [-1, 4, 5, 4, -1],
        [0, -1, 0, -1, 0],
        [0, 0, _H, 0, 0],
    ],
    [  # at a G pixel, the colour of its upper and lower neighbours
        [0, 0, -1, 0, 0],
        [0, -1, 4, -1, 0],
        [_H, 0, 5, 0, _H],
        [0, -1, 4, -1, 0],
        [0, 0, -1, 0, 0],
    ],
    [  # R at a B pixel, B at an R pixel
        [0, 0, -1.5, 0, 0],
        [0, 2, 0, 2, 0],
        [-1.5, 0, 6, 0, -1.5],
        [0, 2, 0, 2, 0],
        [0, 0, -1.5, 0, 0],
    ],
], dtype=torch.float64) / 8


def _filter(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """x [N, 1, H, W] correlated with each of kernels [M, K, K] (symmetric: = convolution), reflect padding -> [N, M, H, W]."""
    pad = kernels.shape[-1] // 2
    if min(x.shape[-2:]) <= pad:
        raise ValueError(f"demosaicing needs raw images larger than {pad} pixels, got {tuple(x.shape[-2:])}")
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernels.to(x.dtype).unsqueeze(1))


def demosaic_bilinear(raw: torch.Tensor) -> torch.Tensor:
    """raw [N, 1, H, W] (RGGB) -> [N, 3, H, W]: each missing value the mean of its nearest same-colour
    neighbours (G: the 4 edge neighbours; R, B: the 2 or 4 nearest), the sampled value kept.
    At the border the raw is mirrored (reflect padding), which keeps the RGGB pattern."""
    masks = bayer_masks(raw.shape[-2], raw.shape[-1], raw.dtype).to(raw.device)
    planes = raw * masks  # [N, 3, H, W]: each channel's samples, 0 elsewhere
    n, _, h, w = planes.shape
    kernels = torch.stack([_BILINEAR_RB, _BILINEAR_G, _BILINEAR_RB])
    weight = kernels.to(raw.dtype).unsqueeze(1)  # [3, 1, 3, 3], one per channel
    return F.conv2d(F.pad(planes, (1, 1, 1, 1), mode="reflect"), weight, groups=3).view(n, 3, h, w)


def demosaic_malvar(raw: torch.Tensor) -> torch.Tensor:
    """raw [N, 1, H, W] (RGGB) -> [N, 3, H, W] by Malvar-He-Cutler gradient-corrected linear interpolation
    (5 x 5 filters; edge-aware: the missing colour follows the sampled one's local curvature, fewer
    colour fringes at edges than bilinear). Exact on any constant colour; reflect padding at the border."""
    est = _filter(raw, _MALVAR)  # [N, 4, H, W]: G_at_RB, row, col, RB_at_BR
    h, w = raw.shape[-2:]
    rows = (torch.arange(h, device=raw.device).view(-1, 1) % 2).expand(h, w)
    cols = (torch.arange(w, device=raw.device).view(1, -1) % 2).expand(h, w)
    at_r, at_b = (rows == 0) & (cols == 0), (rows == 1) & (cols == 1)
    at_g_rrow, at_g_brow = (rows == 0) & (cols == 1), (rows == 1) & (cols == 0)
    v = raw[:, 0]
    g_at_rb, row, col, opposite = est.unbind(1)
    red = torch.where(at_r, v, torch.where(at_g_rrow, row, torch.where(at_g_brow, col, opposite)))
    green = torch.where(at_r | at_b, g_at_rb, v)
    blue = torch.where(at_b, v, torch.where(at_g_brow, row, torch.where(at_g_rrow, col, opposite)))
    return torch.stack([red, green, blue], 1)


def demosaic(raw: torch.Tensor, method: str = "malvar") -> torch.Tensor:
    """raw [N, 1, H, W] (RGGB) -> [N, 3, H, W] by `method` (one of DEMOSAICS)."""
    if method == "bilinear":
        return demosaic_bilinear(raw)
    if method == "malvar":
        return demosaic_malvar(raw)
    raise ValueError(f"unknown demosaicing {method!r}; expected one of {list(DEMOSAICS)}")


# --------------------------------------------------------------------------- ISP finish


def sharpen(x: torch.Tensor, amount: float, radius: float) -> torch.Tensor:
    """Unsharp mask: x + amount * (x - gaussian_blur(x, std radius px)), clipped to [0, 1]; amount 0: x itself.

    What phone ISPs do after the tone curve: edges get halos (the negative lobes of the filter) and
    the noise's high frequencies are amplified."""
    if amount == 0:
        return x
    k = gaussian(_odd_size(GAUSS_TRUNCATE * radius), radius)
    blurred = conv_per_sample(x, torch.from_numpy(k).to(x.dtype))
    return (x + amount * (x - blurred)).clamp(0, 1)


def encode(x: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> torch.Tensor:
    """The file the camera writes, decoded: JPEG at `quality` (`fca.jpeg.jpeg_round_trip`), or with quality 0
    8-bit quantisation only."""
    if quality == 0:
        return to_8bit(x)
    return jpeg_round_trip(x, quality, subsampling)


# --------------------------------------------------------------------------- the camera


def camera(x: torch.Tensor, config: CameraConfig, rng: torch.Generator) -> torch.Tensor:
    """The photo of clean images x [N, 3, H, W] in [0, 1] (H, W at least 3 and larger than the PSF's
    radius): every stage of the module docstring, in float64 on the CPU, noise from `rng`.
    Returns [N, 3, H, W] in [0, 1] on 8-bit levels, in x's dtype and device."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(x.shape)}")
    x64 = x.detach().to("cpu", torch.float64)
    linear = optics_blur(to_linear(x64, config.gamma, config.wb_gains), psf_kernel(config))
    raw = raw_noise(mosaic(linear), config.shot_gain, config.read_std, rng)
    rgb = demosaic(raw, config.demosaic)
    display = tone_curve(white_balance(rgb, config.wb_gains), config.gamma)
    display = sharpen(display, config.sharpen_amount, config.sharpen_radius)
    return encode(display, config.jpeg_quality, config.jpeg_subsampling).to(device=x.device, dtype=x.dtype)


def camera_lr(x: torch.Tensor, scale: float, config: CameraConfig, rng: torch.Generator) -> torch.Tensor:
    """The same camera at an s = `scale` times coarser pixel pitch: camera(downscale(x, scale)) (bicubic,
    `fca.resample.downscale`). This is L_true for scenes x, and the LR half of an oracle pair; give it
    an rng of its own so its noise is independent of camera(x)'s."""
    return camera(downscale(x, scale), config, rng)


# --------------------------------------------------------------------------- the camera of a patch set


@dataclass(frozen=True)
class PatchCamera:
    """The simulated camera for a list of patches (in order), each patch's noise from its own
    generator seeded by (seed, its file name, view), as `fca.noise.PatchNoise` draws: `hr` makes
    R, `lr` L_true, `oracle` the referee's oracle LR, `noise_a` / `noise_b` the noise check's draws.
    The same patch and view give the same photo in every process."""

    config: CameraConfig
    seed: int
    names: tuple[str, ...]

    def __call__(self, x: torch.Tensor, view: str) -> torch.Tensor:
        """Each patch of x [N, 3, H, W] through the camera (x at the pitch the photo is taken at)."""
        from fca.noise import patch_generator

        if len(self.names) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} patches but {len(self.names)} names")
        return torch.cat([camera(x[i : i + 1], self.config, patch_generator(self.seed, n, view)) for i, n in enumerate(self.names)])

    def signal(self, x: torch.Tensor) -> torch.Tensor:
        """The camera without its raw noise (every other stage, JPEG included): what the noise check bins by."""
        quiet = dataclasses.replace(self.config, shot_gain=0.0, read_std=0.0)
        return camera(x, quiet, torch.Generator().manual_seed(0))
