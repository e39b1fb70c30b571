"""The generator's noise bank against the camera's noise, for the four ways of building the bank.

A flat crop of R is not only noise (shading and blurred texture remain: `fca.noise.detrend`),
and shot noise follows brightness (`generator.noise_scale`). This script builds the bank from
the training patches of a noisy domain with each combination (mean removed or detrended; added
as it is or scaled to each pixel's brightness), adds its noise to the validation images' true
LR signal, and measures it as the referee does (`fca.evaluate.noise_section`: variance by
brightness against two draws of the camera's own model, lag-1 correlation). It prints one row
per bank and draws the curves (docs/results.md, "A noisy camera").

    .venv/bin/python benchmarks/noise_bank.py --patches data/patches --out docs/figures/noisy_noise.png

Needs the patches stage of a noisy domain (`cp presets/noisy.yaml params.yaml && dvc repro patches`) or
of the simulated camera (presets/camera.yaml).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fca.data.patches import load_camera, load_noise, load_patch_kernels, load_patch_set
from fca.evaluate import noise_section, real_lr_views
from fca.models.generator_arch import Generator
from fca.noise import FLAT_RATIO, PatchNoise, collect_noise_bank, fit_noise_level, flat_crops
from fca.resample import downscale
from fca.plots import noise_level_figure, save_figure

BANKS = {  # name: (detrend sigma, scaled to brightness)
    "mean removed, as it is (Real-SR)": (0.0, False),
    "mean removed, scaled to brightness": (0.0, True),
    "detrended, as it is": (3.0, False),
    "detrended, scaled to brightness (default)": (3.0, True),
}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patches", type=Path, default=Path("data/patches"), help="the patches stage's folder (a noisy domain)")
    p.add_argument("--out", type=Path, help="where to draw the curves (.png); none: print only")
    p.add_argument("--bank", type=int, default=256, help="bank size (generator.noise_bank)")
    p.add_argument("--flat-ratio", type=float, default=FLAT_RATIO, help="the flat-crop rule (generator.noise_flat_ratio)")
    p.add_argument("--scale", type=int, default=4, help="the LR scale (generator.scale)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    noise, seed = load_noise(args.patches)
    _, real_train, _ = load_patch_set(args.patches, "train")
    clean_val, real_val, names = load_patch_set(args.patches, "val")
    real_train, clean_val, real_val = _unit(real_train), _unit(clean_val), _unit(real_val)
    simulated = load_camera(args.patches, names)
    if simulated is not None:  # as the referee: two camera draws of down(I), binned by the camera's noise-free output
        lr_clean = downscale(clean_val, args.scale)
        signal, camera = simulated.signal(lr_clean), (lambda _, view: simulated(lr_clean, view))
    elif noise.active:
        k_val = load_patch_kernels(args.patches, "val")
        if k_val.dim() == 2:
            k_val = k_val.expand(len(names), -1, -1)
        signal = real_lr_views(clean_val, real_val, k_val, args.scale, None)[1]
        camera = PatchNoise(noise, seed, tuple(names))
    else:
        raise SystemExit(f"{args.patches}: the domain has no camera noise (patches.noise.type: none): nothing to compare")
    side = real_train.shape[-1] // args.scale

    curves, brightness = {}, None
    for name, (sigma, scaled) in BANKS.items():
        gen = Generator(scale=float(args.scale), noise="patches", noise_bank=args.bank, noise_side=side, noise_seed=0,
                        kernel_size=3, channels=1, dense_blocks=0, res_blocks=0)
        found = flat_crops(real_train, side, sigma, args.flat_ratio)
        bank_level = fit_noise_level(found) if scaled else None
        gen.set_noise_bank(collect_noise_bank(found, args.bank, 0, level=bank_level), bank_level)
        draws = tuple(signal + gen.noise_for(signal) for _ in range(2))
        metrics, arrays = noise_section(signal, camera, draws)
        curves.setdefault("camera", arrays["noise_var_camera"])
        curves[f"ours: {name}"] = arrays["noise_var_ours"]
        brightness = arrays["noise_brightness"]
        ratio = arrays["noise_var_ours"] / arrays["noise_var_camera"]
        print(f"{name:45s} {len(found.crops):5d} flat crops, ratio by brightness {' '.join(f'{r:.2f}' for r in ratio)}  lag 1 {metrics['lag1_ours']:.2f}"
              f" (camera {metrics['lag1_camera']:.2f})")
    if args.out is not None:
        save_figure(noise_level_figure(brightness, curves), args.out)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
