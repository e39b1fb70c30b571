"""Stage `evaluate`: the referee. On the synthetic real domain the right answer is known;
on real photos (no known kernel) it describes what G does, with no verdict."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fca.data.patches import load_camera, load_kernel_known, load_noise, load_patch_kernels, load_patch_set
from fca.evaluate import flatten_metrics, referee, referee_no_reference
from fca.frequency import mean_density
from fca.fsutil import atomic_dir, atomic_file, write_json
from fca.noise import PatchNoise
from fca.train.generator import load_generator
from pipeline import stage
from pipeline.params import Params

DESCRIPTION = """\
Judge the trained generator where the answer is known (docs/design.md, "Referee"):
I = clean patch, R = I (*) k_gt (real domain), L_true = down(I) (*) k_gt
(with patches.noise: R and L_true each get the camera noise, at their own pixel grid).
Fits the oracle kernel k_or (least squares, non-negative, sum 1), then measures
frequency-density gaps of down(R) and G(R) to R, the kernel's covariance error
against k_or, LR PSNR against L_true, and SR nets trained with the same budget
on bicubic, our and oracle pairs (with evaluate.blind also the blind recipe's, on
a mixed-kernel domain also the best single kernel's), tested on held-out
L_true -> R.
Writes --out (metrics JSON: density, kernel, sr and, on a mixed-kernel domain,
adapt, on a noisy domain noise; the FDC's accuracies stay in train-fdc's own file), --density (CSV) and
--arrays (kernels, densities and sample crops for the report).

When the domain's kernel is unknown (patches.blur.type: none, the patches stage's
summary.json: kernel_known false) there is no L_true and no oracle: --out holds
only the `noref` section (the density match of G(x) and of bicubic down(x) to the
photos x, per image and over the domain, and the spread of G's kernels), and the
density CSV has no oracle or clean curve (empty columns)."""

# The columns of --density (dvc.yaml's `density` plot draws them; tests/pipeline/test_plots.py).
DENSITY_CURVES = ("real", "bicubic", "ours", "oracle", "l_true", "clean")  # l_true: what the density check judges against
DENSITY_COLUMNS = ("frequency", *DENSITY_CURVES)


def metrics_json(result: dict[str, Any]) -> dict[str, Any]:
    """What --out holds: the referee's metrics, each 95 % interval beside the number it
    bounds (sr.psnr_ours_lo / sr.psnr_ours_hi). One file per purpose: the FDC's held-out
    accuracies are train-fdc's reports/fdc.json, not repeated here."""
    metrics = {section: dict(values) for section, values in result["metrics"].items()}
    for section, bounds in result["intervals"].items():
        for key, (lo, hi) in bounds.items():
            metrics[section] |= {f"{key}_lo": lo, f"{key}_hi": hi}
    return metrics


def density_curves(arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """--density's table: DENSITY_COLUMNS always (the plot in dvc.yaml draws them), a curve the
    referee did not compute (no oracle and no clean images without a known kernel) left empty."""
    missing = np.full(len(arrays["density_bins"]), np.nan)
    return pd.DataFrame({"frequency": arrays["density_bins"]} | {name: arrays.get(f"density_{name}", missing) for name in DENSITY_CURVES})


def write_outputs(args: argparse.Namespace, result: dict[str, Any], names: list[str], run: Any, device: Any, dist: Any,
                  trained: dict[str, str] | None = None) -> dict[str, Any]:
    """--out, --density and --arrays from the referee's result (rank 0); returns the metrics written.
    `trained`: what the generator was trained in and on (`trained_with`), for runtime.json."""
    metrics = metrics_json(result)
    write_json(args.out, metrics)
    arrays = result["arrays"]
    with atomic_file(args.density) as tmp:
        density_curves(arrays).to_csv(tmp, index=False, float_format="%.6g")
    with atomic_dir(args.arrays) as out:
        np.savez_compressed(out / "arrays.npz", **arrays, sample_names=np.asarray(names[: len(arrays["sample_hr_real"])]))
        # the CPU, threads, torch and precision behind the numbers (the report's header names them)
        write_json(out / "runtime.json", stage.runtime(device, dist) | (trained or {}))
    run.log_metrics(flatten_metrics(metrics))
    # Wall times go to MLflow only: in data/evaluation they changed its DVC hash on every run
    # (and re-ran the report) even when every number the report draws was bitwise the same.
    run.log_metrics({f"seconds.{phase}": value for phase, value in result["timings_s"].items()})
    run.log_artifact(args.out)
    run.log_artifact(args.density)
    return metrics


def trained_with(checkpoint: Path) -> dict[str, str]:
    """What the generator in `checkpoint` was trained in and on: its precision (fp32, bf16, fp16)
    and the CPU its training stage recorded ("unknown" for a checkpoint that stores neither), and
    the JPEG round trip its LR ends with."""
    from fca.models.generator_arch import jpeg_of_buffer
    from fca.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint, map_location="cpu")
    precision, runtime = state.get("precision") or {}, state.get("runtime") or {}
    weights = state.get("model") or state.get("generator") or {}  # "generator": the one-file checkpoints of earlier versions
    jpeg = jpeg_of_buffer(torch.as_tensor(weights.get("jpeg", (0, 0))))
    return {"generator_precision": str(precision.get("precision", "unknown")), "generator_cpu": str(runtime.get("cpu", "unknown")),
            "generator_cpu_flags": str(runtime.get("cpu_flags", "unknown")),
            "generator_jpeg": jpeg.describe() if jpeg is not None else "none"}


def print_no_reference(metrics: dict[str, Any]) -> None:
    n = metrics["noref"]
    print(f"evaluate: no known kernel, no verdict: {n['images']:.0f} photos; per-image density distance to x (median) "
          f"bicubic {n['image_gap_bicubic_median']:.3f} -> ours {n['image_gap_ours_median']:.3f} "
          f"(change {n['image_gap_change_median']:+.3f}, 95 % interval {n.get('image_gap_change_median_lo', float('nan')):+.3f} .. "
          f"{n.get('image_gap_change_median_hi', float('nan')):+.3f}; ours closer on {n['image_closer_share']:.0%} of the photos); "
          f"kernel sigma median {n['kernel_sigma_median']:.2f} (5-95 %: {n['kernel_sigma_p05']:.2f} .. {n['kernel_sigma_p95']:.2f})")
    if "noise_std_b50" in n:
        print(f"evaluate: G's noise std (8-bit levels) at grey 0.2 / 0.5 / 0.8: {255 * n['noise_std_b20']:.1f} / {255 * n['noise_std_b50']:.1f} / "
              f"{255 * n['noise_std_b80']:.1f}; neighbour correlation {n['noise_lag1_h']:.2f}; between channels R-G {n['noise_corr_rg']:.2f}")
    else:
        print("evaluate: G adds no noise")


def build() -> argparse.ArgumentParser:
    p = stage.parser("evaluate", DESCRIPTION)
    p.add_argument("--patches", type=Path, required=True, help="the patches stage's output folder")
    p.add_argument("--generator", type=Path, required=True, help="trained generator (.pt)")
    p.add_argument("--out", type=Path, required=True, help="metrics (.json)")
    p.add_argument("--density", type=Path, required=True, help="density curves (.csv)")
    p.add_argument("--arrays", type=Path, required=True, help="folder for arrays the report draws")
    stage.add_device(p)
    return p


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.evaluate
    kernel_known = load_kernel_known(args.patches)
    clean_val, real_val, names = load_patch_set(args.patches, "val")
    if kernel_known:
        clean_train, real_train, names_train = load_patch_set(args.patches, "train")
        # Each patch's own kernel: one shared kernel, or one per patch on a mixed-kernel domain.
        k_train, k_val = load_patch_kernels(args.patches, "train"), load_patch_kernels(args.patches, "val")
        # The domain's camera noise (summary.json), drawn per patch as the patches stage drew R's: L_true gets it.
        noise, noise_seed = load_noise(args.patches)
        noise_val, noise_train = PatchNoise(noise, noise_seed, tuple(names)), PatchNoise(noise, noise_seed, tuple(names_train))
        # A simulated camera (patches.blur.type: camera): L_true and the oracle pairs are its own photos at LR.
        camera_val, camera_train = load_camera(args.patches, names), load_camera(args.patches, names_train)
    run_params = {"generator.loss": params.generator.loss, "referee": "known kernel" if kernel_known else "no reference"}
    # Under torchrun every rank computes everything (same inputs, same numbers) and the SR
    # nets train over the ranks; rank 0 alone writes and logs.
    with stage.distributed(args) as (device, dist), stage.tracked("evaluate", stage.run_params(cfg, device, dist, **run_params), dist) as run:
        generator = load_generator(args.generator, device)

        @torch.no_grad()
        def degrade_fn(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            lr, kernels = generator(hr.to(device))
            return lr.float().cpu(), kernels.float().cpu()

        @torch.no_grad()
        def kernel_fn(hr: torch.Tensor) -> torch.Tensor:
            return generator.estimate_kernel(hr.to(device)).cpu()

        if not kernel_known:  # real photos: nothing to check against, only what G does to them
            result = referee_no_reference(real_val, generator.scale, degrade_fn, cfg, noise=generator.noise_model())
            if dist.is_main:
                print_no_reference(write_outputs(args, result, names, run, device, dist, trained_with(args.generator)))
            return
        result = referee(
            clean_val, real_val, k_val, generator.scale, degrade_fn, clean_train, real_train, cfg, k_train=k_train, kernel_fn=kernel_fn,
            noise_val=noise_val, noise_train=noise_train, camera_val=camera_val, camera_train=camera_train,
            progress=stage.progress_enabled(args),
            on_step=lambda kind, step, m: run.log_metrics({f"sr_train.{kind}.{k}": v for k, v in m.items()}, step),
            device=device, dist=dist,
        )
        if not dist.is_main:
            return
        result["arrays"]["density_clean"] = mean_density(clean_val, cfg.density_bins).numpy()
        metrics = write_outputs(args, result, names, run, device, dist, trained_with(args.generator))
    d, k, sr = metrics["density"], metrics["kernel"], metrics["sr"]
    print(f"evaluate: density gap to L_true closed {d['gap_reduction_true']:.1%} (95 % interval {d.get('gap_reduction_true_lo', float('nan')):.1%} "
          f".. {d.get('gap_reduction_true_hi', float('nan')):.1%}; oracle {d['gap_reduction_true_oracle']:.1%}), to R {d['gap_reduction']:.1%} "
          f"(oracle {d['gap_reduction_oracle']:.1%}); kernel sigma ours {k['sigma_pred']:.2f} vs oracle {k['sigma_oracle']:.2f} (cov error {k['cov_rel_error']:.1%}); "
          f"SR PSNR bicubic/ours/oracle pairs {sr['psnr_bicubic']:.2f}/{sr['psnr_ours']:.2f}/{sr['psnr_oracle']:.2f} dB "
          f"(gain fraction {sr['gain_fraction']:.2f}, 95 % interval {sr.get('gain_fraction_lo', float('nan')):.2f} .. {sr.get('gain_fraction_hi', float('nan')):.2f})")
    if "adapt" in metrics:
        a = metrics["adapt"]
        print(f"evaluate: mixed kernels: sigma Pearson {a['sigma_pearson']:.2f}, cov error median {a['cov_rel_error_median']:.1%}, "
              f"angle error median {a['angle_error_median']:.1f} deg; LR PSNR ours {a['lr_psnr_ours']:.2f} vs best single kernel "
              f"{a['lr_psnr_global']:.2f} dB (gain {a['gain_db']:+.2f} dB)")
    if "noise" in metrics:
        n = metrics["noise"]
        print(f"evaluate: noise: ours / camera {n['variance_ratio_min']:.2f} .. {n['variance_ratio_max']:.2f} across brightness, "
              f"neighbour correlation ours {n['lag1_ours']:.2f} vs camera {n['lag1_camera']:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("evaluate", argv, build, body)
