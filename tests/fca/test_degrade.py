"""Tiled degradation equals the untiled generator operation; kernel estimation; folder round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fca.data.images import BadImageError, load_rgb
from fca.degrade import (
    AxisWeights,
    DegradeConfig,
    ImageTooSmallError,
    degrade_folder,
    degrade_image,
    estimate_image_kernel,
    tile_origins,
)
from fca.kernels import anisotropic_gaussian, conv_per_sample, effective_sigma, gaussian
from fca.resample import downscale, resize


class FixedSource:
    """Stand-in generator: the same Gaussian for every crop; records the crops it was shown."""

    def __init__(self, scale: float = 4.0, kernel_size: int = 13, sigma: float = 1.5):
        self.scale, self.kernel_size = scale, kernel_size
        self.kernel = torch.tensor(gaussian(kernel_size, sigma), dtype=torch.float32)
        self.seen: list[torch.Tensor] = []

    def estimate_kernel(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.kernel.expand(x.shape[0], -1, -1)


class ContentSource(FixedSource):
    """Stand-in whose kernel width follows the crop's mean brightness, so crops give different kernels."""

    def estimate_kernel(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        sig = [0.5 + 2.0 * float(xi.mean()) for xi in x]
        return torch.stack([torch.tensor(gaussian(self.kernel_size, s), dtype=torch.float32) for s in sig])


def _skew_kernel(k: int) -> torch.Tensor:
    """An asymmetric kernel, so a flipped or transposed convolution would show."""
    m = torch.tensor(anisotropic_gaussian(k, 2.0, 0.7, 30.0), dtype=torch.float32)
    m[0, 1] += 0.05
    return m / m.sum()


def _untiled(img: np.ndarray, scale: float, k: torch.Tensor) -> np.ndarray:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    if img.dtype == np.uint8:
        x = x / 255.0
    return conv_per_sample(downscale(x, scale), k)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize(
    "h, w, scale, ksize, work_tile",
    [
        (700, 900, 4, 13, 256),  # divisible by s
        (701, 903, 4, 7, 256),  # not divisible: torch's scale is 701/175, not 4
        (333, 517, 2, 13, 64),
        (130, 67, 2, 7, 24),  # tiles (12 LR px) smaller than the halo (3 LR px each side)
        (257, 301, 4, 13, 4000),  # one tile
        (259, 203, 2.5, 13, 100),  # fractional scale
    ],
)
def test_tiled_equals_untiled(h, w, scale, ksize, work_tile):
    img = np.random.default_rng(h + w).random((h, w, 3), dtype=np.float32)
    k = _skew_kernel(ksize)
    ref = _untiled(img, scale, k)
    out = degrade_image(FixedSource(scale, ksize), img, k, DegradeConfig(work_tile=work_tile))
    assert out.shape == ref.shape == (round(h / scale), round(w / scale), 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    # The borders in particular (reflect padding of the whole image, truncated resize support).
    for edge in (out[0], out[-1], out[:, 0], out[:, -1]):
        assert np.isfinite(edge).all()
    np.testing.assert_allclose(out[:, -1], ref[:, -1], rtol=0, atol=1e-5)


def test_uint8_and_tensor_inputs_match_their_float_versions():
    rng = np.random.default_rng(1)
    img8 = rng.integers(0, 256, (301, 257, 3), dtype=np.uint8)
    k = _skew_kernel(7)
    cfg = DegradeConfig(work_tile=64)
    src = FixedSource(2, 7)
    ref = _untiled(img8, 2, k)
    np.testing.assert_allclose(degrade_image(src, img8, k, cfg), ref, rtol=0, atol=1e-5)
    x = torch.from_numpy(img8).permute(2, 0, 1)[None].float() / 255.0
    np.testing.assert_allclose(degrade_image(src, x, k.numpy(), cfg), ref, rtol=0, atol=1e-5)


def test_tiled_result_does_not_depend_on_the_tile_size():
    img = np.random.default_rng(2).random((333, 401, 3), dtype=np.float32)
    k = _skew_kernel(13)
    a = degrade_image(FixedSource(4, 13), img, k, DegradeConfig(work_tile=48))
    b = degrade_image(FixedSource(4, 13), img, k, DegradeConfig(work_tile=1000))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "area"])
@pytest.mark.parametrize("n_in, n_out", [(101, 25), (100, 40), (37, 37), (9, 2)])
def test_axis_weights_are_torch_resize(mode, n_in, n_out):
    x = torch.rand(1, 2, n_in, 5)
    m = AxisWeights(n_in, n_out, mode).dense()
    ref = resize(x, (n_out, 5), mode)
    torch.testing.assert_close(m @ x, ref, rtol=0, atol=1e-6)
    # Banded application of a part of the matrix, from a block that holds just the inputs it reads.
    aw = AxisWeights(n_in, n_out, mode)
    o0, o1 = n_out // 3, n_out
    i0, i1 = aw.span(o0, o1)
    xs = x[0, 0]  # [n_in, 5]
    torch.testing.assert_close(aw.apply(o0, o1, xs[i0:i1], i0, group=3), (m @ xs)[o0:o1], rtol=0, atol=1e-6)


def test_image_too_small_for_the_kernel_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        degrade_image(FixedSource(4, 13), np.zeros((20, 200, 3), np.float32), _skew_kernel(13), DegradeConfig())


def test_bad_kernel_and_image_shapes_are_errors():
    img = np.zeros((64, 64, 3), np.float32)
    with pytest.raises(ValueError, match="odd"):
        degrade_image(FixedSource(2, 7), img, torch.ones(4, 4) / 16, DegradeConfig())
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        degrade_image(FixedSource(2, 7), np.zeros((64, 64)), _skew_kernel(7), DegradeConfig())


# --------------------------------------------------------------------------- kernel estimation


def test_tile_origins_cover_the_image_and_respect_max_tiles():
    o = tile_origins(1000, 3000, 256, 16)
    assert len(o) <= 16 and len(o) >= 12
    rows, cols = sorted({r for r, _ in o}), sorted({c for _, c in o})
    assert rows[0] == 0 and rows[-1] == 1000 - 256 and cols[0] == 0 and cols[-1] == 3000 - 256
    assert len(cols) > len(rows)  # a wide image gets more columns than rows
    assert tile_origins(1000, 1000, 256, 100) == [(r, c) for r in (0, 248, 496, 744) for c in (0, 248, 496, 744)]
    assert tile_origins(100, 50, 256, 16) == [(0, 0)]  # smaller than a tile: the whole image


def test_center_mode_uses_the_centre_crop():
    img = np.random.default_rng(3).random((300, 500, 3), dtype=np.float32)
    src = FixedSource()
    k = estimate_image_kernel(src, img, DegradeConfig(kernel_from="center", tile=128))
    assert len(src.seen) == 1
    crop = torch.from_numpy(img[86:214, 186:314]).permute(2, 0, 1)[None]
    torch.testing.assert_close(src.seen[0], crop)
    torch.testing.assert_close(k, src.kernel)
    # An image smaller than the tile is used whole.
    src = FixedSource()
    estimate_image_kernel(src, img[:100, :90], DegradeConfig(kernel_from="center", tile=128))
    assert src.seen[0].shape == (1, 3, 100, 90)


def test_tiles_mode_averages_textured_tiles_and_skips_flat_ones():
    rng = np.random.default_rng(4)
    img = np.full((256, 512, 3), 0.9, np.float32)  # left half flat and bright
    img[:, 256:] = rng.random((256, 256, 3), dtype=np.float32) * 0.4  # right half textured, darker
    cfg = DegradeConfig(kernel_from="tiles", tile=128, max_tiles=8, min_std=0.02)
    src = ContentSource(kernel_size=13)
    k = estimate_image_kernel(src, img, cfg)
    assert len(src.seen) == 4  # of the 2 x 4 grid, only the 4 textured tiles
    assert all(float(x.std()) > 0.05 for x in src.seen)
    expect = torch.stack([src.estimate_kernel(x)[0] for x in src.seen[:4]]).mean(0)
    torch.testing.assert_close(k, expect / expect.sum())
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6) and float(k.min()) >= 0
    # With no texture anywhere, every tile counts (not zero tiles).
    src = ContentSource(kernel_size=13)
    estimate_image_kernel(src, np.full((256, 512, 3), 0.5, np.float32), cfg)
    assert len(src.seen) == 8


def test_tiles_and_center_differ_when_content_does():
    rng = np.random.default_rng(5)
    img = rng.random((384, 384, 3), dtype=np.float32) * 0.2 + 0.8  # bright: wide kernels
    img[128:256, 128:256] *= 0.25  # a dark centre: a narrow kernel
    cfg = dict(tile=128, max_tiles=9, min_std=0.0)
    kc = estimate_image_kernel(ContentSource(), img, DegradeConfig(kernel_from="center", **cfg))
    kt = estimate_image_kernel(ContentSource(), img, DegradeConfig(kernel_from="tiles", **cfg))
    assert float(effective_sigma(kt.double())) > float(effective_sigma(kc.double())) + 0.1


# --------------------------------------------------------------------------- folders


def _write(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    _write(d / "a.png", 96, 128, 0)
    _write(d / "sub" / "b.jpg", 101, 75, 1)
    (d / "broken.png").write_bytes(b"not a png at all")
    return d


def test_folder_error_mode_names_the_bad_file_and_leaves_nothing(photos: Path, tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(BadImageError, match="broken.png"):
        degrade_folder(FixedSource(2, 7), photos, out, DegradeConfig(tile=32, on_bad_image="error"), progress=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary folder left behind


def test_folder_skip_mode_round_trip(photos: Path, tmp_path: Path):
    out = tmp_path / "out"
    src = FixedSource(2, 7)
    steps = []
    cfg = DegradeConfig(tile=32, on_bad_image="skip", work_tile=40)
    m = degrade_folder(src, photos, out, cfg, progress=False, on_step=lambda i, d: steps.append((i, d)))
    assert list(m.file) == ["a.png", "broken.png", "sub/b.jpg"]
    assert list(m.status) == ["ok", "skipped", "ok"]
    assert m.reason[1] and m.reason[0] == m.reason[2] == ""
    assert [s[0] for s in steps] == [0, 2]
    csv = pd.read_csv(out / "manifest.csv")
    assert list(csv.file) == list(m.file) and list(csv.status) == list(m.status)
    ok = m[m.status == "ok"].set_index("file")
    assert (ok.loc["sub/b.jpg", ["width", "height", "lr_width", "lr_height"]].tolist()) == [75, 101, 38, 50]
    for rel, stem in (("a.png", "a"), ("sub/b.jpg", "sub/b")):
        lr = load_rgb(out / "lr" / f"{stem}.png")
        k = np.load(out / "kernels" / f"{stem}.npy")
        assert k.dtype == np.float32 and k.shape == (7, 7) and k.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(k, src.kernel.numpy(), atol=1e-6)
        assert ok.loc[rel, "kernel_sigma"] == pytest.approx(float(effective_sigma(torch.from_numpy(k).double())), abs=1e-5)
        expect = degrade_image(src, load_rgb(photos / rel), torch.from_numpy(k), cfg)
        assert lr.shape == expect.shape == (ok.loc[rel, "lr_height"], ok.loc[rel, "lr_width"], 3)
        assert np.abs(lr - np.clip(expect, 0, 1)).max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
        pic = np.asarray(Image.open(out / "kernels" / f"{stem}.png"))
        assert pic.shape == (56, 56, 3) and pic.max() > 200  # viridis RGB, 8x nearest
        assert ok.loc[rel, "lr_file"] == f"lr/{stem}.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_folder_refuses_to_overwrite_unless_asked(photos: Path, tmp_path: Path):
    (photos / "broken.png").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    cfg = DegradeConfig(tile=32)
    with pytest.raises(FileExistsError, match="overwrite"):
        degrade_folder(FixedSource(2, 7), photos, out, cfg, progress=False)
    assert (out / "mine.txt").read_text() == "user data"
    degrade_folder(FixedSource(2, 7), photos, out, cfg, progress=False, overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "lr" / "a.png").is_file()
    # An existing empty folder (e.g. made by the workflow engine) is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    degrade_folder(FixedSource(2, 7), photos, empty, cfg, progress=False)
    assert (empty / "manifest.csv").is_file()


def test_folder_guards(photos: Path, tmp_path: Path):
    cfg = DegradeConfig(tile=32, on_bad_image="skip")
    with pytest.raises(ValueError, match="contain one another"):
        degrade_folder(FixedSource(2, 7), photos, photos / "lr_out", cfg, progress=False)
    _write(photos / "a.jpg", 64, 64, 2)
    with pytest.raises(ValueError, match="a.jpg and a.png|a.png and a.jpg"):
        degrade_folder(FixedSource(2, 7), photos, tmp_path / "out", cfg, progress=False)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        degrade_folder(FixedSource(2, 7), empty, tmp_path / "out2", cfg, progress=False)


def test_folder_too_small_image_follows_on_bad_image(tmp_path: Path):
    d = tmp_path / "in"
    _write(d / "big.png", 64, 64, 0)
    _write(d / "tiny.png", 10, 64, 1)  # x2 LR is 5 rows, a 13x13 kernel needs more than 6
    m = degrade_folder(FixedSource(2, 13), d, tmp_path / "out", DegradeConfig(tile=32, on_bad_image="skip"), progress=False)
    assert list(m.status) == ["ok", "skipped"] and "too small" in m.reason[1]
    assert m.width[1] == 64 and m.height[1] == 10
    with pytest.raises(ImageTooSmallError, match="tiny.png"):
        degrade_folder(FixedSource(2, 13), d, tmp_path / "out3", DegradeConfig(tile=32), progress=False)


def test_the_real_generator_is_a_kernel_source_and_matches_its_own_forward():
    from fca.models.generator_arch import Generator

    torch.manual_seed(0)
    g = Generator(scale=2.0, kernel_size=7, channels=8, dense_blocks=1, res_blocks=1).eval()
    img = np.random.default_rng(7).random((97, 131, 3), dtype=np.float32)
    cfg = DegradeConfig(kernel_from="center", tile=256, work_tile=48)
    k = estimate_image_kernel(g, img, cfg)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        lr_ref, k_ref = g(x)  # the whole image is the centre crop here
    torch.testing.assert_close(k, k_ref[0], rtol=0, atol=1e-6)
    out = degrade_image(g, img, k, cfg)
    np.testing.assert_allclose(out, lr_ref[0].permute(1, 2, 0).numpy(), rtol=0, atol=1e-5)
