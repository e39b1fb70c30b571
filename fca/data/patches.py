"""Stage `patches`: crop, filter, split and blur (the synthetic real domain).

For each source image: crop patches on a grid (`size`, `stride`), drop flat ones
(luma std below `min_std`, measured on the clean patch), keep at most
`max_per_image` (a seeded random subset), and make the real-domain patch
R = I (*) k_gt with reflect padding at the patch border. Blurring each patch on
its own (not the whole image) keeps R, the clean patch I and the referee's
L_true = down(I) (*) k_gt on the same border convention, so the oracle kernel is
exact. The split is by source image, so no scene is in both train and val.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from fca.config import param
from fca.frequency import to_luma
from fca.kernels import anisotropic_gaussian, check_kernel, conv_per_sample, delta, gaussian


@dataclass(frozen=True)
class BlurConfig:
    """The known kernel k_gt that makes the synthetic real domain; `type` picks the keys that belong."""

    VARIANTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "gaussian": ("size", "sigma"),
        "anisotropic": ("size", "sigma_x", "sigma_y", "theta_deg"),
        "file": ("path",),
        "none": (),
    }
    type: str = param("gaussian", choices=tuple(VARIANTS))
    size: int | None = param(None, ge=1, odd=True, help="kernel side, odd")
    sigma: float | None = param(None, gt=0)
    sigma_x: float | None = param(None, gt=0)
    sigma_y: float | None = param(None, gt=0)
    theta_deg: float | None = param(None, ge=-180, le=180)
    path: str | None = param(None, nonempty=True, help="a .npy file holding a K x K kernel")


@dataclass(frozen=True)
class PatchesConfig:
    size: int = param(128, ge=16, help="HR patch side, pixels")
    stride: int = param(96, ge=1, help="step between patch origins, pixels")
    max_per_image: int = param(64, ge=1, help="at most this many patches per source image (random subset)")
    min_std: float = param(0.02, ge=0, help="drop patches whose luma std is below this (flat sky, walls)")
    val_fraction: float = param(0.25, gt=0, lt=1, help="share of source images held out for validation")
    on_bad_image: str = param("error", choices=("error", "skip"), help="an unreadable image stops the stage, or is skipped and reported")
    blur: BlurConfig = param(BlurConfig(type="gaussian", size=13, sigma=3.0))
    seed: int = param(0, ge=0)


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
    raise ValueError(f"patches.blur.type = {blur.type!r}: unknown")


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


def grid_origins(h: int, w: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of a size x size grid with `stride`; the last row/column is flush with the border."""
    ys = list(range(0, h - size + 1, stride))
    xs = list(range(0, w - size + 1, stride))
    if ys and ys[-1] != h - size:
        ys.append(h - size)
    if xs and xs[-1] != w - size:
        xs.append(w - size)
    return [(y, x) for y in ys for x in xs]


def cut_patches(image: np.ndarray, kernel: np.ndarray, config: PatchesConfig, rng: random.Random) -> ImagePatches | None:
    """Patches of one float [H, W, 3] image, or None when the image is smaller than a patch."""
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
    k = torch.from_numpy(kernel).float()
    real = conv_per_sample(clean, k).clamp(0, 1) if len(keep) and k.shape[-1] > 1 else clean.clone()
    return ImagePatches(clean, real, [origins[i] for i in keep], [float(stds[i]) for i in keep], dropped)


def load_patch_set(root: str | Path, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The patches stage's output for one split: (clean [N, 3, S, S], real [N, 3, S, S], file names).

    `root` is the patches folder (with index.csv); `limit` keeps the first N in index order.
    """
    import pandas as pd

    from fca.data.images import load_rgb

    root = Path(root)
    index_path = root / "index.csv"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: no patch index (run the patches stage first)")
    index = pd.read_csv(index_path)
    if split not in ("train", "val"):
        raise ValueError(f"split = {split!r}: must be 'train' or 'val'")
    names = index.loc[index.split == split, "file"].tolist()[:limit]
    if not names:
        raise ValueError(f"{index_path}: the {split} split is empty")

    def stack(domain: str) -> torch.Tensor:
        arrays = [load_rgb(root / split / domain / n) for n in names]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    return stack("clean"), stack("real"), names
