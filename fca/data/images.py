"""Reading and writing images: every stage sees float32 RGB arrays [H, W, 3] in [0, 1].

Writes go to a temporary name in the destination folder, then a rename, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fca.fsutil import atomic_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ON_BAD = ("error", "skip")

# Modes PIL uses for more than 8 bits per sample; their full scale is 16 bits
# (PNG/TIFF 16-bit greyscale opens as "I;16*" or, in older PIL, as "I").
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class BadImageError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot read image: {reason}")


def load_rgb(path: str | os.PathLike, uint8: bool = False) -> np.ndarray:
    """Decode an image file to float32 RGB [H, W, 3] in [0, 1] (or uint8 [H, W, 3] with uint8=True).

    uint8=True keeps huge images at a quarter of the memory (8000x8000: 192 MB, not 768 MB);
    plain 8-bit RGB files then skip the float conversion altogether.
    - EXIF orientation is applied (the array is upright as a viewer shows it).
    - Transparency (RGBA, LA, palette with a transparent colour) is composited on
      white: the colour under a fully transparent pixel is arbitrary (often black
      or junk), so dropping alpha would put invisible content into the data.
    - Greyscale and 1-bit images are repeated to three channels.
    - 16-bit greyscale ("I;16", "I") is divided by 65535; float ("F") is clipped to
      [0, 1]. 16-bit RGB PNGs are decoded by PIL at 8 bits per channel (PIL has no
      48-bit RGB mode), so they come out correctly scaled but with 8-bit precision.
    Raises BadImageError naming the file when it cannot be decoded, FileNotFoundError
    when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated or corrupt data fails here, not later
            img = ImageOps.exif_transpose(img)
            if uint8:
                if img.mode == "RGB":
                    return np.asarray(img, dtype=np.uint8)
                return to_uint8(_to_rgb_array(img))
            return _to_rgb_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(path, f"{type(e).__name__}: {e}") from e


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """A decoded PIL image (any mode) -> float32 [H, W, 3] in [0, 1]."""
    mode = img.mode
    if mode in _SIXTEEN_BIT:
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa") or (mode == "L" and "transparency" in img.info):
        img = img.convert("RGBA")
    elif mode != "RGBA":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    arr = np.asarray(img, dtype=np.float32)
    arr /= 255.0  # in place: an 8000x8000 image would otherwise hold two 768 MB float copies
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4]
        arr = arr[..., :3] * alpha + (1.0 - alpha)  # over a white background
    return np.ascontiguousarray(arr[..., :3])


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (by suffix, case-insensitive), sorted.

    Hidden files and folders (names starting with '.', e.g. macOS '._x.png'
    resource forks) and '__MACOSX' folders are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of images")
    found = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for p in found:
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") or part == "__MACOSX" for part in rel):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
    return sorted(out)


@dataclass
class ImageIterator:
    """Iterates (path, array) over a folder's images; `skipped` lists (path, reason) of bad ones.

    With on_bad="error" the first bad image raises BadImageError; with "skip" it is
    recorded in `skipped` (filled as iteration proceeds) and iteration goes on.
    """

    paths: list[Path]
    on_bad: str = "error"
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_bad not in ON_BAD:
            raise ValueError(f"on_bad = {self.on_bad!r}: must be one of {list(ON_BAD)}")

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[tuple[Path, np.ndarray]]:
        for p in self.paths:
            try:
                arr = load_rgb(p)
            except BadImageError as e:
                if self.on_bad == "error":
                    raise
                self.skipped.append((p, e.reason))
                continue
            yield p, arr


def iter_images(folder: str | os.PathLike, on_bad: str = "error", recursive: bool = False) -> ImageIterator:
    """Images of a folder as (path, float32 [H, W, 3]) pairs, sorted by path; see ImageIterator."""
    return ImageIterator(list_images(folder, recursive=recursive), on_bad=on_bad)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Float [H, W, 3] or [H, W] in [0, 1] -> uint8 (clipped, rounded)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write float [H, W, 3] in [0, 1] (or uint8, or [H, W] grey) as an 8-bit PNG, atomically."""
    arr = to_uint8(array)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"{path}: expected [H, W, 3] or [H, W], got shape {arr.shape}")
    with atomic_file(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save, atomically."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))
