"""Stage `evaluate`: the referee (DESIGN.md section 2).

Synthetic setting with a known answer. I = clean HR image, k_gt = the known kernel,
s = scale, down = antialiased bicubic downscale (`fca.resample.downscale`):

- real domain at HR:          R = I (*) k_gt
- true real-world LR:         L_true = down(I) (*) k_gt
- bicubic LR:                 down(R)
- ours:                       G(R) = down(R) (*) k(R)      (the trained generator)
- oracle:                     down(R) (*) k_or, k_or the K x K simplex kernel that makes
                              this closest to L_true (`fca.oracle.fit_oracle_kernel`)

k_or is fitted on the training patches (it is a property of k_gt and s, not of a scene)
and judged on the held-out ones. The SR probe trains one small net three times, with the
same budget and seed, on (down(X), X), (G(X), X) and (down(X) (*) k_or, X) for the
training real-domain patches X, and tests each on held-out scenes with input L_true and
target R (PSNR/SSIM on Y, s-pixel border cropped).

PSNRs here are pooled: the mean squared error over all validation crops at once (the
PSNR of the set as one mosaic). The per-crop mean that SR benchmarks use on full images
is dominated by nearly flat crops (a sky crop at 58 dB for bicubic upscaling and 37 dB
for a net with a 1% colour bias); SSIMs are per-crop means.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fca.config import param
from fca.distributed import Dist
from fca.frequency import bin_centres, log_l1, mean_density, symmetric_kl
from fca.kernels import conv_per_sample, cov_rel_error, effective_sigma
from fca.metrics import pooled_psnr, pooled_psnr_y, ssim_y
from fca.oracle import fit_oracle_kernel
from fca.resample import downscale, upscale
from fca.train.sr import SRConfig, sr_predict, train_sr

DegradeFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
PAIR_KINDS = ("bicubic", "fca", "oracle")


@dataclass(frozen=True)
class EvaluateConfig:
    density_bins: int = param(15, ge=2, help="radial frequency bins; fewer than half the LR patch side")
    batch_size: int = param(16, ge=1, help="images per call of the generator")
    samples: int = param(4, ge=0, help="validation images whose crops go to the report")
    sr: SRConfig = param(SRConfig())
    seed: int = param(0, ge=0, help="seed of the SR runs (the same for every kind of pairs)")


def real_lr_views(clean: torch.Tensor, real: torch.Tensor, k_gt: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(down(R), L_true) for clean HR I [N, 3, H, W], real R = I (*) k_gt [N, 3, H, W], k_gt [K, K]."""
    if clean.shape != real.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and real {tuple(real.shape)} images must have the same shape")
    k = k_gt.to(torch.float64)
    return downscale(real, scale), conv_per_sample(downscale(clean, scale), k).to(real.dtype)


@torch.no_grad()
def apply_degrade(degrade_fn: DegradeFn, hr: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the generator over [N, 3, H, W] in batches -> (lr [N, 3, h, w], kernels [N, K, K])."""
    lrs, kernels = [], []
    for start in range(0, hr.shape[0], batch_size):
        lr, k = degrade_fn(hr[start : start + batch_size])
        lrs.append(lr.detach().float().cpu())
        kernels.append(k.detach().double().cpu())
    return torch.cat(lrs), torch.cat(kernels)


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def _check_inputs(clean_val, real_val, clean_train, real_train, k_gt, scale, config: EvaluateConfig) -> None:
    for name, t in (("clean_val", clean_val), ("real_val", real_val), ("clean_train", clean_train), ("real_train", real_train)):
        if t.dim() != 4 or t.shape[1] != 3 or t.shape[0] == 0:
            raise ValueError(f"referee: {name} must be a non-empty [N, 3, H, W] batch, got {tuple(t.shape)}")
    if k_gt.dim() != 2:
        raise ValueError(f"referee: k_gt must be [K, K], got {tuple(k_gt.shape)}")
    if float(scale) != int(scale):
        raise ValueError(f"referee: the SR probe needs an integer scale, got {scale}")
    for name, t in (("validation", real_val), ("training", real_train)):
        h, w = t.shape[-2:]
        if h % int(scale) or w % int(scale):
            raise ValueError(f"referee: {name} patches {h}x{w} are not a multiple of the scale {scale}")
    # The first ring must reach the lowest non-zero frequency 1/side: bins < side / 2.
    lr_side = min(real_val.shape[-2:]) // int(scale)
    if config.density_bins > (lr_side - 1) // 2:
        raise ValueError(f"evaluate.density_bins = {config.density_bins}: LR patches of {lr_side} pixels resolve at most {(lr_side - 1) // 2} radial bins")


def referee(
    clean_val: torch.Tensor,
    real_val: torch.Tensor,
    k_gt: torch.Tensor,
    scale: float,
    degrade_fn: DegradeFn,
    clean_train: torch.Tensor,
    real_train: torch.Tensor,
    config: EvaluateConfig,
    progress: bool = False,
    on_step: Callable[[str, int, dict[str, float]], None] | None = None,
    device: torch.device = torch.device("cpu"),
    dist: Dist = Dist(),
) -> dict:
    """Judge a trained degradation against the known answer.

    clean_*/real_*: [N, 3, H, W] in [0, 1], real = clean (*) k_gt, H and W multiples of s;
    k_gt: [K, K]; degrade_fn(hr [B, 3, H, W]) -> (lr [B, 3, H/s, W/s], kernels [B, K', K'])
    is the trained generator. `on_step(kind, step, metrics)` sees every SR training step
    (kind in PAIR_KINDS). device / dist: where, and over how many torchrun processes, the
    SR nets train (every rank computes the rest itself; the numbers are the same on all).

    Returns {"metrics": nested dict of floats (keys below), "arrays": dict of numpy arrays
    for the report, "timings_s": seconds per phase}. Metrics:
      density.{gap,skl}_{bicubic,fca,oracle}, density.gap_true (L_true), density.gap_reduction
        (log-L1 / symmetric KL of each LR set's mean density to that of R; reduction =
        1 - gap_fca / gap_bicubic)
      kernel.cov_rel_error, kernel.sigma_{pred,oracle,true}
      kernel.lr_psnr_{bicubic,fca,oracle}                   (pooled RGB PSNR, against L_true)
      sr.psnr_* (pooled PSNR-Y), sr.ssim_* (mean SSIM-Y) for bicubic/fca/oracle pairs and
      for plain bicubic upscaling of L_true (sr.*_bicubic_upsampling),
      sr.gain_fraction = (fca - bicubic) / (oracle - bicubic) on PSNR.
    """
    _check_inputs(clean_val, real_val, clean_train, real_train, k_gt, scale, config)
    s = int(scale)
    timings: dict[str, float] = {}
    clean_val, real_val = clean_val.float(), real_val.float()
    clean_train, real_train = clean_train.float(), real_train.float()

    t0 = time.perf_counter()
    down_val, true_val = real_lr_views(clean_val, real_val, k_gt, s)
    down_train, true_train = real_lr_views(clean_train, real_train, k_gt, s)
    fca_val, kernels_val = apply_degrade(degrade_fn, real_val, config.batch_size)
    fca_train, _ = apply_degrade(degrade_fn, real_train, config.batch_size)
    if fca_val.shape != down_val.shape:
        raise ValueError(f"referee: the generator returned LR {tuple(fca_val.shape)}, expected {tuple(down_val.shape)}")
    timings["degrade"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    size = kernels_val.shape[-1]  # the oracle gets the generator's kernel size: it is G's best answer
    k_or = fit_oracle_kernel(down_train, true_train, size)
    oracle_val = conv_per_sample(down_val, k_or)
    oracle_train = conv_per_sample(down_train, k_or)
    timings["oracle"] = time.perf_counter() - t0

    # Frequency densities (cycles/pixel, so HR and LR share the axis), distances to R's.
    t0 = time.perf_counter()
    bins = config.density_bins
    dens = {
        "real": mean_density(real_val, bins),
        "bicubic": mean_density(down_val, bins),
        "fca": mean_density(fca_val, bins),
        "oracle": mean_density(oracle_val, bins),
        "true": mean_density(true_val, bins),
    }
    gap = {k: float(log_l1(dens[k], dens["real"])) for k in PAIR_KINDS}
    skl = {k: float(symmetric_kl(dens[k], dens["real"])) for k in PAIR_KINDS}
    density = {f"gap_{k}": v for k, v in gap.items()} | {f"skl_{k}": v for k, v in skl.items()}
    density["gap_true"] = float(log_l1(dens["true"], dens["real"]))
    density["gap_reduction"] = 1.0 - gap["fca"] / gap["bicubic"] if gap["bicubic"] > 0 else float("nan")
    # The ceiling: even the right answer (the oracle) does not reach R's density exactly,
    # because L_true itself differs from R in the top bins (noise, aliasing, truncation).
    density["gap_reduction_oracle"] = 1.0 - gap["oracle"] / gap["bicubic"] if gap["bicubic"] > 0 else float("nan")

    kernel = {
        "cov_rel_error": _mean(cov_rel_error(kernels_val, k_or.expand_as(kernels_val))),
        "sigma_pred": _mean(effective_sigma(kernels_val)),
        "sigma_oracle": float(effective_sigma(k_or)),
        "sigma_true": float(effective_sigma(k_gt.double())),
        "lr_psnr_bicubic": pooled_psnr(down_val, true_val),
        "lr_psnr_fca": pooled_psnr(fca_val, true_val),
        "lr_psnr_oracle": pooled_psnr(oracle_val, true_val),
    }
    timings["density_kernel"] = time.perf_counter() - t0

    # Downstream SR: same net, budget and seed; only the LR side of the pairs differs.
    t0 = time.perf_counter()
    train_lr = {"bicubic": down_train, "fca": fca_train, "oracle": oracle_train}
    sr_out: dict[str, torch.Tensor] = {}
    losses: dict[str, list[float]] = {}
    sr: dict[str, float] = {}
    for kind in PAIR_KINDS:
        losses[kind] = []

        def _log(step: int, m: dict[str, float], kind: str = kind) -> None:
            losses[kind].append(m["loss"])
            if on_step is not None:
                on_step(kind, step, m)

        net = train_sr(config.sr, train_lr[kind], real_train, s, seed=config.seed, progress=progress, on_step=_log,
                       desc=f"sr[{kind}]", device=device, dist=dist)
        sr_out[kind] = sr_predict(net, true_val, config.batch_size)
        sr[f"psnr_{kind}"] = pooled_psnr_y(sr_out[kind], real_val, s)
        sr[f"ssim_{kind}"] = _mean(ssim_y(sr_out[kind], real_val, s))
        timings[f"sr_{kind}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    bicubic_up = upscale(true_val, s).clamp(0, 1)
    sr["psnr_bicubic_upsampling"] = pooled_psnr_y(bicubic_up, real_val, s)
    sr["ssim_bicubic_upsampling"] = _mean(ssim_y(bicubic_up, real_val, s))
    headroom = sr["psnr_oracle"] - sr["psnr_bicubic"]
    # Undefined when oracle pairs do not beat bicubic pairs (no gain to recover).
    sr["gain_fraction"] = (sr["psnr_fca"] - sr["psnr_bicubic"]) / headroom if headroom > 1e-6 else float("nan")

    n = min(config.samples, real_val.shape[0])
    arrays = {
        "density_bins": bin_centres(bins).numpy(),
        **{f"density_{k}": v.numpy() for k, v in dens.items()},
        "kernel_oracle": k_or.numpy(),
        "kernel_true": k_gt.double().numpy(),
        "kernels_pred": kernels_val.numpy(),
        "sample_hr_real": real_val[:n].numpy(),
        "sample_lr_true": true_val[:n].numpy(),
        "sample_lr_bicubic": down_val[:n].numpy(),
        "sample_lr_fca": fca_val[:n].numpy(),
        "sample_lr_oracle": oracle_val[:n].float().numpy(),
        "sample_sr_bicubic_upsampling": bicubic_up[:n].numpy(),
        **{f"sample_sr_{k}": v[:n].numpy() for k, v in sr_out.items()},
        **{f"sr_loss_{k}": np.asarray(v) for k, v in losses.items()},
    }
    return {"metrics": {"density": density, "kernel": kernel, "sr": sr}, "arrays": arrays, "timings_s": timings}


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"sr": {"psnr_fca": 1.0}} -> {"sr.psnr_fca": 1.0} (for MLflow and metrics files)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten_metrics(value, f"{name}.")
        else:
            flat[name] = float(value)
    return flat
