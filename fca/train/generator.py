"""Stage `train_generator`: learn the degradation G(x) = bicubic_down(x, s) (*) k(x).

One step (docs/design.md, "Generator loss"; the seed stepped everything with one backward
pass, which let the networks collude, so here each network has its own step):
  1. G(x) on a batch of real-domain HR crops x.
  2. Wavelet discriminator step on real LR-size crops vs the *detached* G(x).
  3. Generator step, discriminator frozen, on
     w_fdc * L_FDC (loss fdc|both) + w_spectral * L_spectral (loss spectral|both) + w_wd * L_WD
     + w_consistency * L_consistency.
The comparator is frozen throughout. Adam, LR constant for the first half, then
linear decay to zero. Checkpoints hold everything a bit-exact resume needs.

L_consistency (ours) is the per-image signal. The losses above compare G(x) with the real
domain as a whole (the spectral loss: batch-mean density against the domain's mean; the
FDC: a noisy 32-pixel comparison), and an estimator trained on them alone settles on one
kernel for every image. The method's premise is that the real domain looks the same at
every scale: an LR image whose blur is k looks like a real image whose blur is k. So we
make such images from the real patches themselves, z = q8(down(x') (*) k_r) with a random
anisotropic Gaussian k_r and 8-bit rounding q8, and ask the estimator to read k_r back
from z. No ground truth is needed, only the domain's own images; the estimator learns how
a blur of a given width and direction shows in the frequency density of that domain's
content, and reads the real images' blur the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fca.config import param
from fca.kernels import conv_per_sample, effective_sigma, gaussian_from_params, gaussian_params, profile_kernels
from fca.jpeg import JpegSetting, estimate_jpeg
from fca.noise import CAP_GRID, FLAT_RATIO, NoiseLevel, NoiseSpectrum, collect_noise_bank, fit_noise_level, flat_crops, noise_spectrum, tile_colour_noise
from fca.losses import centre_crop, density_loss, fdc_generator_loss, lsgan_d_loss, lsgan_g_loss, noise_share, signal_weights, target_density
from fca.models.generator_arch import ELLIPTIC, ESTIMATORS, KERNEL_PARAMS, NOISE_OPTIONS, Generator
from fca.train.kernel_start import KernelStart, StartFit, kernel_start
from fca.models.wavelet_disc_arch import WaveletDiscriminator
from fca.resample import downscale, upscale
from fca.distributed import Dist
from fca.train.checkpoint import TrainingDivergedError, load_checkpoint, plain_config, seeded
from fca.train.hardware import Precision, PrecisionChoice, cpu_bf16_mode, to_device
from fca.train.loop import Checkpoints, Periodic, Progress, Resume, Training, run_loop, run_precision


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorConfig:
    scale: float = param(4.0, ge=1.0, le=16, help="downscaling factor s")
    patch_size: int = param(128, ge=16, le=8192, help="HR crop side fed to G")
    kernel_size: int = param(13, ge=1, le=101, odd=True, help="K, side of the predicted kernel")
    estimator: str = param("paper", choices=ESTIMATORS, help="spectral (ours: reads the image's polar frequency density) or paper (Fig. 2 CNN)")
    kernel_param: str = param("profile", choices=KERNEL_PARAMS,
                              help="profile: an ellipse with a radial profile that never rises, the Gaussian's unless a fitted one matches "
                                   "the domain clearly better (Gaussians, disks, their sums, streaks; fca.kernels.profile_kernels, "
                                   "fca.train.kernel_start); gaussian: an anisotropic Gaussian; free: softmax over K*K logits")
    kernel_start_steps: int = param(600, ge=0, le=1_000_000,
                                    help="profile: steps of each start's fit to the spectral loss alone before training (the Gaussian, "
                                         "then two free profiles); the Gaussian is kept unless a free profile is clearly nearer "
                                         "(fca.train.kernel_start; 0: no fit, the kernel_init_sigma Gaussian)")
    kernel_init_sigma: float = param(1.2, ge=0.01, le=100, help="the first kernel is an isotropic Gaussian of this sigma (LR pixels)")
    estimator_bins: tuple[int, int] = param((16, 8), ge=1, le=4096, help="spectral estimator: radial x angular density bins (radial at most LR side / 2)")
    estimator_hidden: int = param(128, ge=1, le=65_536, help="spectral estimator: width of its MLP")
    estimator_edges: int = param(4, ge=0, le=64, help="spectral estimator: upper quantiles of oriented edge sharpness per direction (0: none)")
    channels: int = param(8, ge=1, le=4096, help="paper estimator: channels (paper: 64)")
    dense_blocks: int = param(1, ge=0, le=1000, help="paper estimator: residual dense blocks (paper: 5)")
    res_blocks: int = param(1, ge=0, le=1000, help="paper estimator: residual blocks (paper: 2)")
    wd_channels: int = param(8, ge=1, le=4096, help="width of the wavelet discriminator's first layer")
    loss: str = param("both", choices=("fdc", "spectral", "both"))
    w_fdc: float = param(1.0, ge=0, le=1e6)
    w_wd: float = param(0.001, ge=0, le=1e6, help="0 switches the wavelet discriminator off")
    w_spectral: float = param(1.0, ge=0, le=1e6)
    w_consistency: float = param(0.0, ge=0, le=1e6, help="weight of the per-image kernel-consistency loss (0: off; needs estimator spectral)")
    consistency_sigma: tuple[float, float] = param((0.5, 4.0), gt=0, le=100, help="sigma range (LR px) of the synthetic blurs the estimator learns to read")
    consistency_batch: int = param(32, ge=1, le=65_536, help="synthetic images per step for the consistency loss")
    spectral_bins: int = param(16, ge=2, le=4096, help="density bins of the spectral loss (at most LR side / 2)")
    spectral_angles: int = param(4, ge=1, le=16, help="orientation sectors per ring of the spectral loss's density (1: radial only; "
                                                       "more lets the loss see which way a blur points, fca.losses.density_cells)")
    spectral_min_std: float = param(0.02, ge=0, le=1, help="real tiles flatter than this (luma std) stay out of the spectral target")
    spectral_floor: float = param(1e-4, gt=0, lt=1, help="density share below which bins count as noise (fca.losses.floored_log_l1)")
    spectral_noise_floor: float = param(0.15, ge=0, lt=1,
                                        help="noise: patches, noise_fit: signal: the floor is at least this share of the noise power the "
                                             "signal target took out of its top bin (fca.losses.noise_share), where the subtraction's own "
                                             "error lives; 0: spectral_floor alone")
    noise: str = param("patches", choices=NOISE_OPTIONS, help="patches: add noise patches from flat crops of the real images to G(x) (fca.noise; none when they are below one 8-bit level), or none")
    noise_bank: int = param(256, ge=1, le=65_536, help="noise: patches: the bank's size (LR-sized patches, saved with the weights)")
    noise_flat_ratio: float = param(FLAT_RATIO, ge=1, le=100,
                                    help="noise: patches: a crop is flat (noise only) when its variance over its white part is at most "
                                         "this times that of the 5th percentile crop: found from the data, whatever the noise level "
                                         "(fca.noise.flat_crops)")
    noise_fit: str = param("signal", choices=("signal", "total"),
                           help="noise: patches: fit the blur on the signal (the spectral loss compares G(x) before its noise draw with R's "
                                "density less the bank's noise spectrum at each tile's brightness, fca.noise.NoiseSpectrum) or on the total (G(x) "
                                "with its noise against R as is; widened the kernel on presets/noisy.yaml); the FDC judges G(x) with "
                                "its noise either way")
    noise_detrend: float = param(3.0, ge=0, le=1000,
                                 help="noise: patches: each flat crop less its Gaussian-smoothed copy at this std (px) before it joins the "
                                      "bank, which takes out the shading and blurred texture a flat crop still holds and keeps white "
                                      "noise (nearly all of its power at 3; 0: only the mean is removed, as in Real-SR)")
    noise_scale: str = param("brightness", choices=("brightness", "constant"),
                             help="noise: patches: scale each bank patch, per channel, to the noise std of each LR pixel's brightness "
                                  "(the bank holds unit-level crops and the curve fca.noise.fit_noise_level fitted to them) or add "
                                  "the crops as they are (one noise level at every brightness)")
    jpeg: str = param("auto", choices=("auto", "off"),
                      help="auto: G's LR ends with the JPEG round trip the real images went through (read from their files' "
                           "quantisation tables, else found in their pixels, fca.jpeg.estimate_jpeg; none when they show no JPEG "
                           "history); off: no JPEG")
    batch_size: int = param(8, ge=1, le=65_536)
    steps: int = param(300, ge=1, le=10_000_000)
    lr: float = param(1e-3, gt=0, lt=10, help="Adam LR of the networks (estimator, discriminator)")
    lr_prior: float = param(0.05, gt=0, lt=10, help="Adam LR of the image-independent kernel logits / log-sigmas")
    betas: tuple[float, float] = param((0.5, 0.99), ge=0, lt=1)
    cpu_bf16: Any = param("auto", help="CPU: bf16 autocast + channels_last (on), fp32 (off), or auto: bf16 where the CPU has AMX "
                                       "(amx_bf16; measured 1.5x faster there), else fp32 (fca.train.hardware.choose_cpu_precision); "
                                       "true / false read as on / off")
    cuda_amp: bool = param(True, help="mixed precision on CUDA (bf16, or fp16 with a GradScaler)")
    checkpoint_every: int = param(100, ge=1, le=10_000_000)
    image_every: int = param(100, ge=1, le=10_000_000)
    seed: int = param(0, ge=0, le=2**32 - 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpu_bf16", cpu_bf16_mode(self.cpu_bf16, "generator.cpu_bf16"))

    # Which losses a run computes: the training step and the checks before it read these.
    @property
    def use_fdc(self) -> bool:
        return self.loss in ("fdc", "both") and self.w_fdc > 0

    @property
    def use_spectral(self) -> bool:
        return self.loss in ("spectral", "both") and self.w_spectral > 0

    @property
    def use_wd(self) -> bool:
        return self.w_wd > 0

    @property
    def use_consistency(self) -> bool:
        return self.w_consistency > 0


# Keys that may change between a run and its resume (they do not change the numbers).
_RESUMABLE_CHANGES = ("checkpoint_every", "image_every")


def build_generator(config: GeneratorConfig) -> Generator:
    """The generator a config describes (also what `degrade` rebuilds before loading weights)."""
    return Generator(
        scale=config.scale,
        estimator=config.estimator,
        kernel_size=config.kernel_size,
        kernel_param=config.kernel_param,
        init_sigma=config.kernel_init_sigma,
        channels=config.channels,
        dense_blocks=config.dense_blocks,
        res_blocks=config.res_blocks,
        tile=lr_side(config),
        radial_bins=config.estimator_bins[0],
        angular_bins=config.estimator_bins[1],
        hidden=config.estimator_hidden,
        edge_channels=config.estimator_edges,
        noise=config.noise,
        noise_bank=config.noise_bank,
        noise_side=lr_side(config),
        noise_seed=config.seed,
    )


def half_then_linear_decay(steps: int) -> Callable[[int], float]:
    """LR multiplier: 1 for the first half of `steps`, then linear to 0 at `steps`."""
    half = steps // 2

    def factor(t: int) -> float:
        return 1.0 if t < half else max(0.0, (steps - t) / max(1, steps - half))

    return factor


def lr_side(config: GeneratorConfig) -> int:
    """Side of G's output for a `patch_size` input."""
    return max(1, round(config.patch_size / config.scale))


def _random_crops(x: torch.Tensor, size: int, gen: torch.Generator, dist: Dist = Dist()) -> torch.Tensor:
    """One random size x size crop per image: [b, C, H, W] -> [b, C, size, size].

    x is this rank's shard of a global batch; the places are drawn for the whole global
    batch (the same stream on every rank) and this rank keeps its own (fca.distributed).
    """
    h, w = x.shape[-2:]
    n = x.shape[0] * dist.world_size
    tops = dist.shard(torch.randint(0, h - size + 1, (n,), generator=gen)).tolist()
    lefts = dist.shard(torch.randint(0, w - size + 1, (n,), generator=gen)).tolist()
    return torch.stack([img[:, t : t + size, l : l + size] for img, t, l in zip(x, tops, lefts)])


def _sample(patches: torch.Tensor, batch: int, size: int, gen: torch.Generator, dist: Dist = Dist()) -> torch.Tensor:
    """This rank's share of a global batch of `batch` random crops (drawn with replacement)."""
    idx = dist.shard(torch.randint(0, patches.shape[0], (batch,), generator=gen))
    return _random_crops(patches[idx], size, gen, dist)


def _consistency_batch(
    patches: torch.Tensor, config: GeneratorConfig, rng: torch.Generator, dist: Dist = Dist(), estimator: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic real-looking LR images with a known blur, made from the real patches themselves.

    Returns (z [b, 3, side, side], params [b, 3]): z = q8(down(x') (*) k_r), x' a random crop
    (random flips and quarter turns), k_r the anisotropic Gaussian with smooth parameters
    `params` (`fca.kernels.gaussian_params`), sigma_x, sigma_y ~ U(config.consistency_sigma)
    in LR pixels and a uniform direction; q8 rounds to 8 bits as the real patches are stored.
    With kernel_param = profile, k_r has the estimator's current radial profile (no gradient to it):
    the estimator learns to read the ellipse of the domain's own lens.
    Drawn for the global batch, this rank keeps its share (fca.distributed)."""
    x = _sample(patches, config.consistency_batch, config.patch_size, rng, dist)
    n = config.consistency_batch
    flips = dist.shard(torch.randint(0, 2, (n,), generator=rng)).tolist()
    turns = dist.shard(torch.randint(0, 4, (n,), generator=rng)).tolist()
    x = torch.stack([torch.rot90(img.flip(-1) if f else img, t, (-2, -1)) for img, f, t in zip(x, flips, turns)])
    lo, hi = config.consistency_sigma
    sx = dist.shard(lo + (hi - lo) * torch.rand(n, generator=rng, dtype=torch.float64))
    sy = dist.shard(lo + (hi - lo) * torch.rand(n, generator=rng, dtype=torch.float64))
    theta = dist.shard(torch.pi * torch.rand(n, generator=rng, dtype=torch.float64))
    params = gaussian_params(sx, sy, theta).float()
    with torch.no_grad():
        if estimator is not None and estimator.kernel_param == "profile":
            blurs = profile_kernels(params, estimator.profile.float().cpu(), config.kernel_size)
        else:
            blurs = gaussian_from_params(params, config.kernel_size)
    z = conv_per_sample(downscale(x, config.scale), blurs)
    return (z.clamp(0, 1) * 255).round() / 255, params


def consistency_loss(estimator: nn.Module, predicted: torch.Tensor, target_params: torch.Tensor) -> torch.Tensor:
    """How far the estimator's reading of synthetic images is from the blurs they were made with.

    predicted: `estimator.kernel_parameters(z)`; target_params: [b, 3] smooth Gaussian parameters.
    Gaussian estimator: mean squared error of the smooth parameters (log-width, anisotropy and
    direction on equal footing); free: squared error of the kernels (summed over entries)."""
    predicted = predicted.float()
    if estimator.kernel_param in ELLIPTIC:
        return (predicted - target_params).pow(2).mean()
    k = estimator.kernel_size
    target = gaussian_from_params(target_params, k)
    return (estimator.to_kernels(predicted) - target).pow(2).sum((1, 2)).mean()


class _GeneratorStep(nn.Module):
    """G(x), and the estimator's reading of the synthetic images z, in one call: one forward for DDP per G step."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(G(x) before its noise draw, G(x), kernels, the estimator's reading of z or None)."""
        if z is None:
            kernels = self.gen.estimate_kernel(x)
            return *self.gen.degrade_parts(x, kernels), kernels, None
        # With the consistency loss, the real images' losses train only the global offset: the
        # per-image reading learns from the synthetic blurs (see SpectralKernelEstimator).
        est = self.gen.estimator
        kernels = est.to_kernels(est.kernel_parameters(x, detach_reading=True))
        return *self.gen.degrade_parts(x, kernels), kernels, est.reading(z)


class _Critic(nn.Module):
    """The discriminator on real and fake in one call: one forward for DDP per D step."""

    def __init__(self, disc: nn.Module):
        super().__init__()
        self.disc = disc

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.disc(real), self.disc(fake)


def _as_float(patches: torch.Tensor) -> torch.Tensor:
    if patches.dtype == torch.uint8:
        return patches.float() / 255.0
    return patches.float()


def _check(step: int, name: str, loss: torch.Tensor) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDivergedError(step, name, value)


@dataclass
class _Nets:
    """What one training step updates: the networks, their optimisers and what the step calls
    (DDP wrappers in a multi-process job, `_GeneratorStep` / `_Critic` otherwise)."""

    gen: Generator
    disc: WaveletDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    gen_step: nn.Module
    critic_step: nn.Module


@dataclass(frozen=True)
class _Inputs:
    """What every step reads and nobody updates."""

    patches: torch.Tensor
    fdc: nn.Module | None
    target: torch.Tensor | None  # the real domain's spectral density (loss spectral | both)
    fdc_scale: float
    side: int
    floor: float  # the spectral loss's (`_spectral_floor`)
    weights: torch.Tensor | None  # the spectral loss's cell weights (`_spectral_weights`; None: all equal)


def jpeg_setting(config: GeneratorConfig, patches: torch.Tensor, from_files: JpegSetting | None) -> JpegSetting | None:
    """The JPEG round trip G's LR ends with: with jpeg = auto the photos' own from their files (the
    patches stage reads it, `from_files`), else the one their pixels show (`estimate_jpeg`), else none."""
    if config.jpeg == "off":
        return None
    return from_files if from_files is not None else estimate_jpeg(patches)


@dataclass(frozen=True, eq=False)
class NoiseBank:
    """What `noise_bank` gives the generator: the bank and its level (`Generator.set_noise_bank`), and
    the bank's spectrum for the spectral target (None: fit the blur as without noise)."""

    bank: torch.Tensor
    level: NoiseLevel | None
    spectrum: NoiseSpectrum | None


def noise_bank(config: GeneratorConfig, patches: torch.Tensor, side: int) -> NoiseBank | None:
    """The noise bank (`collect_noise_bank`, from the real images' flat crops, unit-level with
    noise_scale = brightness) and its spectrum (`noise_spectrum`); None with noise = none. A bank
    below one 8-bit level (`NoiseSpectrum.negligible`: the photos' rounding) becomes zeros with no
    spectrum: G adds no noise and the blur is fitted as without noise."""
    if config.noise != "patches":
        return None
    found = flat_crops(patches, side, config.noise_detrend, config.noise_flat_ratio, config.spectral_bins)
    if len(found.crops) == 0:
        raise ValueError(f"generator.noise: patches: no {side}-pixel crop of the {patches.shape[0]} real training patches "
                         "holds noise alone (every one is clipped at 0 or 1, constant, or textured): set generator.noise: none")
    curve = fit_noise_level(found) if config.noise_scale == "brightness" else None
    level = curve.capped(tile_colour_noise(patches, side, config.spectral_bins)) if curve is not None else None
    # Each crop at unit level by its own colour's curve, the cap on G's level alone: divided by the capped level, a crop
    # whose colour the cap lowers would be scaled up by as much, and the cap would act only through its shape.
    bank = collect_noise_bank(found, config.noise_bank, config.seed, level=curve)
    spectrum = noise_spectrum(bank, level, config.spectral_bins)
    if spectrum.negligible:
        return NoiseBank(torch.zeros_like(bank), None, None)
    return NoiseBank(bank, level, spectrum)


def _signal_noise(config: GeneratorConfig, noise: NoiseSpectrum | None) -> NoiseSpectrum | None:
    """The noise the spectral target takes out: the bank's spectrum when the blur is fitted on the signal
    (noise = patches, noise_fit = signal), else None (the target is R's density as it is)."""
    return noise if config.noise == "patches" and config.noise_fit == "signal" else None


def _spectral_target(config: GeneratorConfig, patches: torch.Tensor, side: int, noise: NoiseSpectrum | None) -> torch.Tensor:
    """The spectral loss's target: the real domain's density (`target_density`), or with noise =
    patches and noise_fit = signal the density of its signal, the bank's noise power at each
    tile's brightness (`noise`) taken out.
    Why: noise is white at every pixel pitch while a scene's power grows when it is shrunk,
    so an LR image with the domain's noise holds *less* noise per cycle/pixel than R does;
    matching R's total density then asks for a wider blur (measured on presets/noisy.yaml).
    The blur is fitted on the signal, and the bank adds the noise."""
    return target_density(patches, side, config.spectral_bins, config.spectral_min_std, noise=_signal_noise(config, noise),
                          angles=config.spectral_angles)


def _spectral_floor(config: GeneratorConfig, patches: torch.Tensor, side: int, noise: NoiseSpectrum | None) -> float:
    """The spectral loss's floor: `spectral_floor`, or on the signal target at least
    `spectral_noise_floor` times the noise share of its top bin (`noise_share`).

    Why: in the top bins the signal target is R's power less the noise's, and what is left is
    smaller than the subtraction's error (on presets/noisy.yaml 2-3 % of the noise taken out,
    mostly a bias of the level, against a true signal 50x smaller); the floored log-L1 reads
    those bins unless the floor sits well above that error. A fixed 1e-4 let the kernel come
    out at 2.95 (oracle 2.65), a hand-set 3e-4 at 2.70; this rule sets it from the domain's
    own noise, which a user with real photos and no referee cannot tune by hand.
    With orientation sectors (spectral_angles > 1) a cell holds 1/angles of its ring's share, and
    so does the floor: it keeps its meaning per ring."""
    noise = _signal_noise(config, noise)
    if noise is None or config.spectral_noise_floor == 0:
        return config.spectral_floor / config.spectral_angles
    share = noise_share(patches, side, config.spectral_bins, config.spectral_min_std, noise)
    return max(config.spectral_floor, config.spectral_noise_floor * float(share.max())) / config.spectral_angles


def _spectral_weights(config: GeneratorConfig, patches: torch.Tensor, side: int, noise: NoiseSpectrum | None) -> torch.Tensor | None:
    """The spectral loss's cell weights on the signal target (`fca.losses.signal_weights`: the square of
    the signal's share of each cell's power); None (all cells equal) on a target with no noise taken out."""
    noise = _signal_noise(config, noise)
    if noise is None:
        return None
    return signal_weights(patches, side, config.spectral_bins, config.spectral_min_std, noise, config.spectral_angles)


def _train_step(config: GeneratorConfig, nets: _Nets, inputs: _Inputs, precision: Precision, channels_last: bool,
                rng: torch.Generator, dist: Dist, device: torch.device, n: int) -> dict[str, torch.Tensor]:
    """One training step (module docstring): draw the batch from `rng`, step D, then G; n is the
    1-based step for error messages. Returns the losses (zero for a disabled one) and the kernels."""
    gen, disc = nets.gen, nets.disc
    patches, side = inputs.patches, inputs.side
    # This rank's share of the global batch (all of it in a single process).
    x = to_device(_sample(patches, config.batch_size, config.patch_size, rng, dist), device)
    real_lr = to_device(_sample(patches, config.batch_size, side, rng, dist), device) if config.use_wd else None
    refs = _fdc_references(x, side, inputs.fdc_scale, rng, dist) if config.use_fdc else None
    z, z_params = _consistency_batch(patches, config, rng, dist, gen.estimator) if config.use_consistency else (None, None)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast():
        blurred, fake, kernels, z_read = nets.gen_step(x, to_device(z, device) if z is not None else None)

    # 1) discriminator, on detached fakes
    zero = torch.zeros((), device=device)
    loss_d = zero
    if config.use_wd:
        with precision.autocast():
            loss_d = lsgan_d_loss(*nets.critic_step(real_lr, fake.detach()))
        _check(n, "loss_d", loss_d)
        precision.step(loss_d, nets.opt_d)

    # 2) generator, discriminator frozen
    loss_fdc = loss_spec = loss_wd = loss_cons = zero
    if config.use_fdc:
        with precision.autocast():
            # The FDC judges G(x) as it leaves G, noise and JPEG included, with either noise_fit: it was
            # trained on the real images as the camera made them, and a noise-free G(x) is outside what
            # it has seen. Judging the noise-free G(x) widened the simulated camera's kernel in training
            # from the start fit's 1.70 / 1.78 px to 1.80 / 1.97 (G seeds 0 / 1; oracle 1.69); judging
            # G(x) with its noise, 1.72 / 1.80 (docs/results.md, "The noise model's errors kept out
            # of the blur"). The spectral loss reads the blur alone (`fitted`, below).
            loss_fdc = fdc_generator_loss(inputs.fdc, centre_crop(fake, refs[0].shape[-1]), *refs)
        _check(n, "loss_fdc", loss_fdc)
    if config.use_spectral:
        fitted = blurred if config.noise_fit == "signal" else fake  # the target was made to match (`_spectral_target`)
        loss_spec = density_loss(fitted, inputs.target, config.spectral_bins, inputs.floor, batch_mean=dist.mean,
                                 angles=config.spectral_angles, weights=inputs.weights)
        _check(n, "loss_spectral", loss_spec)
    if config.use_wd:
        disc.requires_grad_(False)
        with precision.autocast():
            loss_wd = lsgan_g_loss(disc(fake))  # the bare module: no gradient sync for a frozen D
        disc.requires_grad_(True)
        _check(n, "loss_wd", loss_wd)
    if config.use_consistency:
        loss_cons = consistency_loss(gen.estimator, z_read, z_params.to(device))
        _check(n, "loss_consistency", loss_cons)
    loss_g = config.w_fdc * loss_fdc + config.w_spectral * loss_spec + config.w_wd * loss_wd + config.w_consistency * loss_cons
    _check(n, "loss_g", loss_g)
    precision.step(loss_g, nets.opt_g)
    precision.update()
    return {"loss_g": loss_g, "loss_d": loss_d, "loss_fdc": loss_fdc, "loss_spectral": loss_spec, "loss_wd": loss_wd,
            "loss_consistency": loss_cons, "kernels": kernels}


def _validate(config: GeneratorConfig, train_patches: torch.Tensor, fdc: nn.Module | None, dist: Dist) -> None:
    """The config against the data, the comparator and the job, before any work: ValueError naming the param."""
    if config.use_consistency and config.estimator != "spectral":
        raise ValueError(f"generator.w_consistency = {config.w_consistency}: the consistency loss needs generator.estimator = spectral "
                         f"(got {config.estimator!r}); set w_consistency: 0 for the paper's estimator")
    if config.use_fdc and fdc is None:
        raise ValueError(f"generator.loss = {config.loss!r} needs a trained FDC, got fdc=None")
    if train_patches.dim() != 4 or train_patches.shape[1] != 3:
        raise ValueError(f"train_patches: expected [N, 3, H, W], got {tuple(train_patches.shape)}")
    if min(train_patches.shape[-2:]) < config.patch_size:
        raise ValueError(
            f"train_patches are {tuple(train_patches.shape[-2:])}, smaller than generator.patch_size = {config.patch_size}"
        )
    side = lr_side(config)
    if side <= config.kernel_size // 2:
        raise ValueError(
            f"generator.patch_size / scale = {side} px is too small for a {config.kernel_size}x{config.kernel_size} kernel"
        )
    if config.use_spectral and config.spectral_bins > side // 2:
        raise ValueError(
            f"generator.spectral_bins = {config.spectral_bins}: at most {side // 2} for {side} px LR patches "
            f"(patch_size {config.patch_size} / scale {config.scale})"
        )
    if config.estimator == "spectral" and config.estimator_bins[0] > side // 2:
        raise ValueError(f"generator.estimator_bins = {list(config.estimator_bins)}: at most {side // 2} radial bins for {side} px LR patches")
    lo, hi = config.consistency_sigma
    if lo > hi:
        raise ValueError(f"generator.consistency_sigma = {list(config.consistency_sigma)}: the first value must not exceed the second")
    dist.check_batch("generator.batch_size", config.batch_size)
    if config.use_consistency:
        dist.check_batch("generator.consistency_batch", config.consistency_batch)


def _build_networks(config: GeneratorConfig, patches: torch.Tensor, device: torch.device, dist: Dist,
                    jpeg_files: JpegSetting | None) -> tuple[Generator, WaveletDiscriminator, NoiseSpectrum | None]:
    """G (calibrated, with its noise bank and JPEG round trip) and the discriminator, on `device`,
    with their seeded initial weights; and the noise bank's spectrum (None: no noise to fit around)."""
    with seeded(config.seed):
        gen = build_generator(config)
        if hasattr(gen.estimator, "calibrate"):
            # Feature standardisation from the training patches (deterministic: the first 256, top-left crops).
            gen.estimator.calibrate(patches[:256, :, : config.patch_size, : config.patch_size])
        bank = noise_bank(config, patches, lr_side(config))
        spectrum = bank.spectrum if bank is not None else None
        if bank is not None:  # the noise bank: flat LR-sized crops of the real training images, detrended
            gen.set_noise_bank(bank.bank, bank.level)
            if dist.is_main:
                log.info("train_generator: noise bank of %d crops, %s", config.noise_bank, "below one 8-bit level (the photos' rounding): "
                         "G adds none" if spectrum is None else f"the blur is fitted on the {config.noise_fit}")
        jpeg = jpeg_setting(config, patches, jpeg_files)
        gen.set_jpeg(jpeg)
        if dist.is_main:
            log.info("train_generator: G's LR ends with %s", f"JPEG {jpeg.describe()}" if jpeg is not None
                     else "no JPEG (generator.jpeg: off)" if config.jpeg == "off" else "no JPEG (the real images show no JPEG history)")
        gen = gen.to(device)
        disc = WaveletDiscriminator(3, config.wd_channels).to(device)
    return gen, disc, spectrum


def _inputs(config: GeneratorConfig, patches: torch.Tensor, fdc: nn.Module | None, fdc_scale: float, spectrum: NoiseSpectrum | None,
            device: torch.device) -> _Inputs:
    """What every step reads: the patches, the frozen comparator, the spectral target and floor."""
    if fdc is not None:
        fdc = fdc.to(device).eval()
        for p in fdc.parameters():
            p.requires_grad_(False)
    side = lr_side(config)
    target = _spectral_target(config, patches, side, spectrum).to(device) if config.use_spectral else None
    floor = _spectral_floor(config, patches, side, spectrum) if config.use_spectral else config.spectral_floor
    if floor != config.spectral_floor / config.spectral_angles:
        log.info("train_generator: spectral floor %.3g (%.2f of the noise's share of the top bin; spectral_floor %.3g)",
                 floor, config.spectral_noise_floor, config.spectral_floor)
    weights = _spectral_weights(config, patches, side, spectrum) if config.use_spectral else None
    if weights is not None:
        rings = weights.view(config.spectral_bins, config.spectral_angles).mean(1)
        log.info("train_generator: spectral loss weights by ring (the signal's share of its power, squared): %s",
                 " ".join(f"{float(w):.2f}" for w in rings))
        weights = weights.to(device)
    return _Inputs(patches, fdc, target, fdc_scale, side, floor, weights)


def _start_kernel(config: GeneratorConfig, gen: Generator, inputs: _Inputs, spectrum: NoiseSpectrum | None, device: torch.device,
                  dist: Dist) -> KernelStart:
    """Set G's first kernel to the best start of `fca.train.kernel_start` (kernel_param = profile), fitted
    to the spectral loss on the LR images the trainer fits (`noise_fit`). Every rank fits the whole
    batch with the same seed, so every rank starts from the same kernel."""
    patches, side = inputs.patches, inputs.side
    target = inputs.target if inputs.target is not None else _spectral_target(config, patches, side, spectrum).to(device)
    floor = inputs.floor if config.use_spectral else _spectral_floor(config, patches, side, spectrum)
    weights = inputs.weights if config.use_spectral else _spectral_weights(config, patches, side, spectrum)

    def lr_of(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        if config.noise_fit == "signal":
            return gen.blur(x.to(device), kernels.to(device))
        return gen.degrade_parts(x.to(device), kernels.to(device))[1]

    sample = lambda rng: _sample(patches, config.batch_size, config.patch_size, rng)  # noqa: E731
    every = max(1, patches.shape[0] // 256)  # up to 256 patches, evenly spread, their top-left crops
    judge = patches[::every][:256, :, : config.patch_size, : config.patch_size]
    fit = StartFit(config.kernel_size, config.kernel_init_sigma, config.kernel_start_steps, config.lr_prior, config.betas,
                   config.spectral_bins, config.spectral_angles, floor, config.seed, weights)
    with torch.autocast(device.type, enabled=False):
        start = kernel_start(lr_of, sample, judge, target, fit, per_image=config.estimator == "spectral")
    gen.reset_noise()  # the fits' noise draws leave training's sequence as it was
    gen.estimator.start_from(start.ellipse, start.profile)
    if dist.is_main:
        log.info("train_generator: the kernel starts from the %s profile (spectral distance %s)", start.chosen,
                 ", ".join(f"{k} {v:.4f}" for k, v in start.distances.items()))
    return start


def _build(config: GeneratorConfig, gen: Generator, disc: WaveletDiscriminator, device: torch.device, dist: Dist,
           resume: Resume | None, on_precision: Callable[[PrecisionChoice], None] | None) -> tuple[Training, _Nets]:
    """The run around the networks: Adam for each (the kernel prior at its own rate), the LR
    schedules, the data generator and the precision (a resumed run keeps the stored one); and
    what the step calls (DDP wrappers in a multi-process job, the modules otherwise)."""
    prior = set(id(p) for p in gen.estimator.prior_parameters())
    opt_g = torch.optim.Adam(
        [
            {"params": [p for p in gen.parameters() if id(p) not in prior], "lr": config.lr},
            {"params": gen.estimator.prior_parameters(), "lr": config.lr_prior},
        ],
        betas=config.betas,
    )
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    schedules = {name: torch.optim.lr_scheduler.LambdaLR(opt, half_then_linear_decay(config.steps))
                 for name, opt in (("generator", opt_g), ("discriminator", opt_d))}
    # On CPU bf16 + channels_last or fp32, by cpu_bf16 and the CPU's flags.
    precision, record = run_precision("train_generator", device, config.cuda_amp, config.cpu_bf16, resume, dist, on_precision)
    if precision.enabled:
        gen.to(memory_format=torch.channels_last)
        disc.to(memory_format=torch.channels_last)
    training = Training(gen, {"generator": opt_g, "discriminator": opt_d}, schedules, precision, torch.Generator().manual_seed(config.seed),
                        aux={"discriminator": disc}, records={"precision": record})
    return training, _Nets(gen, disc, opt_g, opt_d, dist.parallel(_GeneratorStep(gen), device), dist.parallel(_Critic(disc), device))


def train_generator(
    config: GeneratorConfig,
    train_patches: torch.Tensor,
    fdc: nn.Module | None,
    *,
    device: torch.device,
    checkpoint_dir: Path | None,
    fdc_scale: float = 1.2,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    on_images: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    progress: bool = True,
    dist: Dist = Dist(),
    on_precision: Callable[[PrecisionChoice], None] | None = None,
    jpeg_files: JpegSetting | None = None,
) -> tuple[Generator, list[dict[str, float]]]:
    """Train G on real-domain HR patches; return (G in eval mode on `device`, per-step metrics).

    train_patches: [N, 3, H, W], float in [0, 1] (or uint8), H, W >= config.patch_size.
    fdc: the trained comparator, `fdc(a, b) -> [B]`; required when config.loss is fdc or both.
      It is frozen here (eval mode, no gradients to its weights).
    fdc_scale: the comparator's last curriculum scale (pass FDCConfig.scale_end): x_U and x_D
      are made with it.
    checkpoint_dir: a checkpoint (`fca.train.checkpoint`: net_<step>.pt, G's weights that
      `load_generator` reads, and state_<step>.pt, the discriminator among it) is written there
      every `checkpoint_every` steps and at the end; if one exists when training starts,
      training resumes from it (bit-exact on CPU).
    on_step(step, metrics): metrics are loss_g, loss_d, loss_fdc, loss_spectral, loss_wd, loss_consistency, lr,
      kernel_sigma (mean effective sigma of the batch's kernels); a disabled loss reads 0.
    on_images(step, kernels [b,K,K], hr [b,3,P,P], bicubic_lr, ours_lr): every `image_every`
      steps and at the end, on a fixed preview batch of the first (up to 4) patches.
    dist: this process's place in a torchrun job (fca.distributed). config.batch_size is the
      global batch; each rank trains on its share, gradients and logged metrics are averaged
      over ranks, and rank 0 alone calls on_step / on_images and writes checkpoints.
    on_precision(choice): once, before the first step: what the run computes in and why
      (config.cpu_bf16; `fca.train.hardware.resolve_precision`). The choice is logged and stored
      in the checkpoint; a resumed run takes it from there.
    jpeg_files: the photos' JPEG round trip read from their files (`fca.jpeg.files_jpeg`), if any;
      with config.jpeg = auto G ends with it, or without it with the one the patches' pixels show
      (`jpeg_setting`).
    Raises TrainingDivergedError when a loss is NaN or inf (the checkpoint on disk is left as it was).
    """
    _validate(config, train_patches, fdc, dist)
    patches = _as_float(train_patches)
    gen, disc, spectrum = _build_networks(config, patches, device, dist, jpeg_files)
    inputs = _inputs(config, patches, fdc, fdc_scale, spectrum, device)
    checkpoints = Checkpoints(checkpoint_dir, config.checkpoint_every, plain_config(config), "generator", "generator",
                              resumable=_RESUMABLE_CHANGES)
    resume = checkpoints.find(device)
    if resume is None and config.kernel_param == "profile" and config.kernel_start_steps > 0:
        _start_kernel(config, gen, inputs, spectrum, device, dist)
    training, nets = _build(config, gen, disc, device, dist, resume, on_precision)
    channels_last = training.precision.enabled
    preview = patches[: min(4, patches.shape[0]), :, : config.patch_size, : config.patch_size].to(device)

    def step_fn(step: int) -> dict[str, float]:
        out = _train_step(config, nets, inputs, training.precision, channels_last, training.rng, dist, device, step)
        lr_now = nets.opt_g.param_groups[0]["lr"]
        training.schedulers["generator"].step()
        if config.use_wd:
            training.schedulers["discriminator"].step()
        return dist.average({
            **{k: float(v.detach()) for k, v in out.items() if k != "kernels"},
            "lr": lr_now,
            "kernel_sigma": float(effective_sigma(out["kernels"].detach().double()).mean()),
        })

    def images(step: int) -> None:
        with torch.no_grad():
            kernels = gen.estimate_kernel(preview)
            on_images(step, kernels.cpu(), preview.cpu(), downscale(preview, config.scale).cpu(), gen.degrade(preview, kernels).cpu())

    gen.train()
    disc.train()
    run_loop(training, step_fn, steps=config.steps, checkpoints=checkpoints, dist=dist, resume=resume, watch="loss_g",
             on_step=on_step, periodic=[Periodic(config.image_every, images)] if on_images is not None else [],
             progress=Progress("train_generator", progress,
                               postfix=lambda m: {"loss_g": f"{m['loss_g']:.4f}", "sigma": f"{m['kernel_sigma']:.2f}"}))
    gen.eval()
    gen.to(memory_format=torch.contiguous_format)
    return gen, training.history


def _fdc_references(x: torch.Tensor, side: int, scale: float, gen: torch.Generator, dist: Dist = Dist()) -> tuple[torch.Tensor, ...]:
    """Real-domain references for the comparator, all [b, 3, side, side]:
    x at native scale, x_U (x upscaled by `scale`), x_D (x downscaled by `scale`), each a random crop
    (x is this rank's shard; crop places as in `_random_crops`)."""
    x_up = upscale(x, scale)
    x_down = downscale(x, scale)
    size = min(side, x_down.shape[-1])
    return _random_crops(x, size, gen, dist), _random_crops(x_up, size, gen, dist), _random_crops(x_down, size, gen, dist)


def load_generator(path: Path | str, device: torch.device | str = "cpu") -> Generator:
    """The trained generator in a checkpoint written by `train_generator` (eval mode, no grads), on `device`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no generator checkpoint (run train-generator first)")
    state = load_checkpoint(path, map_location="cpu")
    # G's weights are under "model" (fca.train.checkpoint's layout); the one-file checkpoints
    # of earlier versions kept them under "generator", and users' models/generator.pt still load.
    key = "model" if isinstance(state, dict) and "model" in state else "generator"
    if not isinstance(state, dict) or key not in state or "config" not in state:
        raise ValueError(f"{path}: not a generator checkpoint (no 'model'/'config' entries)")
    from fca.train.checkpoint import check_weights, checkpoint_config, load_weights

    # The stored config passes the params.yaml checks (keys of older versions are ignored; those
    # that shape the network must be there); the weights must fit it and be finite. Each failure
    # is one CheckpointError line naming the file and the key. The fit is checked on a meta-device
    # skeleton first, so a config that claims a huge network allocates nothing.
    arch = ("scale", "estimator", "kernel_size", "kernel_param", "kernel_init_sigma", "channels", "dense_blocks", "res_blocks")
    raw = state["config"]
    if isinstance(raw, dict) and "estimator" not in raw:
        raw = {**raw, "estimator": "paper"}  # checkpoints from before the spectral estimator existed
    config = checkpoint_config(path, raw, GeneratorConfig, required=arch)
    weights = state[key]
    if isinstance(weights, dict) and "jpeg" not in weights:
        weights["jpeg"] = torch.zeros(2, dtype=torch.int64)  # checkpoints from before G's JPEG: none
    if isinstance(weights, dict) and "noise_level" in weights and "noise_level_by" not in weights:
        weights["noise_level_by"] = torch.zeros((), dtype=torch.int64)  # from before NoiseLevel.by: each channel's value
    if isinstance(weights, dict) and "noise_level" in weights and "noise_level_cap" not in weights:
        weights["noise_level_cap"] = torch.zeros(3, CAP_GRID, CAP_GRID, CAP_GRID)  # from before the colour cap: none
    with torch.device("meta"):
        check_weights(path, build_generator(config).state_dict(), weights, "generator")
    gen = build_generator(config)
    load_weights(path, gen, weights, "generator")
    gen.eval().to(device)
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen
