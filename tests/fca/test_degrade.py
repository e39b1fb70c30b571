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
from fca.fsutil import NotOurFolderError, is_fca_output
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
    # overwrite replaces only a folder that fca wrote: a user's folder is named and left alone.
    with pytest.raises(NotOurFolderError, match=r"out: folder exists, is not empty and was not written by fca"):
        degrade_folder(FixedSource(2, 7), photos, out, cfg, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"] and (out / "mine.txt").read_text() == "user data"
    ours = tmp_path / "ours"
    degrade_folder(FixedSource(2, 7), photos, ours, cfg, progress=False)
    assert is_fca_output(ours)
    (ours / "lr" / "a.png").unlink()
    with pytest.raises(FileExistsError, match="overwrite"):
        degrade_folder(FixedSource(2, 7), photos, ours, cfg, progress=False)
    degrade_folder(FixedSource(2, 7), photos, ours, cfg, progress=False, overwrite=True)
    assert (ours / "lr" / "a.png").is_file() and is_fca_output(ours)
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


# --------------------------------------------------------------------------- hostile inputs through `fca degrade`


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A valid 1x1 PNG whose IHDR then claims width x height, its CRC recomputed."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def _jpeg_claiming(path: Path, width: int, height: int) -> None:
    import io
    import struct

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


def _png16(path: Path, arr: np.ndarray) -> None:
    import struct
    import zlib

    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _hostile_corpus(d: Path, outside: Path) -> dict[str, tuple[str, str]]:
    """Write the corpus into d; returns {file (as the manifest names it): (status, what the reason or check says)}."""
    import os

    tifffile = pytest.importorskip("tifffile")
    d.mkdir(parents=True)
    expect: dict[str, tuple[str, str]] = {}

    def ok(name, what=""):
        expect[name] = ("ok", what)

    # -- images that must come out right
    Image.fromarray(_noise(64, 48, 0)).save(d / "rgb.png"); ok("rgb.png")
    Image.fromarray(_noise(64, 64, 1)).save(d / "photo_jpg.jpg", quality=90); ok("photo_jpg.jpg")
    Image.fromarray(_noise(64, 64, 2)).save(d / "photo_webp.webp"); ok("photo_webp.webp")
    Image.fromarray(_noise(64, 64, 3)).save(d / "photo_bmp.bmp"); ok("photo_bmp.bmp")
    Image.fromarray(_noise(64, 64, 4)).save(d / "photo_tga.tga"); ok("photo_tga.tga")
    Image.fromarray(_noise(48, 48, 5)).save(d / "icon.ico", sizes=[(48, 48)]); ok("icon.ico")
    Image.fromarray(_noise(64, 64, 6)).save(d / "photo_ppm.ppm"); ok("photo_ppm.ppm")
    _png16(d / "rgb16.png", np.random.default_rng(7).integers(0, 65536, (64, 64, 3)).astype(np.uint16)); ok("rgb16.png")
    Image.fromarray(np.random.default_rng(8).integers(0, 65536, (64, 64)).astype(np.uint16)).save(d / "grey16.png"); ok("grey16.png")
    tifffile.imwrite(d / "u32.tif", np.full((64, 64), 2**31, np.uint32)); ok("u32.tif", "mid-grey")  # 0.5 of the 32-bit range
    tifffile.imwrite(d / "f32.tif", np.full((64, 64), 0.25, np.float32)); ok("f32.tif", "quarter-grey")
    tifffile.imwrite(d / "pages.tif", np.stack([np.full((64, 64), 250, np.uint8), np.zeros((64, 64), np.uint8)])); ok("pages.tif", "white")
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(d / "cmyk.jpg"); ok("cmyk.jpg", "red")
    Image.new("LAB", (64, 64), (50, 0, 0)).save(d / "lab.tif"); ok("lab.tif")
    pal = Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 4).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    pal.save(d / "palette.png"); ok("palette.png")
    pal.save(d / "palette_transparent.png", transparency=3); ok("palette_transparent.png")
    Image.fromarray(np.dstack([_noise(64, 64, 9)[..., 0], np.full((64, 64), 128, np.uint8)]), "LA").save(d / "la.png"); ok("la.png")
    Image.fromarray(np.dstack([_noise(64, 64, 10), np.full((64, 64, 1), 0, np.uint8)]), "RGBA").save(d / "rgba_clear.png"); ok("rgba_clear.png", "white")
    Image.fromarray(_noise(64, 64, 11)[..., 0]).save(d / "grey.jpg"); ok("grey.jpg")
    Image.fromarray(_noise(64, 64, 12)[..., 0] > 127).save(d / "bilevel.png"); ok("bilevel.png")
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=50); ok("animated.gif", "red")
    frames[0].save(d / "animated_webp.webp", save_all=True, append_images=frames[1:], duration=50, lossless=True); ok("animated_webp.webp", "red")
    rot = Image.fromarray(_noise(64, 32, 13))
    exif = rot.getexif()
    exif[0x0112] = 6
    rot.save(d / "rotated.jpg", exif=exif); ok("rotated.jpg", "rotated")  # stored 32 wide, shown 64 wide
    (d / "pgm16.pgm").write_bytes(b"P5\n64 64\n1000\n" + np.full((64, 64), 500, ">u2").tobytes()); ok("pgm16.pgm", "mid-grey")
    (d / "x.png").mkdir()  # a folder named like an image: searched like any folder
    Image.fromarray(_noise(64, 64, 14)).save(d / "x.png" / "inner.jpg"); ok("x.png/inner.jpg")
    (d / "empty_folder.png").mkdir()

    # -- unreadable, too small, too large: skipped, the reason named
    def skipped(name, why):
        expect[name] = ("skipped", why)

    full = (d / "rgb.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 2]); skipped("truncated.png", "truncated")
    jpg = (d / "photo_jpg.jpg").read_bytes()
    (d / "truncated_jpg.jpg").write_bytes(jpg[: len(jpg) // 2]); skipped("truncated_jpg.jpg", "truncated")
    (d / "empty.png").write_bytes(b""); skipped("empty.png", "cannot identify image file")
    (d / "text.png").write_text("just some text\n"); skipped("text.png", "cannot identify image file")
    (d / "garbage.tif").write_bytes(os.urandom(300)); skipped("garbage.tif", "cannot")
    (d / "header_only.gif").write_bytes(b"GIF89a\x40\x00\x40\x00"); skipped("header_only.gif", "cannot")
    Image.new("RGB", (1, 1)).save(d / "one_pixel.png"); skipped("one_pixel.png", "1x1 is too small")
    _png_claiming(d / "bomb.png", 100_000, 100_000); skipped("bomb.png", "100000 x 100000 = 10000000000 pixels exceeds --max-pixels 1000000000")
    _jpeg_claiming(d / "bomb_jpg.jpg", 60_000, 60_000); skipped("bomb_jpg.jpg", "60000 x 60000 = 3600000000 pixels exceeds --max-pixels")
    tifffile.imwrite(d / "hdr.tif", np.full((64, 64), 3.0, np.float32)); skipped("hdr.tif", "float image with values in [3, 3]: expected [0, 1]")
    tifffile.imwrite(d / "negative.tif", np.full((64, 64), -7, np.int32)); skipped("negative.tif", "signed 32-bit TIFF with negative values")
    tifffile.imwrite(d / "nan.tif", np.full((64, 64), np.nan, np.float32)); skipped("nan.tif", "NaN")

    # -- not image files: ignored, the reason named
    def ignored(name, why):
        expect[name] = ("ignored", why)

    (d / "notes.txt").write_text("x"); ignored("notes.txt", "suffix '.txt' is not a format this tool reads")
    (d / "archive.zip").write_bytes(b"PK\x05\x06" + bytes(18)); ignored("archive.zip", "suffix '.zip'")
    (d / "README").write_text("x"); ignored("README", "no file suffix")
    (d / "vector.eps").write_text("%!PS-Adobe-3.0 EPSF-3.0\n"); ignored("vector.eps", "external programs")
    (d / ".hidden.png").write_bytes(full); ignored(".hidden.png", "hidden file")
    (d / "._rgb.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork"); ignored("._rgb.png", "hidden file")
    (d / "__MACOSX").mkdir()
    (d / "__MACOSX" / "rgb.png").write_bytes(full); ignored("__MACOSX", "macOS metadata folder")
    (d / "outside_link.png").symlink_to(outside); ignored("outside_link.png", "outside the input folder: not followed")
    (d / "etc_passwd.png").symlink_to("/etc/passwd"); ignored("etc_passwd.png", "outside the input folder")
    (d / "dev_zero.png").symlink_to("/dev/zero"); ignored("dev_zero.png", "outside the input folder")
    (d / "broken_link.png").symlink_to(d / "nowhere.png"); ignored("broken_link.png", "broken symbolic link")
    (d / "folder_link.png").symlink_to(d / "x.png"); ignored("folder_link.png", "symbolic link to a folder")
    os.mkfifo(d / "pipe.png"); ignored("pipe.png", "a fifo, not an image file")
    (d / os.fsdecode(b"caf\xe9.png")).write_bytes(full); ignored("caf\\xe9.png", "not valid UTF-8")
    (d / "inside_link.png").symlink_to(d / "rgb.png"); ok("inside_link.png")
    return expect


def _tiny_generator(path: Path, domain: dict | None = None) -> None:
    from fca.train.checkpoint import save_checkpoint
    from fca.train.generator import GeneratorConfig, build_generator

    config = GeneratorConfig(scale=4.0, kernel_size=7, channels=8, dense_blocks=1, res_blocks=1, wd_channels=8)
    torch.manual_seed(0)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in __import__("dataclasses").asdict(config).items()}
    save_checkpoint(path, {"config": plain, "generator": build_generator(config).state_dict(), "step": 1}
                    | ({"domain": domain} if domain is not None else {}))


def _with_defaults(raw: dict) -> dict:
    """The tiny params, with any key they lack (a section's newest options) at its default."""
    from pipeline.params import with_defaults

    return with_defaults(raw)


def _snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every entry under root except `skip`: (kind, size, mtime_ns, link target)."""
    import os

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [n for n in dirnames if Path(dirpath, n) != skip]
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            st = p.lstat()
            out[os.fsencode(p.relative_to(root)).decode("utf-8", "backslashreplace")] = (
                st.st_mode, st.st_size, st.st_mtime_ns, os.readlink(p) if p.is_symlink() else None)
    return out


def test_a_hostile_corpus_through_fca_degrade(tmp_path, monkeypatch, capsys):
    import yaml

    from pipeline import cli

    ROOT = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("FCA_TRACKING", "off")
    monkeypatch.delenv("FCA_MAX_PIXELS", raising=False)
    outside = tmp_path / "private" / "secret.png"
    outside.parent.mkdir()
    Image.fromarray(_noise(64, 64, 99)).save(outside)
    expect = _hostile_corpus(tmp_path / "in", outside)
    assert len(expect) >= 30
    _tiny_generator(tmp_path / "generator.pt")
    raw = _with_defaults(yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text()))
    raw["degrade"].update(on_bad_image="skip", tile=32, work_tile=40)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    before = _snapshot(tmp_path, tmp_path / "out")

    code = cli.main(["degrade", "--params", str(tmp_path / "params.yaml"), "--checkpoint", str(tmp_path / "generator.pt"),
                     "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert _snapshot(tmp_path, tmp_path / "out") == before  # nothing outside the output changed (inputs, links, temp, locks)

    m = pd.read_csv(tmp_path / "out" / "manifest.csv")
    got = dict(zip(m.file, zip(m.status, m.reason.fillna(""))))
    assert sorted(got) == sorted(expect), set(got) ^ set(expect)
    for name, (status, what) in expect.items():
        assert got[name][0] == status, (name, got[name])
        if status != "ok":
            assert what in got[name][1], (name, got[name][1], got)
    n_ok = sum(s == "ok" for s, _ in expect.values())
    assert f"degrade: {n_ok} images degraded" in printed.out and "skipped" in printed.out and "ignored" in printed.out

    rows = m.set_index("file")
    for name, (status, what) in expect.items():
        if status != "ok":
            continue
        lr = load_rgb(tmp_path / "out" / rows.loc[name, "lr_file"])
        assert lr.shape == (rows.loc[name, "lr_height"], rows.loc[name, "lr_width"], 3)
        assert np.isfinite(np.load(tmp_path / "out" / rows.loc[name, "kernel_file"])).all()
        centre = lr[lr.shape[0] // 2, lr.shape[1] // 2]
        if what == "mid-grey":
            np.testing.assert_allclose(centre, 0.5, atol=0.02)
        elif what == "quarter-grey":
            np.testing.assert_allclose(centre, 0.25, atol=0.02)
        elif what == "white":
            np.testing.assert_allclose(centre, [1, 1, 1], atol=0.03)
        elif what == "red":
            assert centre[0] > 0.8 and centre[1] < 0.2 and centre[2] < 0.2, (name, centre)
        elif what == "rotated":
            assert (rows.loc[name, "width"], rows.loc[name, "height"]) == (64, 32)
    assert (rows.loc["rgb16.png", "width"], rows.loc["x.png/inner.jpg", "lr_file"]) == (64, "lr/x.png/inner.png")
    assert not (tmp_path / "out" / "lr" / "outside_link.png").exists()  # the private file was not read


def test_a_second_writer_of_the_same_output_fails_naming_the_first(photos: Path, tmp_path: Path):
    import os
    import subprocess
    import sys

    from fca.fsutil import OutputBusyError

    (photos / "broken.png").unlink()
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fca.fsutil import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(tmp_path / "out")],
        env=dict(os.environ, PYTHONPATH=str(root)), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=rf"out is being written by another process \(pid {holder.pid}\)"):
            degrade_folder(FixedSource(2, 7), photos, tmp_path / "out", DegradeConfig(tile=32), progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out").exists()
    degrade_folder(FixedSource(2, 7), photos, tmp_path / "out", DegradeConfig(tile=32), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_inputs_whose_outputs_would_collide_are_named(tmp_path: Path):
    d = tmp_path / "in"
    _write(d / "x.png", 64, 64, 0)
    _write(d / "x" / "y.jpg", 64, 64, 1)  # lr/x.png and lr/x/y.png: no clash
    _write(d / "clash.png" / "b.png", 64, 64, 2)  # a folder named like an image: lr/clash.png/b.png
    m = degrade_folder(FixedSource(2, 7), d, tmp_path / "ok", DegradeConfig(tile=32), progress=False)
    assert list(m.lr_file) == ["lr/clash.png/b.png", "lr/x.png", "lr/x/y.png"]
    _write(d / "clash.jpg", 64, 64, 3)  # lr/clash.png, a file, where lr/clash.png/ must be a folder
    with pytest.raises(ValueError, match=r"clash.jpg and clash.png/b.png would both be written as clash.png"):
        degrade_folder(FixedSource(2, 7), d, tmp_path / "bad", DegradeConfig(tile=32), progress=False)
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- `fca degrade --pairs`: HR/LR training sets

ROOT = Path(__file__).resolve().parents[2]


def _basicsr_style_pairs(gt_root: Path, lq_root: Path, meta_info: Path | None = None) -> list[tuple[Path, Path]]:
    """(GT path, LQ path) pairs as a BasicSR-style paired loader finds them (its documented
    behaviour, written here without BasicSR):
    - folder mode (no meta_info): the files directly in each folder (no subfolders, no hidden
      files); both folders must hold as many; each GT file's LQ partner is the LQ-folder file
      with the GT file's base name *and extension*, and it must exist;
    - meta_info mode: each line is `NAME (H,W,C)`; the name is the text before the line's first
      space, a path under the GT folder; the LQ partner is the LQ-folder file with NAME's base
      name (its subfolders dropped)."""
    if meta_info is None:
        gts = sorted(p.name for p in gt_root.iterdir() if p.is_file() and not p.name.startswith("."))
        lqs = {p.name for p in lq_root.iterdir() if p.is_file() and not p.name.startswith(".")}
        assert len(gts) == len(lqs), (gts, sorted(lqs))
        assert all(name in lqs for name in gts), (gts, sorted(lqs))
        return [(gt_root / name, lq_root / name) for name in gts]
    names = [line.split(" ")[0] for line in meta_info.read_text().splitlines()]
    return [(gt_root / name, lq_root / Path(name).name) for name in names]


def _paired_random_crop(gt: np.ndarray, lq: np.ndarray, gt_size: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The loaders' training crop: GT must be exactly scale x LQ, or it refuses ("Scale mismatches")."""
    if gt.shape[0] != lq.shape[0] * scale or gt.shape[1] != lq.shape[1] * scale:
        raise ValueError(f"Scale mismatches. GT {gt.shape[:2]} is not {scale}x LQ {lq.shape[:2]}")
    lq_size = gt_size // scale
    top, left = lq.shape[0] - lq_size, lq.shape[1] - lq_size  # the last position: any crop must fit
    return gt[top * scale : (top + lq_size) * scale, left * scale : (left + lq_size) * scale], lq[top : top + lq_size, left : left + lq_size]


def _png_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB", (path, im.format, im.mode)
        return np.asarray(im)


def _run_degrade(args: list[str], capsys) -> tuple[int, str, str]:
    from pipeline import cli

    code = cli.main(["degrade", "--no-progress", "--device", "cpu", *args])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def test_pairs_are_read_by_a_basicsr_style_paired_loader(tmp_path, monkeypatch, capsys):
    """The contract: hr/ and lr_x4/ pair by identical file name, HR = 4 x LR everywhere, PNG,
    meta_info.txt lists exactly those pairs with the HR sizes, in both loader modes."""
    from fca.train.generator import load_generator

    monkeypatch.setenv("FCA_TRACKING", "off")
    d = tmp_path / "photos"
    _write(d / "chelsea.png", 300, 451, 0)  # 451 wide: mod-crop to 448, LR 112x75
    Image.fromarray(_noise(123, 201, 1)).save(d / "my photo.jpg", quality=95)  # a space, and not .png
    Image.fromarray(_noise(130, 97, 2)).save(d / "leaf.webp", lossless=True)
    _write(d / "sub" / "deep.png", 64, 66, 3)  # in a subfolder: flattened
    (d / "notes.txt").write_text("not an image")
    _tiny_generator(tmp_path / "generator.pt")
    work = tmp_path / "work"  # the user's folder: no params.yaml
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = _run_degrade(["--checkpoint", str(tmp_path / "generator.pt"), "--input", str(d), "--pairs", "x4"], capsys)
    assert code == 0, err
    assert "4 HR/LR pairs written into x4" in out and "1 files not images" in out
    root = work / "x4"
    assert is_fca_output(root)
    assert sorted(p.name for p in root.iterdir()) == [".fca-output", "hr", "kernels", "lr_x4", "manifest.csv", "meta_info.txt",
                                                     "meta_info_realesrgan.txt"]

    expect = {"chelsea.png": (300, 448), "my_photo.png": (120, 200), "leaf.png": (128, 96), "sub_deep.png": (64, 64)}
    by_folder = _basicsr_style_pairs(root / "hr", root / "lr_x4")
    by_meta = _basicsr_style_pairs(root / "hr", root / "lr_x4", root / "meta_info.txt")
    assert by_folder == by_meta
    # Real-ESRGAN's paired dataset: each line `gt, lq`, split on ", ", joined to dataroot_gt / dataroot_lq (both OUT).
    lines = (root / "meta_info_realesrgan.txt").read_text().splitlines()
    assert [(root / gt, root / lq) for gt, lq in (line.split(", ") for line in lines)] == by_folder
    assert sorted(gt.name for gt, _ in by_folder) == sorted(expect)
    meta = (root / "meta_info.txt").read_text()
    assert meta == "".join(f"{name} ({h},{w},3)\n" for name, (h, w) in sorted(expect.items()))
    for gt_path, lq_path in by_folder:
        gt, lq = _png_rgb(gt_path), _png_rgb(lq_path)
        assert gt.shape == (*expect[gt_path.name], 3)
        assert gt.shape == (4 * lq.shape[0], 4 * lq.shape[1], 3)
        g, q = _paired_random_crop(gt, lq, 64, 4)
        assert g.shape == (64, 64, 3) and q.shape == (16, 16, 3)

    # HR is the input's top-left crop; LR and kernel are the generator's, from that HR.
    m = pd.read_csv(root / "manifest.csv").set_index("file")
    assert m.loc["notes.txt", "status"] == "ignored"
    gen = load_generator(tmp_path / "generator.pt")
    for rel in ("chelsea.png", "my photo.jpg", "leaf.webp", "sub/deep.png"):
        r = m.loc[rel]
        assert r.status == "ok" and r.hr_file == f"hr/{Path(r.lr_file).name}" and r.lr_file.startswith("lr_x4/")
        assert (r.width, r.height) == load_rgb(d / rel).shape[1::-1] and (r.hr_width, r.hr_height) == (4 * r.lr_width, 4 * r.lr_height)
        hr = _png_rgb(root / r.hr_file)
        np.testing.assert_array_equal(hr, load_rgb(d / rel, uint8=True)[: hr.shape[0], : hr.shape[1]])
        k = np.load(root / r.kernel_file)
        np.testing.assert_allclose(k, estimate_image_kernel(gen, hr, DegradeConfig()).numpy(), rtol=0, atol=1e-6)
        ref = np.clip(degrade_image(gen, hr, torch.from_numpy(k), DegradeConfig()), 0, 1)
        assert np.abs(load_rgb(root / r.lr_file) - ref).max() <= 0.5 / 255 + 1e-6
    assert sorted(p.name for p in work.iterdir()) == ["x4"]  # nothing else written in the user's folder


def test_the_unpaired_layout_fails_that_loader(tmp_path):
    """Why --pairs exists: --output's lr/ beside the photos has no HR of a matching size or name."""
    d = tmp_path / "in"
    _write(d / "chelsea.png", 300, 451, 0)
    degrade_folder(FixedSource(4, 7), d, tmp_path / "out", DegradeConfig(tile=64), progress=False)
    (gt, lq), = _basicsr_style_pairs(d, tmp_path / "out" / "lr")
    with pytest.raises(ValueError, match="Scale mismatches"):
        _paired_random_crop(_png_rgb(gt), _png_rgb(lq), 64, 4)


@pytest.mark.parametrize("mode", ["--pairs", "--output"])
def test_fca_degrade_runs_from_a_folder_without_params_yaml(tmp_path, mode):
    """A user's folder: relative paths, no params.yaml, a fresh process."""
    import os
    import subprocess
    import sys

    work = tmp_path / "my_photos_project"
    _write(work / "photos" / "a.png", 80, 90, 0)
    # The demo's generator: it learned the synthetic camera of `make run`'s patches stage.
    _tiny_generator(work / "generator.pt", {"kernel_known": True, "kernel_type": "gaussian", "noise": "none"})
    # No tracking asked for, in a folder that is no project: nothing but the output is written there.
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for var in ("FCA_DEBUG", "FCA_TRACKING", "MLFLOW_TRACKING_URI", "FCA_PIPELINE_ID"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "pipeline.cli", "degrade", "--checkpoint", "generator.pt", "--input", "photos", mode, "out",
           "--no-progress", "--device", "cpu"]
    run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "params file not found" not in run.stderr and "settings from built-in defaults" in run.stderr
    assert sorted(p.name for p in work.iterdir()) == ["generator.pt", "out", "photos"]  # no mlflow.db, no mlruns/
    assert "warning: generator.pt learned a synthetic camera (photos blurred by a known gaussian kernel" in run.stderr
    assert "presets/photos.yaml" in run.stderr
    if mode == "--pairs":
        assert (work / "out" / "meta_info.txt").read_text() == "a.png (80,88,3)\n"
        assert _png_rgb(work / "out" / "lr_x4" / "a.png").shape == (20, 22, 3)
    else:
        assert _png_rgb(work / "out" / "lr" / "a.png").shape == (20, 22, 3)


def test_a_generator_of_photos_as_they_are_gets_no_warning(tmp_path):
    from pipeline.degrade import domain_warning

    _tiny_generator(tmp_path / "photos.pt", {"kernel_known": False, "kernel_type": "none", "noise": "none"})
    _tiny_generator(tmp_path / "old.pt")  # a checkpoint from before the domain was recorded
    _tiny_generator(tmp_path / "noisy.pt", {"kernel_known": True, "kernel_type": "gaussian", "noise": "poisson_gaussian"})
    assert domain_warning(tmp_path / "photos.pt") is None and domain_warning(tmp_path / "old.pt") is None
    assert "known gaussian kernel with poisson_gaussian noise" in domain_warning(tmp_path / "noisy.pt")


@pytest.mark.parametrize("option, value, message", [
    ("--tile", "8", "--tile = 8: must be >= 16"),
    ("--tile", "abc", "--tile abc: expected a whole number"),
    ("--max-tiles", "2.5", "--max-tiles 2.5: expected a whole number"),
    ("--work-tile", "1e9", "--work-tile = 1000000000: must be <= 16384"),
    ("--min-std", "nan", "--min-std nan: expected a finite number"),
    ("--min-std", "-0.5", "--min-std = -0.5: must be >= 0"),
    ("--kernel-from", "middle", "--kernel-from = 'middle': must be one of ['center', 'tiles']"),
    ("--on-bad-image", "ignore", "--on-bad-image = 'ignore': must be one of ['error', 'skip']"),
])
def test_a_bad_option_value_is_one_line_naming_it(tmp_path, monkeypatch, capsys, option, value, message):
    monkeypatch.setenv("FCA_TRACKING", "off")
    monkeypatch.delenv("FCA_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "in" / "a.png", 64, 64, 0)
    _tiny_generator(tmp_path / "generator.pt")
    code, out, err = _run_degrade(["--checkpoint", "generator.pt", "--input", "in", "--pairs", "out", option, value], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [f"fca degrade: error: {message}"], err
    assert "Traceback" not in err and "usage:" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator.pt", "in"]


def test_settings_come_from_options_over_the_params_file_over_the_defaults(tmp_path, monkeypatch, capsys, caplog):
    """./params.yaml is read when present (the pipeline's case), --params FILE when given;
    an option beats both; with neither, the built-in defaults (on_bad_image: error) hold."""
    import logging

    import yaml

    caplog.set_level(logging.INFO, logger="fca")
    monkeypatch.setenv("FCA_TRACKING", "off")
    _write(tmp_path / "in" / "a.png", 64, 64, 0)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    _tiny_generator(tmp_path / "generator.pt")
    raw = _with_defaults(yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text()))
    raw["degrade"].update(on_bad_image="skip", tile=32)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    common = ["--checkpoint", str(tmp_path / "generator.pt"), "--input", str(tmp_path / "in")]

    monkeypatch.chdir(elsewhere)  # no params.yaml: the defaults, so the broken image stops the run
    code, _, err = _run_degrade([*common, "--pairs", "o1"], capsys)
    assert code == 2 and "broken.png" in err and "settings from built-in defaults" in caplog.text
    code, _, err = _run_degrade([*common, "--pairs", "o2", "--params", str(project / "params.yaml")], capsys)
    assert code == 0, err
    assert "skipped" in pd.read_csv(elsewhere / "o2" / "manifest.csv").status.tolist()
    code, _, err = _run_degrade([*common, "--pairs", "o3", "--on-bad-image", "skip"], capsys)
    assert code == 0, err

    monkeypatch.chdir(project)  # ./params.yaml is read (tile 32 and skip), an option overrides it
    caplog.clear()
    code, _, err = _run_degrade([*common, "--pairs", "o4"], capsys)
    assert code == 0, err
    assert "settings from params.yaml (degrade section): kernel_from=tiles, tile=32," in caplog.text and "on_bad_image=skip" in caplog.text
    caplog.clear()
    code, _, err = _run_degrade([*common, "--pairs", "o5", "--on-bad-image", "error", "--tile", "48"], capsys)
    assert code == 2 and "broken.png" in err
    assert "params.yaml (degrade section), options --tile, --on-bad-image: kernel_from=tiles, tile=48," in caplog.text
    assert not (project / "o5").exists()
    # A params.yaml that does not validate is named, with why it was read.
    (project / "params.yaml").write_text("degrade: {tile: 8}\n")
    code, _, err = _run_degrade([*common, "--pairs", "o6"], capsys)
    assert code == 2 and "params.yaml is read because it is in the current folder" in err


def test_pairs_names_that_collide_are_named_before_any_work(tmp_path):
    d = tmp_path / "in"
    _write(d / "my photo.jpg", 64, 64, 0)
    _write(d / "my_photo.png", 64, 64, 1)
    src = FixedSource(4, 7)
    with pytest.raises(ValueError, match=r"my photo.jpg and my_photo.png would both be written as my_photo.png|"
                                         r"my_photo.png and my photo.jpg would both be written as my_photo.png"):
        degrade_folder(src, d, tmp_path / "out", DegradeConfig(tile=32), progress=False, pairs=True)
    (d / "my_photo.png").unlink()
    _write(d / "sub" / "x.png", 64, 64, 2)
    _write(d / "sub_x.bmp", 64, 64, 3)
    with pytest.raises(ValueError, match=r"would both be written as sub_x.png"):
        degrade_folder(src, d, tmp_path / "out", DegradeConfig(tile=32), progress=False, pairs=True)
    assert not src.seen and not (tmp_path / "out").exists()


def test_pairs_are_atomic_and_refuse_to_overwrite(photos: Path, tmp_path: Path):
    out = tmp_path / "pairs"
    cfg = DegradeConfig(tile=32)
    with pytest.raises(BadImageError, match="broken.png"):  # a failure leaves nothing behind
        degrade_folder(FixedSource(2, 7), photos, out, cfg, progress=False, pairs=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    (photos / "broken.png").unlink()
    m = degrade_folder(FixedSource(2, 7), photos, out, cfg, progress=False, pairs=True)
    assert list(m.hr_file) == ["hr/a.png", "hr/sub_b.png"] and list(m.lr_file) == ["lr_x2/a.png", "lr_x2/sub_b.png"]
    assert (out / "meta_info.txt").read_text() == "a.png (96,128,3)\nsub_b.png (100,74,3)\n"  # b.jpg: 75x101, cropped to 74x100
    with pytest.raises(FileExistsError, match="overwrite"):
        degrade_folder(FixedSource(2, 7), photos, out, cfg, progress=False, pairs=True)
    (out / "hr" / "a.png").unlink()
    degrade_folder(FixedSource(2, 7), photos, out, cfg, progress=False, pairs=True, overwrite=True)
    assert (out / "hr" / "a.png").is_file() and is_fca_output(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "pairs"]


def test_pairs_need_a_whole_number_scale_and_say_when_the_crop_leaves_too_little(tmp_path: Path):
    d = tmp_path / "in"
    _write(d / "a.png", 64, 64, 0)
    with pytest.raises(ValueError, match="whole-number scale.*2.5"):
        degrade_folder(FixedSource(2.5, 7), d, tmp_path / "out", DegradeConfig(tile=32), progress=False, pairs=True)
    assert not (tmp_path / "out").exists()
    _write(d / "thin.png", 19, 64, 1)  # mod-crop to 16 rows: LR 4 rows, a 9x9 kernel needs more than 4
    m = degrade_folder(FixedSource(4, 9), d, tmp_path / "out", DegradeConfig(tile=32, on_bad_image="skip"), progress=False, pairs=True)
    row = m.set_index("file").loc["thin.png"]
    assert row.status == "skipped" and "64x19 (mod-cropped to 64x16) is too small" in row.reason
    assert (tmp_path / "out" / "meta_info.txt").read_text() == "a.png (64,64,3)\n"
