"""Stage `patches`: raw images -> clean and real-domain (blurred) patches, split by image."""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from fca.data.images import iter_images, save_npy, save_png
from fca.data.patches import cut_patches, make_blur_kernel, split_sources
from fca.fsutil import atomic_dir, write_json
from fca.plots import kernel_image
from pipeline import stage, tracking
from pipeline.params import Params, section_dict

DESCRIPTION = """\
Crop patches from the raw images, drop flat ones, split train/val by source image,
and blur them with the known kernel k_gt (params: patches.blur) to make the
synthetic real domain. Writes OUT/{train,val}/{clean,real}/*.png, OUT/index.csv,
OUT/kernel.npy (+ .png) and OUT/summary.json."""


def build() -> argparse.ArgumentParser:
    p = stage.parser("patches", DESCRIPTION)
    p.add_argument("--raw", type=Path, required=True, help="folder of raw images (the download stage's output)")
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole on success)")
    return p


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.patches
    kernel = make_blur_kernel(cfg.blur)
    images = iter_images(args.raw, on_bad=cfg.on_bad_image, recursive=True)
    if len(images) == 0:
        raise FileNotFoundError(f"{args.raw}: no images found")
    sources = [str(p.relative_to(args.raw)) for p in images.paths]
    train, val = split_sources(sources, cfg.val_fraction, cfg.seed)
    split_of = {s: "train" for s in train} | {s: "val" for s in val}
    rng = random.Random(cfg.seed)
    rows, small, flat = [], [], 0
    with tracking.stage_run("patches", section_dict(cfg)) as run, atomic_dir(args.out) as out:
        for path, image in tqdm(images, desc="patches", unit="img", disable=not stage.progress_enabled(args)):
            source = str(path.relative_to(args.raw))
            cut = cut_patches(image, kernel, cfg, rng)
            if cut is None:
                small.append(source)
                continue
            flat += cut.dropped_flat
            split = split_of[source]
            stem = source.rsplit(".", 1)[0].replace("/", "__")
            for i, (y, x) in enumerate(cut.origins):
                name = f"{stem}_y{y:05d}_x{x:05d}.png"
                for domain, batch in (("clean", cut.clean), ("real", cut.real)):
                    save_png(out / split / domain / name, batch[i].permute(1, 2, 0).numpy())
                rows.append({"split": split, "source": source, "file": name, "y": y, "x": x, "size": cfg.size, "luma_std": round(cut.stds[i], 5)})
        if not rows:
            raise ValueError(f"{args.raw}: no patches survived (images smaller than patches.size = {cfg.size}, or all flat below patches.min_std = {cfg.min_std})")
        index = pd.DataFrame(rows)
        for split in ("train", "val"):
            if not (index.split == split).any():
                raise ValueError(f"the {split} split has no patches; add images or change patches.val_fraction")
        index.to_csv(out / "index.csv", index=False)
        save_npy(out / "kernel.npy", kernel)
        save_png(out / "kernel.png", kernel_image(kernel))
        summary = {
            "images": len(images), "images_train": len(train), "images_val": len(val),
            "patches_train": int((index.split == "train").sum()), "patches_val": int((index.split == "val").sum()),
            "skipped_small": small, "skipped_bad": [f"{p}: {why}" for p, why in images.skipped], "dropped_flat": flat,
        }
        write_json(out / "summary.json", summary)
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int)} | {"skipped_small": len(small), "skipped_bad": len(images.skipped)})
        run.log_artifact(out / "kernel.png")
        run.log_artifact(out / "summary.json")
    print(f"patches: {summary['patches_train']} train / {summary['patches_val']} val from {len(images)} images "
          f"({len(small)} too small, {len(images.skipped)} unreadable, {flat} flat dropped)")
    for p, why in images.skipped:
        print(f"patches: skipped unreadable {p}: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("patches", argv, build, body)
