"""Reading a JPEG file's quality from its quantisation tables, and the JPEG round trip (fca.jpeg)."""

import numpy as np
import pytest
import torch
from PIL import Image

from fca.jpeg import ANNEX_K_LUMINANCE, ijg_tables, jpeg_quality, jpeg_round_trip, quality_from_tables, to_8bit


def _image(seed: int = 0, size: int = 16) -> np.ndarray:
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)


def _save(path, quality, subsampling, array=None):
    Image.fromarray(_image() if array is None else array).save(path, format="JPEG", quality=quality, subsampling=subsampling)
    return path


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
@pytest.mark.parametrize("quality", [30, 50, 75, 85, 95, 100])
def test_quality_is_read_back_exactly_from_a_file_pillow_wrote(tmp_path, quality, subsampling):
    assert jpeg_quality(_save(tmp_path / "a.jpg", quality, subsampling)) == quality


def test_every_quality_from_1_to_100_is_read_back_and_its_tables_are_libjpeg_s(tmp_path):
    for q in range(1, 101):
        path = _save(tmp_path / f"{q}.jpg", q, "4:2:0")
        with Image.open(path) as img:
            tables = img.quantization
        lum, chroma = ijg_tables(q)
        assert (tables[0], tables[1]) == (lum.tolist(), chroma.tolist()), q
        assert jpeg_quality(path) == q


def test_tables_by_hand_at_quality_50_30_and_90():
    lum, chroma = ijg_tables(50)  # scale 100: the Annex K tables themselves
    assert lum.tolist() == ANNEX_K_LUMINANCE.tolist() and chroma[0] == 17 and chroma[-1] == 99
    lum30, _ = ijg_tables(30)  # scale 5000 // 30 = 166: (16 * 166 + 50) // 100 = 27
    assert lum30[0] == 27 and lum30[2] == (10 * 166 + 50) // 100 == 17
    lum90, _ = ijg_tables(90)  # scale 20: (16 * 20 + 50) // 100 = 3, (10 * 20 + 50) // 100 = 2
    assert lum90[0] == 3 and lum90[2] == 2
    assert ijg_tables(100)[0].tolist() == [1] * 64
    assert ijg_tables(1)[0].max() == 255  # baseline: clamped


def test_a_grey_jpeg_has_only_a_luminance_table(tmp_path):
    path = tmp_path / "grey.jpg"
    Image.fromarray(_image()[..., 0]).save(path, format="JPEG", quality=64)
    with Image.open(path) as img:
        assert set(img.quantization) == {0}
    assert jpeg_quality(path) == 64


def test_tables_of_no_ijg_quality_get_the_nearest(tmp_path):
    lum, chroma = (t.copy() for t in ijg_tables(70))
    lum[5] += 3
    assert quality_from_tables(lum, chroma) == 70
    path = tmp_path / "custom.jpg"
    Image.fromarray(_image()).save(path, format="JPEG", qtables=[lum.tolist(), chroma.tolist()])
    assert jpeg_quality(path) == 70


def test_a_png_or_a_text_file_is_none_and_a_missing_file_an_error(tmp_path):
    Image.fromarray(_image()).save(tmp_path / "a.png")
    assert jpeg_quality(tmp_path / "a.png") is None
    (tmp_path / "a.txt").write_text("not an image")
    assert jpeg_quality(tmp_path / "a.txt") is None
    with pytest.raises(FileNotFoundError):
        jpeg_quality(tmp_path / "missing.jpg")


def test_round_trip_matches_a_file_written_by_pillow_and_keeps_shape_dtype_and_range(tmp_path):
    a = _image(1, 24)
    x = torch.from_numpy(a).permute(2, 0, 1).float().div(255).unsqueeze(0).repeat(2, 1, 1, 1)
    y = jpeg_round_trip(x, 60, "4:4:4")
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal((y * 255).round() / 255, y)  # 8-bit levels
    with Image.open(_save(tmp_path / "b.jpg", 60, "4:4:4", a)) as img:
        expect = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(y[0], expect) and torch.equal(y[1], expect)


def test_4_2_0_loses_more_colour_detail_than_4_4_4():
    # A red/blue checkerboard of 2 px squares: all chroma, no luma detail to speak of.
    yy, xx = np.mgrid[:32, :32]
    board = ((yy // 2 + xx // 2) % 2).astype(np.float32)
    x = torch.from_numpy(np.stack([board, np.zeros_like(board), 1 - board]))[None]
    err = {s: float((jpeg_round_trip(x, 95, s) - x).pow(2).mean()) for s in ("4:4:4", "4:2:0")}
    assert err["4:2:0"] > 5 * err["4:4:4"]


def test_to_8bit_rounds_to_the_nearest_level_and_clips():
    x = torch.tensor([-0.1, 0.0, 0.5 / 255 + 1e-6, 100.4 / 255, 1.2], dtype=torch.float64)
    assert (to_8bit(x) * 255).round().tolist() == [0, 0, 1, 100, 255]


def test_bad_quality_or_subsampling_is_an_error():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="quality"):
        jpeg_round_trip(x, 0, "4:2:0")
    with pytest.raises(ValueError, match="subsampling"):
        jpeg_round_trip(x, 50, "4:1:1")


# --------------------------------------------------------------------------- a JPEG history from pixels


def _scenes(n: int = 6, size: int = 64, noise: float = 0.0) -> torch.Tensor:
    """Smooth random scenes (blurred blobs and edges) with optional white noise, in [0, 1]."""
    from fca.kernels import conv_per_sample, gaussian

    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size // 8, size // 8, generator=g).repeat_interleave(8, -1).repeat_interleave(8, -2)
    x = conv_per_sample(x, torch.from_numpy(gaussian(9, 1.5)).float())
    x = 0.2 + 0.6 * (0.5 * x + 0.5 * x.mean(1, keepdim=True))  # a photo's colours, not fully saturated ones
    return (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
@pytest.mark.parametrize("quality", [40, 75, 90])
def test_the_quality_and_subsampling_are_found_in_the_pixels_of_images_pillow_compressed(quality, subsampling):
    from fca.jpeg import estimate_jpeg

    found = estimate_jpeg(jpeg_round_trip(_scenes(noise=0.02), quality, subsampling))
    assert found is not None and (found.quality, found.subsampling, found.source) == (quality, subsampling, "pixels")


def test_patches_off_the_jpeg_grid_or_black_do_not_hide_the_others_quality():
    """Photos cut into patches: those of the last row (a photo's height no multiple of 8) sit off the 8 x 8
    grid and re-compress alike at every quality, and a black one shows nothing; each patch votes, so the
    rest still give the quality (their errors pooled with the off-grid ones showed none)."""
    from fca.jpeg import estimate_jpeg

    photos = jpeg_round_trip(_scenes(n=12, size=80, noise=0.02), 85, "4:2:0")
    on_grid, off_grid = photos[:7, :, :64, :64], photos[7:11, :, 4:68, 4:68]
    patches = torch.cat([on_grid, off_grid, torch.zeros(1, 3, 64, 64)])[torch.randperm(12, generator=torch.Generator().manual_seed(0))]
    found = estimate_jpeg(patches)
    assert found is not None and (found.quality, found.subsampling) == (85, "4:2:0")
    assert estimate_jpeg(torch.cat([off_grid, torch.zeros(1, 3, 64, 64)])) is None  # none of them on the grid


@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_images_with_no_jpeg_history_show_none(noise):
    from fca.jpeg import estimate_jpeg

    assert estimate_jpeg(to_8bit(_scenes(noise=noise))) is None


def test_files_jpeg_reads_the_files_own_quality_and_subsampling(tmp_path):
    from fca.jpeg import files_jpeg

    paths = [_save(tmp_path / f"{i}.jpg", q, "4:4:4", _image(i, 32)) for i, q in enumerate([70, 80, 90])]
    png = tmp_path / "x.png"
    Image.fromarray(_image(9, 32)).save(png)
    found = files_jpeg([*paths, png])
    assert (found.quality, found.subsampling, found.source) == (80, "4:4:4", "files")  # the median of the JPEG files
    assert files_jpeg([png, paths[0], png]) is None  # mostly not JPEG files
