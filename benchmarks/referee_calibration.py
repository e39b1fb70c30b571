"""Calibrate the referee on the bundled photos (docs/design.md, "Calibration").

Runs `fca.evaluate.referee` on the 9 scikit-image colour photos (7 train, 2 test
scenes), 128 px HR crops, scale 4, k_gt = 13x13 Gaussian sigma 3, with a stand-in
for the trained generator: bicubic downscaling followed by a fixed Gaussian of
sigma 2.84 (the width a direct spectral fit found). Prints the table of SR PSNR
for bicubic / stand-in / oracle pairs, the oracle kernel's fit, and timings.

    .venv/bin/python benchmarks/referee_calibration.py [--threads 1] [--steps 800] [--test chelsea coffee]

Defaults are the SR probe's defaults (`fca.train.sr.SRConfig`); the calibration in
docs/design.md ("Calibration") used 800 steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import skimage.data
import torch

from fca.evaluate import EvaluateConfig, referee
from fca.kernels import conv_per_sample, gaussian
from fca.resample import downscale
from fca.train.sr import SRConfig


def load_photos() -> dict[str, torch.Tensor]:
    """The 9 bundled colour photos as [3, H, W] float tensors in [0, 1]."""
    left, right, _ = skimage.data.stereo_motorcycle()
    images = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "motorcycle_left": left,
        "motorcycle_right": right,
        "hubble_deep_field": skimage.data.hubble_deep_field(),
        "ihc": skimage.data.immunohistochemistry(),
        "retina": skimage.data.retina(),
    }
    return {k: torch.from_numpy(v.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous() for k, v in images.items()}


def crops(image: torch.Tensor, size: int, stride: int, max_count: int, gen: torch.Generator, min_std: float = 0.02) -> torch.Tensor:
    """Grid crops [N, 3, size, size] of one image, flat ones dropped, at most max_count (random subset)."""
    _, h, w = image.shape
    out = [image[:, y : y + size, x : x + size] for y in range(0, h - size + 1, stride) for x in range(0, w - size + 1, stride)]
    out = [c for c in out if float(c.mean(0).std()) >= min_std]
    stack = torch.stack(out)
    if len(stack) > max_count:
        stack = stack[torch.randperm(len(stack), generator=gen)[:max_count]]
    return stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test", nargs="+", default=["chelsea", "coffee"], help="held-out photos")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--stride", type=int, default=96)
    ap.add_argument("--max-per-image", type=int, default=64)
    ap.add_argument("--sigma-gt", type=float, default=3.0)
    ap.add_argument("--sigma-ours", type=float, default=2.84)
    ap.add_argument("--steps", type=int, default=SRConfig.steps)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=SRConfig.lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    scale = 4
    gen = torch.Generator().manual_seed(args.seed)
    photos = load_photos()
    unknown = sorted(set(args.test) - set(photos))
    if unknown:
        raise SystemExit(f"--test: unknown photo(s) {unknown}; choose from {sorted(photos)}")
    split = {"train": [n for n in photos if n not in args.test], "val": list(args.test)}
    clean = {k: torch.cat([crops(photos[n], args.size, args.stride, args.max_per_image, gen) for n in names]) for k, names in split.items()}
    k_gt = torch.from_numpy(gaussian(13, args.sigma_gt))
    real = {k: conv_per_sample(v, k_gt) for k, v in clean.items()}
    k_ours = torch.from_numpy(gaussian(13, args.sigma_ours))

    def stand_in(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return conv_per_sample(downscale(hr, scale), k_ours), k_ours.expand(hr.shape[0], -1, -1)

    sr = SRConfig(blocks=args.blocks, channels=args.channels, steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size, lr=args.lr)
    config = dataclasses.replace(EvaluateConfig(), sr=sr, seed=args.seed)
    print(f"train {split['train']} -> {len(clean['train'])} crops; test {split['val']} -> {len(clean['val'])} crops; {args.threads} thread(s)")
    t0, c0 = time.perf_counter(), time.process_time()
    result = referee(clean["val"], real["val"], k_gt, scale, stand_in, clean["train"], real["train"], config)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = result["metrics"]
    print(f"\nk_gt: 13x13 sigma {args.sigma_gt} (effective {m['kernel']['sigma_true']:.3f}); stand-in Gaussian sigma {args.sigma_ours} (effective {m['kernel']['sigma_pred']:.3f}); oracle effective sigma {m['kernel']['sigma_oracle']:.3f}")
    print(f"{'pairs':<22}{'LR PSNR vs L_true':>18}{'density gap':>13}{'SR PSNR-Y':>11}{'SR SSIM-Y':>11}")
    names = {"bicubic": "bicubic", "ours": f"Gaussian {args.sigma_ours}", "oracle": "oracle"}
    for kind, label in names.items():
        print(f"{label:<22}{m['kernel'][f'lr_psnr_{kind}']:>18.2f}{m['density'][f'gap_{kind}']:>13.4f}{m['sr'][f'psnr_{kind}']:>11.2f}{m['sr'][f'ssim_{kind}']:>11.4f}")
    print(f"{'bicubic upsampling':<22}{'':>18}{'':>13}{m['sr']['psnr_bicubic_upsampling']:>11.2f}{m['sr']['ssim_bicubic_upsampling']:>11.4f}")
    print(f"{'L_true (the answer)':<22}{'inf':>18}{m['density']['gap_true']:>13.4f}")
    print(f"\ngain fraction {m['sr']['gain_fraction']:.3f}; density gap reduction {m['density']['gap_reduction']:.3f}; kernel cov rel error {m['kernel']['cov_rel_error']:.3f}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings_s"].items()) + f"; total {total:.1f} wall, {cpu:.1f} CPU")


if __name__ == "__main__":
    main()
