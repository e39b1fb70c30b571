"""Stage `evaluate`: the referee (docs/design.md, "Referee").

Synthetic setting with a known answer. I = clean HR image, k_gt = the known kernel,
s = scale, down = antialiased bicubic downscale (`fca.resample.downscale`):

- real domain at HR:          R = I (*) k_gt
- true real-world LR:         L_true = down(I) (*) k_gt
- bicubic LR:                 down(R)
- ours:                       G(R) = down(R) (*) k(R)      (the trained generator)
- oracle:                     down(R) (*) k_or, k_or the K x K simplex kernel that makes
                              this closest to L_true (`fca.oracle.fit_oracle_kernel`)

With camera noise (`patches.noise`, `fca.noise`): R = noise(I (*) k_gt) at HR pixels,
L_true = noise(down(I) (*) k_gt) at LR pixels (the same per-pixel model, each patch's draws
seeded by its name), and the oracle's LR image gets the same model too (docs/design.md, "Noise").

k_or is fitted on the training patches (it is a property of k_gt and s, not of a scene)
and judged on the held-out ones. The SR probe trains one small net three times, with the
same budget and seed, on (down(X), X), (G(X), X) and (down(X) (*) k_or, X) for the
training real-domain patches X, and tests each on held-out scenes with input L_true and
target R (PSNR/SSIM on Y, s-pixel border cropped).

PSNRs here are pooled: the mean squared error over all validation crops at once (the
PSNR of the set as one mosaic). The per-crop mean that SR benchmarks use on full images
is dominated by nearly flat crops (a sky crop at 58 dB for bicubic upscaling and 37 dB
for a net with a 1% colour bias); SSIMs are per-crop means.

Without a known kernel (a folder of real photos, `patches.blur.type: none`) there is no
I, no L_true and no oracle: `referee_no_reference` reports what can be measured on the
photos x alone (the density match of G(x) to x, and the kernels G estimates), and no
verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from fca.baseline import fit_kernels_by_density
from fca.blind import BlindConfig, blind_degrade
from fca.camera import PatchCamera
from fca.config import param
from fca.distributed import Dist
from fca.frequency import bin_centres, log_l1, mean_density, radial_density, symmetric_kl, to_luma
from fca.kernels import angle_difference, conv_per_sample, cov_rel_error, effective_sigma, principal_axis
from fca.losses import floored_log_l1
from fca.metrics import mse_y, pooled_psnr, ssim_y
from fca.noise import NoiseLevel, PatchNoise, channel_correlation, neighbour_correlation, noise_by_brightness
from fca.oracle import fit_oracle_kernel, fit_oracle_kernels, fit_oracle_kernels_per_image
from fca.resample import downscale, upscale
from fca.train.sr import SRConfig, sr_predict, train_sr

DegradeFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
KernelFn = Callable[[torch.Tensor], torch.Tensor]
PAIR_KINDS = ("bicubic", "ours", "oracle")

# The weight of the smoothness term of the oracle that kernel *shapes* are measured against
# (`fit_oracle_kernel(smooth=...)`, relative to the data term): the exact least-squares oracle
# carries a 4-pixel checkerboard in the frequencies down(R) barely holds. Measured on the
# default domain (benchmarks/oracle_smoothing.py): 1e-3 costs the oracle 0.2 dB of its 59.3 dB LR
# PSNR and removes the checkerboard; 1e-1 starts to widen the kernel.
SMOOTH_ORACLE = 1e-3
# Orientation is judged only where the oracle kernel has one (docs/design.md, "Referee").
ANGLE_MIN_RATIO = 1.5


@dataclass(frozen=True)
class EvaluateConfig:
    density_bins: int = param(15, ge=2, le=4096, help="radial frequency bins; fewer than half the LR patch side")
    batch_size: int = param(16, ge=1, le=65_536, help="images per call of the generator")
    samples: int = param(4, ge=0, le=1000, help="validation images whose crops go to the report")
    sr: SRConfig = param(SRConfig())
    sr_seeds: int = param(2, ge=1, le=100, help="SR nets per kind of pairs, seeds seed .. seed + n - 1 (the interval covers them)")
    bootstrap: int = param(1000, ge=0, le=1_000_000, help="paired bootstrap resamples of seeds and test crops for the 95 % intervals (0: none)")
    baseline_steps: int = param(200, ge=0, le=100_000, help="per-image density-fit baseline (mixed-kernel domains): Adam steps per image (0: off)")
    blind: bool = param(True, help="the SR probe also trains on pairs from the practitioners' blind recipe (Real-ESRGAN's first "
                                   "order, fca.blind): the baseline a learned degradation must beat")
    seed: int = param(0, ge=0, le=2**32 - 1, help="seed of the SR runs (the same for every kind of pairs) and of the bootstrap")


def real_lr_views(
    clean: torch.Tensor, real: torch.Tensor, k_gt: torch.Tensor, scale: float, noise: PatchNoise | None = None,
    camera: PatchCamera | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(down(R), L_true) for clean HR I [N, 3, H, W], real R = noise(I (*) k_gt) [N, 3, H, W]; k_gt [K, K] or one per image [N, K, K].

    L_true = noise(down(I) (*) k_gt): `noise` (the patches' `fca.noise.PatchNoise`, view `lr`) is the
    domain's per-pixel camera noise drawn at the LR pixel grid; None (or type none): no noise.
    With a simulated `camera` (R = camera(I), `fca.camera.PatchCamera`) L_true = camera(down(I)):
    the same camera at the coarser pitch, with its own noise draw (view `lr`)."""
    if clean.shape != real.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and real {tuple(real.shape)} images must have the same shape")
    if camera is not None:
        return downscale(real, scale), camera(downscale(clean, scale), "lr").to(real.dtype)
    k = k_gt.to(torch.float64)
    true = conv_per_sample(downscale(clean, scale), k).to(real.dtype)
    if noise is not None and noise.config.active:
        true = noise(true, "lr")
    return downscale(real, scale), true


@torch.no_grad()
def apply_degrade(degrade_fn: DegradeFn, hr: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the generator over [N, 3, H, W] in batches -> (lr [N, 3, h, w], kernels [N, K, K])."""
    lrs, kernels = [], []
    for start in range(0, hr.shape[0], batch_size):
        lr, k = degrade_fn(hr[start : start + batch_size])
        lrs.append(lr.detach().float().cpu())
        kernels.append(k.detach().double().cpu())
    return torch.cat(lrs), torch.cat(kernels)


def seconds_per_image(kernel_fn: KernelFn, hr: torch.Tensor, batch_size: int) -> float:
    """Wall time of kernel_fn per image over [N, 3, H, W] in batches of batch_size, after one
    untimed warm-up batch (first calls pay for allocations and kernel selection)."""
    kernel_fn(hr[:batch_size])
    t0 = time.perf_counter()
    for start in range(0, hr.shape[0], batch_size):
        kernel_fn(hr[start : start + batch_size])
    return (time.perf_counter() - t0) / hr.shape[0]


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def _as_per_image(k: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """[K, K] or [N, K, K] -> [N, K, K] float64."""
    if k.dim() == 2:
        return k.double().expand(n, -1, -1)
    if k.dim() != 3 or k.shape[0] != n:
        raise ValueError(f"referee: {name} must be [K, K] or [{n}, K, K], got {tuple(k.shape)}")
    return k.double()


def _check_batches(**batches: torch.Tensor) -> None:
    for name, t in batches.items():
        if t.dim() != 4 or t.shape[1] != 3 or t.shape[0] == 0:
            raise ValueError(f"referee: {name} must be a non-empty [N, 3, H, W] batch, got {tuple(t.shape)}")


def _check_lr(lr: torch.Tensor, down: torch.Tensor) -> None:
    if lr.shape != down.shape:
        raise ValueError(f"referee: the generator returned LR {tuple(lr.shape)}, expected {tuple(down.shape)}")


def _check_density_bins(real: torch.Tensor, scale: float, config: EvaluateConfig) -> None:
    # The first ring must reach the lowest non-zero frequency 1/side: bins < side / 2.
    lr_side = int(min(real.shape[-2:]) // scale)
    if config.density_bins > (lr_side - 1) // 2:
        raise ValueError(f"evaluate.density_bins = {config.density_bins}: LR patches of {lr_side} pixels resolve at most {(lr_side - 1) // 2} radial bins")


def _check_inputs(clean_val, real_val, clean_train, real_train, scale, config: EvaluateConfig) -> None:
    _check_batches(clean_val=clean_val, real_val=real_val, clean_train=clean_train, real_train=real_train)
    if float(scale) != int(scale):
        raise ValueError(f"referee: the SR probe needs an integer scale, got {scale}")
    for name, t in (("validation", real_val), ("training", real_train)):
        h, w = t.shape[-2:]
        if h % int(scale) or w % int(scale):
            raise ValueError(f"referee: {name} patches {h}x{w} are not a multiple of the scale {scale}")
    _check_density_bins(real_val, int(scale), config)


def kernels_differ(kernels: torch.Tensor) -> bool:
    """Whether the kernels [N, K, K] are not all the same one (a mixed-kernel domain)."""
    return kernels.dim() == 3 and kernels.shape[0] > 1 and bool((kernels - kernels[:1]).abs().max() > 1e-12)


def agreement_items(pred: torch.Tensor, oracle: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image numbers behind `kernel_agreement` for kernels pred, oracle [N, K, K]: each
    image's effective sigmas, second-moment error and direction error in degrees (nan where the
    oracle's axis ratio is under ANGLE_MIN_RATIO: a round kernel has no direction)."""
    ratio, angle_or = principal_axis(oracle)
    _, angle_pred = principal_axis(pred)
    angle = angle_difference(angle_pred, angle_or).double()
    angle[ratio < ANGLE_MIN_RATIO] = float("nan")
    items = {"sigma_pred": effective_sigma(pred), "sigma_oracle": effective_sigma(oracle), "cov_rel_error": cov_rel_error(pred, oracle),
             "angle_error": angle}
    return {k: v.double().numpy() for k, v in items.items()}


def _lower_median(x: np.ndarray) -> float:
    """The lower of the two middle values for an even count, as torch.median (the referee's
    numbers have always used torch's definition); nan for none."""
    x = np.sort(x[np.isfinite(x)])
    return float(x[(x.size - 1) // 2]) if x.size else float("nan")


def agreement_summary(items: dict[str, np.ndarray]) -> dict[str, float]:
    """sigma_pearson, cov_rel_error_median, angle_error_median from `agreement_items`' arrays
    (or a bootstrap resample of them); a Pearson of fewer than 3 images or of a constant is nan."""
    sp, so = items["sigma_pred"], items["sigma_oracle"]
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = float(np.corrcoef(sp, so)[0, 1]) if sp.size > 2 and sp.std() > 0 and so.std() > 0 else float("nan")
    return {"sigma_pearson": pearson, "cov_rel_error_median": _lower_median(items["cov_rel_error"]),
            "angle_error_median": _lower_median(items["angle_error"])}


def kernel_agreement(pred: torch.Tensor, oracle: torch.Tensor) -> dict[str, float]:
    """How well per-image kernels pred [N, K, K] match per-image oracles [N, K, K]:
    sigma_pearson (effective sigmas), cov_rel_error_median, angle_error_median (degrees, over the
    images whose oracle has an axis ratio >= ANGLE_MIN_RATIO; nan when there are none), angle_images."""
    items = agreement_items(pred, oracle)
    return agreement_summary(items) | {"angle_images": int(np.isfinite(items["angle_error"]).sum())}


def adapt_intervals(pred: torch.Tensor, oracle: torch.Tensor, views: dict[str, torch.Tensor], resamples: int,
                    rng: np.random.Generator) -> dict[str, list[float]]:
    """95 % intervals of the adapt verdict's numbers by a bootstrap over the validation images:
    sigma_pearson, cov_rel_error_median, angle_error_median and gain_db (LR PSNR against L_true of
    ours over the best single kernel, both pooled over the same resampled images). views: ours,
    global and true LR images [N, 3, h, w]."""
    items = agreement_items(pred, oracle)
    items |= {f"mse_{k}": per_image_mse(views[k], views["true"]) for k in ("ours", "global")}

    def statistic(d: dict[str, np.ndarray]) -> dict[str, float]:
        return agreement_summary(d) | {"gain_db": float(10 * np.log10(d["mse_global"].mean() / d["mse_ours"].mean()))}

    return paired_bootstrap(items, statistic, resamples, rng)


def per_image_mse(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Each image's mean squared error over channels and pixels, [N, C, H, W] pairs -> [N] (float64):
    their mean over images of one size is `pooled_psnr`'s error."""
    return (a.double() - b.double()).pow(2).flatten(1).mean(1).numpy()


def kernel_intervals(pred: torch.Tensor, oracle: torch.Tensor, smooth: torch.Tensor, views: dict[str, torch.Tensor],
                     resamples: int, rng: np.random.Generator) -> dict[str, list[float]]:
    """95 % intervals, by a bootstrap over the validation images, of the kernel numbers the verdict
    reads: cov_rel_error and shape_error (means over images) and lr_psnr_gain_db (LR PSNR against
    L_true, ours over bicubic down(x)). views: bicubic, ours and true LR images [N, 3, h, w]."""
    items = {"cov_rel_error": cov_rel_error(pred, oracle).double().numpy(), "shape_error": shape_error(pred, smooth).double().numpy(),
             **{f"mse_{k}": per_image_mse(views[k], views["true"]) for k in ("bicubic", "ours")}}

    def statistic(d: dict[str, np.ndarray]) -> dict[str, float]:
        return {"cov_rel_error": float(d["cov_rel_error"].mean()), "shape_error": float(d["shape_error"].mean()),
                "lr_psnr_gain_db": float(10 * np.log10(d["mse_bicubic"].mean() / d["mse_ours"].mean()))}

    return paired_bootstrap(items, statistic, resamples, rng)


def shape_error(pred: torch.Tensor, oracle: torch.Tensor) -> torch.Tensor:
    """||k - k_or||_2 / ||k_or||_2 per kernel: [..., K, K] -> [...] (sees spikes and rings that second moments miss)."""
    return torch.linalg.vector_norm((pred - oracle).flatten(-2), dim=-1) / torch.linalg.vector_norm(oracle.flatten(-2), dim=-1)


def kernel_psnr(pred: torch.Tensor, oracle: torch.Tensor) -> float:
    """PSNR (dB) of kernels against the oracles, peak = the oracles' largest entry, pooled over kernels."""
    mse = (pred - oracle).pow(2).mean()
    return float(10 * torch.log10(oracle.max() ** 2 / mse))


def interval(samples: np.ndarray) -> list[float]:
    """The 95 % percentile interval [lo, hi] of bootstrap samples (nan-safe)."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def paired_bootstrap(
    values: dict[str, np.ndarray],
    statistic: Callable[[dict[str, np.ndarray]], dict[str, float]],
    resamples: int,
    rng: np.random.Generator,
    axes: int | None = None,
) -> dict[str, list[float]]:
    """95 % intervals of the numbers statistic(values) returns, by a paired bootstrap.

    values: name -> an array, all of one shape (e.g. [seeds, crops] or [images]). Each resample
    draws the indices of the first `axes` axes (None: every axis) with replacement, the *same*
    draw for every array (they are measured on the same items, so what the items share cancels
    in their differences), and recomputes the statistic; later axes (e.g. density bins) are
    kept whole. resamples <= 0: no intervals ({})."""
    if resamples <= 0:
        return {}
    shapes = {name: v.shape for name, v in values.items()}
    shape = next(iter(shapes.values()))
    if any(s != shape for s in shapes.values()):
        raise ValueError(f"paired bootstrap: the arrays must share one shape, got {shapes}")
    drawn = shape if axes is None else shape[:axes]
    draws: dict[str, np.ndarray] = {}
    for b in range(resamples):
        index = np.ix_(*[rng.integers(0, n, n) for n in drawn])
        for name, v in statistic({k: a[index] for k, a in values.items()}).items():
            draws.setdefault(name, np.empty(resamples))[b] = v
    return {name: interval(v) for name, v in draws.items()}


def _true_gap_reductions(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """gap_reduction_true(_oracle) from per-image densities {bicubic, ours, oracle, true: [N, bins]}:
    1 - d(set mean, L_true's set mean) / the same for bicubic down(x), with d the losses' floored
    log-L1 (`fca.losses.floored_log_l1`). The floor: against L_true a smooth kernel matches every
    bin that holds more than 1e-4 of the power to ~1 %, and the bins below it hold aliasing and
    rounding residue (1e-6 .. 1e-9 of the total) that an unfloored log weighs like the rest; the
    exact oracle matches those only through its checkerboard (docs/design.md, "Measures")."""
    mean = {k: torch.from_numpy(v.mean(0)) for k, v in per_image.items()}
    base = float(floored_log_l1(mean["bicubic"], mean["true"]))
    out = {}
    for kind, key in (("ours", "gap_reduction_true"), ("oracle", "gap_reduction_true_oracle")):
        out[key] = 1.0 - float(floored_log_l1(mean[kind], mean["true"])) / base if base > 0 else float("nan")
    return out


def relative_gains(psnr: dict[str, float]) -> dict[str, float]:
    """The SR numbers that compare our pairs with the baselines' (PSNR by kind of pairs, dB):
    gain_db_over_global (the best single kernel's pairs, mixed domains) and, with the blind
    recipe's pairs, gain_db_over_blind and gain_fraction_blind (the blind recipe's share of the
    oracle's gain over bicubic pairs)."""
    out = {}
    if "global" in psnr:
        out["gain_db_over_global"] = psnr["ours"] - psnr["global"]
    if "blind" in psnr:
        head = psnr["oracle"] - psnr["bicubic"]
        out["gain_db_over_blind"] = psnr["ours"] - psnr["blind"]
        out["gain_fraction_blind"] = (psnr["blind"] - psnr["bicubic"]) / head if head > 1e-6 else float("nan")
    return out


def sr_intervals(mse: dict[str, np.ndarray], resamples: int, rng: np.random.Generator) -> dict[str, list[float]]:
    """95 % intervals of the SR numbers by a paired bootstrap over seeds and test crops.

    mse: kind -> [seeds, crops] per-crop Y MSE of that kind's nets. Each resample draws seeds and
    crops with replacement, the *same* draw for every kind (the kinds are compared on the same
    crops by nets of the same seeds), and recomputes the pooled PSNRs and the gain fraction, so the
    interval holds both the test set's and the SR training's noise."""

    def statistic(m: dict[str, np.ndarray]) -> dict[str, float]:
        psnr = {k: -10 * np.log10(v.mean()) for k, v in m.items()}
        head = psnr["oracle"] - psnr["bicubic"]
        out = {f"psnr_{k}": v for k, v in psnr.items()}
        out["gain_fraction"] = (psnr["ours"] - psnr["bicubic"]) / head if head > 1e-6 else np.nan
        return out | relative_gains(psnr)

    return paired_bootstrap(mse, statistic, resamples, rng)


# --------------------------------------------------------------------------- the referee's phases


@dataclass(frozen=True)
class _Split:
    """One split of the patches (validation or training) as the referee sees it: images [N, 3, H, W]
    float32 and their LR views [N, 3, h, w]."""

    clean: torch.Tensor  # I
    real: torch.Tensor  # R
    k_gt: torch.Tensor  # each image's known kernel [N, K, K], float64
    noise: PatchNoise | None  # the domain's camera noise; None on a noise-free domain (an inactive model too)
    camera: PatchCamera | None  # a simulated camera (R = camera(I)), or None
    down: torch.Tensor  # down(R)
    true: torch.Tensor  # L_true

    @property
    def noisy(self) -> bool:
        """Whether the images carry a camera's noise: a noise model's, or a simulated camera's own."""
        return self.noise is not None or self.camera is not None

    def with_noise(self, lr: torch.Tensor, view: str) -> torch.Tensor:
        """A kernel's LR images with the domain's noise model (fresh draws for `view`), so that the
        kernel's answer is blur and noise as L_true is; unchanged on a noise-free domain."""
        return lr if self.noise is None else self.noise(lr, view)


def _split(clean: torch.Tensor, real: torch.Tensor, k_gt: torch.Tensor, noise: PatchNoise | None, camera: PatchCamera | None,
           scale: int) -> _Split:
    """A split's images as float32 with their views down(R) and L_true (`real_lr_views`). Whether the
    domain is noisy is decided here, once: an inactive noise model is no noise."""
    clean, real = clean.float(), real.float()
    noise = noise if noise is not None and noise.config.active else None
    return _Split(clean, real, k_gt, noise, camera, *real_lr_views(clean, real, k_gt, scale, noise, camera))


def _known_kernels(k_gt: torch.Tensor, k_train: torch.Tensor | None, n_val: int, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each validation and training image's known kernel [N, K, K] float64; k_train None: k_gt's, which
    must then be one kernel for all."""
    if k_train is None:
        if k_gt.dim() != 2:
            raise ValueError("referee: per-image validation kernels need the training images' kernels too (k_train)")
        k_train = k_gt
    return _as_per_image(k_gt, n_val, "k_gt"), _as_per_image(k_train, n_train, "k_train")


@dataclass(frozen=True)
class _Case:
    """What the referee judges on: the synthetic domain's two splits, the integer scale s and the settings."""

    val: _Split
    train: _Split
    scale: int
    config: EvaluateConfig

    @property
    def mixed(self) -> bool:
        """A mixed-kernel domain: the images' known kernels differ, so each image gets its own oracle."""
        return kernels_differ(self.val.k_gt) or kernels_differ(self.train.k_gt)

    @property
    def samples(self) -> int:
        """How many validation images' crops go to the report."""
        return min(self.config.samples, self.val.real.shape[0])


@dataclass(frozen=True)
class _Section:
    """One section of the referee's metrics, the 95 % intervals of its numbers (None: it has none) and
    the arrays the report draws from it."""

    metrics: dict[str, float]
    intervals: dict[str, list[float]] | None
    arrays: dict[str, np.ndarray]


class _Stopwatch:
    """Wall seconds per phase (the result's `timings_s`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def record(self, phase: str) -> None:
        """`phase`'s seconds: those since the watch last started."""
        self.seconds[phase] = time.perf_counter() - self._start

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Times the block as `name`."""
        self._start = time.perf_counter()
        yield
        self.record(name)


@dataclass(frozen=True)
class _Ours:
    """The generator's answer: its LR images G(R) of both splits and its kernels for the validation images."""

    lr_val: torch.Tensor
    k_val: torch.Tensor  # [N_val, K', K'] float64
    lr_train: torch.Tensor


def _run_generator(case: _Case, degrade_fn: DegradeFn, clock: _Stopwatch) -> _Ours:
    """G on both splits; its seconds count from the watch's start (the views before it included)."""
    lr_val, k_val = apply_degrade(degrade_fn, case.val.real, case.config.batch_size)
    clock.record("lr_ours_val")
    lr_train, _ = apply_degrade(degrade_fn, case.train.real, case.config.batch_size)
    _check_lr(lr_val, case.val.down)
    clock.record("degrade")
    return _Ours(lr_val, k_val, lr_train)


@dataclass(frozen=True)
class _Oracle:
    """The known answer: the oracle kernels and the LR images they make."""

    k_global: torch.Tensor  # the best single kernel for the training images [K, K]
    k_val: torch.Tensor  # each validation image's exact least-squares oracle [N_val, K, K] (k_global on a one-kernel domain)
    k_val_smooth: torch.Tensor  # its smooth twin (SMOOTH_ORACLE): what kernel shapes are judged against
    lr_val: torch.Tensor
    lr_train: torch.Tensor


def _fit_oracle(case: _Case, size: int) -> _Oracle:
    """The oracle kernels of `size` (G's kernel size: the oracle is G's best answer): one fitted on the
    training patches when every image shares a kernel, one per image on a mixed-kernel domain; and
    their LR images with the true noise model, or for a simulated camera the camera's own LR photos."""
    val, train = case.val, case.train
    # the one best kernel for the training set, and its smooth twin (one build of the normal equations)
    k_global, k_global_smooth = fit_oracle_kernels(train.down, train.true, size, (0.0, SMOOTH_ORACLE))
    if case.mixed:
        k_val, k_val_smooth = fit_oracle_kernels_per_image(val.down, val.true, size, (0.0, SMOOTH_ORACLE))
        (k_train,) = fit_oracle_kernels_per_image(train.down, train.true, size)
    else:
        n_val = val.real.shape[0]
        k_val, k_val_smooth = k_global.expand(n_val, -1, -1), k_global_smooth.expand(n_val, -1, -1)
        k_train = k_global.expand(train.real.shape[0], -1, -1)
    if val.camera is not None and train.camera is not None:  # the oracle pairs are the camera's own: (camera(down(X)), camera(X))
        lr_val, lr_train = (split.camera(downscale(split.clean, case.scale), "oracle").to(split.true.dtype) for split in (val, train))
    else:  # the known answer: the oracle kernel and the true noise model
        lr_val = val.with_noise(conv_per_sample(val.down, k_val), "oracle")
        lr_train = train.with_noise(conv_per_sample(train.down, k_train), "oracle")
    return _Oracle(k_global, k_val, k_val_smooth, lr_val, lr_train)


def _density_check(case: _Case, ours: _Ours, oracle: _Oracle) -> _Section:
    """The `density` section: frequency densities (cycles/pixel, so HR and LR share the axis) of the
    LR images, their distances to R's and the share of bicubic's gap to L_true's that G closes."""
    val, config = case.val, case.config
    bins = config.density_bins
    dens = {
        "real": mean_density(val.real, bins),
        "bicubic": mean_density(val.down, bins),
        "ours": mean_density(ours.lr_val, bins),
        "oracle": mean_density(oracle.lr_val, bins),
        "l_true": mean_density(val.true, bins),  # L_true: what the density check judges against
    }
    gap = {k: float(log_l1(dens[k], dens["real"])) for k in PAIR_KINDS}
    skl = {k: float(symmetric_kl(dens[k], dens["real"])) for k in PAIR_KINDS}
    density = {f"gap_{k}": v for k, v in gap.items()} | {f"skl_{k}": v for k, v in skl.items()}
    density["gap_true"] = float(log_l1(dens["l_true"], dens["real"]))
    density["gap_reduction"] = 1.0 - gap["ours"] / gap["bicubic"] if gap["bicubic"] > 0 else float("nan")
    # The ceiling: even the right answer (the oracle) does not reach R's density exactly,
    # because L_true itself differs from R in the top bins (noise, aliasing, truncation).
    density["gap_reduction_oracle"] = 1.0 - gap["oracle"] / gap["bicubic"] if gap["bicubic"] > 0 else float("nan")
    # The same question with the ceiling removed: the gap to L_true's density, i.e. to the true LR
    # of the *same* images, so content cancels and the right answer scores 1 (up to its noise draw).
    views = {"bicubic": val.down, "ours": ours.lr_val, "oracle": oracle.lr_val, "true": val.true}
    per_image = {k: image_densities(v, bins).numpy() for k, v in views.items()}
    density |= _true_gap_reductions(per_image)
    intervals = paired_bootstrap(per_image, _true_gap_reductions, config.bootstrap, np.random.default_rng(config.seed), axes=1)
    return _Section(density, intervals, {"density_bins": bin_centres(bins).numpy(), **{f"density_{k}": v.numpy() for k, v in dens.items()}})


def _kernel_check(case: _Case, ours: _Ours, oracle: _Oracle) -> _Section:
    """The `kernel` section: G's kernels against the oracle's, and the LR images against L_true."""
    val, config = case.val, case.config
    kernel = {
        "cov_rel_error": _mean(cov_rel_error(ours.k_val, oracle.k_val)),
        "shape_error": _mean(shape_error(ours.k_val, oracle.k_val_smooth)),
        "shape_error_exact": _mean(shape_error(ours.k_val, oracle.k_val)),
        "psnr": kernel_psnr(ours.k_val, oracle.k_val_smooth),
        "sigma_pred": _mean(effective_sigma(ours.k_val)),
        "sigma_oracle": _mean(effective_sigma(oracle.k_val)),
        "sigma_true": _mean(effective_sigma(val.k_gt)),
        "lr_psnr_bicubic": pooled_psnr(val.down, val.true),
        "lr_psnr_ours": pooled_psnr(ours.lr_val, val.true),
        "lr_psnr_oracle": pooled_psnr(oracle.lr_val, val.true),
    }
    kernel["lr_psnr_gain_db"] = kernel["lr_psnr_ours"] - kernel["lr_psnr_bicubic"]
    views = {"bicubic": val.down, "ours": ours.lr_val, "true": val.true}
    intervals = kernel_intervals(ours.k_val, oracle.k_val, oracle.k_val_smooth, views, config.bootstrap, np.random.default_rng(config.seed))
    arrays = {"kernel_oracle": oracle.k_global.numpy(), "kernel_oracle_smooth": oracle.k_val_smooth[0].numpy(),
              "kernel_true": val.k_gt[0].numpy(), "kernels_pred": ours.k_val.numpy()}
    return _Section(kernel, intervals, arrays)


def _adaptation(case: _Case, ours: _Ours, oracle: _Oracle, kernel: dict[str, float], kernel_fn: KernelFn) -> _Section:
    """The `adapt` section (mixed-kernel domains): does G read each image's blur? Its kernels against
    the per-image oracles; its LR images against the best *single* kernel's (fitted jointly on the
    validation set: what a non-adapting estimator could at best do) and, with evaluate.baseline_steps,
    against a non-learned per-image density fit. `kernel`: the kernel section's metrics."""
    val, config = case.val, case.config
    size = ours.k_val.shape[-1]
    k_global_val = fit_oracle_kernel(val.down, val.true, size)  # the best single kernel for the validation set
    global_val = val.with_noise(conv_per_sample(val.down, k_global_val), "global")  # as the oracle: with the true noise
    adapt = kernel_agreement(ours.k_val, oracle.k_val) | {
        "lr_psnr_ours": kernel["lr_psnr_ours"],
        "lr_psnr_global": pooled_psnr(global_val, val.true),
        "lr_psnr_oracle": kernel["lr_psnr_oracle"],
        "seconds_per_image_ours": seconds_per_image(kernel_fn, val.real, config.batch_size),
    }
    adapt["gain_db"] = adapt["lr_psnr_ours"] - adapt["lr_psnr_global"]
    intervals = adapt_intervals(ours.k_val, oracle.k_val, {"ours": ours.lr_val, "global": global_val, "true": val.true},
                                config.bootstrap, np.random.default_rng(config.seed))
    arrays: dict[str, np.ndarray] = {}
    if config.baseline_steps > 0:
        baseline, k_baseline = _density_fit_baseline(case, oracle, size, adapt["seconds_per_image_ours"])
        adapt |= baseline
        arrays["kernels_baseline"] = k_baseline.numpy()
    arrays |= {"kernels_true": val.k_gt.numpy(), "kernels_oracle": oracle.k_val.numpy(), "kernel_global": k_global_val.numpy()}
    return _Section(adapt, intervals, arrays)


def _density_fit_baseline(case: _Case, oracle: _Oracle, size: int, seconds_ours: float) -> tuple[dict[str, float], torch.Tensor]:
    """The non-learned per-image density fit (`fca.baseline`) judged as G is: (its `baseline_*` adapt
    metrics, its kernels [N_val, K, K]). seconds_ours: G's seconds per image, for the speed-up."""
    val = case.val
    k_baseline, seconds = fit_kernels_by_density(val.real, case.scale, size, steps=case.config.baseline_steps)
    lr = val.with_noise(conv_per_sample(val.down, k_baseline), "baseline")
    metrics = {f"baseline_{k}": v for k, v in kernel_agreement(k_baseline, oracle.k_val).items() if k != "angle_images"}
    metrics["baseline_lr_psnr"] = pooled_psnr(lr, val.true)
    metrics["seconds_per_image_baseline"] = seconds / val.real.shape[0]
    metrics["speedup_over_baseline"] = metrics["seconds_per_image_baseline"] / max(seconds_ours, 1e-9)
    return metrics, k_baseline


def _pairs_lr(case: _Case, ours: _Ours, oracle: _Oracle) -> dict[str, torch.Tensor]:
    """The LR side of each kind of the SR probe's training pairs (the HR side is the training images R)."""
    train, config = case.train, case.config
    lr = {"bicubic": train.down, "ours": ours.lr_train, "oracle": oracle.lr_train}
    if case.mixed:  # the best single kernel's, with the true noise as the oracle's
        lr["global"] = train.with_noise(conv_per_sample(train.down, oracle.k_global), "global")
    if config.blind:  # the practitioners' baseline: random degradations, one draw per training image
        lr["blind"] = blind_degrade(train.real, case.scale, BlindConfig(), np.random.default_rng(config.seed))
    return lr


@dataclass(frozen=True)
class _SRTraining:
    """How and where the SR probe's nets train, besides their pairs and seed (`train_sr`)."""

    progress: bool
    on_step: Callable[[str, int, dict[str, float]], None] | None
    device: torch.device
    dist: Dist


def _sr_nets(case: _Case, kind: str, lr: torch.Tensor, training: _SRTraining) -> tuple[np.ndarray, list[float], torch.Tensor, list[float]]:
    """The SR probe on one kind of pairs (lr, R): a net per seed, each tested on the validation images
    (input L_true, target R). Returns each seed's per-crop Y MSE [seeds, crops], each seed's mean
    SSIM-Y, and the first seed's SR images and loss curve (on_step sees that seed's steps)."""
    config, s, val = case.config, case.scale, case.val
    mse: list[np.ndarray] = []
    ssim: list[float] = []
    for i in range(config.sr_seeds):
        seed = config.seed + i
        curve: list[float] = []

        def _log(step: int, m: dict[str, float], curve: list[float] = curve, first: bool = i == 0) -> None:
            curve.append(m["loss"])
            if training.on_step is not None and first:
                training.on_step(kind, step, m)

        net = train_sr(config.sr, lr, case.train.real, s, seed=seed, progress=training.progress, on_step=_log,
                       desc=f"sr[{kind}, seed {seed}]", device=training.device, dist=training.dist)
        out = sr_predict(net, val.true, config.batch_size)
        mse.append(mse_y(out, val.real, s).numpy())
        ssim.append(_mean(ssim_y(out, val.real, s)))
        if i == 0:
            first_out, first_curve = out, curve
    return np.stack(mse), ssim, first_out, first_curve


def _sr_probe(case: _Case, pairs_lr: dict[str, torch.Tensor], training: _SRTraining, clock: _Stopwatch) -> _Section:
    """The `sr` section. Downstream SR: the same net, budget and seeds for every kind of pairs; only the
    LR side of the pairs differs (`pairs_lr`: kind -> the training images' LR)."""
    config, s, val = case.config, case.scale, case.val
    mse, ssim, outputs, losses = {}, {}, {}, {}
    for kind, lr in pairs_lr.items():
        with clock.phase(f"sr_{kind}"):
            mse[kind], ssim[kind], outputs[kind], losses[kind] = _sr_nets(case, kind, lr, training)
    sr: dict[str, float] = {}
    for kind in pairs_lr:
        sr[f"psnr_{kind}"] = float(np.mean([-10 * np.log10(m.mean()) for m in mse[kind]]))
        sr[f"ssim_{kind}"] = float(np.mean(ssim[kind]))
    bicubic_up = upscale(val.true, s).clamp(0, 1)
    sr["psnr_bicubic_upsampling"] = float(-10 * np.log10(float(mse_y(bicubic_up, val.real, s).mean())))
    sr["ssim_bicubic_upsampling"] = _mean(ssim_y(bicubic_up, val.real, s))
    headroom = sr["psnr_oracle"] - sr["psnr_bicubic"]
    # Undefined when oracle pairs do not beat bicubic pairs (no gain to recover).
    sr["gain_fraction"] = (sr["psnr_ours"] - sr["psnr_bicubic"]) / headroom if headroom > 1e-6 else float("nan")
    sr |= relative_gains({k: sr[f"psnr_{k}"] for k in pairs_lr})
    sr["seeds"] = config.sr_seeds
    n = case.samples
    arrays = {"sample_sr_bicubic_upsampling": bicubic_up[:n].numpy(), **{f"sample_sr_{k}": v[:n].numpy() for k, v in outputs.items()},
              **{f"sr_loss_{k}": np.asarray(v) for k, v in losses.items()}}
    return _Section(sr, sr_intervals(mse, config.bootstrap, np.random.default_rng(config.seed)), arrays)


def _noise_check(case: _Case, degrade_fn: DegradeFn, ours: _Ours) -> _Section:
    """The `noise` section (a noisy domain): G's noise against the camera's (`noise_section`), from a
    second draw of G on the validation images. It runs last: G's second draw here must not change the
    draws the pairs above were made with."""
    val, s = case.val, case.scale
    second = apply_degrade(degrade_fn, val.real, case.config.batch_size)[0]
    if val.camera is not None:  # the camera's noise: two draws of camera(down(I)), binned by its noise-free output
        lr_clean = downscale(val.clean, s)
        signal, draws = val.camera.signal(lr_clean), (lambda _, view: val.camera(lr_clean, view))
    else:
        signal, draws = real_lr_views(val.clean, val.real, val.k_gt, s, None)[1], val.noise
    metrics, arrays = noise_section(signal, draws, (ours.lr_val, second))
    return _Section(metrics, None, arrays)


def _sample_crops(case: _Case, ours: _Ours, oracle: _Oracle) -> dict[str, np.ndarray]:
    """The first validation images and their LR views, for the report's crops."""
    val, n = case.val, case.samples
    return {"sample_hr_real": val.real[:n].numpy(), "sample_lr_true": val.true[:n].numpy(), "sample_lr_bicubic": val.down[:n].numpy(),
            "sample_lr_ours": ours.lr_val[:n].numpy(), "sample_lr_oracle": oracle.lr_val[:n].float().numpy()}


def _result(sections: dict[str, _Section], crops: dict[str, np.ndarray], timings: dict[str, float]) -> dict:
    """`referee`'s result from its sections (in the order they appear), the sample crops and the timings."""
    return {"metrics": {name: section.metrics for name, section in sections.items()},
            "intervals": {name: section.intervals for name, section in sections.items() if section.intervals is not None},
            "arrays": crops | {key: a for section in sections.values() for key, a in section.arrays.items()},
            "timings_s": timings}


def referee(
    clean_val: torch.Tensor, real_val: torch.Tensor, k_gt: torch.Tensor, scale: float, degrade_fn: DegradeFn,
    clean_train: torch.Tensor, real_train: torch.Tensor, config: EvaluateConfig, progress: bool = False,
    on_step: Callable[[str, int, dict[str, float]], None] | None = None, device: torch.device = torch.device("cpu"),
    dist: Dist = Dist(), k_train: torch.Tensor | None = None, kernel_fn: KernelFn | None = None,
    noise_val: PatchNoise | None = None, noise_train: PatchNoise | None = None,
    camera_val: PatchCamera | None = None, camera_train: PatchCamera | None = None,
) -> dict:
    """Judge a trained degradation against the known answer.

    clean_*/real_*: [N, 3, H, W] in [0, 1], real = clean (*) k, H and W multiples of s.
    k_gt: the validation images' kernels, [K, K] (one for all) or [N_val, K, K] (one per image);
    k_train: the training images' kernels likewise (default: k_gt, which must then be [K, K]).
    degrade_fn(hr [B, 3, H, W]) -> (lr [B, 3, H/s, W/s], kernels [B, K', K']) is the trained
    generator; kernel_fn(hr) -> kernels, its kernel estimation alone, is what
    `adapt.seconds_per_image_ours` times (default: degrade_fn, whose time includes the LR
    images). noise_val / noise_train: the domain's camera noise for the validation / training
    patches (`fca.noise.PatchNoise`; None: none): L_true gets it (`real_lr_views`), and so do
    the oracle's LR (view `oracle`, fresh draws) and, on a mixed-kernel domain, the best single
    kernel's and the baseline's, so each stays a kernel's best answer, blur and noise.
    `on_step(kind, step, metrics)` sees every SR training step. device / dist: where, and over
    how many torchrun processes, the SR nets train.

    When every image shares one kernel, the oracle k_or is one kernel fitted on the training
    patches. When kernels differ (a mixed-kernel domain), each image gets its own oracle, and
    the referee adds the `adapt` section: our kernels against the per-image oracles, against
    the best *single* kernel (fitted jointly over the validation set: what a non-adapting
    estimator could at best do), and against a non-learned per-image density fit
    (`fca.baseline`), and a fourth kind of SR pairs made with the best single kernel.

    Returns {"metrics": nested dict (keys below), "intervals": the same keys -> [lo, hi] 95 %
    bootstrap intervals for every number the verdict reads (density, kernel, adapt: over the
    validation images; sr: over the SR seeds and test crops), "arrays": numpy arrays for the report,
    "timings_s": seconds per phase}. Metrics:
      density.{gap,skl}_{bicubic,ours,oracle}, density.gap_true, density.gap_reduction(_oracle)
      kernel.cov_rel_error, kernel.shape_error, kernel.psnr, kernel.sigma_{pred,oracle,true},
      kernel.lr_psnr_{bicubic,ours,oracle} (pooled RGB PSNR against L_true), kernel.lr_psnr_gain_db (ours - bicubic)
      sr.psnr_* (pooled PSNR-Y, mean over the SR seeds), sr.ssim_*, for bicubic / ours / oracle
      (/ global) pairs and sr.*_bicubic_upsampling; sr.gain_fraction = (ours - bicubic) / (oracle - bicubic)
      adapt.* (mixed-kernel domains only): sigma_pearson, cov_rel_error_median, angle_error_median,
      lr_psnr_{ours,global,oracle}, gain_db, baseline_* and seconds_per_image_{ours,baseline}.
      noise.* (a noisy domain only, `noise_section`): variance_{camera,ours}, variance_ratio_{min,max},
      lag1_{camera,ours}.
    """
    _check_inputs(clean_val, real_val, clean_train, real_train, scale, config)
    s, clock = int(scale), _Stopwatch()
    k_val, k_train = _known_kernels(k_gt, k_train, real_val.shape[0], real_train.shape[0])
    val = _split(clean_val, real_val, k_val, noise_val, camera_val, s)
    case = _Case(val, _split(clean_train, real_train, k_train, noise_train, camera_train, s), s, config)
    ours = _run_generator(case, degrade_fn, clock)
    with clock.phase("oracle"):
        oracle = _fit_oracle(case, ours.k_val.shape[-1])
    with clock.phase("density_kernel"):
        sections = {"density": _density_check(case, ours, oracle), "kernel": _kernel_check(case, ours, oracle)}
    if case.mixed:
        with clock.phase("adapt"):
            sections["adapt"] = _adaptation(case, ours, oracle, sections["kernel"].metrics, kernel_fn or (lambda hr: degrade_fn(hr)[1]))
    sections["sr"] = _sr_probe(case, _pairs_lr(case, ours, oracle), _SRTraining(progress, on_step, device, dist), clock)
    if val.noisy:  # last: G's second draw must not change the draws the pairs above were made with
        sections["noise"] = _noise_check(case, degrade_fn, ours)
    return _result(sections, _sample_crops(case, ours, oracle), clock.seconds)


NOISE_BINS = 6  # brightness bins of the noise check, equally populated


def noise_section(signal: torch.Tensor, camera: Callable[[torch.Tensor, str], torch.Tensor], ours: tuple[torch.Tensor, torch.Tensor]
                  ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The generator's noise against the camera's, by brightness (`fca.noise.noise_by_brightness`).

    signal: the validation images' noise-free true LR, down(I) (*) k_gt [N, 3, h, w]; camera(signal, view):
    their noise model (two fresh draws, views `noise_a` / `noise_b`; a simulated camera draws from the
    scenes themselves); ours: two outputs of G for
    the same inputs (its kernels are the same, so they differ by its noise alone). Bins: NOISE_BINS
    brightness quantiles of the signal's luma. Returns the `noise` metrics (per-pixel, per-channel
    variance averaged over the bins, camera and ours; the least and largest ratio ours / camera
    over the bins; both noises' lag-1 correlation) and the arrays the report draws."""
    luma = to_luma(signal.float()).flatten().double().numpy()
    edges = torch.from_numpy(np.quantile(luma, np.linspace(0, 1, NOISE_BINS + 1)))
    centres = np.quantile(luma, (np.arange(NOISE_BINS) + 0.5) / NOISE_BINS)
    var_camera, lag1_camera = noise_by_brightness(camera(signal, "noise_a"), camera(signal, "noise_b"), edges)
    var_ours, lag1_ours = noise_by_brightness(*ours, edges)
    ratio = (var_ours / var_camera).numpy()
    metrics = {
        "variance_camera": float(np.nanmean(var_camera.numpy())),
        "variance_ours": float(np.nanmean(var_ours.numpy())),
        "variance_ratio_min": float(np.nanmin(ratio)),
        "variance_ratio_max": float(np.nanmax(ratio)),
        "lag1_camera": lag1_camera,
        "lag1_ours": lag1_ours,
    }
    arrays = {"noise_brightness": centres, "noise_var_camera": var_camera.numpy(), "noise_var_ours": var_ours.numpy()}
    return metrics, arrays


NOISE_MODEL_POINTS = 21  # grey levels the no-reference page draws G's noise at
NOISE_MODEL_AT = (0.2, 0.5, 0.8)  # grey levels whose noise std `noise_model_section` reports as metrics


def noise_model_section(bank: torch.Tensor, level: NoiseLevel | None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """G's noise model as it stands, for photos with no camera to compare it with (no-reference mode).

    bank: G's noise patches [M, 3, P, P] (unit-level with `level`, as they are with None); level: the
    noise level by brightness (`fca.noise.NoiseLevel`). The std of each channel at a grey pixel of
    brightness b is sqrt(level_c(b) * the bank's variance in c): what G adds there, after its JPEG.
    Metrics: `noise_std_b20` / `_b50` / `_b80` (mean over channels, [0, 1] units), `noise_lag1_h` / `_v`
    (neighbouring pixels' correlation), `noise_corr_rg` / `_rb` / `_gb` (between channels),
    `noise_level_by_luma` (1: the level is read at each pixel's luma, 0: at each channel's value),
    `noise_measured_lo` / `_hi` (the brightness range the level was measured over, its knots; beyond it the
    curve is extrapolated). Arrays: `noise_model_brightness` [B], `noise_model_std` [3, B], `noise_model_measured` [3, 2] (each
    channel's measured range)."""
    level = level if level is not None else NoiseLevel.constant()
    bank_var = bank.double().var((0, 2, 3))

    def std_at(b: torch.Tensor) -> torch.Tensor:  # [B] grey levels -> [B, 3] each channel's std there
        return (level.variance(b.double().view(-1, 1, 1, 1).expand(-1, 3, 1, 1))[..., 0, 0] * bank_var).sqrt()

    brightness = torch.linspace(0, 1, NOISE_MODEL_POINTS, dtype=torch.float64)
    zero_mean = bank - bank.mean((2, 3), keepdim=True)
    lag_h, lag_v = neighbour_correlation(zero_mean)
    corr = channel_correlation(zero_mean)
    # each channel's brightness range its curve was measured over (knots); a constant level has none: all of it
    measured = np.tile([0.0, 1.0], (3, 1)) if level.is_constant_one() else torch.stack([level.knots[:, 0], level.knots[:, -1]], 1).numpy()
    at = std_at(torch.tensor(NOISE_MODEL_AT)).mean(1)
    metrics = {f"noise_std_b{round(100 * b)}": float(v) for b, v in zip(NOISE_MODEL_AT, at)}
    metrics |= {"noise_lag1_h": lag_h, "noise_lag1_v": lag_v, "noise_corr_rg": float(corr[0, 1]), "noise_corr_rb": float(corr[0, 2]),
                "noise_corr_gb": float(corr[1, 2]), "noise_level_by_luma": float(level.by == "luma"),
                "noise_measured_lo": float(measured[:, 0].min()), "noise_measured_hi": float(measured[:, 1].max())}
    return metrics, {"noise_model_brightness": brightness.numpy(), "noise_model_std": std_at(brightness).T.numpy(), "noise_model_measured": measured}


# --- no-reference mode: real photos, no known kernel ------------------------------------------

NOREF_KINDS = ("bicubic", "ours")


def image_densities(images: torch.Tensor, bins: int, batch: int = 64) -> torch.Tensor:
    """Each image's frequency density (cycles/pixel): [N, C, H, W] -> [N, bins] float64."""
    return torch.cat([radial_density(images[start : start + batch].double(), bins) for start in range(0, images.shape[0], batch)])


def _image_summary(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Medians of the per-image distances, the median paired change (ours - bicubic; negative:
    G(x) is closer to x than down(x) is) and the share of images where ours is closer."""
    out = {f"image_{name}_median": float(np.median(v)) for name, v in per_image.items()}
    change = per_image["gap_ours"] - per_image["gap_bicubic"]
    out["image_gap_change_median"] = float(np.median(change))
    out["image_closer_share"] = float(np.mean(change < 0))
    return out


def kernel_spread(kernels: torch.Tensor) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """What the estimated kernels [N, K, K] look like over the domain: (metrics, per-kernel arrays).

    Metrics: effective sigma (median, 5th and 95th percentiles), the median axis ratio, the share
    of kernels with an axis ratio >= ANGLE_MIN_RATIO (those whose direction means something), and
    kernels_differ (1: the generator gives each image its own kernel)."""
    sigma = effective_sigma(kernels).numpy()
    ratio, angle = (v.numpy() for v in principal_axis(kernels))
    metrics = {
        "kernel_sigma_median": float(np.median(sigma)),
        "kernel_sigma_p05": float(np.percentile(sigma, 5)),
        "kernel_sigma_p95": float(np.percentile(sigma, 95)),
        "kernel_axis_ratio_median": float(np.median(ratio)),
        "kernel_oriented_share": float(np.mean(ratio >= ANGLE_MIN_RATIO)),
        "kernels_differ": float(kernels_differ(kernels)),
    }
    return metrics, {"kernel_sigma": sigma, "kernel_axis_ratio": ratio, "kernel_angle": angle, "kernel_oriented": ratio >= ANGLE_MIN_RATIO}


def referee_no_reference(
    real_val: torch.Tensor,
    scale: float,
    degrade_fn: DegradeFn,
    config: EvaluateConfig,
    noise: tuple[torch.Tensor, NoiseLevel | None] | None = None,
) -> dict:
    """Describe a trained degradation on real photos, where nobody knows the right kernel.

    real_val: the held-out photos x [N, 3, H, W] in [0, 1]; degrade_fn as for `referee`. There is
    no clean image, no L_true and so no oracle, kernel error, SR probe or verdict. What is
    measured instead is FCA's own criterion, the frequency density:

    - how it is compared: the density of an LR image (G(x) or bicubic down(x)) against that of
      the real photos x at HR, on the cycles/pixel axis, exactly as `density.*` compares sets.
      A per-pixel axis is the fair one: FCA's premise is that a real photo's density, measured
      per pixel, does not depend on the resolution it was taken at (natural scenes are close to
      scale-invariant), so a realistic LR image has its source's density at its own pixel pitch.
      down(x) shrinks the camera's blur by s and comes out too sharp per pixel; a G that adds
      the missing blur moves the LR density back towards x's.
    - per image: each LR image against its *own* x, so the scene's content (a texture and a sky
      differ whatever the camera) leaves the comparison; one image's density is a noisy
      periodogram, so the per-image distances are summarised by their median with a 95 %
      interval from a paired bootstrap over the images (the same draw for bicubic and ours).
    - over the domain: the mean densities of the sets, as `density.gap_*` / `density.skl_*`.

    A good match is necessary, not sufficient: a kernel of the wrong shape can match a radial
    density too, which is why this mode gives numbers and pictures but no pass or miss.

    noise: G's noise bank and level (None: G adds no noise); then the metrics and arrays of
    `noise_model_section` join, as nothing here can check G's noise against the camera's.

    Returns {"metrics": {"noref": ...}, "intervals": {"noref": ...}, "arrays": ..., "timings_s": ...}.
    Metrics (all under noref):
      gap_{bicubic,ours}, skl_{bicubic,ours}: the sets' mean densities against x's; gap_reduction
      image_{gap,skl}_{bicubic,ours}_median, image_gap_change_median (ours - bicubic, paired),
      image_closer_share (share of images where G(x) is closer to x than down(x))
      kernel_sigma_{median,p05,p95}, kernel_axis_ratio_median, kernel_oriented_share, kernels_differ
      images (how many photos); with noise, `noise_model_section`'s noise_* metrics
    """
    _check_batches(real_val=real_val)
    _check_density_bins(real_val, scale, config)
    real_val = real_val.float()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    down_val = downscale(real_val, scale)
    ours_val, kernels_val = apply_degrade(degrade_fn, real_val, config.batch_size)
    _check_lr(ours_val, down_val)
    timings["degrade"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bins = config.density_bins
    lr = {"bicubic": down_val, "ours": ours_val}
    dens = {"real": image_densities(real_val, bins)} | {k: image_densities(v, bins) for k, v in lr.items()}
    mean = {k: v.mean(0) for k, v in dens.items()}
    noref: dict[str, float] = {"images": float(real_val.shape[0])}
    noref |= {f"gap_{k}": float(log_l1(mean[k], mean["real"])) for k in NOREF_KINDS}
    noref |= {f"skl_{k}": float(symmetric_kl(mean[k], mean["real"])) for k in NOREF_KINDS}
    noref["gap_reduction"] = 1.0 - noref["gap_ours"] / noref["gap_bicubic"] if noref["gap_bicubic"] > 0 else float("nan")
    per_image: dict[str, np.ndarray] = {}  # each LR image against its own x
    for k in NOREF_KINDS:
        per_image[f"gap_{k}"] = log_l1(dens[k], dens["real"]).numpy()
        per_image[f"skl_{k}"] = symmetric_kl(dens[k], dens["real"]).numpy()
    noref |= _image_summary(per_image)
    spread, kernel_arrays = kernel_spread(kernels_val)
    noref |= spread
    rng = np.random.default_rng(config.seed)
    intervals = {"noref": paired_bootstrap(per_image, _image_summary, config.bootstrap, rng)}
    timings["density_kernel"] = time.perf_counter() - t0

    noise_arrays: dict[str, np.ndarray] = {}
    if noise is not None:
        noise_metrics, noise_arrays = noise_model_section(*noise)
        noref |= noise_metrics

    n = min(config.samples, real_val.shape[0])
    arrays = {
        **noise_arrays,
        "density_bins": bin_centres(bins).numpy(),
        **{f"density_{k}": v.numpy() for k, v in mean.items()},
        **{f"image_{k}": v for k, v in per_image.items()},
        "kernels_pred": kernels_val.numpy(),
        **kernel_arrays,
        "sample_hr_real": real_val[:n].numpy(),
        "sample_lr_bicubic": down_val[:n].numpy(),
        "sample_lr_ours": ours_val[:n].numpy(),
    }
    return {"metrics": {"noref": noref}, "intervals": intervals, "arrays": arrays, "timings_s": timings}


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"sr": {"psnr_ours": 1.0}} -> {"sr.psnr_ours": 1.0} (for MLflow and metrics files)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten_metrics(value, f"{name}.")
        else:
            flat[name] = float(value)
    return flat
