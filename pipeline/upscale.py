"""`fca upscale`: super-resolve a folder of photos (or one photo) with a model from train_sr."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from fca.train.sr import load_sr_model
from fca.upscale import input_files, plan_outputs, upscale_file
from pipeline import stage

DESCRIPTION = """\
Super-resolve every image in --input (a folder, not its sub-folders, or one image
file) with a trained SR model (--model: models/sr_ours.pt, trained on our pairs, or
models/sr_bicubic.pt or models/sr_blind.pt, trained on bicubic or blind-recipe pairs,
all from the train_sr stage) into --output/<name>.png, where <name> is the input's file
name without its suffix. The scale is the model's.

Any image size: the image is processed in tiles of --tile x --tile LR pixels, each
with a margin as wide as the net's reach, so the result equals upscaling the whole
image at once (to the last 8-bit step), and the PNG is written a strip of rows at a
time. Memory is the decoded input (3 bytes per pixel), one strip of output rows and
one tile's activations: an 8000 x 8000 photo at x4 (a 32000 x 32000 PNG, 3 GB of
pixels) fits in well under 2 GB. A smaller --tile uses less memory, a larger one
runs a little faster (less margin recomputed).

Each output is written under a temporary name and renamed when complete, so a
failure never leaves half an image. Existing outputs are refused unless --overwrite;
two inputs with the same name and different suffixes are refused before any work.

examples:
  fca upscale --model models/sr_ours.pt --input photos/ --output photos_x4/
  fca upscale --model models/sr_ours.pt --input big.jpg --output out/ --tile 128 --device cuda"""


def _whole(lo: int, hi: int):
    """An argparse type: a whole number in [lo, hi]; anything else is a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from {lo} to {hi}")
        return value

    return parse


def build() -> argparse.ArgumentParser:
    p = stage.parser("upscale", DESCRIPTION, params=False)
    p.add_argument("--model", type=Path, required=True, help="trained SR model (.pt) from the train_sr stage")
    p.add_argument("--input", type=Path, required=True, help="folder of images (not searched recursively), or one image file")
    p.add_argument("--output", type=Path, required=True, help="folder for the PNG outputs (created if missing)")
    p.add_argument("--tile", type=_whole(16, 8192), default=256,
                   help="tile side in LR pixels, 16 to 8192 (memory/speed only; default 256)")
    p.add_argument("--compression", type=_whole(0, 9), default=3,
                   help="PNG zlib level, 0 (none) to 9 (smallest, slowest); default 3")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files of the same name")
    stage.add_max_pixels(p, too_big="an error naming the file, and no output for it")
    stage.add_device(p, distributed=False)
    return p


def body(args: argparse.Namespace, _: None) -> None:
    device = stage.setup_torch(args)
    net = load_sr_model(args.model, device)
    plan = plan_outputs(input_files(args.input), args.output, args.overwrite)
    t0 = time.perf_counter()
    for i, (src, dst) in enumerate(plan, 1):
        w, h = upscale_file(net, src, dst, tile=args.tile, device=device, max_pixels=stage.max_pixels(args),
                            level=args.compression, progress=stage.progress_enabled(args))
        print(f"upscale: [{i}/{len(plan)}] {src} -> {dst} ({w} x {h})", flush=True)
    print(f"upscale: {len(plan)} image(s) x{net.scale} into {args.output} in {time.perf_counter() - t0:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("upscale", argv, build, body, load=lambda args: None)
