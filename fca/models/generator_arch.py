"""Adaptation generator G(x) = bicubic_down(x, s) (*) k(x) (docs/design.md, "Adaptation generator G").

The kernel estimator follows the paper's Fig. 2: three parallel first convs
(1x3, 3x1, 3x3, concatenated), a stride-2 conv, residual dense blocks (our
reading of "residual Ds"), residual blocks, adaptive average pooling to K x K,
1x1 conv, ReLU, 1x1 conv to one channel, softmax over the K*K logits.

Ours: the logits are `prior + head(x)`, where `prior` is a learnable K x K map
that starts as the log of an isotropic Gaussian (`init_sigma`), and the last
1x1 conv of the head is zero-initialised. So the first kernel is that Gaussian
for every image, and training moves (a) the image-independent prior, which is
what a single real camera blur needs, and (b) an image-dependent correction.
Why: pooled conv features carry almost no information about *where* in the
K x K grid a cell lies (only zero padding at the borders does), so without a
positional prior the head cannot even form a centred blob; and a zero-initialised
head with no prior starts as a uniform K x K box, whose sinc response has
spectral zeros. A moderate Gaussian (default sigma 1.2) is a mild blur near the
bicubic baseline whose tails are still a few logits from any plausible camera
blur; Adam moves logits by about one LR-sized step each, so the start's distance
in logit space is what counts. Measured on the bundled photos (oracle sigma 2.67,
benchmarks/generator_experiments.py, 300 steps): start 1.2 -> 2.74 (+3 %);
near-delta 0.5 -> 1.65 (stuck: its outer logits start ~70 below the centre);
0.8 -> 2.24; a uniform box (zero head, no prior) -> 2.94 (+10 %, keeps heavy tails).

The `gaussian` parameterisation predicts (log sigma_x, log sigma_y, theta) per
image the same way: a learnable prior vector plus a zero-initialised head on
globally pooled features, then builds a differentiable anisotropic Gaussian.
`profile` (the default) builds the same ellipses with the domain's radial profile
(`fca.kernels.profile_kernels`), a buffer set once before training (`start_from`,
`fca.train.kernel_start`: the Gaussian's unless a fitted profile is clearly nearer).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fca.frequency import tile_polar_density, tiles_of, to_luma
from fca.kernels import conv_per_sample, gaussian_from_params, gaussian_params, gaussian_profile, profile_kernels
from fca.jpeg import SUBSAMPLINGS, JpegSetting, jpeg_round_trip
from fca.noise import CAP_GRID, NoiseLevel, stable_seed
from fca.resample import downscale

KERNEL_PARAMS = ("free", "gaussian", "profile")
# Parameterisations that predict an ellipse (3 numbers per image); profile adds one radial profile for all images.
ELLIPTIC = ("gaussian", "profile")
ESTIMATORS = ("spectral", "paper")
NOISE_OPTIONS = ("none", "patches")
# Gaussian parameterisation: sigmas are kept in [_SIGMA_MIN, kernel_size] so the kernel stays finite.
_SIGMA_MIN = 0.2


class ResidualDenseBlock(nn.Module):
    """RDN-style block: `layers` densely connected 3x3 convs, 1x1 fusion, scaled residual. [B,C,H,W] -> [B,C,H,W]."""

    def __init__(self, channels: int, growth: int, layers: int = 3, res_scale: float = 0.2):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels + i * growth, growth, 3, padding=1) for i in range(layers))
        self.fuse = nn.Conv2d(channels + layers * growth, channels, 1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return x + self.res_scale * self.fuse(torch.cat(feats, 1))


class ResidualBlock(nn.Module):
    """conv 3x3, ReLU, conv 3x3, plus the input. [B,C,H,W] -> [B,C,H,W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def gaussian_kernels(log_sigma_x: torch.Tensor, log_sigma_y: torch.Tensor, theta: torch.Tensor, size: int,
                     profile: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable anisotropic Gaussians: per-image [B] parameters (theta in radians) -> [B, K, K], each summing to 1.

    Same convention as `fca.kernels.anisotropic_gaussian`: sigma_x along direction theta, sigma_y across it.
    With `profile` (slope logits) the same ellipses with that radial profile (`fca.kernels.profile_kernels`).
    """
    sx = log_sigma_x.float().exp().clamp(_SIGMA_MIN, float(size))
    sy = log_sigma_y.float().exp().clamp(_SIGMA_MIN, float(size))
    if profile is not None:
        return profile_kernels(gaussian_params(sx, sy, theta.float()), profile.float(), size)
    r = size // 2
    coords = torch.arange(-r, r + 1, dtype=torch.float32, device=theta.device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    sx, sy = sx[:, None, None], sy[:, None, None]
    c, s = torch.cos(theta.float())[:, None, None], torch.sin(theta.float())[:, None, None]
    u = c * xx + s * yy
    v = -s * xx + c * yy
    logits = -0.5 * ((u / sx) ** 2 + (v / sy) ** 2)
    return torch.softmax(logits.flatten(1), 1).view(-1, size, size)


def _register_profile(module: nn.Module, kernel_param: str) -> None:
    """kernel_param = profile: the estimator's radial profile, a buffer that starts as the Gaussian's; else None."""
    if kernel_param == "profile":
        module.register_buffer("profile", gaussian_profile())
    else:
        module.profile = None


def _check_start(kernel_param: str, profile: torch.Tensor, own: torch.Tensor | None) -> None:
    if kernel_param != "profile" or own is None:
        raise ValueError(f"start_from: only kernel_param = profile has a start to set, got {kernel_param!r}")
    if profile.shape != own.shape:
        raise ValueError(f"start_from: profile of shape {tuple(profile.shape)}, expected {tuple(own.shape)}")


def _check_kernel_args(kernel_param: str, kernel_size: int, init_sigma: float) -> None:
    """The kernel arguments both estimators take."""
    if kernel_param not in KERNEL_PARAMS:
        raise ValueError(f"kernel_param = {kernel_param!r}: expected one of {KERNEL_PARAMS}")
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size = {kernel_size}: must be a positive odd number")
    if init_sigma <= 0:
        raise ValueError(f"init_sigma = {init_sigma}: must be positive")


class KernelEstimator(nn.Module):
    """x_hr [B, 3, H, W] in [0, 1] -> kernels [B, K, K], non-negative, each summing to 1 (computed in fp32)."""

    def __init__(
        self,
        kernel_size: int = 13,
        channels: int = 64,
        dense_blocks: int = 5,
        res_blocks: int = 2,
        kernel_param: str = "free",
        init_sigma: float = 1.2,
    ):
        super().__init__()
        _check_kernel_args(kernel_param, kernel_size, init_sigma)
        self.kernel_size = kernel_size
        self.kernel_param = kernel_param
        c = channels
        # Paper Fig. 2: three parallel first convs (an "inception" head) see horizontal, vertical and 2-D structure.
        self.branches = nn.ModuleList(
            [nn.Conv2d(3, c, (1, 3), padding=(0, 1)), nn.Conv2d(3, c, (3, 1), padding=(1, 0)), nn.Conv2d(3, c, 3, padding=1)]
        )
        self.down = nn.Conv2d(3 * c, c, 3, stride=2, padding=1)
        self.body = nn.Sequential(
            *[ResidualDenseBlock(c, max(1, c // 2)) for _ in range(dense_blocks)],
            *[ResidualBlock(c) for _ in range(res_blocks)],
        )
        r = kernel_size // 2
        if kernel_param == "free":
            self.pool = nn.AdaptiveAvgPool2d(kernel_size)
            self.head = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, 1, 1))
            yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
            self.prior = nn.Parameter(-(xx**2 + yy**2) / (2 * init_sigma**2))  # [K, K] log of a Gaussian
        else:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, 3, 1))
            # The image-independent part is the log-width only, shared by both axes: the
            # domain-level losses see the radial density, which does not know a direction, so a
            # free anisotropy there drifts (measured on the single-kernel demo: a 45-degree tilt,
            # covariance error 0.105 with the width right to 2 %). Shape and direction come from
            # the image-dependent head.
            self.prior = nn.Parameter(torch.tensor([math.log(init_sigma)]))
        # profile: the radial profile is image-independent (one lens for the domain), the ellipse as for gaussian.
        # A buffer: `fca.train.kernel_start` fits it to the spectral loss before training, and training moves
        # only the ellipse (trained on, the profile drifted wider under the comparator and discriminator).
        _register_profile(self, kernel_param)
        # Zero-init the last layer: the first kernel is exactly the prior, for every image.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The image-independent kernel parameters (they live in logit / log-sigma space and want a larger step)."""
        return [self.prior]

    @torch.no_grad()
    def start_from(self, ellipse: torch.Tensor, profile: torch.Tensor) -> None:
        """Make the first kernel, for every image, the one of smooth ellipse parameters [3]
        (`fca.kernels.gaussian_params`) and profile slope logits (kernel_param = profile)."""
        _check_start(self.kernel_param, profile, self.profile)
        log_sigma, e1, e2 = ellipse.tolist()
        r = math.hypot(e1, e2)
        self.prior.fill_(log_sigma)
        # the head's output is (log sigma_x, log sigma_y, theta) less the prior width: its bias carries the shape
        self.head[-1].bias.copy_(torch.tensor([r / 2, -r / 2, 0.5 * math.atan2(e2, e1)]))
        self.profile.copy_(profile)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, C, H/2, W/2] (autocast-friendly: convs only)."""
        y = F.leaky_relu(torch.cat([b(x) for b in self.branches], 1), 0.2)
        y = F.leaky_relu(self.down(y), 0.2)
        return self.body(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        out = self.head(self.pool(self.features(x)))
        # The normalisation runs in fp32 even under autocast: the kernel must sum to 1 exactly.
        with torch.autocast(x.device.type, enabled=False):
            out = out.float()
            if self.kernel_param == "free":
                logits = out[:, 0] + self.prior.float()  # [B, K, K]
                return torch.softmax(logits.flatten(1), 1).view(-1, k, k)
            p = out[:, :, 0, 0]  # [B, 3]: log sigma_x, log sigma_y, theta
            width = self.prior.float()
            return gaussian_kernels(p[:, 0] + width, p[:, 1] + width, p[:, 2], k, self.profile)


class SpectralKernelEstimator(nn.Module):
    """Reads each image's blur from its own spectrum: x [B, 3, H, W] in [0, 1] -> kernels [B, K, K] (fp32, >= 0, sum 1).

    Features: the log of the image's polar frequency density (radius x orientation,
    `fca.frequency.tile_polar_density`), averaged over its `tile` x `tile` crops, plus the log
    of its mean tile variance (how far the signal stands above 8-bit noise). An MLP maps them
    to the kernel: with `kernel_param = gaussian` to the smooth parameters
    (log sigma, e1, e2) of an anisotropic Gaussian (`fca.kernels.gaussian_from_params`), with
    `free` to K x K logits. Both are `reading(x) + offset`: the reading `prior + mlp(features)`
    (the MLP's last layer zero at the start, so the first kernel is the prior's Gaussian for
    every image) is what the per-image consistency loss trains on synthetic blurs
    (`fca.train.generator`), and `offset` (zero at the start) is a global correction that the
    domain-level losses (spectral, FDC, WD) fit on the real images: it absorbs what differs
    between the synthetic images and the real ones for every image alike (the blur that
    downscaling leaves in the synthetic images), without pulling the per-image reading
    towards one kernel.

    Why not the paper's layout: its adaptive average pooling to K x K turns the *spatial
    layout of the image's features* into the kernel's layout, which has nothing to do with
    the blur, and its pooled features barely predict a per-image blur (a linear probe on them:
    r = 0.18 with the oracle sigma on the mixed domain, against 0.51 for a few luma statistics);
    trained, its image-dependent logits stayed ~0.008 while the image-independent prior did
    all the work. The frequency density is the quantity the method is about, it does not
    depend on where things are in the image, and a blur's width and direction are written in
    how it falls off over radius and orientation.

    `tile` is the LR side of a training patch, so an LR image G(x) and an HR image x are read
    at the same pixel scale; an input must be at least `tile` pixels on each side.
    """

    def __init__(
        self,
        kernel_size: int = 13,
        tile: int = 32,
        radial_bins: int = 16,
        angular_bins: int = 8,
        hidden: int = 128,
        kernel_param: str = "gaussian",
        init_sigma: float = 1.2,
        edge_channels: int = 0,
    ):
        super().__init__()
        _check_kernel_args(kernel_param, kernel_size, init_sigma)
        if radial_bins > tile // 2:
            raise ValueError(f"radial_bins = {radial_bins}: at most {tile // 2} for {tile}-pixel tiles")
        self.kernel_size, self.kernel_param, self.tile = kernel_size, kernel_param, tile
        self.radial_bins, self.angular_bins = radial_bins, angular_bins
        n = radial_bins * angular_bins + 1
        self.edge_quantiles = edge_channels  # 0: off; else the number of upper quantiles per direction
        n += 4 * edge_channels
        # Feature standardisation, set once from training data by `calibrate` (saved with the weights).
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        out = 3 if kernel_param in ELLIPTIC else kernel_size * kernel_size
        self.mlp = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        if kernel_param in ELLIPTIC:
            self.prior = nn.Parameter(torch.tensor([math.log(init_sigma), 0.0, 0.0]))
        else:
            r = kernel_size // 2
            yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
            self.prior = nn.Parameter((-(xx**2 + yy**2) / (2 * init_sigma**2)).flatten())
        # gaussian: the offset is of the log-width only. The domain-level losses see the radial
        # density, which does not know a direction, so a free anisotropy offset would drift.
        self.offset = nn.Parameter(torch.zeros(1 if kernel_param in ELLIPTIC else out))
        _register_profile(self, kernel_param)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The image-independent kernel parameters (see `KernelEstimator.prior_parameters`)."""
        return [self.prior, self.offset]

    @torch.no_grad()
    def start_from(self, ellipse: torch.Tensor, profile: torch.Tensor) -> None:
        """As `KernelEstimator.start_from`: the reading starts at this ellipse (the MLP's last layer is zero)."""
        _check_start(self.kernel_param, profile, self.profile)
        self.prior.copy_(ellipse)
        self.profile.copy_(profile)

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, radial_bins * angular_bins + 1] (fp32, no standardisation)."""
        with torch.autocast(x.device.type, enabled=False):
            # Every feature reads the luma: computed once, before tiling (the overlapping tiles
            # would otherwise convert each pixel four times; per pixel the numbers are the same).
            y = to_luma(x.float())[:, None]
            # Half-overlapping tiles: the Hann window leaves each tile's border out, overlap puts it back.
            density = tile_polar_density(y, self.tile, self.radial_bins, self.angular_bins, self.tile // 2).flatten(1)
            variance = tiles_of(y, self.tile).flatten(2).var(2).mean(1)
            parts = [torch.log(density + 1e-6), torch.log(variance + 1e-8)[:, None]]
            if self.edge_quantiles:
                parts.append(edge_sharpness(y, self.edge_quantiles))
            return torch.cat(parts, 1)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Set the feature standardisation from a batch of training images [N, 3, H, W]."""
        f = self.raw_features(x)
        self.feature_mean.copy_(f.mean(0))
        self.feature_std.copy_(f.std(0).clamp_min(1e-3) if f.shape[0] > 1 else torch.ones_like(f[0]))

    def reading(self, x: torch.Tensor) -> torch.Tensor:
        """The per-image reading, before the global offset: [B, 3, H, W] -> [B, 3] smooth Gaussian
        parameters (gaussian) or [B, K*K] logits (free), fp32."""
        f = (self.raw_features(x) - self.feature_mean) / self.feature_std
        return self.mlp(f).float() + self.prior.float()

    def kernel_parameters(self, x: torch.Tensor, detach_reading: bool = False) -> torch.Tensor:
        """reading(x) + offset; with `detach_reading` only the offset gets gradients (see the class docs)."""
        r = self.reading(x)
        r = r.detach() if detach_reading else r
        if self.kernel_param in ELLIPTIC:
            return torch.cat([r[:, :1] + self.offset.float(), r[:, 1:]], 1)
        return r + self.offset.float()

    def to_kernels(self, params: torch.Tensor) -> torch.Tensor:
        """What `kernel_parameters` returns -> kernels [B, K, K]."""
        k = self.kernel_size
        with torch.autocast(params.device.type, enabled=False):
            params = params.float()
            if self.kernel_param == "gaussian":
                return gaussian_from_params(params, k)
            if self.kernel_param == "profile":
                return profile_kernels(params, self.profile.float(), k)
            return torch.softmax(params, 1).view(-1, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_kernels(self.kernel_parameters(x))


def edge_sharpness(x: torch.Tensor, quantiles: int) -> torch.Tensor:
    """Oriented edge sharpness: [B, 3 or 1 (luma), H, W] -> [B, 4 * quantiles] log upper quantiles of
    |central difference along d| / (local 5x5 range + 0.02) for d = 0, 45, 90, 135 degrees.

    At a blurred step edge the steepest slope over the edge's contrast is about 1 / (sigma sqrt(2 pi)),
    whatever the contrast, so the top of this ratio's distribution reads the blur's width along d
    and leaves flat regions (which fill its bottom) out."""
    y = to_luma(x)[:, None]
    # Only pixels 2 or more from the border count (their 5x5 range lies inside the image), and
    # of those every other row and column: neighbouring pixels' ratios are nearly the same
    # numbers, and the partial sort behind the quantiles was the estimator's largest cost
    # (a quarter of the pixels: ~3x faster features, benchmarks/run.py --only estimator).
    # Their central differences need no padding: each direction is a difference of two
    # shifted views, the four stacked so each step below runs once.
    inner = local_range(y, 5)[..., 2:-2:2, 2:-2:2]
    h, w = y.shape[-2:]
    shift = lambda dy, dx: y[..., 2 + dy : h - 2 + dy : 2, 2 + dx : w - 2 + dx : 2]  # noqa: E731
    diffs = torch.stack([shift(0, 1) - shift(0, -1), shift(1, 1) - shift(-1, -1), shift(1, 0) - shift(-1, 0), shift(1, -1) - shift(-1, 1)])
    steps = torch.tensor([2.0, 2.0 * 2**0.5, 2.0, 2.0 * 2**0.5], dtype=y.dtype, device=y.device).view(4, 1, 1, 1, 1)
    ratios = ((diffs.abs() / steps) / (inner + 0.02)).flatten(2).flatten(0, 1)  # [4 * B, pixels]
    qs = torch.linspace(0.9, 0.995, quantiles, dtype=y.dtype, device=y.device)
    q = upper_quantiles(ratios, qs).view(4, y.shape[0], quantiles)
    return torch.log(q + 1e-4).transpose(0, 1).flatten(1)


def local_range(y: torch.Tensor, size: int) -> torch.Tensor:
    """max - min over each pixel's size x size window (borders: the window's part inside the image): [B, 1, H, W].

    The same numbers as max_pool2d(y) + max_pool2d(-y) with padding size // 2, reduced
    separably (rows, then columns) over unfolded views: max_pool2d with stride 1 is slow on
    CPU, and it was the estimator's largest cost (benchmarks/estimator_speed.py)."""
    r = size // 2
    pad = (r, r, r, r)
    high = F.pad(y, pad, value=-math.inf).unfold(3, size, 1).amax(-1).unfold(2, size, 1).amax(-1)
    low = F.pad(y, pad, value=math.inf).unfold(3, size, 1).amin(-1).unfold(2, size, 1).amin(-1)
    return high - low


def upper_quantiles(x: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """torch.quantile(x, qs, dim=1).T (linear interpolation) for high quantiles qs: [B, n] -> [B, len(qs)].

    The same numbers from a partial sort of the top values only (topk), which is several times
    faster than quantile's full sort of every row."""
    n = x.shape[1]
    pos = qs.double() * (n - 1)
    lo = pos.floor().long()
    frac = (pos - lo).to(x.dtype)
    base = int(lo.min())
    # the largest n - base values, ascending: an unsorted topk, then a sort of those few only (faster than topk's own sort)
    top = torch.topk(x, n - base, dim=1, sorted=False).values.sort(dim=1).values
    low, high = top[:, lo - base], top[:, (lo + 1).clamp(max=n - 1) - base]
    return low + (high - low) * frac


def build_estimator(estimator: str = "spectral", **kwargs) -> nn.Module:
    """The kernel estimator by name: `spectral` (ours, the default) or `paper` (the paper's Fig. 2 layout).

    kwargs: kernel_size, kernel_param, init_sigma for both; channels, dense_blocks, res_blocks for
    `paper`; tile, radial_bins, angular_bins, hidden for `spectral` (the others' keys are ignored)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator = {estimator!r}: expected one of {ESTIMATORS}")
    common = {k: kwargs[k] for k in ("kernel_size", "kernel_param", "init_sigma") if k in kwargs}
    if estimator == "paper":
        return KernelEstimator(**common, **{k: kwargs[k] for k in ("channels", "dense_blocks", "res_blocks") if k in kwargs})
    return SpectralKernelEstimator(**common, **{k: kwargs[k] for k in ("tile", "radial_bins", "angular_bins", "hidden", "edge_channels") if k in kwargs})


def jpeg_of_buffer(buffer: torch.Tensor) -> JpegSetting | None:
    """A generator's `jpeg` buffer (quality, index in SUBSAMPLINGS; quality 0: none) as a JpegSetting."""
    quality, sub = (int(v) for v in buffer.tolist())
    return JpegSetting(quality, SUBSAMPLINGS[sub], "weights") if quality > 0 else None


class Generator(nn.Module):
    """G(x) = bicubic_down(x, s) (*) k(x) [+ n]: x_hr [B, 3, H, W] -> (lr [B, 3, H/s, W/s], kernels [B, K, K]).

    `noise = "patches"` (Real-SR style noise injection): the module holds a bank of zero-mean noise
    patches [noise_bank, 3, P, P] (a buffer saved with the weights, filled by `set_noise_bank` from
    the real training images' flat crops, `fca.noise.collect_noise_bank`) and `degrade` adds to each
    LR image randomly drawn bank patches, tiled over it. The draws come from a torch.Generator seeded
    by (noise_seed, call index): the n-th call's noise depends on nothing else, and the call counter
    `noise_calls` is a buffer too (saved, so a resumed run continues the sequence; `reset_noise`
    rewinds it). `noise = "none"` adds nothing and has no noise buffers.

    JPEG (`set_jpeg`): the LR signal goes through the JPEG round trip the real images went through
    (quality and chroma subsampling in the buffer `jpeg`, saved with the weights; quality 0: none),
    and the noise is added after it (`degrade_parts` says why). Gradients pass it as if it were not there (straight through):
    JPEG is not differentiable, and the losses that train the kernel read the LR before it."""

    def __init__(self, scale: float = 4.0, estimator: str = "paper", noise: str = "none", noise_bank: int = 256,
                 noise_side: int = 32, noise_seed: int = 0, **estimator_kwargs):
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale = {scale}: must be >= 1")
        if noise not in NOISE_OPTIONS:
            raise ValueError(f"noise = {noise!r}: expected one of {NOISE_OPTIONS}")
        self.scale = scale
        self.estimator = build_estimator(estimator, **estimator_kwargs)
        self.noise = noise
        self.noise_seed = noise_seed
        if noise == "patches":
            if noise_bank < 1 or noise_side < 1:
                raise ValueError(f"noise_bank = {noise_bank}, noise_side = {noise_side}: must be positive")
            self.register_buffer("noise_bank", torch.zeros(noise_bank, 3, noise_side, noise_side))
            self.register_buffer("noise_calls", torch.zeros((), dtype=torch.int64))
            # The noise variance a bank patch is multiplied by, per channel: `fca.noise.NoiseLevel`, a curve
            # in that channel's brightness or the pixel's luma (`noise_level_by`), capped at each colour
            # (`noise_level_cap`). Constant 1 adds the patches as they are; with a domain's level the bank holds unit-level patches, and each
            # pixel gets the noise of its own brightness (`set_noise_bank`).
            self.register_buffer("noise_level", NoiseLevel.constant().as_tensor())
            self.register_buffer("noise_level_by", torch.zeros((), dtype=torch.int64))  # NoiseLevel.by_code
            self.register_buffer("noise_level_cap", torch.zeros(3, CAP_GRID, CAP_GRID, CAP_GRID))  # NoiseLevel.cap (zeros: none)
        self.register_buffer("jpeg", torch.zeros(2, dtype=torch.int64))  # (quality, index in SUBSAMPLINGS); quality 0: no JPEG

    @property
    def kernel_size(self) -> int:
        return self.estimator.kernel_size

    @torch.no_grad()
    def set_noise_bank(self, bank: torch.Tensor, level: NoiseLevel | None = None) -> None:
        """Fill the noise bank (noise = patches) with [noise_bank, 3, P, P] zero-mean patches.

        level: None, the patches are added as they are (the same noise at every brightness);
        or the domain's noise level, and the patches are unit-level ones
        (`fca.noise.collect_noise_bank(level=)`): each LR pixel's noise is then scaled, per
        channel, to the std `level` gives that channel's brightness."""
        if self.noise != "patches":
            raise ValueError("set_noise_bank: this generator has no noise bank (noise = 'none')")
        if bank.shape != self.noise_bank.shape:
            raise ValueError(f"set_noise_bank: expected {tuple(self.noise_bank.shape)}, got {tuple(bank.shape)}")
        self.noise_bank.copy_(bank)
        level = level or NoiseLevel.constant()
        self.noise_level.copy_(level.as_tensor())
        self.noise_level_by.fill_(level.by_code)
        self.noise_level_cap.copy_(level.cap if level.cap is not None else torch.zeros_like(self.noise_level_cap))

    def level(self) -> NoiseLevel:
        """The noise level the bank's patches are scaled by (noise = patches)."""
        return NoiseLevel.from_tensor(self.noise_level, int(self.noise_level_by), self.noise_level_cap)

    def noise_model(self) -> tuple[torch.Tensor, NoiseLevel] | None:
        """G's noise bank (a CPU copy) and level, or None when G adds no noise: noise = none, or a bank of
        zeros (the photos' noise was below one 8-bit level, `fca.noise.NoiseSpectrum.negligible`)."""
        if self.noise != "patches" or not bool(self.noise_bank.any()):
            return None
        return self.noise_bank.detach().cpu(), self.level()

    @torch.no_grad()
    def set_jpeg(self, setting: JpegSetting | None) -> None:
        """The JPEG round trip G's LR images end with (None: none)."""
        if setting is None:
            self.jpeg.zero_()
        else:
            self.jpeg.copy_(torch.tensor([setting.quality, SUBSAMPLINGS.index(setting.subsampling)]))

    def jpeg_setting(self) -> JpegSetting | None:
        """The JPEG round trip G's LR images end with, or None."""
        return jpeg_of_buffer(self.jpeg)

    def compress(self, lr: torch.Tensor) -> torch.Tensor:
        """lr [n, 3, h, w] through G's JPEG round trip (clipped to [0, 1], 8 bits, encoded and decoded),
        gradients straight through; lr itself without JPEG."""
        setting = self.jpeg_setting()
        if setting is None:
            return lr
        return lr + (jpeg_round_trip(lr.detach().float(), setting.quality, setting.subsampling) - lr).detach()

    def reset_noise(self, call_index: int = 0) -> None:
        """Rewind the noise draws: the next call is call `call_index`."""
        if self.noise == "patches":
            self.noise_calls.fill_(call_index)

    @torch.no_grad()
    def sample_noise(self, n: int, h: int, w: int) -> torch.Tensor | None:
        """The noise of the next call: [n, 3, h, w] on the bank's device (bank patches drawn uniformly
        and tiled), or None with noise = none. Advances the call counter."""
        if self.noise != "patches":
            return None
        call = int(self.noise_calls)
        self.noise_calls += 1
        rng = torch.Generator().manual_seed(stable_seed("fca.generator.noise", self.noise_seed, call))
        bank = self.noise_bank
        p = bank.shape[-1]
        ny, nx = -(-h // p), -(-w // p)
        idx = torch.randint(bank.shape[0], (n * ny * nx,), generator=rng).to(bank.device)
        tiles = bank[idx].float().view(n, ny, nx, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, 3, ny * p, nx * p)
        return tiles[:, :, :h, :w]

    @torch.no_grad()
    def noise_for(self, lr: torch.Tensor) -> torch.Tensor | None:
        """The noise G adds to LR images [n, 3, h, w] (their signal, before any noise): the next
        draw (`sample_noise`) times the std the noise level (`level`) gives each pixel's channel, on lr's
        device; None with noise = none. With the constant level 1 the draw is returned as it is."""
        draw = self.sample_noise(*lr.shape[:1], *lr.shape[-2:])
        if draw is None:
            return None
        level = self.level()
        if level.is_constant_one():
            return draw.to(lr.device)
        return draw.to(lr.device) * level.variance(lr.detach().float()).sqrt()

    def estimate_kernel(self, x_hr: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, K, K] (fp32, >= 0, sums to 1)."""
        return self.estimator(x_hr)

    def degrade(self, x_hr: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Apply given kernels: bicubic down, then per-sample reflect-padded convolution (plus a bank
        noise draw with noise = patches). Runs in fp32."""
        return self.degrade_parts(x_hr, kernels)[1]

    def blur(self, x_hr: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """The LR signal: bicubic down, then each image's kernel (fp32; no noise, no JPEG)."""
        return conv_per_sample(downscale(x_hr.float(), self.scale), kernels.float())

    def degrade_parts(self, x_hr: torch.Tensor, kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(blurred, degraded): the LR before its JPEG and noise draw and after them (the same tensor with
        noise = none and no JPEG). The trainer fits the blur on the first (`GeneratorConfig.noise_fit`).

        The noise comes after the JPEG round trip: the bank's crops are the photos' noise as their JPEG left
        it, and compressed a second time, with the signal, its quantisation adds noise of its own in bright,
        busy regions (on the simulated camera G's JPEG kept 1.11-1.24 of the bank's noise in the two
        brightest bins, where the camera's JPEG keeps 0.7 of its raw noise; docs/results.md)."""
        with torch.autocast(x_hr.device.type, enabled=False):
            blurred = self.blur(x_hr, kernels)
            degraded = self.compress(blurred)
            if self.noise == "patches":
                degraded = degraded + self.noise_for(blurred)
            return blurred, degraded

    def forward(self, x_hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kernels = self.estimate_kernel(x_hr)
        return self.degrade(x_hr, kernels), kernels
