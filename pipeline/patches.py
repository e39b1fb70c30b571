"""Stage `patches`: raw images -> clean and real-domain (blurred) patches, split by image."""

from __future__ import annotations

import argparse
import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fca.data.images import iter_images, printable, save_npy, save_png
from fca.data.patches import KERNEL_COLUMNS, BlurKernels, KernelTable, cut_patches, kernel_is_known, split_sources
from fca.fsutil import atomic_dir, write_json
from fca.camera import PatchCamera
from fca.jpeg import manifest_jpeg
from fca.noise import apply_patch_noise
from fca.progress import track
from fca.plots import kernel_gallery, kernel_image, save_figure
from pipeline import stage, tracking
from pipeline.params import Params, section_dict

DESCRIPTION = """\
Crop patches from the raw images, drop flat ones, split train/val by source image,
and blur them with the known kernel k_gt (params: patches.blur) to make the
synthetic real domain, then add camera noise (params: patches.noise, fca.noise;
none by default). Writes OUT/{train,val}/{clean,real}/*.png, OUT/index.csv,
OUT/kernel.npy (+ .png) and OUT/summary.json.

Each patch's kernel is recorded: OUT/kernels.npy holds the distinct kernels [M, K, K]
(float64) in order of first use, index.csv's `kernel` column is a patch's row in it,
and its columns family, sigma_x, sigma_y, theta_deg, length, angle_deg, sigma_eff
describe it. A fixed kernel (gaussian, anisotropic, file, none) is one row that every
patch points to; with `blur.type: random` kernel.npy is the mean over the patches of
their kernels (summary.json: kernel_npy). OUT/kernels.png shows the first 16 rows."""

GALLERY_SIZE = 16


def build() -> argparse.ArgumentParser:
    p = stage.parser("patches", DESCRIPTION)
    p.add_argument("--raw", type=Path, required=True, help="folder of raw images (the download stage's output)")
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole on success)")
    stage.add_max_pixels(p, too_big="an unreadable image (params: patches.on_bad_image)")
    return p


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.patches
    kernels = BlurKernels(cfg.blur, cfg.seed)  # a numpy Generator of its own: `rng` below still picks the same patches
    # the download stage's own manifest.csv sits beside the images: not an input, not worth a line
    images = iter_images(args.raw, on_bad=cfg.on_bad_image, recursive=True, max_pixels=stage.max_pixels(args), skip=("manifest.csv",))
    if len(images) == 0:
        raise FileNotFoundError(f"{args.raw}: no images found")
    sources = [str(p.relative_to(args.raw)) for p in images.paths]
    train, val = split_sources(sources, cfg.val_fraction, cfg.seed)
    split_of = {s: "train" for s in train} | {s: "val" for s in val}
    rng = random.Random(cfg.seed)
    rows, small, flat = [], [], 0
    table = KernelTable()
    with tracking.stage_run("patches", section_dict(cfg)) as run, atomic_dir(args.out) as out:
        for path, image in track(images, desc="patches", enabled=stage.progress_enabled(args), unit="img"):
            source = str(path.relative_to(args.raw))
            cut = cut_patches(image, kernels, cfg, rng)
            if cut is None:
                small.append(source)
                continue
            flat += cut.dropped_flat
            _check_finite(path, cut)
            split = split_of[source]
            stem = source.rsplit(".", 1)[0].replace("/", "__")
            names = [f"{stem}_y{y:05d}_x{x:05d}.png" for y, x in cut.origins]
            # Camera noise (patches.noise): each patch from a generator seeded by (seed, its name); `none` leaves cut.real as it is.
            cut.real = apply_patch_noise(cut.real, names, cfg.noise, cfg.seed, "hr")
            if cfg.blur.type == "camera":  # the simulated camera takes the clean patch itself (its PSF acts on linear light)
                cut.real = PatchCamera(cfg.blur.camera, cfg.seed, tuple(names))(cut.clean, "hr")
            for i, (y, x) in enumerate(cut.origins):
                name = names[i]
                for domain, batch in (("clean", cut.clean), ("real", cut.real)):
                    save_png(out / split / domain / name, batch[i].permute(1, 2, 0).numpy())
                row = table.add(cut.kernels[i], cut.kernel_info[i])
                described = {c: (round(v, 6) if isinstance(v, float) else v) for c, v in cut.kernel_info[i].items()}
                rows.append({"split": split, "source": source, "file": name, "y": y, "x": x, "size": cfg.size, "luma_std": round(cut.stds[i], 5),
                             "kernel": row, **{c: described[c] for c in KERNEL_COLUMNS}})
        if not rows:
            raise ValueError(f"{args.raw}: no patches survived (images smaller than patches.size = {cfg.size}, or all flat below patches.min_std = {cfg.min_std})")
        index = pd.DataFrame(rows)
        for split in ("train", "val"):
            if not (index.split == split).any():
                raise ValueError(f"the {split} split has no patches; add images or change patches.val_fraction")
        index.to_csv(out / "index.csv", index=False)
        distinct = table.array()
        kernel = kernels.fixed if kernels.fixed is not None else distinct[index.kernel.to_numpy()].mean(0)
        save_npy(out / "kernels.npy", distinct)
        save_npy(out / "kernel.npy", kernel)
        save_png(out / "kernel.png", kernel_image(kernel))
        shown = [(f"{r}: {info['family']}\nσ_eff {info['sigma_eff']:.2f}", distinct[r]) for r, info in enumerate(table.infos[:GALLERY_SIZE])]
        save_figure(kernel_gallery(shown), out / "kernels.png")
        summary = {
            "images": len(images), "images_train": len(train), "images_val": len(val),
            "patches_train": int((index.split == "train").sum()), "patches_val": int((index.split == "val").sum()),
            "skipped_small": small, "skipped_bad": [f"{printable(p)}: {why}" for p, why in images.skipped], "dropped_flat": flat,
            "ignored": [f"{printable(p.relative_to(args.raw))}: {why}" for p, why in images.ignored],
            "kernel_type": cfg.blur.type, "kernels_distinct": len(distinct),
            # R = noise(I (*) k) per patch (fca.noise); evaluate gives L_true the same model, seeded by noise_seed and the file name
            "noise": cfg.noise.as_dict(), "noise_seed": cfg.seed,
            # R = camera(I) per patch (fca.camera); evaluate makes L_true = camera(down(I)) with the patch's own "lr" draw
            **({"camera": dataclasses.asdict(cfg.blur.camera)} if cfg.blur.type == "camera" else {}),
            # the photos' own JPEG round trip when they are JPEG files (their quantisation tables): G's LR gets the same
            "jpeg_files": dataclasses.asdict(found) if (found := manifest_jpeg(args.raw, list(images.paths))) is not None else None,
            # false for `none` (the photos as they are, blur unknown): evaluate then runs its no-reference mode
            "kernel_known": kernel_is_known(cfg.blur),
            "kernel_npy": "a 1x1 delta: the patches are the photos as they are, their own kernel is unknown" if not kernel_is_known(cfg.blur)
            else "the kernel of every patch" if kernels.fixed is not None
            else "the mean of the patches' kernels (each patch's own: kernels.npy rows, index.csv column kernel)",
        }
        write_json(out / "summary.json", summary)
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int)} | {"skipped_small": len(small), "skipped_bad": len(images.skipped)})
        run.log_artifact(out / "kernel.png")
        run.log_artifact(out / "kernels.png")
        run.log_artifact(out / "summary.json")
    print(f"patches: {summary['patches_train']} train / {summary['patches_val']} val from {len(images)} images "
          f"({len(small)} too small, {len(images.skipped)} unreadable, {flat} flat dropped)")
    for p, why in images.skipped:
        print(f"patches: skipped unreadable {printable(p)}: {why}")
    for p, why in images.ignored:
        print(f"patches: not an image, ignored: {printable(p)}: {why}")


def _check_finite(path: Path, cut: object) -> None:
    """Stop, naming the image, if a patch's kernel or blurred patch holds NaN or inf (a bad patches.blur)."""
    from fca.kernels import check_kernel

    for k in cut.kernels if cut.kernels is not None else []:
        check_kernel(k, name=f"{path}: its patches.blur kernel")
    if not bool(cut.real.isfinite().all()):
        raise ValueError(f"{path}: its blurred patches hold NaN or inf (patches.blur)")


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("patches", argv, build, body)
