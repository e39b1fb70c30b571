"""Reading and writing images: every stage sees float32 RGB arrays [H, W, 3] in [0, 1].

Writes go to a temporary name in the destination folder, then a rename, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fca.fsutil import MARKER, atomic_file

ON_BAD = ("error", "skip")

# Default of --max-pixels (env FCA_MAX_PIXELS): the largest image decoded. It replaces
# Pillow's own guard (179 MP), which refuses panoramas and scans that degrade handles in
# bounded memory. 1 gigapixel is 6x the largest single-shot camera sensor (150 MP); decoding
# one takes about 7 GB (Pillow's 4 bytes/pixel buffer + the 3 bytes/pixel uint8 copy). A file
# whose header claims more (a 100000 x 100000 PNG of a few bytes: a "decompression bomb")
# is refused before any pixel is allocated.
DEFAULT_MAX_PIXELS = 1_000_000_000

# Pillow recognises these but cannot decode them by itself (stub plugins, video, vector
# formats that need Ghostscript or Windows): listed as not read, never tried.
UNDECODED_SUFFIXES = (".bufr", ".grib", ".h5", ".hdf", ".mpeg", ".mpg", ".eps", ".ps", ".wmf", ".emf")


def _pillow_suffixes() -> tuple[str, ...]:
    Image.init()
    found = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return tuple(sorted(found - set(UNDECODED_SUFFIXES)))


# Every file suffix of a format Pillow can open and decode (.png, .jpg, .tif, .webp, .gif, .bmp, ...).
IMAGE_SUFFIXES = _pillow_suffixes()

# Modes PIL uses for 16 bits per sample (PNG/TIFF 16-bit greyscale). "I" (32-bit integer) is
# handled apart: its full scale depends on the file (see _integer_grey).
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# How far outside [0, 1] a float image may go and still count as [0, 1] up to rounding.
FLOAT_TOLERANCE = 1e-4
# Exceptions Pillow's decoders raise on malformed files: all mean "this file cannot be read".
_DECODE_ERRORS = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError,
    OverflowError, ZeroDivisionError, EOFError, struct.error, MemoryError, Image.DecompressionBombError,
)


class BadImageError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, not an image, unsupported)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{printable(self.path)}: cannot read image: {reason}")


class ImageTooLargeError(BadImageError):
    """An image with more pixels than the --max-pixels limit (refused before decoding)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, max_pixels: int) -> None:
        self.width, self.height, self.max_pixels = width, height, max_pixels
        reason = f"{width} x {height} = {width * height} pixels exceeds --max-pixels {max_pixels}"
        super().__init__(path, reason)
        self.args = (f"{printable(self.path)}: {reason} (raise it with --max-pixels or FCA_MAX_PIXELS)",)

    def __str__(self) -> str:
        return self.args[0]


def printable(path: str | os.PathLike) -> str:
    """A path as text that can always be printed or written to UTF-8 files: bytes of a file name
    that are not UTF-8 appear as backslash-x escapes (\\xff)."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


_pil_guard_lock = threading.Lock()
_pil_guard_users = 0
_pil_guard_saved: int | None = None


@contextlib.contextmanager
def _our_pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb guard off while we decode (ours, --max-pixels, replaces it)."""
    global _pil_guard_users, _pil_guard_saved
    with _pil_guard_lock:
        if _pil_guard_users == 0:
            _pil_guard_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pil_guard_users += 1
    try:
        yield
    finally:
        with _pil_guard_lock:
            _pil_guard_users -= 1
            if _pil_guard_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_guard_saved


@contextlib.contextmanager
def open_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """Image.open, with our pixel limit instead of Pillow's: an image of more than `max_pixels`
    (None: no limit) raises ImageTooLargeError from its header, before anything is decoded.
    Decoder failures raise BadImageError naming the file. Multi-frame files (animated GIF,
    WebP, APNG, multi-page TIFF) give their first frame."""
    path = Path(path)
    with _our_pixel_limit():
        try:
            img = Image.open(path)
        except _DECODE_ERRORS as e:
            raise BadImageError(path, f"{type(e).__name__}: {e}") from e
        with img:
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageTooLargeError(path, w, h, max_pixels)
            yield img


def load_rgb(path: str | os.PathLike, uint8: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to float32 RGB [H, W, 3] in [0, 1] (or uint8 [H, W, 3] with uint8=True).

    uint8=True keeps huge images at a quarter of the memory (8000x8000: 192 MB, not 768 MB);
    plain 8-bit RGB files then skip the float conversion altogether.
    - An image of more than `max_pixels` pixels (None: any) is refused from its header
      (ImageTooLargeError, a BadImageError) before it is decoded.
    - EXIF orientation is applied (the array is upright as a viewer shows it).
    - Transparency (RGBA, LA, palette with a transparent colour) is composited on
      white: the colour under a fully transparent pixel is arbitrary (often black
      or junk), so dropping alpha would put invisible content into the data.
    - Greyscale and 1-bit images are repeated to three channels; CMYK, YCbCr are converted.
    - 16-bit greyscale ("I;16") is divided by 65535. 32-bit integer TIFFs are divided by
      2**32 - 1 (unsigned) or 2**31 - 1 (signed; negative values are refused); other 32-bit
      integer images ("I": 16-bit PGM, which PIL scales to 0..65535) by 65535, refused when
      their values leave that range. Float ("F": 32-bit float TIFF, PFM) is taken as is and
      refused if it leaves [0, 1] by more than FLOAT_TOLERANCE (HDR, unnormalised data) or
      holds NaN/inf. 16-bit RGB PNGs are decoded by PIL at 8 bits per channel (PIL has no
      48-bit RGB mode), so they come out correctly scaled but with 8-bit precision.
    - Multi-frame files give their first frame.
    Raises BadImageError naming the file when it cannot be decoded (or its colour mode is not
    supported), FileNotFoundError when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{printable(path)}: no such image file")
    with open_image(path, max_pixels) as img:
        try:
            img.load()  # decode now: truncated or corrupt data fails here, not later
            source = img  # the file's own image: its format and TIFF tags (a transposed copy has neither)
            img = ImageOps.exif_transpose(img)
            if uint8:
                if img.mode == "RGB":
                    return np.asarray(img, dtype=np.uint8)
                return to_uint8(_to_rgb_array(img, path, source))
            return _to_rgb_array(img, path, source)
        except BadImageError:
            raise
        except _DECODE_ERRORS as e:
            raise BadImageError(path, f"{type(e).__name__}: {e}") from e


def _tiff_tag(img: Image.Image, tag: int, default: int) -> int:
    value = getattr(img, "tag_v2", {}).get(tag, default)
    return int(value[0] if isinstance(value, tuple) else value)


def _integer_grey(img: Image.Image, path: Path, source: Image.Image) -> np.ndarray:
    """A mode "I" (int32) image -> float grey [H, W] in [0, 1], scaled by its real full scale
    (read from `source`, the image as opened from the file)."""
    raw = np.asarray(img)
    if source.format == "TIFF" and _tiff_tag(source, 258, 0) == 32:  # BitsPerSample
        if _tiff_tag(source, 339, 1) == 2:  # SampleFormat: signed integer
            if raw.size and int(raw.min()) < 0:
                raise BadImageError(path, f"signed 32-bit TIFF with negative values (down to {int(raw.min())}): not an image in [0, 1]")
            return (raw.astype(np.float64) / (2**31 - 1)).astype(np.float32)
        return (raw.view(np.uint32).astype(np.float64) / (2**32 - 1)).astype(np.float32)  # unsigned: PIL holds it as int32
    lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise BadImageError(path, f"32-bit integer {source.format or ''} image with values in [{lo}, {hi}]: its full scale is unknown (expected 0..65535)")
    return raw.astype(np.float32) / 65535.0


def _float_grey(img: Image.Image, path: Path) -> np.ndarray:
    """A mode "F" image -> float grey [H, W]; values must be in [0, 1] up to FLOAT_TOLERANCE."""
    arr = np.asarray(img, dtype=np.float32)
    if arr.size:
        if not np.isfinite(arr).all():
            raise BadImageError(path, "float image holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
            raise BadImageError(path, f"float image with values in [{lo:.6g}, {hi:.6g}]: expected [0, 1] (normalise HDR or unscaled data first)")
    return np.clip(arr, 0.0, 1.0)


def _to_rgb_array(img: Image.Image, path: Path | None = None, source: Image.Image | None = None) -> np.ndarray:
    """A decoded PIL image (any mode) -> float32 [H, W, 3] in [0, 1]; `source`: the image as opened
    from the file, when `img` is a transposed copy (its format and tags tell a 32-bit image's scale)."""
    mode = img.mode
    source = img if source is None else source
    where = path if path is not None else Path(getattr(img, "filename", "") or "<image>")
    if mode in _SIXTEEN_BIT:
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    if mode == "I":
        return np.repeat(_integer_grey(img, where, source)[..., None], 3, axis=2)
    if mode == "F":
        return np.repeat(_float_grey(img, where)[..., None], 3, axis=2)
    try:
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode in ("LA", "La", "PA", "RGBa") or (mode in ("L", "RGB") and "transparency" in img.info):
            img = img.convert("RGBA")
        elif mode != "RGBA":
            img = img.convert("RGB")  # L, 1, CMYK, YCbCr, RGBX, ...
    except ValueError as e:
        raise BadImageError(where, f"colour mode {mode} is not supported ({e})") from e
    arr = np.asarray(img, dtype=np.float32)
    arr /= 255.0  # in place: an 8000x8000 image would otherwise hold two 768 MB float copies
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise BadImageError(where, f"colour mode {mode} gave an array of shape {arr.shape}")
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4]
        arr = arr[..., :3] * alpha + (1.0 - alpha)  # over a white background
    return np.ascontiguousarray(arr[..., :3])


@dataclass
class FolderScan:
    """What is in an input folder: the image files the loader reads, and every other entry it
    does not read, with why (never passed over in silence)."""

    images: list[Path]
    ignored: list[tuple[Path, str]]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _link_problem(path: Path, root: Path) -> str | None:
    """Why a symbolic link in the input folder is not followed (broken, out of the folder, to a folder), or None."""
    target = path.resolve()
    if not target.exists():
        return f"broken symbolic link (to {printable(os.readlink(path))})"
    if root != target and root not in target.parents:
        return f"symbolic link to {printable(target)}, outside the input folder: not followed"
    if target.is_dir():
        return "symbolic link to a folder: not followed"
    return None


def _file_problem(path: Path) -> str | None:
    """Why a file (or a link's target) is not an image to read, or None: it cannot be stat-ed, it is
    not a regular file, or its suffix is not a format that is decoded here."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not stat.S_ISREG(mode):
        return f"{_kind(mode)}, not an image file"
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    if suffix in UNDECODED_SUFFIXES:
        return f"{suffix} files cannot be decoded without external programs; convert it to PNG or TIFF"
    return f"not an image file: suffix {suffix!r} is not a format this tool reads" if suffix else "not an image file: no file suffix"


_IMAGE, _FOLDER, _IGNORED = "image", "folder", "ignored"


def _sort_entry(entry: os.DirEntry, root: Path, recursive: bool) -> tuple[str, str]:
    """Where scan_images puts a folder entry: (_IMAGE, ""), (_FOLDER, "") for a sub-folder to search,
    or (_IGNORED, the reason)."""
    name = entry.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return _IGNORED, "file name is not valid UTF-8: rename it"
    try:
        is_link = entry.is_symlink()
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError as e:
        return _IGNORED, f"cannot be read ({e.strerror or e})"
    if name.startswith(".") or name == "__MACOSX":
        return _IGNORED, (("hidden folder (name starts with '.'), not searched" if name.startswith(".") else "macOS metadata folder, not searched")
                          if is_dir else "hidden file (name starts with '.')")
    if is_dir:
        return (_FOLDER, "") if recursive else (_IGNORED, "a sub-folder (not searched)")
    path = Path(entry.path)
    problem = (_link_problem(path, root) if is_link else None) or _file_problem(path)
    return (_IGNORED, problem) if problem else (_IMAGE, "")

def scan_images(folder: str | os.PathLike, recursive: bool = False, skip: Collection[str] = ()) -> FolderScan:
    """Sort the entries of `folder` into image files to read and entries not read (with the reason).

    Images are regular files (or symbolic links to regular files inside `folder`) whose
    suffix (case-insensitive) is in IMAGE_SUFFIXES: every format Pillow decodes. Not read,
    each listed with its reason: other suffixes; formats in UNDECODED_SUFFIXES; hidden
    files and folders (names starting with '.', e.g. macOS '._x.png') and '__MACOSX'
    folders (their content is not searched); symbolic links that are broken, point to a
    folder, or point outside `folder` (not followed: the input is the folder's own files);
    fifos, sockets, devices (reading them could block); names that are not valid UTF-8;
    sub-folders when not `recursive`. fsutil's `.fca-output` mark is skipped, and so are the
    names in `skip` at the folder's top (files the pipeline itself wrote there, e.g. the
    download stage's manifest.csv: not the user's, so not worth a line on every run).
    Both lists are sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{printable(folder)}: not a folder of images")
    root = folder.resolve()
    images: list[Path] = []
    ignored: list[tuple[Path, str]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as e:
            ignored.append((current, f"folder cannot be read ({e.strerror or e})"))
            continue
        for entry in entries:
            if (entry.name == MARKER or entry.name in skip) and current == folder:
                continue
            where, reason = _sort_entry(entry, root, recursive)
            path = Path(entry.path)
            if where == _FOLDER:
                pending.append(path)
            elif where == _IMAGE:
                images.append(path)
            else:
                ignored.append((path, reason))
    return FolderScan(sorted(images), sorted(ignored))


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (by suffix, case-insensitive), sorted; see scan_images for what is left out."""
    return scan_images(folder, recursive=recursive).images


@dataclass
class ImageIterator:
    """Iterates (path, array) over a folder's images; `skipped` lists (path, reason) of bad ones.

    With on_bad="error" the first bad image raises BadImageError; with "skip" it is
    recorded in `skipped` (filled as iteration proceeds) and iteration goes on.
    `ignored` lists the folder's entries that are not image files (see scan_images).
    """

    paths: list[Path]
    on_bad: str = "error"
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.on_bad not in ON_BAD:
            raise ValueError(f"on_bad = {self.on_bad!r}: must be one of {list(ON_BAD)}")

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[tuple[Path, np.ndarray]]:
        for p in self.paths:
            try:
                arr = load_rgb(p, max_pixels=self.max_pixels)
            except BadImageError as e:
                if self.on_bad == "error":
                    raise
                self.skipped.append((p, e.reason))
                continue
            yield p, arr


def iter_images(
    folder: str | os.PathLike, on_bad: str = "error", recursive: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
    skip: Collection[str] = (),
) -> ImageIterator:
    """Images of a folder as (path, float32 [H, W, 3]) pairs, sorted by path; see ImageIterator (`skip`: see scan_images)."""
    scan = scan_images(folder, recursive=recursive, skip=skip)
    return ImageIterator(scan.images, on_bad=on_bad, ignored=scan.ignored, max_pixels=max_pixels)


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
