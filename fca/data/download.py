"""Stage `download`: fetch a dataset by name into a folder, with a manifest.

Datasets:
- `builtin`: scikit-image's bundled photos plus dead-leaves images (no network).
- `div2k-train-hr` / `div2k-valid-hr`: the DIV2K HR archive from `div2k_mirror`,
  kept in a cache folder (resumable), checked by size and SHA-256, extracted safely.
- `url-list`: a text file of `URL SHA256` lines (images or archives).
- `folder`: the images of a local folder (recursively).

HTTP uses only the standard library: a `.part` file resumed with a Range
request, retries with exponential backoff on connection errors and 5xx, and the
file appears under its final name only once its checksum is right.
Images other than plain RGB PNGs are converted (EXIF orientation applied,
alpha composited on white) to 8-bit RGB PNGs; RGB PNGs without transparency or
EXIF rotation are copied byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import http.client
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from fca.config import param
from fca.data.archive import ARCHIVE_SUFFIXES, is_archive, safe_extract
from fca.data.builtin import PHOTOS, write_builtin
from fca.data.images import DEFAULT_MAX_PIXELS, BadImageError, load_rgb, open_image, printable, save_png, scan_images
from fca.fsutil import atomic_dir, atomic_file
from fca.jpeg import file_jpeg
from fca.progress import progress_bar, track

log = logging.getLogger("fca.download")

DATASETS = ("builtin", "div2k-train-hr", "div2k-valid-hr", "url-list", "folder")
BUILTIN_PHOTOS = PHOTOS
# Archive name, size in bytes, SHA-256 (as TensorFlow Datasets records them; docs/design.md, "Reference data").
DIV2K_ARCHIVES = {
    "div2k-train-hr": ("DIV2K_train_HR.zip", 3530603713, "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335"),
    "div2k-valid-hr": ("DIV2K_valid_HR.zip", 448993893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc"),
}
# jpeg_quality / jpeg_subsampling: the source file's own JPEG settings, read from its quantisation tables
# before it became a PNG (empty: not a JPEG file); the patches stage gives G's LR the same round trip.
MANIFEST_COLUMNS = ("file", "width", "height", "sha256", "source", "jpeg_quality", "jpeg_subsampling")
USER_AGENT = "fca-pipeline/0.1 (+urllib)"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadConfig:
    dataset: str = param("builtin", choices=DATASETS, help="which dataset to fetch")
    photos: list[str] = param(list(BUILTIN_PHOTOS), choices=BUILTIN_PHOTOS, help="builtin: scikit-image photos to include")
    procedural_count: int = param(4, ge=0, le=10_000, help="builtin: number of dead-leaves images to generate")
    procedural_size: int = param(512, ge=32, le=8192, help="builtin: side of each dead-leaves image, pixels")
    source: str = param("", help="url-list: file of 'URL SHA256' lines; folder: a local folder of images")
    div2k_mirror: str = param("https://data.vision.ee.ethz.ch/cvl/DIV2K", nonempty=True, help="base URL of the DIV2K archives")
    retries: int = param(5, ge=0, le=100, help="HTTP retries per file (exponential backoff)")
    timeout_s: float = param(60.0, gt=0, le=86_400, help="HTTP timeout per request, seconds")
    seed: int = param(0, ge=0, le=2**32 - 1, help="seed of the procedural images")

    def __post_init__(self) -> None:
        if self.dataset in ("url-list", "folder") and not self.source:
            raise ValueError(f"source = '': dataset {self.dataset!r} needs a source path")


class DownloadError(RuntimeError):
    """A download that failed for good (HTTP error, checksum mismatch, retries used up); names the URL."""


class _Retryable(Exception):
    """A failure worth another try: connection trouble, timeout, 5xx, a body cut short."""


# ---------------------------------------------------------------- HTTP

# Not requests (2.34.2 is in requirements.lock only for dvc, mlflow, snakemake), measured by benchmarks/libraries.py: it
# imports in 71 ms vs urllib.request's 24 ms, and with urllib3's Retry(total=5) a body cut at 512 KiB of 1 MiB raised
# ChunkedEncodingError after 1 request, no Range; download() below resumed with `Range: bytes=524288-` (requests never resumes).


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    size: int | None = None,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, resuming `dest.part` if an earlier run left one; return `dest`.

    An existing `dest` whose checksum matches is reused. Retries (at most `retries`
    in a row without new bytes, sleeping backoff_s * 2**n) on connection errors,
    timeouts, HTTP 408/429/5xx and bodies cut short; each retry resumes with a
    Range request (a server that ignores Range makes it start over). Other HTTP
    errors (404, 403, ...) fail at once. When retries run out, the `.part` file is
    kept so the next run resumes; on any other failure (checksum or size mismatch,
    HTTP 4xx) nothing is left behind. Raises DownloadError naming the URL.
    """
    dest = Path(dest)
    if sha256 is not None:
        sha256 = sha256.lower()
    if dest.exists():
        if sha256 is None or sha256_file(dest) == sha256:
            return dest
        dest.unlink()  # a stale or damaged cached copy
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures, best = 0, _size(part)
    while True:
        try:
            _get_once(url, part, timeout_s, progress)
            break
        except _Retryable as e:
            # A try that brought new bytes is not a failure: a flaky link still finishes a big file.
            failures = 0 if _size(part) > best else failures + 1
            best = max(best, _size(part))
            if failures > retries:
                raise DownloadError(f"{url}: giving up after {retries} retries: {e} (partial file kept: {part})") from e
            time.sleep(backoff_s * 2 ** max(failures - 1, 0))
        except DownloadError:
            part.unlink(missing_ok=True)  # a 404 or 403: what we have is of no use
            raise
    got_size = _size(part)
    if size is not None and got_size != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: size mismatch: expected {size} bytes, got {got_size}; the download was deleted")
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: sha256 mismatch: expected {sha256}, got {actual}; the download was deleted")
    os.replace(part, dest)
    return dest


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _get_once(url: str, part: Path, timeout_s: float, progress: bool) -> None:
    """One HTTP request: append to `part` from its current size (or rewrite it if the server sends it all)."""
    offset = _size(part)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            # Range not satisfiable: our part is already whole (the checksum will tell) or longer than the file.
            total = _content_range_total(e.headers.get("Content-Range", ""))
            if total == offset:
                return
            part.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 with a {offset}-byte partial file: starting over") from e
        if e.code >= 500 or e.code in (408, 429):
            raise _Retryable(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, OSError):  # refused, reset, DNS, timeout
            raise _Retryable(f"{type(e.reason).__name__}: {e.reason}") from e
        raise DownloadError(f"{url}: {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {e}") from e

    with resp:
        if offset and resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, not {offset}: starting over")
            mode = "ab"
        else:  # 200: a fresh start, or a server that ignores Range and sends everything
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        got = 0
        with open(part, mode) as f, progress_bar(
            total=None if length is None else offset + length, initial=offset, unit="B", unit_scale=True,
            unit_divisor=1024, desc=urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name), enabled=progress,
        ) as bar:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                    raise _Retryable(f"{type(e).__name__} after {offset + got} bytes: {e}") from e
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if length is not None and got < length:
        raise _Retryable(f"connection closed after {offset + got} of {offset + length} bytes")


def _content_range_start(value: str) -> int | None:
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value.strip())
    return int(m.group(1)) if m else None


def _content_range_total(value: str) -> int | None:
    m = re.match(r"bytes\s+(?:\*|\d+-\d+)/(\d+)", value.strip())
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- url lists

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def parse_url_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read `URL SHA256` lines (blank lines and '#' comments ignored) -> [(url, sha256)].

    Raises ValueError naming the file and line number of a malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: url list not found")
    entries = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2 and parts[2].startswith("#"):
            parts = parts[:2]
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'URL SHA256', got {raw!r}")
        url, sha = parts
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise ValueError(f"{path}:{n}: {url!r} is not an http(s) URL")
        if not _SHA256.fullmatch(sha):
            raise ValueError(f"{path}:{n}: {sha!r} is not a SHA-256 (64 hex digits)")
        if not _url_name(url):
            raise ValueError(f"{path}:{n}: {url!r} has no file name")
        entries.append((url, sha.lower()))
    if not entries:
        raise ValueError(f"{path}: no 'URL SHA256' lines")
    return entries


def _url_name(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlparse(url).path).rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------- importing images


def import_image(src: Path, dst: Path, move: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Put image `src` at `dst` (a .png path), return (width, height).

    An RGB PNG without transparency or EXIF rotation is copied (or moved) byte for
    byte after a test decode; anything else goes through load_rgb and save_png.
    Raises BadImageError naming `src` when it cannot be decoded or has more than
    `max_pixels` pixels (None: no limit).
    """
    try:
        with open_image(src, max_pixels) as img:
            plain = (
                img.format == "PNG" and img.mode == "RGB" and "transparency" not in img.info
                and img.getexif().get(0x0112, 1) == 1
            )
            img.load()
            width, height = img.size
    except BadImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(src, f"{type(e).__name__}: {e}") from e
    if not plain:
        arr = load_rgb(src, max_pixels=max_pixels)
        save_png(dst, arr)
        return arr.shape[1], arr.shape[0]
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dst)
    else:
        with atomic_file(dst) as tmp:
            shutil.copyfile(src, tmp)
    return width, height


def import_images(
    src_dir: Path, dst_dir: Path, out_root: Path, source: str, seen: dict[Path, str], move: bool = False, progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[dict]:
    """Import every image under src_dir (recursively) to dst_dir/<same relative path>.png.

    `seen` maps output paths to their sources across calls, so two inputs that
    would land on one file (a.jpg and a.png) are an error. Manifest rows name
    files relative to out_root and sources as `<source><relative path>`. Entries that are
    not image files (see fca.data.images.scan_images) are logged, one warning each.
    """
    rows = []
    scan = scan_images(src_dir, recursive=True)
    for p, why in scan.ignored:
        log.warning("%s%s: not imported: %s", source, printable(p.relative_to(src_dir).as_posix()), why)
    for p in track(scan.images, desc=f"import {src_dir.name}", enabled=progress, unit="img"):
        rel = p.relative_to(src_dir)
        dst = (dst_dir / rel).with_suffix(".png")
        origin = f"{source}{rel.as_posix()}"
        if dst in seen:
            raise ValueError(f"{origin} and {seen[dst]} would both be written to {dst.relative_to(out_root)}")
        seen[dst] = origin
        jpeg = file_jpeg(p)  # before a move takes the file away
        width, height = import_image(p, dst, move=move, max_pixels=max_pixels)
        rows.append(_row(dst, out_root, width, height, origin, jpeg))
    return rows


def _row(path: Path, out_root: Path, width: int, height: int, source: str, jpeg: tuple[int, str] | None = None) -> dict:
    return {"file": path.relative_to(out_root).as_posix(), "width": width, "height": height, "sha256": sha256_file(path), "source": source,
            "jpeg_quality": jpeg[0] if jpeg else None, "jpeg_subsampling": jpeg[1] if jpeg else None}


def _import_archive(
    archive: Path, dst_dir: Path, out_root: Path, source: str, seen: dict, scratch: Path, progress: bool, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> list[dict]:
    """Extract `archive` into a scratch folder and move/convert its images to dst_dir."""
    extracted = safe_extract(archive, Path(tempfile.mkdtemp(dir=scratch)) / "x")
    try:
        return import_images(extracted, dst_dir, out_root, f"{source}!/", seen, move=True, progress=progress, max_pixels=max_pixels)
    finally:
        shutil.rmtree(extracted.parent, ignore_errors=True)


def _archive_stem(name: str) -> str:
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------- the stage


def fetch(
    config: DownloadConfig, out_dir: str | os.PathLike, cache_dir: str | os.PathLike, progress: bool = True, backoff_s: float = 1.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> pd.DataFrame:
    """Build `out_dir/<config.dataset>/` and return its manifest (columns MANIFEST_COLUMNS).

    `file` is relative to out_dir. Downloads are kept in cache_dir (they survive a
    failed run and resume). out_dir is built in a temporary sibling and renamed
    into place at the end, replacing an older out_dir: a crash never leaves a
    half dataset. The caller writes the manifest.
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    with atomic_dir(out_dir) as build:
        target = build / config.dataset
        net = dict(retries=config.retries, timeout_s=config.timeout_s, backoff_s=backoff_s, progress=progress)
        seen: dict[Path, str] = {}
        if config.dataset == "builtin":
            rows = write_builtin(target, config.photos, config.procedural_count, config.procedural_size, config.seed, progress)
            rows = [{**r, "file": f"{config.dataset}/{r['file']}"} for r in rows]
        elif config.dataset in DIV2K_ARCHIVES:
            name, size, sha = DIV2K_ARCHIVES[config.dataset]
            url = f"{config.div2k_mirror.rstrip('/')}/{name}"
            archive = download(url, cache_dir / name, sha, size=size, **net)
            rows = _import_archive(archive, target, build, url, seen, build, progress, max_pixels)
        elif config.dataset == "url-list":
            rows = []
            for url, sha in parse_url_list(config.source):
                name = _url_name(url)
                file = download(url, cache_dir / "url-list" / f"{sha[:16]}-{name}", sha, **net)
                if is_archive(name):
                    rows += _import_archive(file, target / _archive_stem(name), build, url, seen, build, progress, max_pixels)
                else:
                    dst = (target / name).with_suffix(".png")
                    if dst in seen:
                        raise ValueError(f"{url} and {seen[dst]} would both be written to {dst.relative_to(build)}")
                    seen[dst] = url
                    rows.append(_row(dst, build, *import_image(file, dst, max_pixels=max_pixels), url, file_jpeg(file)))
        elif config.dataset == "folder":
            src = Path(config.source)
            rows = import_images(src, target, build, "folder:", seen, progress=progress, max_pixels=max_pixels)
        else:
            raise ValueError(f"dataset = {config.dataset!r}: must be one of {list(DATASETS)}")
        if not rows:
            raise ValueError(f"dataset {config.dataset!r} (source {config.source!r}): no images found")
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype({"jpeg_quality": "Int64"})  # no JPEG: <NA>, written empty

