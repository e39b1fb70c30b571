"""Blur kernels: construction, per-sample convolution, and their second moments.

A kernel here is a K x K array (K odd), non-negative, summing to 1, and shared by
the colour channels. `conv_per_sample` applies a different kernel to each image of
a batch as one grouped convolution (the batch folded into groups), with reflect
padding so the output has the input's size. This is the operation the seed
reproduction got wrong (it multiplied element-wise).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def check_kernel(k: np.ndarray, name: str = "kernel") -> np.ndarray:
    """Validate a 2-D kernel (square, odd size, finite, non-negative, positive sum); return it as float64 normalised to sum 1."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name}: expected a square 2-D array, got shape {k.shape}")
    if k.shape[0] % 2 == 0:
        raise ValueError(f"{name}: kernel size must be odd, got {k.shape[0]}")
    if not np.isfinite(k).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if (k < 0).any():
        raise ValueError(f"{name}: has negative entries (min {k.min():.3g})")
    if k.sum() <= 0:
        raise ValueError(f"{name}: sums to {k.sum():.3g}, must be positive")
    return k / k.sum()


# Not kornia (not installed; 0.9.0 is 16 MB + 15 MB of kornia_rs, 0.17-0.3 s to import after torch), measured by
# benchmarks/libraries.py --kornia: its Gaussians are axis-aligned (no theta); its motion line has no length (it spans
# the kernel) and is a nearest-sampled staircase; no disk (fca.camera); its 13 x 13 sigma 3 is 3.5e-18 off ours, not bitwise.
def anisotropic_gaussian(size: int, sigma_x: float, sigma_y: float, theta_deg: float = 0.0) -> np.ndarray:
    """K x K Gaussian with std sigma_x along direction theta and sigma_y across it, sum 1."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    r = size // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    t = math.radians(theta_deg)
    u = math.cos(t) * xx + math.sin(t) * yy
    v = -math.sin(t) * xx + math.cos(t) * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def gaussian(size: int, sigma: float) -> np.ndarray:
    """Isotropic K x K Gaussian, sum 1 (the paper's default: 13, sigma 3 = variance 9)."""
    return anisotropic_gaussian(size, sigma, sigma, 0.0)


def delta(size: int) -> np.ndarray:
    """The identity kernel: 1 at the centre."""
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


KERNEL_FAMILIES = ("anisotropic", "motion")
MOTION_SIGMA = 0.5  # px: the Gaussian that gives a motion kernel's line some width
MOTION_SAMPLES_PER_PX = 16  # sub-pixel points along the segment (anti-aliasing)


def motion_fits(size: int, length: float) -> bool:
    """Whether a motion kernel of `length` fits a size x size kernel at any angle.

    The half segment plus two sigmas of its smoothing Gaussian must stay inside the
    kernel's radius: length <= size - 3 for sigma 0.5.
    """
    return length / 2 + 2 * MOTION_SIGMA <= size // 2


def motion_kernel(size: int, length: float, angle_deg: float) -> np.ndarray:
    """K x K linear motion blur: a straight segment of `length` px through the centre at `angle_deg`, sum 1.

    The angle follows `anisotropic_gaussian`'s theta: 0 is along x (columns), 90 along
    y (rows). The segment is sampled at MOTION_SAMPLES_PER_PX points per pixel of
    length (anti-aliased, not a staircase), and each point is spread by a Gaussian of
    sigma MOTION_SIGMA px sampled at the pixel centres (the segment rasterised and
    convolved with that Gaussian), so the line is not one pixel wide. Its second moment
    is about length^2 / 12 + sigma^2 along the segment and sigma^2 across it.
    """
    if size % 2 == 0 or size < 1:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    if length < 0 or not motion_fits(size, length):
        raise ValueError(f"a motion of length {length} does not fit a {size} x {size} kernel (at most size - 3 = {size - 3})")
    r = size // 2
    n = max(1, math.ceil(length * MOTION_SAMPLES_PER_PX))
    t = (np.arange(n, dtype=np.float64) + 0.5) / n * length - length / 2  # midpoints of n equal pieces
    a = math.radians(angle_deg)
    px, py = t * math.cos(a), t * math.sin(a)  # column, row offsets from the centre
    grid = np.arange(-r, r + 1, dtype=np.float64)
    wx = np.exp(-0.5 * ((grid[None, :] - px[:, None]) / MOTION_SIGMA) ** 2)
    wy = np.exp(-0.5 * ((grid[None, :] - py[:, None]) / MOTION_SIGMA) ** 2)
    wx /= wx.sum(1, keepdims=True)  # each point carries the same mass
    wy /= wy.sum(1, keepdims=True)
    k = wy.T @ wx  # sum over points of the outer products: [rows, cols]
    return k / k.sum()


def random_kernel(
    rng: np.random.Generator,
    size: int,
    families: tuple[str, ...] | list[str],
    sigma_range: tuple[float, float],
    motion_length: tuple[float, float],
) -> tuple[np.ndarray, dict]:
    """Draw one K x K kernel (float64, sum 1) and its description.

    The family is uniform over `families`. anisotropic: sigma_x, sigma_y ~ U(sigma_range)
    independently, theta ~ U(0, 180) degrees. motion: length ~ U(motion_length), angle
    ~ U(0, 180) degrees (see `motion_kernel`). The description holds `family` and the
    drawn values (sigma_x, sigma_y, theta_deg, or length, angle_deg).
    """
    unknown = [f for f in families if f not in KERNEL_FAMILIES]
    if not families or unknown:
        raise ValueError(f"families = {list(families)}: must be a non-empty list of {list(KERNEL_FAMILIES)}")
    family = families[int(rng.integers(len(families)))]
    if family == "anisotropic":
        lo, hi = sigma_range
        sigma_x, sigma_y = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
        theta = float(rng.uniform(0.0, 180.0))
        info = {"family": family, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta_deg": theta}
        return anisotropic_gaussian(size, sigma_x, sigma_y, theta), info
    lo, hi = motion_length
    length = float(rng.uniform(lo, hi))
    angle = float(rng.uniform(0.0, 180.0))
    return motion_kernel(size, length, angle), {"family": family, "length": length, "angle_deg": angle}


def conv_per_sample(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own kernel.

    x: [B, C, H, W]; kernels: [B, K, K] (or [K, K], shared by the batch), K odd.
    Returns [B, C, H, W]: reflect-padded 'same' convolution, one kernel for all C.
    The kernel is flipped so this is a true convolution (matters for asymmetric kernels).
    """
    if kernels.dim() == 2:
        kernels = kernels.expand(x.shape[0], -1, -1)
    b, c, h, w = x.shape
    if kernels.shape[0] != b:
        raise ValueError(f"{kernels.shape[0]} kernels for a batch of {b}")
    k = kernels.shape[-1]
    if k % 2 == 0 or kernels.shape[-2] != k:
        raise ValueError(f"kernels must be square with odd size, got {tuple(kernels.shape[-2:])}")
    pad = k // 2
    if pad >= h or pad >= w:
        raise ValueError(f"a {k}x{k} kernel needs images larger than {pad} pixels, got {h}x{w}")
    weight = kernels.flip(-1, -2).to(x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # [B*C, 1, K, K]
    padded = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, weight, groups=b * c).view(b, c, h, w)


def centre_of_mass(k: torch.Tensor) -> torch.Tensor:
    """[..., K, K] -> [..., 2] (row, col) offsets from the kernel's centre."""
    size = k.shape[-1]
    r = torch.arange(size, dtype=k.dtype, device=k.device) - size // 2
    total = k.sum((-2, -1))
    my = (k.sum(-1) * r).sum(-1) / total
    mx = (k.sum(-2) * r).sum(-1) / total
    return torch.stack([my, mx], -1)


def second_moment(k: torch.Tensor) -> torch.Tensor:
    """Covariance of a kernel about its centre of mass: [..., K, K] -> [..., 2, 2] (row, col)."""
    size = k.shape[-1]
    r = torch.arange(size, dtype=k.dtype, device=k.device) - size // 2
    k = k / k.sum((-2, -1), keepdim=True)
    mu = centre_of_mass(k)
    dy = r.view(-1, 1) - mu[..., 0, None, None]
    dx = r.view(1, -1) - mu[..., 1, None, None]
    syy = (k * dy * dy).sum((-2, -1))
    sxx = (k * dx * dx).sum((-2, -1))
    sxy = (k * dx * dy).sum((-2, -1))
    return torch.stack([torch.stack([syy, sxy], -1), torch.stack([sxy, sxx], -1)], -2)


def effective_sigma(k: torch.Tensor) -> torch.Tensor:
    """Square root of the mean eigenvalue of the second moment: [..., K, K] -> [...]."""
    s = second_moment(k)
    return torch.sqrt(0.5 * (s[..., 0, 0] + s[..., 1, 1]))


def cov_rel_error(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """||S_pred - S_ref||_F / ||S_ref||_F for kernels [..., K, K] -> [...]."""
    sp, sr = second_moment(pred), second_moment(ref)
    return torch.linalg.matrix_norm(sp - sr) / torch.linalg.matrix_norm(sr)


# --- A smooth parameterisation of anisotropic Gaussians, for learning -------------------------
# (log sigma, e1, e2): covariance Sigma = sigma^2 * expm([[e1, e2], [e2, -e1]]) in (x, y) = (column, row).
# sigma^2 = sigma_x * sigma_y is the geometric-mean variance, r = sqrt(e1^2 + e2^2) = log(sigma_x / sigma_y)
# the anisotropy and atan2(e2, e1) / 2 the direction of the long axis. Unlike (sigma_x, sigma_y, theta)
# it has no wrap-around (theta and theta + pi are the same kernel) and no swap symmetry
# (sigma_x <-> sigma_y with theta + pi/2), so a regression on it is well posed.


def gaussian_params(sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(sigma_x along direction theta [radians], sigma_y across it), each [B] -> smooth parameters [B, 3]."""
    log_sigma = 0.5 * (torch.log(sigma_x) + torch.log(sigma_y))
    r = torch.log(sigma_x / sigma_y)
    return torch.stack([log_sigma, r * torch.cos(2 * theta), r * torch.sin(2 * theta)], -1)


def elliptic_radius2(params: torch.Tensor, size: int, supersample: int = 1) -> torch.Tensor:
    """Smooth parameters [B, 3] -> rho^2 = p^T Sigma^-1 p at each point p of a K x K pixel grid, [B, K, K]:
    the squared distance from the centre in units of the ellipse (Sigma as in `gaussian_params`).
    supersample S > 1: at S x S points evenly spread over each pixel, [B, K * S, K * S] (pixel (i, j)'s
    points are rows i*S .. i*S+S-1, columns j*S .. j*S+S-1)."""
    log_sigma, e1, e2 = params.unbind(-1)
    r = torch.sqrt(e1**2 + e2**2 + 1e-12)
    c2, s2 = e1 / r, e2 / r
    half = size // 2
    coords = torch.arange(-half, half + 1, dtype=params.dtype, device=params.device)
    if supersample > 1:
        offsets = (torch.arange(supersample, dtype=params.dtype, device=params.device) + 0.5) / supersample - 0.5
        coords = (coords[:, None] + offsets[None, :]).flatten()
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # Sigma^-1 = sigma^-2 * expm(-A), and expm(-A) = cosh(r) I - sinh(r) / r * A for traceless symmetric A.
    inv = torch.exp(-2 * log_sigma)
    ch, sh = torch.cosh(r), torch.sinh(r)
    a = (inv * (ch - sh * c2))[:, None, None]
    b = (inv * (ch + sh * c2))[:, None, None]
    c = (-inv * sh * s2)[:, None, None]
    return a * xx**2 + b * yy**2 + 2 * c * xx * yy


def gaussian_from_params(params: torch.Tensor, size: int) -> torch.Tensor:
    """Smooth parameters [B, 3] -> K x K anisotropic Gaussians [B, K, K] (each summing to 1), differentiable.

    `gaussian_from_params(gaussian_params(sx, sy, t), K)` equals `anisotropic_gaussian(K, sx, sy, degrees(t))`."""
    return torch.softmax((-0.5 * elliptic_radius2(params, size)).flatten(1), 1).view(-1, size, size)


# --- Elliptic kernels with a learned radial profile -------------------------------------------
# k(p) proportional to f(rho^2(p)), rho the elliptic radius of `elliptic_radius2`, and log f piecewise
# linear in u = rho^2 with non-positive slopes -softplus(a_j) on the segments [u_j, u_j+1] that start at
# rho_j = j * PROFILE_STEP (the last one runs on). Slopes of 1/2 everywhere are exactly the Gaussian of
# the ellipse; slopes near 0 then a steep one are a flat-topped disk with a soft edge; a steep start
# then a plateau then a cliff is a Gaussian core on a disk (a defocused lens). Why monotone: a free
# K x K kernel fitted to a frequency density finds a spike in a ring (the density cannot see the
# phase that tells them apart); a profile that never rises keeps every member a single blob.
PROFILE_SEGMENTS = 12
PROFILE_STEP = 0.5  # rho units (sigmas of the ellipse): the segments reach 6 sigmas, then the last runs on
# Each pixel holds the profile's mean over 4 x 4 points spread over it (the PSF integrated over the pixel),
# so a sharp edge or a streak thinner than a pixel moves smoothly with its parameters. Measured on the
# spectral loss alone (fca.train.kernel_start): the disk's shape error 0.074 -> 0.041, the motion
# streak's 0.61 -> 0.52, against point samples at the pixel centres.
PROFILE_SUPERSAMPLE = 4
GAUSSIAN_SLOPE_LOGIT = math.log(math.expm1(0.5))  # softplus^-1(1/2): the Gaussian's slope in u = rho^2


def gaussian_profile(segments: int = PROFILE_SEGMENTS) -> torch.Tensor:
    """The slope logits [segments] of the Gaussian profile: `profile_kernels` with them is `gaussian_from_params`
    integrated over each pixel."""
    return torch.full((segments,), GAUSSIAN_SLOPE_LOGIT)


def flat_profile(segments: int = PROFILE_SEGMENTS, radius: float = 2.0) -> torch.Tensor:
    """Slope logits [segments] of a flat top out to `radius` (rho units) with a soft edge: a disk
    (slope softplus(-3) = 0.05 inside, softplus(1) = 1.3 outside)."""
    inside = int(round(radius / PROFILE_STEP))
    return torch.cat([torch.full((inside,), -3.0), torch.full((segments - inside,), 1.0)])


def profile_log(rho2: torch.Tensor, slope_logits: torch.Tensor) -> torch.Tensor:
    """log f(rho^2) (up to a constant) for rho2 [B, ...] and slope logits [S] or [B, S] (section comment)."""
    segments = slope_logits.shape[-1]
    starts = (torch.arange(segments, dtype=rho2.dtype, device=rho2.device) * PROFILE_STEP) ** 2
    lengths = torch.cat([starts[1:] - starts[:-1], starts.new_full((1,), math.inf)])
    slopes = F.softplus(slope_logits.to(rho2.dtype))
    if slopes.dim() == 1:
        slopes = slopes.expand(rho2.shape[0], -1)
    inside = torch.minimum((rho2[..., None] - starts).clamp_min(0), lengths)  # [B, ..., S]: u covered in each segment
    return -(inside * slopes.view(slopes.shape[0], *([1] * (rho2.dim() - 1)), segments)).sum(-1)


def profile_kernels(params: torch.Tensor, slope_logits: torch.Tensor, size: int) -> torch.Tensor:
    """Smooth ellipse parameters [B, 3] and profile slope logits [S] or [B, S] -> K x K kernels [B, K, K]
    (non-negative, each summing to 1), differentiable in both (section comment)."""
    s = PROFILE_SUPERSAMPLE
    logf = profile_log(elliptic_radius2(params, size, s), slope_logits)  # [B, K * s, K * s]
    per_pixel = logf.view(-1, size, s, size, s).transpose(2, 3).flatten(3)  # [B, K, K, s * s]
    return torch.softmax(torch.logsumexp(per_pixel, -1).flatten(1), 1).view(-1, size, size)


def principal_axis(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(axis ratio >= 1, direction of the long axis in degrees [0, 180), measured like `anisotropic_gaussian`'s theta)
    of kernels [..., K, K], from their second moments."""
    s = second_moment(k)  # (row, col)
    evals, evecs = torch.linalg.eigh(s)
    ratio = torch.sqrt(evals[..., 1] / evals[..., 0].clamp_min(1e-12))
    v = evecs[..., :, 1]  # (row, col) of the long axis
    return ratio, torch.rad2deg(torch.atan2(v[..., 0], v[..., 1])) % 180.0


def angle_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| for axis directions in degrees, modulo 180: in [0, 90]."""
    return ((a - b + 90.0) % 180.0 - 90.0).abs()
