import random

import numpy as np
import pytest
import torch

from fca.data.patches import BlurConfig, PatchesConfig, cut_patches, grid_origins, make_blur_kernel, split_sources
from fca.kernels import conv_per_sample, effective_sigma


def test_split_is_by_source_with_no_leakage_and_deterministic():
    sources = [f"img{i}.png" for i in range(9)]
    train, val = split_sources(sources, 0.25, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(sources)
    assert len(val) == 2
    assert split_sources(list(reversed(sources)), 0.25, seed=3) == (train, val)
    assert split_sources(sources, 0.25, seed=4) != (train, val)


def test_split_keeps_one_image_on_each_side():
    train, val = split_sources(["a", "b"], 0.9, seed=0)
    assert len(train) == 1 and len(val) == 1
    with pytest.raises(ValueError, match="at least 2 source images"):
        split_sources(["a"], 0.5, seed=0)


def test_grid_covers_the_image_flush_to_the_border():
    origins = grid_origins(300, 200, 128, 96)
    assert (0, 0) in origins and (300 - 128, 200 - 128) in origins
    assert all(y + 128 <= 300 and x + 128 <= 200 for y, x in origins)


def test_cut_patches_drops_flat_blurs_real_and_skips_small():
    rng = np.random.default_rng(0)
    image = np.zeros((256, 128, 3), dtype=np.float32) + 0.5  # top half flat
    image[128:] = rng.random((128, 128, 3), dtype=np.float32)
    kernel = make_blur_kernel(BlurConfig(type="gaussian", size=7, sigma=1.5))
    cfg = PatchesConfig(size=128, stride=128, max_per_image=10, min_std=0.02)
    cut = cut_patches(image, kernel, cfg, random.Random(0))
    assert cut.origins == [(128, 0)] and cut.dropped_flat == 1
    expected = conv_per_sample(cut.clean, torch.from_numpy(kernel).float()).clamp(0, 1)
    torch.testing.assert_close(cut.real, expected)
    assert cut.real.std() < cut.clean.std()
    assert cut_patches(image[:100], kernel, cfg, random.Random(0)) is None


def test_blur_kernel_variants(tmp_path):
    aniso = make_blur_kernel(BlurConfig(type="anisotropic", size=21, sigma_x=4.0, sigma_y=1.0, theta_deg=0.0))
    assert aniso.shape == (21, 21) and aniso.sum() == pytest.approx(1.0)
    assert aniso[10, :].sum() > aniso[:, 10].sum()  # wide along x
    path = tmp_path / "k.npy"
    np.save(path, np.ones((5, 5)))
    assert make_blur_kernel(BlurConfig(type="file", path=str(path))).sum() == pytest.approx(1.0)
    np.save(path, np.ones((4, 4)))
    with pytest.raises(ValueError, match="odd"):
        make_blur_kernel(BlurConfig(type="file", path=str(path)))
    with pytest.raises(FileNotFoundError, match="patches.blur.path"):
        make_blur_kernel(BlurConfig(type="file", path=str(tmp_path / "none.npy")))
    assert make_blur_kernel(BlurConfig(type="none")).shape == (1, 1)
    g = make_blur_kernel(BlurConfig(type="gaussian", size=13, sigma=3.0))
    assert 2.6 < float(effective_sigma(torch.from_numpy(g))) < 2.8
