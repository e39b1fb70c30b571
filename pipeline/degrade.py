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
size fits in bounded memory (up to --max-pixels per image). Writes
OUTPUT/lr/<name>.png, OUTPUT/kernels/<name>.npy and .png, and OUTPUT/manifest.csv:
one row per file under --input, with status ok, skipped (unreadable, too small or
too large, with the reason; params: degrade.on_bad_image) or ignored (not an image
file, hidden, a link out of the folder, ...: the reason says). Existing outputs are
never overwritten unless --overwrite is given, and --overwrite replaces only a
folder that fca wrote (it holds a .fca-output file). Two runs cannot write the same
OUTPUT at once: the second stops with an error naming the first one's pid.

example: fca degrade --checkpoint models/generator.pt --input photos/ --output photos_lr/"""


def build() -> argparse.ArgumentParser:
    p = stage.parser("degrade", DESCRIPTION)
    p.add_argument("--checkpoint", type=Path, required=True, help="trained generator (.pt) from train-generator")
    p.add_argument("--input", type=Path, required=True, help="folder of HR images (searched recursively)")
    p.add_argument("--output", type=Path, required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty output folder that an earlier fca run wrote (after the new one is complete); "
                        "any other non-empty folder is refused")
    stage.add_max_pixels(p)
    stage.add_device(p)
    return p


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.degrade
    device = stage.setup_torch(args)
    generator = load_generator(args.checkpoint, device)
    with tracking.stage_run("degrade", section_dict(cfg) | {"checkpoint": str(args.checkpoint), "input": str(args.input)} | stage.runtime(device)) as run:
        manifest = degrade_folder(
            generator, args.input, args.output, cfg, overwrite=args.overwrite,
            progress=stage.progress_enabled(args), on_step=lambda i, m: run.log_metrics(m, i), max_pixels=stage.max_pixels(args),
        )
        run.log_artifact(args.output / "manifest.csv")
    ok = manifest[manifest.status == "ok"]
    skipped, ignored = int((manifest.status == "skipped").sum()), int((manifest.status == "ignored").sum())
    print(f"degrade: {len(ok)} images degraded into {args.output}"
          + (f", {skipped} skipped" if skipped else "") + (f", {ignored} files not images (ignored)" if ignored else "")
          + (" (reasons in manifest.csv)" if skipped or ignored else "")
          + (f"; kernel sigma {ok.kernel_sigma.mean():.3f} on average" if len(ok) else ""))


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("degrade", argv, build, body)
