"""Super-resolve photos of any size with a trained SR net, in bounded memory (`fca upscale`).

The LR image is cut into tiles of `tile` x `tile` pixels. Each tile is run through the
net with a margin of `net.margin()` LR pixels around it (clipped at the image border),
which is how far any output pixel's inputs reach through the net's convolutions and
its bicubic skip; the margin's own output is cut off. So a tile's output is what the
whole image would give there, and the seams vanish: the tiled result equals the
untiled one up to float rounding (tests/fca/test_upscale.py).

Tiles go in row strips: a strip's output rows are assembled as uint8 and handed to a
streaming PNG writer (`fca.png_stream`), then dropped. Memory is the decoded input
(uint8: 3 bytes per LR pixel), one output strip (3 * s^2 * tile * width bytes) and
one tile's activations, never the whole output (4x of 8000 x 8000 is 3 GB).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fca.data.images import DEFAULT_MAX_PIXELS, load_rgb, printable, scan_images, to_uint8
from fca.fsutil import atomic_file
from fca.png_stream import PngStreamWriter
from fca.progress import progress_bar

log = logging.getLogger(__name__)


def _block(image: np.ndarray, r0: int, r1: int, c0: int, c1: int, device: torch.device) -> torch.Tensor:
    """Rows r0:r1, columns c0:c1 of an [H, W, 3] image (uint8 or float in [0, 1]) as float32 [1, 3, h, w] on `device`."""
    part = torch.from_numpy(np.array(image[r0:r1, c0:c1], dtype=np.float32))
    if image.dtype == np.uint8:
        part /= 255.0
    return part.permute(2, 0, 1).unsqueeze(0).to(device)


@torch.no_grad()
def upscale_strips(net: nn.Module, image: np.ndarray, tile: int = 256, device: torch.device | str = "cpu") -> Iterator[np.ndarray]:
    """The super-resolved [H, W, 3] image, top to bottom, as uint8 strips [s * rows, s * W, 3]
    (rows = `tile`, fewer in the last strip). `net` has an integer `scale` and `margin()`."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    if tile < 1:
        raise ValueError(f"tile = {tile}: must be at least 1 pixel")
    device = torch.device(device)
    s, m = int(net.scale), int(net.margin())
    h, w = image.shape[:2]
    for r0 in range(0, h, tile):
        r1 = min(h, r0 + tile)
        strip = np.empty((s * (r1 - r0), s * w, 3), np.uint8)
        for c0 in range(0, w, tile):
            c1 = min(w, c0 + tile)
            a0, a1, b0, b1 = max(0, r0 - m), min(h, r1 + m), max(0, c0 - m), min(w, c1 + m)
            out = net(_block(image, a0, a1, b0, b1, device))[0]
            keep = out[:, s * (r0 - a0) : s * (r1 - a0), s * (c0 - b0) : s * (c1 - b0)]
            strip[:, s * c0 : s * c1] = to_uint8(keep.clamp(0, 1).permute(1, 2, 0).float().cpu().numpy())
        yield strip


def upscale_image(net: nn.Module, image: np.ndarray, tile: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """The whole super-resolved image as uint8 [s*H, s*W, 3] (for images that fit in memory)."""
    return np.concatenate(list(upscale_strips(net, image, tile, device)))


def upscale_file(net: nn.Module, src: Path, dst: Path, *, tile: int = 256, device: torch.device | str = "cpu",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, level: int = 3, progress: bool = False) -> tuple[int, int]:
    """Super-resolve the image file `src` into the PNG `dst` (written under a temporary name, renamed
    when complete); returns the output's (width, height). Errors name `src`."""
    image = load_rgb(src, uint8=True, max_pixels=max_pixels)
    h, w = image.shape[:2]
    s = int(net.scale)
    bar = progress_bar(total=h, desc=src.name, enabled=progress, unit="rows", leave=False)
    with atomic_file(dst) as tmp, open(tmp, "wb") as f:
        writer = PngStreamWriter(f, s * w, s * h, level)
        for strip in upscale_strips(net, image, tile, device):
            writer.write_rows(strip)
            bar.update(strip.shape[0] // s)
        writer.close()
    bar.close()
    return s * w, s * h


def input_files(source: Path) -> list[Path]:
    """The images to upscale: `source` itself when it is a file, else the image files in the folder
    (not its sub-folders); what a folder holds besides images is logged, not read."""
    if source.is_file():
        return [source]
    if not source.exists():
        raise FileNotFoundError(f"{printable(source)}: no such file or folder")
    scan = scan_images(source)
    for path, reason in scan.ignored:
        log.info("not read: %s (%s)", printable(path), reason)
    if not scan.images:
        raise ValueError(f"{printable(source)}: holds no image files")
    return scan.images


def plan_outputs(inputs: list[Path], out_dir: Path, overwrite: bool = False) -> list[tuple[Path, Path]]:
    """(input, out_dir/<input stem>.png) for each input, checked before any work: two inputs with the
    same stem, or an existing output without `overwrite`, are errors naming the files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{printable(out_dir)}: exists and is not a folder")
    seen: dict[str, Path] = {}
    plan = []
    for src in inputs:
        dst = out_dir / f"{src.stem}.png"
        if dst.name in seen:
            raise ValueError(f"{printable(seen[dst.name])} and {printable(src)} would both be written to {printable(dst)}; rename one")
        seen[dst.name] = src
        if dst.exists() and not overwrite:
            raise FileExistsError(f"{printable(dst)}: exists; give --overwrite to replace it")
        plan.append((src, dst))
    return plan
