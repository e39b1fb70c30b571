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
import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from fca.frequency import LUMA

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
    found = file_jpeg(path)
    return None if found is None else found[0]


def file_jpeg(path: str | PathLike) -> tuple[int, str] | None:
    """(quality, chroma subsampling) of the JPEG file at `path`, read in one opening; None for a file
    that is not a JPEG (an unknown sampling reads as 4:2:0, libjpeg's default)."""
    from PIL import Image, JpegImagePlugin, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            tables = getattr(img, "quantization", None)
            if not tables or 0 not in tables:
                return None
            sampling = {0: "4:4:4", 1: "4:2:2"}.get(JpegImagePlugin.get_sampling(img), "4:2:0")
    except UnidentifiedImageError:
        return None
    return quality_from_tables(tables[0], tables.get(1)), sampling


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


# --------------------------------------------------------------------------- a JPEG history from pixels

GHOST_QUALITIES = range(30, 96)  # the qualities `estimate_jpeg` tries (near 100 every image re-compresses almost unchanged)
GHOST_RATIO = 0.35  # a dip to below this share of its neighbours' error is a JPEG history
GHOST_IMAGES = 12  # images `estimate_jpeg` re-compresses (evenly spaced through the set), each voting


@dataclass(frozen=True)
class JpegSetting:
    """The JPEG round trip a set of images went through: quality, chroma subsampling, and how it
    was found ("files": their quantisation tables; "pixels": `estimate_jpeg`)."""

    quality: int
    subsampling: str
    source: str
    dip: float = 0.0  # "pixels": the re-compression error at `quality` over its neighbours' (below GHOST_RATIO)

    def describe(self) -> str:
        """"quality 85, 4:2:0", with where it was found when that is the files or the pixels."""
        where = f" (from the {self.source})" if self.source in ("files", "pixels") else ""
        return f"quality {self.quality}, {self.subsampling}{where}"


def _luma_u8(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ np.array(LUMA)


def _ghost(a: np.ndarray, subsampling: str) -> dict[int, float]:
    """The luma error of re-compressing 8-bit image a [H, W, 3] at each quality of GHOST_QUALITIES."""
    from PIL import Image

    y = _luma_u8(a)
    err = {}
    for q in GHOST_QUALITIES:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=q, subsampling=_PIL_SUBSAMPLING[subsampling])
        buf.seek(0)
        with Image.open(buf) as decoded:
            err[q] = float(((_luma_u8(np.asarray(decoded.convert("RGB"))) - y) ** 2).mean())
    return err


def _deepest_dip(a: np.ndarray) -> tuple[float, int, str]:
    """(ratio, quality, subsampling) of image a's deepest re-compression dip (`estimate_jpeg`)."""
    best = (math.inf, 0, "4:2:0")
    for subsampling in ("4:2:0", "4:4:4"):
        err = _ghost(a, subsampling)
        for q, e in err.items():
            around = [err[k] for k in (q - 3, q - 2, q + 2, q + 3) if k in err]
            best = min(best, (e / max(min(around), 1e-12), q, subsampling))
    return best


def estimate_jpeg(images: torch.Tensor, count: int = GHOST_IMAGES) -> JpegSetting | None:
    """The quality and chroma subsampling images [N, 3, H, W] in [0, 1] were JPEG-compressed at, from
    their pixels alone; None when they show no JPEG history.

    How: an image decoded from a JPEG of quality q re-compresses at q almost unchanged (its DCT
    coefficients already sit on q's quantisation grid), while a few qualities away it moves as much
    as any image does. So the luma error of re-compressing at each quality of GHOST_QUALITIES, with
    4:2:0 and 4:4:4, dips at the original: an image shows a JPEG history when its deepest dip falls
    below GHOST_RATIO of the error at q +- 2 and 3 (q +- 1 can share most of q's table entries: 74 and
    75 re-compress a quality-75 image about equally well). Luma only: with 4:2:0 the chroma's own
    subsampling error would hide the dip. Needs the JPEG's 8 x 8 grid at the image's origin (crops cut
    at multiples of 8 keep it).

    `count` images evenly spaced through the set each vote for their own dip; the answer is the most
    common (quality, subsampling) among those that show one, when at least two and a third of them do.
    Why a vote and not one pooled error: a patch cut off the grid (the last row of a photo whose height
    is no multiple of 8) or black re-compresses alike at every quality, and pooled with the others its
    error hid their dip (a folder of quality-85 photos read as none). Measured: dips of 0.004-0.26 on
    patches of simulated-camera photos at quality 85, at most 0.18 on scenes Pillow compressed at 40
    to 90 (4:2:0 or 4:4:4), and 0.55 or more on images with no JPEG history (tests/fca/test_jpeg.py)."""
    if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(images.shape)}")
    pick = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    dips = [_deepest_dip((images[i].detach().double().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))
            for i in pick]
    votes = [(q, sub, ratio) for ratio, q, sub in dips if ratio < GHOST_RATIO]
    if len(votes) < 2 or 3 * len(votes) < len(pick):
        return None
    settings = [(q, sub) for q, sub, _ in votes]
    quality, subsampling = max(dict.fromkeys(settings), key=settings.count)  # the first seen of the most common
    dip = float(np.median([r for q, sub, r in votes if (q, sub) == (quality, subsampling)]))
    return JpegSetting(quality, subsampling, "pixels", round(dip, 4))


def files_jpeg(paths: list[str | PathLike]) -> JpegSetting | None:
    """The JPEG round trip a set of image files went through, read from their quantisation tables
    and sampling factors (`jpeg_quality`): the median quality and the most common subsampling of
    those that are JPEG files, when they are at least half of them; else None."""
    return jpeg_of_files([file_jpeg(p) for p in paths])


def jpeg_of_files(found: list[tuple[int, str] | None]) -> JpegSetting | None:
    """The JPEG round trip of a set of files from each file's (quality, subsampling), None for a file that
    is not a JPEG: the median quality and the most common subsampling, when at least half are JPEG files."""
    jpegs = [f for f in found if f is not None]
    if not jpegs or 2 * len(jpegs) < len(found):
        return None
    samplings = [sub for _, sub in jpegs]
    return JpegSetting(int(np.median([q for q, _ in jpegs])), max(SUBSAMPLINGS, key=samplings.count), "files")


def manifest_jpeg(raw_dir: str | PathLike, paths: list[Path]) -> JpegSetting | None:
    """The JPEG round trip of the images `paths` under raw_dir (`fca.jpeg.jpeg_of_files`): each one's
    source file's settings from raw_dir/manifest.csv (the download stage read them before converting the
    file to PNG); an image the manifest does not list (or a manifest of a version without the columns) is
    read as it is (`fca.jpeg.file_jpeg`: a PNG is no JPEG)."""
    import pandas as pd

    raw_dir = Path(raw_dir)
    listed: dict[str, tuple[int, str] | None] = {}
    manifest = raw_dir / "manifest.csv"
    if manifest.is_file():
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        if {"jpeg_quality", "jpeg_subsampling"} <= set(df.columns):
            listed = {row.file: (int(row.jpeg_quality), row.jpeg_subsampling) if row.jpeg_quality else None for row in df.itertuples()}
    root = raw_dir.resolve()
    found = []
    for p in map(Path, paths):
        rel = p.resolve().relative_to(root).as_posix() if p.resolve().is_relative_to(root) else None
        found.append(listed[rel] if rel in listed else file_jpeg(p))
    return jpeg_of_files(found)
