"""The offline default dataset: photos shipped inside scikit-image plus dead-leaves images.

Dead leaves: opaque discs dropped one behind the other until the canvas is
covered. With radii drawn from p(r) ~ 1/r^3 the picture is statistically
scale invariant, so its power spectrum falls like 1/f^2 (amplitude 1/f), as
in natural photos; the occluding edges give it the sharp contours that the
frequency-density measurements care about.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from scipy import ndimage
from fca.progress import track

from fca.data.images import save_png

# skimage.data names -> how to get the image (stereo_motorcycle returns (left, right, disparity)).
_PHOTO_LOADERS = {
    "astronaut": lambda d: d.astronaut(),
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "motorcycle_left": lambda d: d.stereo_motorcycle()[0],
    "motorcycle_right": lambda d: d.stereo_motorcycle()[1],
    "hubble_deep_field": lambda d: d.hubble_deep_field(),
    "ihc": lambda d: d.immunohistochemistry(),
    "retina": lambda d: d.retina(),
}
PHOTOS = tuple(_PHOTO_LOADERS)


def load_photo(name: str) -> np.ndarray:
    """One scikit-image photo as float32 RGB [H, W, 3] in [0, 1] (greyscale repeated, alpha dropped)."""
    if name not in _PHOTO_LOADERS:
        raise ValueError(f"photo {name!r}: must be one of {list(PHOTOS)}")
    import skimage.data  # imported here: only this dataset needs it

    arr = np.asarray(_PHOTO_LOADERS[name](skimage.data))
    if arr.dtype != np.uint8:
        raise ValueError(f"photo {name!r}: expected uint8 data from scikit-image, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr[..., :3].astype(np.float32) / 255.0


def dead_leaves(size: int, rng: np.random.Generator, r_min: float = 1.0, coverage: float = 0.995) -> np.ndarray:
    """A dead-leaves image: float32 RGB [size, size, 3] in [0, 1].

    Discs are drawn front to back (each new disc only fills pixels still empty)
    with radius r ~ 1/r^3 on [r_min, size/2] and a uniform random colour, until
    `coverage` of the canvas is filled; each remaining hole takes the colour of
    its nearest leaf. Power spectrum slope (log-log, over 0.03..0.47 cycles/px):
    about -2.1 at r_min = 1.
    """
    if size < 2:
        raise ValueError(f"size = {size}: must be >= 2")
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage = {coverage}: must be in (0, 1]")
    r_max = size / 2.0
    img = np.zeros((size, size, 3), dtype=np.float32)
    empty = np.ones((size, size), dtype=bool)
    left = size * size
    # Inverse CDF of p(r) ~ r^-3 on [r_min, r_max]: r^-2 is uniform between r_max^-2 and r_min^-2.
    a, b = r_min**-2, r_max**-2
    batch = 4096  # draw random numbers in blocks: much faster than one call per disc
    stop = int(size * size * (1.0 - coverage))
    while left > stop:
        radii = (a - rng.random(batch) * (a - b)) ** -0.5
        centres = rng.random((batch, 2)) * size
        colours = rng.random((batch, 3)).astype(np.float32)
        for r, (cy, cx), c in zip(radii, centres, colours):
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, size)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, size)
            yy = np.arange(y0, y1)[:, None] + 0.5 - cy
            xx = np.arange(x0, x1)[None, :] + 0.5 - cx
            mask = (yy * yy + xx * xx <= r * r) & empty[y0:y1, x0:x1]
            n = int(mask.sum())
            if n:
                img[y0:y1, x0:x1][mask] = c
                empty[y0:y1, x0:x1][mask] = False
                left -= n
                if left <= stop:
                    break
    if left > 0:
        # The last holes would take as many discs again as the rest: give each the colour of its nearest leaf.
        _, (iy, ix) = ndimage.distance_transform_edt(empty, return_indices=True)
        img = img[iy, ix]
    return img


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_builtin(
    out_dir: str | os.PathLike,
    photos: list[str] | tuple[str, ...] = PHOTOS,
    count: int = 4,
    size: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> list[dict]:
    """Write the photos (`<name>.png`) and `count` dead-leaves images (`dead_leaves_000.png`, ...) to out_dir.

    Image i of the dead leaves depends only on (seed, i), so the same seed gives
    the same bytes and changing `count` keeps the earlier images.
    Returns manifest rows {file (relative to out_dir), width, height, sha256, source}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [("photo", name) for name in photos] + [("leaves", i) for i in range(count)]
    rows = []
    for kind, key in track(jobs, desc="builtin", enabled=progress, unit="img"):
        if kind == "photo":
            arr, name, source = load_photo(key), f"{key}.png", f"skimage:{key}"
        else:
            rng = np.random.default_rng([seed, key])
            arr, name, source = dead_leaves(size, rng), f"dead_leaves_{key:03d}.png", f"dead-leaves:seed={seed}:index={key}"
        path = out_dir / name
        save_png(path, arr)
        rows.append({"file": name, "width": arr.shape[1], "height": arr.shape[0], "sha256": _sha256(path), "source": source})
    return rows
