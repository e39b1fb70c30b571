"""JPEG: the round trip a camera ends with, and the quality a JPEG file was written at.

A JPEG file carries its own quantisation tables (Pillow: `Image.quantization`, 8 x 8 in
natural row-major order), so the quality a camera used can be read rather than guessed:
`jpeg_quality` finds the IJG/libjpeg quality whose scaled Annex K tables are those.
libjpeg (and so Pillow, and most software) makes its tables from one quality q in 1..100:

    scale = 5000 // q  if q < 50  else  200 - 2 q
    table = clamp((base * scale + 50) // 100, 1, 255)        (base: ITU-T T.81 Annex K)

Cameras with tables of their own (not a scaled Annex K) get the nearest quality.
"""

from __future__ import annotations

import io
from os import PathLike

import numpy as np
import torch

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
_PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), natural (row-major) order.
ANNEX_K_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)
ANNEX_K_CHROMINANCE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
], dtype=np.int64)


def quality_scale(quality: int) -> int:
    """libjpeg's `jpeg_quality_scaling`: the percentage the Annex K tables are scaled by (integer arithmetic, as in C)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality {quality}: must be in 1..100")
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(luminance, chrominance) quantisation tables [64] (natural order) that libjpeg writes at `quality`,
    baseline-limited to 255 as Pillow asks for."""
    scale = quality_scale(quality)
    return tuple(np.clip((base * scale + 50) // 100, 1, 255) for base in (ANNEX_K_LUMINANCE, ANNEX_K_CHROMINANCE))


def quality_from_tables(luminance: list[int] | np.ndarray, chrominance: list[int] | np.ndarray | None = None) -> int:
    """The quality 1..100 whose IJG tables match the given ones: an exact match (of every given table) if
    there is one, else the least squared error summed over the given tables (the smallest quality on a tie)."""
    lum = np.asarray(luminance, dtype=np.int64).ravel()
    chroma = None if chrominance is None else np.asarray(chrominance, dtype=np.int64).ravel()
    if lum.size != 64 or (chroma is not None and chroma.size != 64):
        raise ValueError("quantisation tables must have 64 entries")
    best, best_err = 0, None
    for q in range(1, 101):
        ref_lum, ref_chroma = ijg_tables(q)
        err = int(((lum - ref_lum) ** 2).sum())
        if chroma is not None:
            err += int(((chroma - ref_chroma) ** 2).sum())
        if err == 0:
            return q
        if best_err is None or err < best_err:
            best, best_err = q, err
    return best


def jpeg_quality(path: str | PathLike) -> int | None:
    """The IJG quality (1..100) the JPEG file at `path` was written at, from its quantisation tables
    (table 0: luminance, table 1: chrominance when present); None for a file that is not a JPEG.

    A file that does not exist is an error (FileNotFoundError), not None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            tables = getattr(img, "quantization", None)
    except UnidentifiedImageError:
        return None
    if not tables or 0 not in tables:
        return None
    return quality_from_tables(tables[0], tables.get(1))


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """x clipped to [0, 1] and rounded to the nearest of the 256 levels an 8-bit file can hold (same shape and dtype)."""
    return (x.clamp(0, 1) * 255.0).round() / 255.0


def jpeg_round_trip(x: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> torch.Tensor:
    """Each image of x [..., 3, H, W] in [0, 1] rounded to 8 bits, JPEG-encoded by Pillow at `quality`
    (1..100) with chroma `subsampling` (one of SUBSAMPLINGS) and decoded: same shape, dtype and device.

    Why Pillow: its libjpeg writes the tables `jpeg_quality` reads back, so a simulated camera's
    quality is recoverable from its files exactly as a real one's is."""
    from PIL import Image

    quality_scale(int(quality))  # validates the range
    if subsampling not in _PIL_SUBSAMPLING:
        raise ValueError(f"chroma subsampling {subsampling!r}: expected one of {list(SUBSAMPLINGS)}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected images [..., 3, H, W], got shape {tuple(x.shape)}")
    flat = x.detach().reshape(-1, *x.shape[-3:])
    out = torch.empty(flat.shape, dtype=torch.float64)
    for i, img in enumerate(flat):
        a = (img.double().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=int(quality), subsampling=_PIL_SUBSAMPLING[subsampling])
        buf.seek(0)
        with Image.open(buf) as decoded:
            b = np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255.0
        out[i] = torch.from_numpy(b).permute(2, 0, 1)
    return out.view(x.shape).to(device=x.device, dtype=x.dtype)
