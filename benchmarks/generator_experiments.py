"""Generator experiments on the synthetic real domain (docs/design.md, "Referee"): does G find the blur?

Data: the scikit-image photos blurred with the 13x13, sigma 3 Gaussian (k_gt),
128x128 patches at stride 96, flat ones (luma std < 0.02) dropped. The answer is
the least-squares oracle kernel, effective sigma 2.67 (docs/design.md, "Calibration").
Each setting trains G with `train_generator` (loss spectral unless named) and
reports the learned kernel's effective sigma (mean over all patches), its error
against 2.67, the final spectral loss and the wall time.

    .venv/bin/python -m benchmarks.generator_experiments [--settings a,b,...] [--threads N]
    .venv/bin/python -m benchmarks.generator_experiments --bf16   # CPU bf16 autocast vs fp32
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fca.data.builtin import PHOTOS, load_photo
from fca.frequency import to_luma
from fca.kernels import conv_per_sample, effective_sigma, gaussian
from fca.resample import downscale
from fca.train.generator import GeneratorConfig, train_generator

ORACLE_SIGMA = 2.67
SCALE = 4.0

# Demo scale (params.yaml) unless a setting overrides it.
BASE = dict(
    scale=4.0, patch_size=128, kernel_size=13, kernel_param="free", kernel_init_sigma=1.2,
    channels=8, dense_blocks=1, res_blocks=1, wd_channels=8, loss="spectral",
    w_fdc=1.0, w_wd=0.001, w_spectral=1.0, spectral_bins=16, spectral_min_std=0.02, spectral_floor=1e-4,
    batch_size=8, steps=300,
    lr=1e-3, lr_prior=0.05, betas=(0.5, 0.99), cpu_bf16=False, checkpoint_every=10**6, image_every=10**6, seed=0,
)  # fmt: skip

SETTINGS: dict[str, dict] = {
    "demo": {},
    "init_delta": dict(kernel_init_sigma=0.5),
    "init_0.8": dict(kernel_init_sigma=0.8),
    "init_2.0": dict(kernel_init_sigma=2.0),
    "init_box": dict(kernel_init_sigma=100.0),
    "no_wd": dict(w_wd=0.0),
    "lr_prior_0.01": dict(lr_prior=0.01),
    "lr_prior_0.02": dict(lr_prior=0.02),
    "lr_prior_0.1": dict(lr_prior=0.1),
    "steps_150": dict(steps=150),
    "steps_600": dict(steps=600),
    "bins_8": dict(spectral_bins=8),
    "no_floor": dict(spectral_floor=1e-12),
    "flat_tiles_kept": dict(spectral_min_std=0.0),
    "seed_1": dict(seed=1),
    "seed_2": dict(seed=2),
    "channels_16": dict(channels=16, wd_channels=16),
    "steps_200": dict(steps=200),
    "global_only": dict(lr=1e-12),  # the network frozen at its zero-init head: one global kernel
    "gaussian": dict(kernel_param="gaussian"),
    "gaussian_lr0.02": dict(kernel_param="gaussian", lr_prior=0.02),
    "paper_lr": dict(lr=1e-4, lr_prior=1e-4),
    "wider_net": dict(channels=32, dense_blocks=2, res_blocks=1, wd_channels=32),
}


def real_domain_patches(
    size: int = 128, stride: int = 96, min_std: float = 0.02, quantise: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blurred (k_gt = 13x13, sigma 3) photo patches [N, 3, size, size], rounded to 8 bits like the
    PNGs the patches stage writes, and the true LR of each, L_true = down(I) (*) k_gt: [N, 3, size/4, size/4]."""
    k = torch.from_numpy(gaussian(13, 3.0)).float()[None]
    real, true_lr = [], []
    for img in (load_photo(name) for name in PHOTOS):
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        r = conv_per_sample(x, k)[0].clamp(0, 1)
        lt = conv_per_sample(downscale(x, SCALE), k)[0].clamp(0, 1)
        h, w = r.shape[-2:]
        for top in range(0, h - size + 1, stride):
            for left in range(0, w - size + 1, stride):
                p = r[:, top : top + size, left : left + size]
                if to_luma(p[None]).std() >= min_std:
                    real.append(p)
                    t, l, n = round(top / SCALE), round(left / SCALE), round(size / SCALE)
                    true_lr.append(lt[:, t : t + n, l : l + n])
    out = torch.stack(real)
    return ((out * 255).round() / 255 if quantise else out), torch.stack(true_lr)


def lr_psnr(gen, patches: torch.Tensor, true_lr: torch.Tensor, border: int = 6) -> tuple[float, float]:
    """PSNR (dB) against L_true of G(R) and of plain bicubic down(R), on the interior (patch borders differ by padding)."""
    with torch.no_grad():
        ours = torch.cat([gen(patches[i : i + 32])[0] for i in range(0, len(patches), 32)])
    bic = downscale(patches, SCALE)
    inner = (..., slice(border, -border), slice(border, -border))

    def psnr(a: torch.Tensor) -> float:
        return float(10 * torch.log10(1 / (a[inner].clamp(0, 1) - true_lr[inner]).pow(2).mean()))

    return psnr(ours), psnr(bic)


def learned_sigma(gen, patches: torch.Tensor) -> tuple[float, float]:
    """Mean effective sigma of the kernels G predicts for all patches, and its spread (std)."""
    with torch.no_grad():
        ks = torch.cat([gen.estimate_kernel(patches[i : i + 32]) for i in range(0, len(patches), 32)])
    s = effective_sigma(ks.double())
    return float(s.mean()), float(s.std())


def run(name: str, overrides: dict, patches: torch.Tensor, true_lr: torch.Tensor) -> dict:
    cfg = GeneratorConfig(**{**BASE, **overrides})
    t0 = time.perf_counter()
    gen, hist = train_generator(cfg, patches, None, device=torch.device("cpu"), checkpoint_dir=None, progress=False)
    wall = time.perf_counter() - t0
    sigma, spread = learned_sigma(gen, patches)
    first = np.mean([h["loss_spectral"] for h in hist[:10]])
    last = np.mean([h["loss_spectral"] for h in hist[-20:]])
    ours, bic = lr_psnr(gen, patches, true_lr)
    return dict(setting=name, sigma=sigma, spread=spread, err=100 * (sigma / ORACLE_SIGMA - 1), spec0=first, spec=last, psnr=ours, psnr_bic=bic, wall=wall)


def bf16_check(patches: torch.Tensor, steps: int = 60, repeats: int = 3) -> None:
    """CPU bf16 autocast + channels_last vs fp32: step time (alternating runs, median) and the result, same seed and data."""
    times: dict[bool, list[float]] = {False: [], True: []}
    result = {}
    for _ in range(repeats):
        for bf16 in (False, True):  # alternate, so a change in machine load hits both
            cfg = GeneratorConfig(**{**BASE, "steps": steps, "cpu_bf16": bf16})
            t0 = time.perf_counter()
            gen, hist = train_generator(cfg, patches, None, device=torch.device("cpu"), checkpoint_dir=None, progress=False)
            times[bf16].append((time.perf_counter() - t0) / steps)
            result[bf16] = (learned_sigma(gen, patches)[0], np.mean([h["loss_spectral"] for h in hist[-10:]]), gen)
    print(f"{'cpu_bf16':>8} {'s/step':>8} {'sigma':>7} {'loss_spec':>9}   ({steps} steps, median of {repeats})")
    for bf16 in (False, True):
        print(f"{bf16!s:>8} {np.median(times[bf16]):8.3f} {result[bf16][0]:7.3f} {result[bf16][1]:9.4f}")
    print(f"bf16/fp32 step time ratio: {np.median(times[True]) / np.median(times[False]):.2f}")
    # Numerical safety: the same (fp32-trained) weights, one forward each way.
    gen = result[False][2]
    x = patches[:8]
    with torch.no_grad():
        k32 = gen.estimate_kernel(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            k16 = gen.estimate_kernel(x.contiguous(memory_format=torch.channels_last))
    s32, s16 = effective_sigma(k32.double()), effective_sigma(k16.double())
    print(
        f"same weights, fp32 vs bf16 forward: kernel max abs diff {float((k32 - k16).abs().max()):.2e} "
        f"(max tap {float(k32.max()):.3f}), effective sigma diff {float((s32 - s16).abs().max()):.2e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default="demo", help=f"comma-separated, from: {', '.join(SETTINGS)}; or 'all'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="only the CPU bf16 measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    patches, true_lr = real_domain_patches()
    print(f"{len(patches)} real-domain patches, {torch.get_num_threads()} thread(s); oracle sigma {ORACLE_SIGMA}")
    if args.bf16:
        bf16_check(patches)
        return
    names = list(SETTINGS) if args.settings == "all" else args.settings.split(",")
    print("sigma: mean effective sigma of G's kernels over all patches (spread: their std); err%: vs the oracle;")
    print("spec0 / spec: spectral loss, first 10 / last 20 steps; PSNR: G(R) vs L_true, interior, dB")
    print(f"{'setting':<18} {'sigma':>6} {'spread':>6} {'err%':>6} {'spec0':>7} {'spec':>7} {'PSNR':>6} {'wall s':>7}")
    for i, name in enumerate(names):
        r = run(name, SETTINGS[name], patches, true_lr)
        if i == 0:
            print(f"{'(bicubic down(R))':<18} {'':>6} {'':>6} {'':>6} {'':>7} {'':>7} {r['psnr_bic']:6.2f}")
            fixed = torch.from_numpy(gaussian(13, 2.9)).float()
            fixed_lr = conv_per_sample(downscale(patches, SCALE), fixed)
            border = (..., slice(6, -6), slice(6, -6))
            p = float(10 * torch.log10(1 / (fixed_lr[border] - true_lr[border]).pow(2).mean()))
            eff = float(effective_sigma(fixed.double()))
            print(f"{'(Gaussian 2.9)':<18} {eff:6.3f} {'':>6} {100 * (eff / ORACLE_SIGMA - 1):+6.1f} {'':>7} {'':>7} {p:6.2f}")
        print(
            f"{r['setting']:<18} {r['sigma']:6.3f} {r['spread']:6.3f} {r['err']:+6.1f} {r['spec0']:7.4f} {r['spec']:7.4f} "
            f"{r['psnr']:6.2f} {r['wall']:7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
