"""Stage `degrade` (also `fca degrade` for any folder): HR images -> realistic LR images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fca.degrade import degrade_folder
from fca.train.generator import load_generator
from pipeline import stage, tracking
from pipeline.params import Params, section_dict

DESCRIPTION = """\
Degrade every image under --input with a trained generator: for each image its
kernel is estimated (params: degrade.kernel_from = tiles averages the kernels of
up to degrade.max_tiles textured tiles of degrade.tile pixels; center uses one
centre crop), then LR = bicubic_down(x, s) (*) k, computed in tiles so any image
size fits in bounded memory. Writes OUTPUT/lr/<name>.png, OUTPUT/kernels/<name>.npy
and .png, and OUTPUT/manifest.csv. Existing outputs are never overwritten unless
--overwrite is given.

example: fca degrade --checkpoint models/generator.pt --input photos/ --output photos_lr/"""


def build() -> argparse.ArgumentParser:
    p = stage.parser("degrade", DESCRIPTION)
    p.add_argument("--checkpoint", type=Path, required=True, help="trained generator (.pt) from train-generator")
    p.add_argument("--input", type=Path, required=True, help="folder of HR images (searched recursively)")
    p.add_argument("--output", type=Path, required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder (after the new one is complete)")
    stage.add_device(p)
    return p


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.degrade
    device = stage.setup_torch(args)
    generator = load_generator(args.checkpoint, device)
    with tracking.stage_run("degrade", section_dict(cfg) | {"checkpoint": str(args.checkpoint), "input": str(args.input)}) as run:
        manifest = degrade_folder(
            generator, args.input, args.output, cfg, overwrite=args.overwrite,
            progress=stage.progress_enabled(args), on_step=lambda i, m: run.log_metrics(m, i),
        )
        run.log_artifact(args.output / "manifest.csv")
    ok = manifest[manifest.status == "ok"]
    print(f"degrade: {len(ok)} images degraded into {args.output}"
          + (f", {len(manifest) - len(ok)} skipped (see manifest.csv)" if len(ok) < len(manifest) else "")
          + (f"; kernel sigma {ok.kernel_sigma.mean():.3f} on average" if len(ok) else ""))


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("degrade", argv, build, body)
