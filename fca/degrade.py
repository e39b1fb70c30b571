"""Stage `degrade`: apply a trained generator to any folder of images, any size.

Per image: estimate one K x K kernel from the HR image (`estimate_image_kernel`),
then compute LR = down(x, s) (*) k (`degrade_image`), the generator's own
operation, in tiles so that memory stays bounded for any image size.

How the tiling stays exact. `down` is torch's antialiased resize, which is
separable and linear: along each axis, output pixel i is a weighted sum of a
short run of input pixels (about 4*s for bicubic), with the run truncated and
the weights renormalised at the image border (no padding). So down(x) =
My @ x @ Mx^T with two banded matrices. We read those matrices off
`fca.resample.resize` itself (`AxisWeights`: a few comb-shaped probe images,
no formula of our own), so they are torch's weights for any scale, integer or
not, any image size and any resampler. The LR image is then built in LR-space
tiles: an output tile plus a halo of K//2 LR pixels (the convolution's reach)
needs only the HR rows/columns in the matrices' band for those LR pixels; we
downscale that HR block by two banded matrix products, run `conv_per_sample` on it
(whose reflect padding is right where the halo was clipped by the true image
border and is cropped away everywhere else), and keep the centre. The result
equals `conv_per_sample(downscale(x, s), k)` up to float32 rounding (~1e-6)
whatever the tile size. No full-size float copy of the image is made here: a
uint8 image stays uint8 and is converted one HR block at a time.

(Tiling the HR image and calling torch's resize per tile would match only when
s is an integer dividing H and W: torch places output pixel i at
(i + 0.5) * H / round(H / s) - 0.5 in input coordinates, so for other sizes the
tile origins would have to sit at fractional input positions.)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from fca.config import param
from fca.data.images import DEFAULT_MAX_PIXELS, BadImageError, FolderScan, load_rgb, printable, save_npy, save_png, scan_images
from fca.frequency import to_luma
from fca.fsutil import atomic_dir, check_replaceable
from fca.kernels import conv_per_sample, effective_sigma
from fca.progress import track
from fca.resample import resize, scaled_size


@dataclass(frozen=True)
class DegradeConfig:
    kernel_from: str = param("tiles", choices=("center", "tiles"), help="estimate each image's kernel from its centre crop or averaged over tiles")
    tile: int = param(128, ge=16, le=8192, help="side (HR pixels) of the crops the kernel is estimated from; match the generator's training patch size")
    max_tiles: int = param(16, ge=1, le=10_000, help="tiles averaged for the kernel estimate")
    min_std: float = param(0.02, ge=0, le=1, help="tiles whose luma std is below this are left out of the kernel estimate (flat sky, walls), unless all are")
    work_tile: int = param(1024, ge=16, le=16_384, help="side (HR pixels) of the blocks the LR image is computed in; memory/speed only, the result does not depend on it")
    on_bad_image: str = param("error", choices=("error", "skip"), help="an unreadable or too small image stops the stage, or is skipped and listed in the manifest")


class ImageTooSmallError(ValueError):
    """An image whose LR version is too small for the kernel (the reflect padding needs more than K//2 pixels)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NonFiniteOutputError(ValueError):
    """A kernel or LR image with NaN or inf values (a broken generator): the message names the input image."""


class KernelSource(Protocol):
    """What degradation needs from a generator (`fca.models.generator_arch.Generator` is one)."""

    @property
    def scale(self) -> float: ...

    @property
    def kernel_size(self) -> int: ...

    def estimate_kernel(self, x_hr: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, K, K], non-negative, each summing to 1."""
        ...


# --------------------------------------------------------------------------- images


def _image_size(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(H, W) of an [H, W, 3] array or a [1, 3, H, W] tensor; anything else is an error."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise ValueError(f"expected an image tensor [1, 3, H, W], got {tuple(image.shape)}")
        return int(image.shape[2]), int(image.shape[3])
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB array [H, W, 3], got {getattr(image, 'shape', type(image))}")
    return int(image.shape[0]), int(image.shape[1])


def _block(image: np.ndarray | torch.Tensor, r0: int, r1: int, c0: int, c1: int, device: torch.device) -> torch.Tensor:
    """Rows r0:r1, columns c0:c1 of the image as float32 [1, 3, h, w] in [0, 1] on `device`."""
    return _block_hwc(image, r0, r1, c0, c1, device).permute(2, 0, 1).unsqueeze(0)


def _block_hwc(image: np.ndarray | torch.Tensor, r0: int, r1: int, c0: int, c1: int, device: torch.device) -> torch.Tensor:
    """Rows r0:r1, columns c0:c1 of the image as contiguous float32 [h, w, 3] in [0, 1] on `device`.

    uint8 arrays are divided by 255 here, one block at a time, so a large image
    can stay uint8 (a quarter of the float32 size) in memory.
    """
    if isinstance(image, torch.Tensor):
        return image[0, :, r0:r1, c0:c1].permute(1, 2, 0).to(device=device, dtype=torch.float32).contiguous()
    # A float32 copy of just this block (np.array also copes with read-only arrays, e.g. views of PIL buffers).
    part = torch.from_numpy(np.array(image[r0:r1, c0:c1], dtype=np.float32)).to(device)
    return part.div_(255.0) if image.dtype == np.uint8 else part


def _device_of(source: KernelSource) -> torch.device:
    """The device of the source's parameters (CPU for a source without any)."""
    params = getattr(source, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- kernel estimation


def tile_origins(h: int, w: int, tile: int, max_tiles: int) -> list[tuple[int, int]]:
    """Top-left corners of up to `max_tiles` tiles (side min(tile, h) x min(tile, w)) on a regular grid.

    The full grid has ceil(h / tile) x ceil(w / tile) tiles, spread evenly so the
    first touches the top/left border and the last the bottom/right one. If that
    is more than `max_tiles`, a coarser grid (r x c <= max_tiles, as many tiles as
    possible, shape closest to the image's) is spread over the same area.
    """
    th, tw = min(tile, h), min(tile, w)
    nr, nc = math.ceil(h / tile), math.ceil(w / tile)
    if nr * nc > max_tiles:
        best = None
        for r in range(1, min(nr, max_tiles) + 1):
            c = min(nc, max_tiles // r)
            key = (r * c, -abs(math.log(r / c) - math.log(nr / nc)))
            if best is None or key > best[0]:
                best = (key, r, c)
        nr, nc = best[1], best[2]
    rows = np.linspace(0, h - th, nr).round().astype(int) if nr > 1 else [(h - th) // 2]
    cols = np.linspace(0, w - tw, nc).round().astype(int) if nc > 1 else [(w - tw) // 2]
    return [(int(r), int(c)) for r in rows for c in cols]


@torch.no_grad()
def estimate_image_kernel(source: KernelSource, image: np.ndarray | torch.Tensor, config: DegradeConfig) -> torch.Tensor:
    """One blur kernel for a whole image: [1, 3, H, W] tensor or [H, W, 3] array (float in [0, 1] or uint8) -> [K, K].

    The estimator is a network trained on `config.tile`-sized patches, so it sees
    crops of that size (the whole image, or its full width/height, when smaller):
    - `center`: one crop at the image centre. Cheapest; fine for object-centred
      photos, but the centre can be flat or unrepresentative.
    - `tiles` (default): the mean of the kernels estimated on up to `max_tiles`
      crops on a regular grid (`tile_origins`). The estimator reads the blur from
      the crop's spectrum, so a crop with little texture gives a kernel that
      says more about its content than about the camera; averaging over the
      image evens that out, and crops whose luma std is below `min_std` (flat
      sky, walls: no high frequencies to measure) are left out, unless every
      crop is flat, in which case all are used. The mean of kernels that are
      non-negative and sum to 1 is again such a kernel.
    Crops go through the estimator one at a time (bounded memory), on the
    source's device. Returns float32 on the CPU, non-negative, summing to 1.
    """
    h, w = _image_size(image)
    device = _device_of(source)
    th, tw = min(config.tile, h), min(config.tile, w)
    if config.kernel_from == "center":
        origins = [((h - th) // 2, (w - tw) // 2)]
    elif config.kernel_from == "tiles":
        origins = tile_origins(h, w, config.tile, config.max_tiles)
    else:
        raise ValueError(f"kernel_from = {config.kernel_from!r}: must be one of ['center', 'tiles']")

    if len(origins) > 1 and config.min_std > 0:
        stds = [float(to_luma(_block(image, r, r + th, c, c + tw, device)).std()) for r, c in origins]
        textured = [o for o, s in zip(origins, stds) if s >= config.min_std]
        origins = textured or origins
    total = None
    for r, c in origins:
        k = source.estimate_kernel(_block(image, r, r + th, c, c + tw, device))[0].float()
        total = k if total is None else total + k
    k = (total / len(origins)).cpu()
    return k / k.sum()


# --------------------------------------------------------------------------- tiled degradation


class AxisWeights:
    """Torch's resize along one axis (n_in -> n_out pixels) as a banded matrix M[n_out, n_in].

    Read off `fca.resample.resize` with D comb-shaped probes (probe d has ones at
    the inputs j with j % D == d): D is wider than any output pixel's support, so
    each output pixel sees at most one 1 of each probe, and the D probe outputs
    at pixel i are exactly row i of M over a window of D inputs around it.
    Costs D x n_in memory (a few MB for n_in = 100000), not n_in^2.
    Row i is stored as `weights[i]` over inputs `start[i] : start[i] + D`.
    """

    def __init__(self, n_in: int, n_out: int, mode: str = "bicubic"):
        self.n_in, self.n_out = n_in, n_out
        scale = n_in / n_out
        # Supports (half-widths in input pixels): bicubic 2*scale, bilinear scale, area (scale + 1) / 2.
        d = min(n_in, 2 * math.ceil(2 * scale) + 6)
        self.width = d
        idx = torch.arange(n_in)
        # Width 2, not 1: torch's antialiased bicubic/bilinear give wrong values for a size-1 axis.
        probe = torch.zeros(1, d, n_in, 2)
        probe[0, idx % d, idx, :] = 1.0
        out = resize(probe, (n_out, 2), mode)[0, :, :, 0]  # [D, n_out]
        i = torch.arange(n_out)
        centre = ((i + 0.5) * scale).floor().long()
        self.start = (centre - d // 2).clamp(0, n_in - d)  # [n_out]
        cols = self.start[:, None] + torch.arange(d)[None, :]  # [n_out, D]
        self.weights = out[cols % d, i[:, None]]  # [n_out, D]
        sums = self.weights.sum(1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            # Every resampler here is normalised; rows that do not sum to 1 mean the probe window missed part of a support.
            raise RuntimeError(f"resize weights {n_in} -> {n_out} ({mode}): probe window {d} too narrow (row sums {sums.min():.4f}..{sums.max():.4f})")
        nz = self.weights != 0
        self.lo = self.start + nz.float().argmax(1)  # first input with a non-zero weight, per output
        self.hi = self.start + d - nz.flip(1).float().argmax(1)  # one past the last

    def span(self, o0: int, o1: int) -> tuple[int, int]:
        """Input range [i0, i1) that outputs o0:o1 read."""
        return int(self.lo[o0:o1].min()), int(self.hi[o0:o1].max())

    def dense(self) -> torch.Tensor:
        """The whole matrix M, float32 [n_out, n_in] (for tests and small sizes)."""
        m = torch.zeros(self.n_out, self.n_in)
        return m.scatter_(1, self.start[:, None] + torch.arange(self.width)[None, :], self.weights)

    def apply(self, o0: int, o1: int, x: torch.Tensor, offset: int, group: int = 16) -> torch.Tensor:
        """Rows o0:o1 of M @ X, where x [n, N] holds the rows offset:offset+n of X and covers span(o0, o1) -> [o1 - o0, N].

        The outputs go in groups of `group`, each multiplied with only the inputs that
        group reads (a view of x, no copy): one dense [o1 - o0, n] product would do
        about (o1 - o0) / (group + 4) times more work, nearly all of it on zeros.
        """
        n = o1 - o0
        g = -(-n // group)
        rows = torch.arange(o0, o0 + g * group).clamp(max=o1 - 1).view(g, group)  # last group padded by repeats
        base = self.lo[rows].min(1).values  # [G]: first input of each group's window
        length = int((self.hi[rows].max(1).values - base).max())
        t = torch.arange(length)
        rel = base[:, None, None] + t[None, None, :] - self.start[rows][:, :, None]  # [G, group, L] position in each row's stored window
        inside = (rel >= 0) & (rel < self.width)
        w = torch.where(inside, self.weights[rows].gather(2, rel.clamp(0, self.width - 1)), 0.0)
        w = w.to(device=x.device, dtype=x.dtype)
        first = (base - offset).tolist()
        if min(first) < 0:
            raise ValueError(f"rows {offset}:{offset + x.shape[0]} do not cover the inputs of outputs {o0}:{o1}")
        out = x.new_empty(g * group, x.shape[1])
        for j, b in enumerate(first):
            # Weights past the block's end are zero; a window cut short there just drops them.
            m = min(length, x.shape[0] - b)
            torch.mm(w[j, :, :m], x[b : b + m], out=out[j * group : (j + 1) * group])
        return out[:n]


def lr_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """LR size that `fca.resample.downscale` gives: (round(H / s), round(W / s)), at least 1."""
    return scaled_size(h, w, 1.0 / scale)


def degrade_image(
    source: KernelSource,
    image: np.ndarray | torch.Tensor,
    kernel: torch.Tensor | np.ndarray,
    config: DegradeConfig,
    mode: str = "bicubic",
) -> np.ndarray:
    """LR = conv_per_sample(downscale(x, s), k), computed in tiles: image -> float32 [round(H/s), round(W/s), 3].

    image: [H, W, 3] array (float in [0, 1], or uint8 read as value / 255) or a
    [1, 3, H, W] tensor. kernel: [K, K] (K odd). `source.scale` is s; `mode` the
    resampler (the generator's is bicubic). Output tiles are about
    `config.work_tile / s` LR pixels square; each is computed from its HR block
    (see the module docstring) on the source's device. Memory beyond the image
    and the output: a few float32 copies of one HR block of
    (work_tile + (K + 4) * s)^2 x 3. Not clipped: bicubic overshoot is kept, as in
    the generator.
    A source with JPEG (`Generator.compress`) gives the LR image its round trip, and one with
    noise (a Generator with noise = patches: `noise_for`) then adds its next noise draw, scaled
    to each LR pixel's brightness, as G(x) does.
    """
    h, w = _image_size(image)
    s = float(source.scale)
    k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, torch.Tensor) else kernel).float()
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be square with odd size, got {tuple(k.shape)}")
    ho, wo = lr_size(h, w, s)
    pad = k.shape[0] // 2
    if pad >= ho or pad >= wo:
        raise ValueError(f"a {h}x{w} image is too small: its x{s:g} LR image ({ho}x{wo}) must be larger than {pad} pixels for a {k.shape[0]}x{k.shape[0]} kernel")
    device = _device_of(source)
    k = k.to(device)
    ay, ax = AxisWeights(h, ho, mode), AxisWeights(w, wo, mode)
    step = max(1, round(config.work_tile / s))  # LR tile side
    out = np.empty((ho, wo, 3), dtype=np.float32)
    for y0 in range(0, ho, step):
        y1 = min(ho, y0 + step)
        e0, e1 = max(0, y0 - pad), min(ho, y1 + pad)  # with the convolution's halo, clipped at the true border
        r0, r1 = ay.span(e0, e1)
        for x0 in range(0, wo, step):
            x1 = min(wo, x0 + step)
            f0, f1 = max(0, x0 - pad), min(wo, x1 + pad)
            c0, c1 = ax.span(f0, f1)
            block = _block_hwc(image, r0, r1, c0, c1, device)  # [hh, ww, 3]
            a = ay.apply(e0, e1, block.reshape(r1 - r0, -1), r0)  # [eh, ww * 3]: rows downscaled
            a = a.view(e1 - e0, c1 - c0, 3).transpose(0, 1).reshape(c1 - c0, -1)  # [ww, eh * 3]
            b = ax.apply(f0, f1, a, c0)  # [ew, eh * 3]: columns downscaled
            lr = b.view(f1 - f0, e1 - e0, 3).permute(2, 1, 0).unsqueeze(0)  # [1, 3, eh, ew]
            # conv_per_sample's reflect padding survives only where the halo was clipped, i.e. at the true border.
            y = conv_per_sample(lr, k)[0, :, y0 - e0 : y1 - e0, x0 - f0 : x1 - f0]
            out[y0:y1, x0:x1] = y.permute(1, 2, 0).cpu().numpy()
    # The generator's noise (generator.noise: patches): its next draw at each pixel's brightness, as G(x) draws it.
    noise_for = getattr(source, "noise_for", None)
    noise = noise_for(torch.from_numpy(out).permute(2, 0, 1).unsqueeze(0)) if callable(noise_for) else None
    # Its JPEG round trip (the real images') on the signal, then the noise, as G(x) ends (`Generator.degrade_parts`).
    jpeg_setting = getattr(source, "jpeg_setting", None)
    if callable(jpeg_setting) and jpeg_setting() is not None:
        out = source.compress(torch.from_numpy(out).permute(2, 0, 1).unsqueeze(0))[0].permute(1, 2, 0).float().cpu().numpy()
    if noise is not None:
        out += noise[0].permute(1, 2, 0).float().cpu().numpy()
    return out


# --------------------------------------------------------------------------- folders


MANIFEST_COLUMNS = ("file", "status", "reason", "width", "height", "lr_width", "lr_height", "kernel_sigma", "lr_file", "kernel_file")
# With pairs=True (`fca degrade --pairs`): also the mod-cropped HR image written beside the LR one.
PAIRS_COLUMNS = MANIFEST_COLUMNS + ("hr_file", "hr_width", "hr_height")


def pair_name(rel: Path | PurePosixPath) -> str:
    """The file name an input at `rel` (relative to the input folder) gets in a pairs folder:
    `hr/NAME` and `lr_x{s}/NAME`, the same NAME on both sides.

    NAME is the input's path without its suffix, subfolders joined by "_" and any whitespace
    replaced by "_", plus ".png": `a/b.jpg` -> `a_b.png`, `my photo.jpg` -> `my_photo.png`.
    BasicSR-style paired loaders need both: their folder mode lists the top level of each
    folder only, their meta_info mode finds the LR file from the HR file's base name (no
    subfolder) and reads each meta_info line's name up to its first space.
    """
    stem = "_".join(PurePosixPath(Path(rel).as_posix()).with_suffix("").parts)
    return "".join("_" if c.isspace() else c for c in stem) + ".png"


def _is_within(a: Path, b: Path) -> bool:
    """True if path a is b or lies inside it."""
    return a == b or b in a.parents


def _output_clashes(rels: list[Path]) -> tuple[Path, Path, str] | None:
    """Two inputs whose outputs would collide: (input a, input b, output), or None.

    Each input `rel` writes `<stem>.png` (lr/, kernels/) and `<stem>.npy` (kernels/), stem =
    rel without its suffix: a.jpg and a.png clash, and so do x.png and x.png/y.jpg (the
    output x.png would have to be a file and a folder)."""
    files: dict[str, Path] = {}
    for rel in rels:
        stem = rel.with_suffix("").as_posix()
        for out in (f"{stem}.png", f"{stem}.npy"):
            if out in files and files[out] != rel:
                return files[out], rel, out
            files[out] = rel
    for rel in rels:  # a folder the outputs need, where another input's output file goes
        for parent in PurePosixPath(rel.with_suffix("").as_posix()).parents:
            if parent.as_posix() in files:
                return files[parent.as_posix()], rel, parent.as_posix()
    return None


def _pair_clashes(rels: list[Path]) -> tuple[Path, Path, str] | None:
    """Two inputs that would get the same pair_name: (input a, input b, name), or None."""
    names: dict[str, Path] = {}
    for rel in rels:
        name = pair_name(rel)
        if name in names:
            return names[name], rel, name
        names[name] = rel
    return None


def _check_size(path: Path, h: int, w: int, source: KernelSource, cropped_from: tuple[int, int] | None = None) -> None:
    """Raise ImageTooSmallError if the x s LR image of an h x w image is too small for the source's kernel.
    `cropped_from`: the (h, w) the image had before a mod-crop to h x w (multiples of the scale), named in the reason."""
    ho, wo = lr_size(h, w, float(source.scale)) if cropped_from is None else (h // round(source.scale), w // round(source.scale))
    if min(ho, wo) <= source.kernel_size // 2:
        size = f"{w}x{h}" if cropped_from is None else f"{cropped_from[1]}x{cropped_from[0]} (mod-cropped to {w}x{h})"
        raise ImageTooSmallError(path, f"{size} is too small: its x{source.scale:g} LR image ({wo}x{ho}) must be wider and taller than {source.kernel_size // 2} pixels for a {source.kernel_size}x{source.kernel_size} kernel")


def _check_finite(path: Path, kernel: torch.Tensor, lr: np.ndarray) -> None:
    """Raise NonFiniteOutputError naming the input image if its kernel or LR image holds NaN or inf."""
    for what, ok in (("kernel", bool(torch.isfinite(kernel).all())), ("LR image", bool(np.isfinite(lr).all()))):
        if not ok:
            raise NonFiniteOutputError(f"{printable(path)}: the generator gave a {what} with NaN or inf values (is the checkpoint sound?); nothing was written")


def _kernel_png(kernel: np.ndarray) -> np.ndarray:
    """A kernel as an 8x-zoomed picture. matplotlib is imported here, not at module level: every
    stage imports this module for DegradeConfig (params validation), and pyplot costs 0.7 s a start."""
    from fca.plots import kernel_image

    return kernel_image(kernel, zoom=8)


@dataclass(frozen=True)
class _Layout:
    """Where degrade_folder puts an input's outputs: under its path relative to the input folder (lr/,
    kernels/), or with pairs under its pair_name in a flat HR/LR training set."""

    pairs: bool
    scale: int  # the pairs' whole-number scale s (0 without pairs)

    @property
    def columns(self) -> tuple[str, ...]:
        return PAIRS_COLUMNS if self.pairs else MANIFEST_COLUMNS

    @property
    def lr_dir(self) -> str:
        return f"lr_x{self.scale}" if self.pairs else "lr"

    def stem(self, rel: Path) -> str:
        """The name of an input's outputs in their folders, without the suffix."""
        return pair_name(rel)[: -len(".png")] if self.pairs else rel.with_suffix("").as_posix()

    def manifest_row(self, rel: Path, status: str, reason: str) -> dict:
        """The manifest row of the entry at `rel`, its other columns empty."""
        return dict.fromkeys(self.columns) | {"file": printable(rel.as_posix()), "status": status, "reason": reason}


def _check_folders(input_dir: Path, output_dir: Path, scale: float, pairs: bool, overwrite: bool) -> None:
    """What makes degrade_folder refuse before reading any image (see its docstring)."""
    if not input_dir.is_dir():
        raise NotADirectoryError(f"{input_dir}: not a folder of images")
    src, dst = input_dir.resolve(), output_dir.resolve()
    if _is_within(dst, src) or _is_within(src, dst):
        raise ValueError(f"output folder {output_dir} and input folder {input_dir} must not contain one another")
    if pairs and not scale.is_integer():
        raise ValueError(f"pairs (--pairs) need a whole-number scale, so that every HR image is exactly scale x its LR image; "
                         f"this generator's scale is {scale:g}")
    if not overwrite and output_dir.is_dir() and not output_dir.is_symlink() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir}: exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    check_replaceable(output_dir, overwrite)


def _scan_inputs(input_dir: Path, pairs: bool) -> tuple[FolderScan, list[Path]]:
    """The input folder's scan and its images' paths relative to it. A folder without images, or two
    inputs whose outputs would have the same name, is an error."""
    scan = scan_images(input_dir, recursive=True)
    if not scan.images:
        found = f"; not read: {len(scan.ignored)} entries, e.g. {printable(scan.ignored[0][0])}: {scan.ignored[0][1]}" if scan.ignored else ""
        raise ValueError(f"{input_dir}: no image files found (formats: fca.data.images.IMAGE_SUFFIXES){found}")
    rels = [p.relative_to(input_dir) for p in scan.images]
    clash = _pair_clashes(rels) if pairs else _output_clashes(rels)
    if clash is not None:
        a, b, out = clash
        raise ValueError(f"{input_dir}: {printable(a)} and {printable(b)} would both be written as {printable(out)}; rename one")
    return scan, rels


def _read_and_degrade(source: KernelSource, path: Path, config: DegradeConfig, layout: _Layout, max_pixels: int | None,
                      row: dict) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
    """An input's kernel, its LR image and, with pairs, its mod-cropped HR image (without pairs the HR
    image is dropped here, before the next one is decoded). `row` gets the input's size first, so that a
    skipped image's row has it too. Raises BadImageError or ImageTooSmallError for an image it cannot degrade."""
    image = load_rgb(path, uint8=True, max_pixels=max_pixels)  # converted to float per block: bounded memory
    h, w = image.shape[:2]
    row.update(width=w, height=h)
    if layout.pairs:  # mod-crop: HR = s x LR exactly, as paired loaders require
        hh, hw = h - h % layout.scale, w - w % layout.scale
        image = image[:hh, :hw]  # a view, no copy
        _check_size(path, hh, hw, source, cropped_from=(h, w) if (hh, hw) != (h, w) else None)
    else:
        _check_size(path, h, w, source)
    kernel = estimate_image_kernel(source, image, config)
    lr = degrade_image(source, image, kernel, config)
    _check_finite(path, kernel, lr)  # never an "ok" row or a black image for a broken generator
    return kernel, lr, image if layout.pairs else None


def _degrade_entry(source: KernelSource, path: Path, rel: Path, config: DegradeConfig, layout: _Layout, out: Path,
                   max_pixels: int | None) -> dict:
    """Degrade the input at `path` (`rel` in the input folder) into the folder `out`; returns its manifest
    row, "skipped" with the reason for a bad image when config.on_bad_image is "skip"."""
    row = layout.manifest_row(rel, "ok", "")
    try:
        kernel, lr, hr = _read_and_degrade(source, path, config, layout, max_pixels, row)
    except (BadImageError, ImageTooSmallError) as e:
        if config.on_bad_image == "error":
            raise
        return row | {"status": "skipped", "reason": e.reason}
    stem = layout.stem(rel)
    if hr is not None:
        save_png(out / "hr" / f"{stem}.png", hr)
        row.update(hr_file=f"hr/{stem}.png", hr_width=hr.shape[1], hr_height=hr.shape[0])
    save_png(out / layout.lr_dir / f"{stem}.png", lr)
    save_npy(out / "kernels" / f"{stem}.npy", kernel.numpy().astype(np.float32))
    save_png(out / "kernels" / f"{stem}.png", _kernel_png(kernel.numpy()))
    return row | {"lr_width": lr.shape[1], "lr_height": lr.shape[0], "kernel_sigma": float(effective_sigma(kernel.double())),
                  "lr_file": f"{layout.lr_dir}/{stem}.png", "kernel_file": f"kernels/{stem}.npy"}


def _write_meta_info(out: Path, rows: list[dict]) -> None:
    """The pairs' lists for paired loaders, sorted by HR file: BasicSR's meta_info.txt and Real-ESRGAN's."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["hr_file"])
    (out / "meta_info.txt").write_text("".join(f"{r['hr_file'][len('hr/'):]} ({r['hr_height']},{r['hr_width']},3)\n" for r in ok), encoding="utf-8")
    # Real-ESRGAN's paired dataset reads `gt, lq` paths relative to its two roots (both OUT).
    (out / "meta_info_realesrgan.txt").write_text("".join(f"{r['hr_file']}, {r['lr_file']}\n" for r in ok), encoding="utf-8")

def degrade_folder(
    source: KernelSource,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: DegradeConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    pairs: bool = False,
) -> pd.DataFrame:
    """Degrade every image under `input_dir` (recursively) into `output_dir`; returns the manifest.

    Writes, keeping each image's path relative to `input_dir`:
      lr/<rel>.png        the LR image (8-bit PNG, whatever the input format)
      kernels/<rel>.npy   its kernel, float32 [K, K]
      kernels/<rel>.png   the kernel as a picture (viridis, peak = yellow, 8x nearest)
      manifest.csv        one row per file under `input_dir`: MANIFEST_COLUMNS; status
                          "ok"; "skipped" with the reason (unreadable, too small, more
                          than `max_pixels` pixels, unsupported colour mode); or
                          "ignored" with the reason for an entry that is not an image
                          file (other suffix, hidden, link out of the folder, fifo, name
                          not UTF-8: see fca.data.images.scan_images). Names that are not
                          UTF-8 are written with backslash escapes.
    With `pairs` (`fca degrade --pairs`), an HR/LR training set for BasicSR-style paired
    loaders instead, NAME = pair_name(<rel>) (flat, no whitespace, .png):
      hr/NAME             the input mod-cropped: its bottom rows and right columns past the
                          last multiple of the scale s are cut off (8-bit PNG)
      lr_x{s}/NAME        the LR image the generator makes from that HR image: exactly
                          (H / s) x (W / s)
      kernels/NAME .npy and .png, as above
      meta_info.txt       one line per pair, sorted: `NAME (H,W,3)` with the HR image's
                          height and width (BasicSR's meta_info format)
      meta_info_realesrgan.txt  the same pairs as `hr/NAME, lr_x{s}/NAME` (Real-ESRGAN's paired
                          dataset, dataroot_gt = dataroot_lq = OUT)
      manifest.csv        PAIRS_COLUMNS: width/height are the input's, hr_* the cropped ones
    s must be a whole number. Two inputs with the same NAME are an error before any work.
    Bad images follow `config.on_bad_image`: "error" raises, naming the file;
    "skip" lists them in the manifest. Ignored entries never stop the run. The folder
    is built in a temporary sibling and renamed into place at the end, so `output_dir`
    never holds a partial result; it is locked meanwhile (a second writer fails with
    fca.fsutil.OutputBusyError). An existing non-empty `output_dir` is an error unless
    `overwrite`, and even then only a folder that this tool wrote (it holds the
    `.fca-output` mark) is replaced, as a whole, after the new one is complete.
    `on_step(i, {"seconds", "hr_megapixels", "kernel_sigma"})` is called after each
    degraded image.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    scale = float(source.scale)
    _check_folders(input_dir, output_dir, scale, pairs, overwrite)
    scan, rels = _scan_inputs(input_dir, pairs)
    layout = _Layout(pairs, int(scale) if pairs else 0)
    with atomic_dir(output_dir, replace=overwrite) as tmp:
        # not images: named with the reason, never passed over in silence
        rows = [layout.manifest_row(path.relative_to(input_dir), "ignored", why) for path, why in scan.ignored]
        for i, (path, rel) in enumerate(track(list(zip(scan.images, rels)), desc="degrade", enabled=progress, unit="img")):
            t0 = time.perf_counter()
            row = _degrade_entry(source, path, rel, config, layout, tmp, max_pixels)
            rows.append(row)
            if on_step is not None and row["status"] == "ok":
                on_step(i, {"seconds": time.perf_counter() - t0, "hr_megapixels": row["height"] * row["width"] / 1e6,
                            "kernel_sigma": row["kernel_sigma"]})
        rows.sort(key=lambda r: r["file"])
        manifest = pd.DataFrame(rows, columns=list(layout.columns))
        manifest.to_csv(tmp / "manifest.csv", index=False)
        if pairs:
            _write_meta_info(tmp, rows)
    return manifest
