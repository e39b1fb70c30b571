"""Calibrate the smoothness weight of the oracle that kernel shapes are measured against.

The exact least-squares oracle (`fca.oracle.fit_oracle_kernel`, smooth = 0) fits the true LR
best, but the frequencies that down(R) barely holds leave its kernel free there, and it fills
them with a checkerboard. This script sweeps `smooth` on a patches folder with a known kernel
and prints, per weight: the oracle's LR PSNR against L_true (its cost), its effective sigma,
and a trained generator's kernel shape error, covariance error and kernel PSNR against it.
`fca.evaluate.SMOOTH_ORACLE` is the value chosen from this table.

    .venv/bin/python benchmarks/oracle_smoothing.py --patches data/patches --generator models/generator.pt

Needs a pipeline run of a single-kernel domain (`dvc repro train_generator`) first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fca.data.patches import load_patch_kernels, load_patch_set
from fca.evaluate import SMOOTH_ORACLE, kernel_psnr, kernels_differ, real_lr_views, shape_error
from fca.kernels import conv_per_sample, cov_rel_error, effective_sigma
from fca.metrics import pooled_psnr
from fca.oracle import fit_oracle_kernel
from fca.train.generator import load_generator

WEIGHTS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patches", type=Path, default=Path("data/patches"), help="the patches stage's folder (a single known kernel)")
    p.add_argument("--generator", type=Path, default=Path("models/generator.pt"), help="a trained generator checkpoint")
    p.add_argument("--images", type=int, default=32, help="validation images whose kernels are compared")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    clean_val, real_val, _ = load_patch_set(args.patches, "val")
    clean_train, real_train, _ = load_patch_set(args.patches, "train")
    k_val, k_train = load_patch_kernels(args.patches, "val"), load_patch_kernels(args.patches, "train")
    if kernels_differ(k_val) or kernels_differ(k_train):
        raise SystemExit(f"{args.patches}: kernels differ between patches; this calibration needs one known kernel")
    k_val, k_train = k_val.reshape(-1, *k_val.shape[-2:])[0], k_train.reshape(-1, *k_train.shape[-2:])[0]
    gen = load_generator(args.generator, torch.device("cpu"))
    down_val, true_val = real_lr_views(clean_val.float(), real_val.float(), k_val, gen.scale)
    down_train, true_train = real_lr_views(clean_train.float(), real_train.float(), k_train, gen.scale)
    with torch.no_grad():
        ours = gen.estimate_kernel(real_val[: args.images].float()).double()
    size = ours.shape[-1]

    print(f"{'smooth':>8} | {'oracle LR PSNR':>14} | {'oracle sigma':>12} | {'shape error':>11} | {'cov error':>9} | {'kernel PSNR':>11}")
    for weight in sorted(set(WEIGHTS) | {SMOOTH_ORACLE}):
        k = fit_oracle_kernel(down_train, true_train, size, smooth=weight)
        ks = k.expand(ours.shape[0], -1, -1)
        mark = "  <- fca.evaluate.SMOOTH_ORACLE" if weight == SMOOTH_ORACLE else ""
        print(f"{weight:8.0e} | {pooled_psnr(conv_per_sample(down_val, k), true_val):11.2f} dB | {float(effective_sigma(k)):12.3f} | "
              f"{float(shape_error(ours, ks).mean()):11.3f} | {float(cov_rel_error(ours, ks).mean()):9.3f} | {kernel_psnr(ours, ks):8.2f} dB{mark}")


if __name__ == "__main__":
    main()
