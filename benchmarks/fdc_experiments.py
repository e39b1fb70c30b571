"""FDC experiments: which training recipe makes the comparator order densities, and where it puts the kernel.

Data: the scikit-image photos blurred with the 13x13 sigma-3 Gaussian, 128 px patches
(benchmarks/fdc_data.py; 7 photos train, 2 held out). For each variant (a set of
FDCConfig overrides) it trains an FDC, reports the held-out ordering accuracy at
s = 3.5 / 2.0 / 1.2 (bicubic pairs, native anchors; see fca/train/fdc.py), |C(x', x)|,
the wall time, and the sigma-crossing test: with the FDC frozen, the mean of
C(down(R, 4) (*) k_sigma, crop(R)) over held-out patches for Gaussian sigma in 0..5;
the sigma where it crosses 0 is the kernel width a generator trained against this FDC
would settle on (the least-squares oracle is ~2.67 for these data). Also printed:
the crossing against L_true (same scene, true blur: isolates the FDC's calibration
from the content's scale statistics) and the analytic density fit (fca.frequency).

    .venv/bin/python benchmarks/fdc_experiments.py                 # all variants
    .venv/bin/python benchmarks/fdc_experiments.py default naive   # some of them
    .venv/bin/python benchmarks/fdc_experiments.py --list

Results are appended to --out (JSON lines) as they finish; --table prints the table
from that file without training.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fdc_data import cached_demo_patches  # noqa: E402

from fca.frequency import log_l1, mean_density  # noqa: E402
from fca.kernels import conv_per_sample, gaussian  # noqa: E402
from fca.resample import downscale  # noqa: E402
from fca.train.fdc import FDCConfig, blur_probe, evaluate_fdc, train_fdc, zero_crossing  # noqa: E402

# The paper's recipe as we first read it (the "naive" FDC, docs/design.md, "Calibration"), then our changes added one at a time
# (each row keeps the ones above it); "+anchor_jitter" is FDCConfig's defaults (= params.yaml), "+blur_pairs" adds the
# extra-blur pairs on top (blur_weight, 0 by default). Then single changes to the defaults.
CHAIN = [
    ("naive", dict(resamplers=["bicubic"], anchor_jitter=1.0, augment=False, scale_sampling="current", curriculum_fraction=1.0,
                   normalize_input=False, loss="mse", lr=1e-4, lr_final=1.0, blur_weight=0.0)),
    ("+lr1e-3,cosine", dict(lr=1e-3, lr_final=0.1)),
    ("+resamplers", dict(resamplers=["bicubic", "bilinear", "area"])),
    ("+augment", dict(augment=True)),
    ("+range", dict(scale_sampling="range", curriculum_fraction=0.5)),
    ("+normalize", dict(normalize_input=True)),
    ("+anchor_jitter", dict(anchor_jitter=1.25)),
    ("+blur_pairs", dict(blur_weight=1.0)),
]
VARIANTS: dict[str, dict] = {}
_acc: dict = {}
for _name, _change in CHAIN:
    _acc = {**_acc, **_change}
    VARIANTS[_name] = dict(_acc)
VARIANTS.update({
    "default": {},  # FDCConfig's defaults (= params.yaml's fdc section, = "+anchor_jitter")
    "logistic": {"loss": "logistic"},
    "aligned_train": {"aligned": 0.5},
    "blur_w3": {"blur_weight": 3.0},
    "blur_wide": {"blur_sigma": [1.0, 5.0]},
    "ch16": {"channels": 16},
    "ch64": {"channels": 64},
    "lr3e-4": {"lr": 3e-4},
    "steps1200": {"steps": 1200},
    "batch32": {"batch_size": 32},
    "head1x1": {"_head_kernel": 1},
    "logistic_ch16": {"loss": "logistic", "channels": 16},
    "logistic_ch16_1000": {"loss": "logistic", "channels": 16, "steps": 1000},
    "logistic_noblur": {"loss": "logistic", "blur_weight": 0.0},
})
BASE = dict(eval_every=10**6, checkpoint_every=10**6)


def ltrue_sweep(fdc, real: torch.Tensor, clean: torch.Tensor, patch: int, sigmas: list[float], scale: float = 4.0, seed: int = 0) -> dict[float, float]:
    """Mean C(crop(down(R) (*) k_sigma), the same crop of L_true = down(I) (*) k_gt) per sigma.

    Same scene, same zoom: this crosses 0 at the right width if the FDC is a pure
    blur meter, whatever the content's statistics at the two zooms.
    """
    gen = torch.Generator().manual_seed(seed)
    lr = downscale(real, scale)
    ltrue = conv_per_sample(downscale(clean, scale), torch.from_numpy(gaussian(13, 3.0)).float())
    n, _, h, w = lr.shape
    ys = torch.randint(0, h - patch + 1, (n,), generator=gen).tolist()
    xs = torch.randint(0, w - patch + 1, (n,), generator=gen).tolist()

    def crop(images):
        return torch.stack([im[:, y : y + patch, x : x + patch] for im, y, x in zip(images, ys, xs)])

    fdc.eval()
    with torch.no_grad():
        true_scores = fdc.score(crop(ltrue))
        return {s: (fdc.score(crop(lr if s == 0 else conv_per_sample(lr, torch.from_numpy(gaussian(13, s)).float()))) - true_scores).mean().item()
                for s in sigmas}


def density_fit(real: torch.Tensor, sigmas: list[float], scale: float = 4.0, bins: int = 16) -> float:
    """Analytic reference: the sigma minimising log-L1 between the mean density of down(R) (*) k_sigma and of R (whole patches)."""
    lr = downscale(real, scale)
    ref = mean_density(real, bins)
    gap = {s: log_l1(mean_density(lr if s == 0 else conv_per_sample(lr, torch.from_numpy(gaussian(13, s)).float()), bins), ref).item() for s in sigmas}
    return min(gap, key=gap.get)


SIGMAS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 4.0, 4.5, 5.0]


@contextlib.contextmanager
def _arch_patch(arch: dict):
    """Architecture variants not in FDCConfig: `_head_kernel` 1 makes the last conv 1x1 (receptive field 17 px, not 33)."""
    if not arch:
        yield
        return
    import fca.train.fdc as mod

    original = mod.build_fdc

    def build(channels, normalize_input):
        fdc = original(channels, normalize_input)
        if arch.get("_head_kernel", 3) == 1:
            fdc.body[-1] = torch.nn.Conv2d(channels, 1, 1)
        return fdc

    mod.build_fdc = build
    try:
        yield
    finally:
        mod.build_fdc = original


def run_variant(name: str, overrides: dict, train: torch.Tensor, test: torch.Tensor, test_clean: torch.Tensor, seed: int, save_dir: Path | None = None) -> dict:
    arch = {k: v for k, v in overrides.items() if k.startswith("_")}
    cfg = FDCConfig(**{**BASE, **{k: v for k, v in overrides.items() if not k.startswith("_")}, "seed": seed})
    t0, c0 = time.perf_counter(), time.process_time()
    with _arch_patch(arch):
        fdc, _ = train_fdc(cfg, train, test, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"config": dataclasses.asdict(cfg), "model": fdc.state_dict()}, save_dir / f"{name}_{seed}.pt")
    m = evaluate_fdc(fdc, test, [3.5, 2.0, 1.2], seed=123, patch_size=cfg.patch_size, repeats=4)
    curve, _ = blur_probe(fdc, test, 4.0, SIGMAS, patch_size=cfg.patch_size)
    curve_train, _ = blur_probe(fdc, train[::2], 4.0, SIGMAS, patch_size=cfg.patch_size)
    curve_true = ltrue_sweep(fdc, test, test_clean, cfg.patch_size, SIGMAS)
    return {"variant": name, "seed": seed, "overrides": overrides, "wall_s": wall, "cpu_s": cpu, **m,
            "sigma_cross": zero_crossing(curve), "sigma_cross_train": zero_crossing(curve_train),
            "sigma_cross_ltrue": zero_crossing(curve_true), "curve": curve, "curve_ltrue": curve_true}


def per_image(names: list[str], save_dir: Path) -> None:
    """For saved models: the blur-probe crossing per source photo, next to the whole-patch density fit."""
    from fdc_data import PHOTOS, crop_patches, photo

    from fca.models.fdc_arch import FDC

    k = torch.from_numpy(gaussian(13, 3.0)).float()
    per_photo = {name: crop_patches(conv_per_sample(photo(name), k))[:64] for name in PHOTOS}
    fine = [round(2.0 + 0.1 * i, 2) for i in range(31)]
    print(f"{'photo':<18}{'n':>4}{'density fit':>12}" + "".join(f"{n:>16}" for n in names))
    models = []
    for n in names:
        state = torch.load(save_dir / f"{n}.pt")
        fdc = FDC(state["config"]["channels"], state["config"]["normalize_input"])
        fdc.load_state_dict(state["model"])
        models.append(fdc.eval())
    for name, patches in per_photo.items():
        row = f"{name:<18}{len(patches):>4}{density_fit(patches, fine):>12.2f}"
        for fdc in models:
            row += f"{blur_probe(fdc, patches, 4.0, SIGMAS, patch_size=state['config']['patch_size'])[1]:>16.2f}"
        print(row)


def print_table(rows: list[dict], verbose: bool = False) -> None:
    print(f"{'variant':<16}{'seed':>5}{'acc3.5':>8}{'acc2.0':>8}{'acc1.2':>8}{'rnd1.2':>8}{'dn1.2':>7}{'up1.2':>7}{'|same|':>8}{'sig0':>7}{'sig0tr':>7}{'sig0L':>7}{'cpu s':>7}{'wall s':>8}")
    for r in rows:
        print(
            f"{r['variant']:<16}{r['seed']:>5}{100 * r['acc_s3.5']:>7.1f}%{100 * r['acc_s2.0']:>7.1f}%{100 * r['acc_s1.2']:>7.1f}%{100 * r.get('acc_rand_s1.2', math.nan):>7.1f}%"
            f"{100 * r['acc_down_s1.2']:>6.0f}%{100 * r['acc_up_s1.2']:>6.0f}%{r['same_abs']:>8.3f}{r['sigma_cross']:>7.2f}{r['sigma_cross_train']:>7.2f}{r.get('sigma_cross_ltrue', math.nan):>7.2f}{r.get('cpu_s', math.nan):>7.0f}{r['wall_s']:>8.0f}"
        )
        if verbose:
            print("    C vs sigma: " + " ".join(f"{float(k):g}:{v:+.2f}" for k, v in r["curve"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", help="names from --list (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--out", default="/tmp/fdc_experiments.jsonl")
    ap.add_argument("--save", default="/tmp/fdcx_models", help="folder for the trained models ('' = do not keep)")
    ap.add_argument("--per-image", nargs="+", metavar="MODEL", help="saved model names (variant_seed): crossing per photo, then stop")
    ap.add_argument("--table", action="store_true", help="print the table from --out and stop")
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides key=json, applied to every variant")
    args = ap.parse_args()
    if args.list:
        for k, v in VARIANTS.items():
            print(f"{k:<16}{v}")
        return
    out = Path(args.out)
    if args.table:
        print_table([json.loads(line) for line in out.read_text().splitlines() if line.strip()])
        return
    torch.set_num_threads(args.threads)
    if args.per_image:
        per_image(args.per_image, Path(args.save))
        return
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    train, test, _, test_clean = cached_demo_patches()
    fine = [round(2.0 + 0.05 * i, 2) for i in range(41)]
    print(f"analytic density fit (log-L1, 16 bins, whole patches): sigma {density_fit(test, fine):.2f} (held-out), "
          f"{density_fit(train, fine):.2f} (train); the least-squares oracle is ~2.67")
    rows = []
    for name in args.variants or list(VARIANTS):
        for seed in args.seeds:
            row = run_variant(name, {**VARIANTS[name], **extra}, train, test, test_clean, seed, Path(args.save) if args.save else None)
            if extra:
                row["variant"] = name + "*"
            rows.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print_table([row], verbose=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
