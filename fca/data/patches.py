"""Stage `patches`: crop, filter, split and blur (the synthetic real domain).

For each source image: crop patches on a grid (`size`, `stride`), drop flat ones
(luma std below `min_std`, measured on the clean patch), keep at most
`max_per_image` (a seeded random subset), and make the real-domain patch
R = I (*) k_gt with reflect padding at the patch border. Blurring each patch on
its own (not the whole image) keeps R, the clean patch I and the referee's
L_true = down(I) (*) k_gt on the same border convention, so the oracle kernel is
exact. The split is by source image, so no scene is in both train and val.

With `blur.type: random` every patch (or every source image, `per`) gets its own
kernel, drawn by `fca.kernels.random_kernel` from a numpy Generator seeded by
`patches.seed` (apart from the random.Random that picks the patch subset, so the
other variants' outputs do not change). The stage records each patch's kernel:
`kernels.npy` holds the distinct kernels [M, K, K] in order of first use and
index.csv's `kernel` column is each patch's row in it (every variant writes both;
a fixed kernel is one row that every patch points to). `load_patch_kernels` reads
them back in `load_patch_set`'s order.

With `noise` (`fca.noise`, default `none`) the stage then adds camera noise to each
real patch: R = noise(I (*) k_gt), each patch's draws seeded by (seed, its file name);
summary.json stores the model (`load_noise`) and the referee gives L_true the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from fca.config import param
from fca.frequency import to_luma
from fca.camera import CameraConfig, PatchCamera, psf_kernel
from fca.jpeg import JpegSetting
from fca.noise import NoiseConfig, noise_from_dict
from fca.kernels import (
    KERNEL_FAMILIES,
    anisotropic_gaussian,
    check_kernel,
    conv_per_sample,
    delta,
    effective_sigma,
    gaussian,
    motion_fits,
    random_kernel,
)


@dataclass(frozen=True)
class BlurConfig:
    """The known kernel k_gt that makes the synthetic real domain; `type` picks the keys that belong."""

    VARIANTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "gaussian": ("size", "sigma"),
        "anisotropic": ("size", "sigma_x", "sigma_y", "theta_deg"),
        "file": ("path",),
        "none": (),
        "random": ("size", "families", "sigma_range", "motion_length", "per"),
        "camera": ("camera",),
    }
    type: str = param("gaussian", choices=tuple(VARIANTS))
    size: int | None = param(None, ge=1, le=101, odd=True, help="kernel side, odd")
    sigma: float | None = param(None, gt=0, le=100)
    sigma_x: float | None = param(None, gt=0, le=100)
    sigma_y: float | None = param(None, gt=0, le=100)
    theta_deg: float | None = param(None, ge=-180, le=180)
    path: str | None = param(None, nonempty=True, help="a .npy file holding a K x K kernel")
    families: tuple[str, ...] | None = param(None, choices=KERNEL_FAMILIES, nonempty=True, help="random: each kernel's family, drawn uniformly from these")
    sigma_range: tuple[float, float] | None = param(None, gt=0, le=100, help="random, anisotropic: [lo, hi] of sigma_x and sigma_y (HR px)")
    motion_length: tuple[float, float] | None = param(None, gt=0, le=100, help="random, motion: [lo, hi] of the segment length (px), at most size - 3")
    per: str | None = param(None, choices=("patch", "image"), help="random: a kernel per patch, or one per source image")
    camera: CameraConfig | None = param(None, help="camera: a simulated camera makes R = camera(I) (fca.camera: PSF, mosaic, raw "
                                                   "noise, demosaic, white balance, tone curve, sharpening, JPEG); k_gt is its PSF")

    def __post_init__(self) -> None:
        if self.type != "random":
            return
        for name in ("sigma_range", "motion_length"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"patches.blur.{name} = {[lo, hi]}: lo must be <= hi")
        if "motion" in self.families and not motion_fits(self.size, self.motion_length[1]):
            raise ValueError(
                f"patches.blur.motion_length = {list(self.motion_length)}: a motion of length {self.motion_length[1]} "
                f"does not fit a {self.size} x {self.size} kernel (at most size - 3 = {self.size - 3})"
            )


@dataclass(frozen=True)
class PatchesConfig:
    size: int = param(128, ge=16, le=8192, help="HR patch side, pixels")
    stride: int = param(96, ge=1, le=8192, help="step between patch origins, pixels")
    max_per_image: int = param(64, ge=1, le=1_000_000, help="at most this many patches per source image (random subset)")
    min_std: float = param(0.02, ge=0, le=1, help="drop patches whose luma std is below this (flat sky, walls)")
    val_fraction: float = param(0.25, gt=0, lt=1, help="share of source images held out for validation")
    on_bad_image: str = param("error", choices=("error", "skip"), help="an unreadable image stops the stage, or is skipped and reported")
    blur: BlurConfig = param(BlurConfig(type="gaussian", size=13, sigma=3.0))
    noise: NoiseConfig = param(NoiseConfig(), help="camera noise added to the real patches after the blur (fca.noise)")
    seed: int = param(0, ge=0, le=2**32 - 1)

    def __post_init__(self) -> None:
        if self.blur.type == "camera" and self.noise.type != "none":
            raise ValueError("patches.noise must be none with patches.blur.type: camera (the camera makes its own raw noise)")


def make_blur_kernel(blur: BlurConfig) -> np.ndarray:
    """The K x K kernel k_gt described by `blur` (float64, sum 1). `none` is a 1x1 delta."""
    if blur.type == "gaussian":
        return gaussian(blur.size, blur.sigma)
    if blur.type == "anisotropic":
        return anisotropic_gaussian(blur.size, blur.sigma_x, blur.sigma_y, blur.theta_deg)
    if blur.type == "file":
        path = Path(blur.path)
        if not path.is_file():
            raise FileNotFoundError(f"patches.blur.path = {blur.path!r}: no such file")
        try:
            k = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"patches.blur.path = {blur.path!r}: not a .npy array ({e})") from None
        return check_kernel(k, name=str(path))
    if blur.type == "none":
        return delta(1)
    if blur.type == "camera":
        return psf_kernel(blur.camera)
    if blur.type == "random":
        raise ValueError("patches.blur.type = 'random' has no single kernel: use BlurKernels, which draws one per patch")
    raise ValueError(f"patches.blur.type = {blur.type!r}: unknown")


KERNEL_COLUMNS = ("family", "sigma_x", "sigma_y", "theta_deg", "length", "angle_deg", "sigma_eff")


def describe_kernel(kernel: np.ndarray, info: dict) -> dict:
    """index.csv's description of a kernel: KERNEL_COLUMNS, None where a value does not apply."""
    sigma_eff = float(effective_sigma(torch.from_numpy(np.asarray(kernel, dtype=np.float64))))
    return {c: info.get(c) for c in KERNEL_COLUMNS} | {"sigma_eff": sigma_eff}


class BlurKernels:
    """Where each patch's kernel comes from: `patches.blur` (or a bare kernel array).

    A fixed variant gives every patch the same kernel; `random` draws them with
    `random_kernel` from `rng`, a numpy Generator seeded by `seed` alone: one per
    patch, or one per source image (`per`), in the order the images are cut.
    """

    def __init__(self, blur: BlurConfig | np.ndarray, seed: int = 0) -> None:
        if isinstance(blur, np.ndarray):
            check_kernel(blur)
            self.blur = None
            self.fixed = np.asarray(blur, dtype=np.float64)  # as given: not renormalised
            info = {"family": "fixed"}
        else:
            self.blur = blur
            self.fixed = None if blur.type == "random" else make_blur_kernel(blur)
            info = {"family": blur.type}
            if blur.type == "gaussian":
                info |= {"sigma_x": blur.sigma, "sigma_y": blur.sigma, "theta_deg": 0.0}
            elif blur.type == "anisotropic":
                info |= {"sigma_x": blur.sigma_x, "sigma_y": blur.sigma_y, "theta_deg": blur.theta_deg}
        self.fixed_info = None if self.fixed is None else describe_kernel(self.fixed, info)
        self.rng = np.random.default_rng(seed)

    @property
    def size(self) -> int:
        return self.fixed.shape[0] if self.fixed is not None else self.blur.size

    def draw(self, n: int) -> tuple[np.ndarray, list[dict]]:
        """Kernels for the n patches of one image: ([n, K, K] float64, n descriptions (KERNEL_COLUMNS))."""
        if self.fixed is not None:
            return np.repeat(self.fixed[None], n, axis=0), [self.fixed_info] * n
        if n == 0:
            return np.zeros((0, self.size, self.size)), []
        b = self.blur
        count = 1 if b.per == "image" else n
        kernels, infos = [], []
        for _ in range(count):
            k, info = random_kernel(self.rng, b.size, b.families, b.sigma_range, b.motion_length)
            kernels.append(k)
            infos.append(describe_kernel(k, info))
        if b.per == "image":
            return np.repeat(kernels[0][None], n, axis=0), infos * n
        return np.stack(kernels), infos


class KernelTable:
    """The distinct kernels of a patch set in order of first use: `add` gives a kernel's row."""

    def __init__(self) -> None:
        self._rows: dict[bytes, int] = {}
        self.kernels: list[np.ndarray] = []
        self.infos: list[dict] = []

    def add(self, kernel: np.ndarray, info: dict) -> int:
        key = np.ascontiguousarray(kernel, dtype=np.float64).tobytes()
        if key not in self._rows:
            self._rows[key] = len(self.kernels)
            self.kernels.append(np.asarray(kernel, dtype=np.float64))
            self.infos.append(info)
        return self._rows[key]

    def array(self) -> np.ndarray:
        """[M, K, K] float64."""
        return np.stack(self.kernels)


def split_sources(sources: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split source images into (train, val) by a seeded shuffle; each side gets at least one."""
    if len(sources) < 2:
        raise ValueError(f"need at least 2 source images to split train/val, got {len(sources)}")
    order = sorted(sources)
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass
class ImagePatches:
    """Patches cut from one image: clean and real-domain, [N, 3, S, S] in [0, 1], with (y, x) origins and luma std."""

    clean: torch.Tensor
    real: torch.Tensor
    origins: list[tuple[int, int]] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    dropped_flat: int = 0
    kernels: np.ndarray | None = None  # [N, K, K] float64: the kernel that made each real patch
    kernel_info: list[dict] = field(default_factory=list)  # each patch's kernel description (KERNEL_COLUMNS)


def grid_origins(h: int, w: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of a size x size grid with `stride`; the last row/column is flush with the border."""
    ys = list(range(0, h - size + 1, stride))
    xs = list(range(0, w - size + 1, stride))
    if ys and ys[-1] != h - size:
        ys.append(h - size)
    if xs and xs[-1] != w - size:
        xs.append(w - size)
    return [(y, x) for y in ys for x in xs]


def cut_patches(image: np.ndarray, kernel: np.ndarray | BlurKernels, config: PatchesConfig, rng: random.Random) -> ImagePatches | None:
    """Patches of one float [H, W, 3] image, or None when the image is smaller than a patch.

    `kernel`: one K x K kernel for every patch, or a BlurKernels that gives each patch
    its own (drawn only for the patches kept, and only when the image is big enough).
    """
    kernels = kernel if isinstance(kernel, BlurKernels) else BlurKernels(kernel)
    h, w = image.shape[:2]
    s = config.size
    if h < s or w < s:
        return None
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    origins = grid_origins(h, w, s, config.stride)
    crops = torch.stack([x[:, y : y + s, x0 : x0 + s] for y, x0 in origins])
    stds = to_luma(crops).flatten(1).std(1)
    keep = [i for i in range(len(origins)) if stds[i] >= config.min_std]
    dropped = len(origins) - len(keep)
    if len(keep) > config.max_per_image:
        keep = sorted(rng.sample(keep, config.max_per_image))
    clean = crops[keep]
    drawn, info = kernels.draw(len(keep))
    if kernels.fixed is not None:  # one kernel for the batch: the computation of the fixed variants, unchanged
        k = torch.from_numpy(kernels.fixed).float()
    else:
        k = torch.from_numpy(drawn).float()
    real = conv_per_sample(clean, k).clamp(0, 1) if len(keep) and k.shape[-1] > 1 else clean.clone()
    return ImagePatches(clean, real, [origins[i] for i in keep], [float(stds[i]) for i in keep], dropped, drawn, info)


def load_patch_set(root: str | Path, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The patches stage's output for one split: (clean [N, 3, S, S], real [N, 3, S, S], file names).

    `root` is the patches folder (with index.csv); `limit` keeps the first N in index order.
    """
    from fca.data.images import load_rgb

    root = Path(root)
    names = _split_rows(root, split, limit)["file"].tolist()

    def stack(domain: str) -> torch.Tensor:
        arrays = [load_rgb(root / split / domain / n) for n in names]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    return stack("clean"), stack("real"), names


def _split_rows(root: Path, split: str, limit: int | None):
    """The rows of index.csv for one split, in index order (the first `limit`)."""
    import pandas as pd

    index_path = root / "index.csv"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: no patch index (run the patches stage first)")
    index = pd.read_csv(index_path)
    if split not in ("train", "val"):
        raise ValueError(f"split = {split!r}: must be 'train' or 'val'")
    rows = index.loc[index.split == split][:limit]
    if rows.empty:
        raise ValueError(f"{index_path}: the {split} split is empty")
    return rows


def load_patch_kernels(root: str | Path, split: str, limit: int | None = None) -> torch.Tensor:
    """The kernel that made each real patch of one split: [N, K, K] float64, in `load_patch_set`'s order.

    Reads kernels.npy (the distinct kernels) through index.csv's `kernel` column; the
    same for every `patches.blur` variant (a fixed kernel is one row shared by all).
    """
    root = Path(root)
    rows = _split_rows(root, split, limit)
    path = root / "kernels.npy"
    if "kernel" not in rows.columns or not path.is_file():
        raise FileNotFoundError(f"{root}: no per-patch kernels (kernels.npy and index.csv's kernel column); re-run the patches stage")
    table = np.load(path, allow_pickle=False)
    ids = rows["kernel"].to_numpy()
    if table.ndim != 3 or ids.min() < 0 or ids.max() >= len(table):
        raise ValueError(f"{path}: shape {table.shape} does not match index.csv's kernel rows (up to {ids.max()})")
    return torch.from_numpy(np.ascontiguousarray(table[ids], dtype=np.float64))


def kernel_is_known(blur: BlurConfig) -> bool:
    """Whether the real domain's kernel is known. Every variant blurs the patches with a kernel it
    knows, except `none`: its real patches are the photos as they are (a folder of the user's own
    photos), whose blur nobody knows. The 1x1 delta it records is what was applied, not k_gt."""
    return blur.type != "none"


def load_kernel_known(root: str | Path) -> bool:
    """Whether the patches stage's output at `root` has a known kernel (summary.json: kernel_known).

    A summary written before the key existed is read by its kernel_type (`none`: unknown)."""
    import json

    path = Path(root) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no patches summary (run the patches stage first)")
    summary = json.loads(path.read_text())
    if "kernel_known" in summary:
        known = summary["kernel_known"]
    elif "kernel_type" in summary:
        known = summary["kernel_type"] != "none"
    else:
        known = None
    if not isinstance(known, bool):
        raise ValueError(f"{path}: kernel_known = {known!r}, expected true or false; re-run the patches stage")
    return known


def load_domain(root: str | Path) -> dict[str, Any]:
    """What real domain the patches at `root` hold, as a generator checkpoint records it:
    {"kernel_known": a synthetic camera (the patches stage blurred the photos by a kernel it
    knows) or photos as they are, "kernel_type", "noise": the synthetic camera's noise type}."""
    import json

    summary = json.loads((Path(root) / "summary.json").read_text())
    noise = summary.get("noise") or {}
    return {"kernel_known": load_kernel_known(root), "kernel_type": str(summary.get("kernel_type", "unknown")),
            "noise": str(noise.get("type", "none")) if isinstance(noise, dict) else "none"}


def load_files_jpeg(root: str | Path) -> JpegSetting | None:
    """The photos' own JPEG round trip the patches stage read from their files (summary.json:
    jpeg_files), or None (not JPEG files, or patches from before it was recorded)."""
    import json

    raw = json.loads((Path(root) / "summary.json").read_text()).get("jpeg_files")
    return JpegSetting(**raw) if isinstance(raw, dict) else None


def kernels_differ(kernels: torch.Tensor | np.ndarray) -> bool:
    """Whether a stack of kernels [N, K, K] holds more than one distinct kernel (False for a fixed k_gt)."""
    k = torch.as_tensor(kernels)
    return bool(len(k) > 1 and (k != k[:1]).any())


def load_camera(root: str | Path, names: list[str] | tuple[str, ...]) -> PatchCamera | None:
    """The simulated camera of the patches at `root` (summary.json: camera, with noise_seed) for the
    patches `names`; None when the real domain is no simulated camera."""
    import json

    from fca.config import ConfigError, build_config

    path = Path(root) / "summary.json"
    raw = json.loads(path.read_text()).get("camera")
    if raw is None:
        return None
    try:
        config = build_config(CameraConfig, raw, "camera")
    except ConfigError as e:
        raise ValueError(f"{path}: {e}; re-run the patches stage") from None
    return PatchCamera(config, int(json.loads(path.read_text()).get("noise_seed", 0)), tuple(names))


def load_noise(root: str | Path) -> tuple[NoiseConfig, int]:
    """The noise model of the patches stage's output at `root` and its seed (summary.json: noise,
    noise_seed); a summary written before the keys existed had no noise."""
    import json

    path = Path(root) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no patches summary (run the patches stage first)")
    summary = json.loads(path.read_text())
    try:
        return noise_from_dict(summary.get("noise")), int(summary.get("noise_seed", 0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: noise = {summary.get('noise')!r}: {e}; re-run the patches stage") from None
