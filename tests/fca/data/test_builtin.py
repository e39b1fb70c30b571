import hashlib

import numpy as np
import pytest
import torch

from fca.data.builtin import PHOTOS, dead_leaves, load_photo, write_builtin
from fca.data.images import load_rgb
from fca.frequency import bin_centres, radial_density


@pytest.mark.parametrize("name", PHOTOS)
def test_every_photo_loads_offline_as_rgb(name):
    arr = load_photo(name)
    assert arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 256
    assert arr.dtype == np.float32 and 0.0 <= arr.min() and arr.max() <= 1.0 and arr.std() > 0.02


def test_write_builtin_is_deterministic(tmp_path):
    rows = write_builtin(tmp_path / "a", photos=["chelsea"], count=2, size=64, seed=3)
    again = write_builtin(tmp_path / "b", photos=["chelsea"], count=2, size=64, seed=3)
    other = write_builtin(tmp_path / "c", photos=[], count=1, size=64, seed=4)
    assert [r["file"] for r in rows] == ["chelsea.png", "dead_leaves_000.png", "dead_leaves_001.png"]
    assert rows == again  # same seed -> same bytes (sha256 included)
    assert other[0]["sha256"] != rows[1]["sha256"]
    assert rows[1]["sha256"] != rows[2]["sha256"]  # the images of one seed differ
    for r in rows:
        path = tmp_path / "a" / r["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"]
        assert load_rgb(path).shape == (r["height"], r["width"], 3)
    assert (rows[0]["width"], rows[0]["height"]) == (451, 300)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [r["file"] for r in rows]  # no temp files


def test_dead_leaves_has_natural_spectrum():
    img = dead_leaves(256, np.random.default_rng(0))
    assert img.shape == (256, 256, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    # Many distinct leaves, each a flat colour.
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500
    bins = 32
    density = radial_density(torch.from_numpy(img).permute(2, 0, 1)[None].double(), bins)[0].numpy()
    f = bin_centres(bins).numpy()
    slope = np.polyfit(np.log(f[2:-2]), np.log(density[2:-2]), 1)[0]
    assert -2.6 < slope < -1.6, slope  # power ~ 1/f^2 (white noise would be ~0, a smooth blob far below -3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="photo 'lena'"):
        load_photo("lena")
    with pytest.raises(ValueError, match="coverage"):
        dead_leaves(32, np.random.default_rng(0), coverage=0.0)
