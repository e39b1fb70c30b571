import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fca.data.images import BadImageError, iter_images, list_images, load_rgb, save_npy, save_png


def _png16_rgb(path, arr):
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_rgba_is_composited_on_white(tmp_path):
    px = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(px, "RGBA").save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out.shape == (1, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [1, 1, 1])  # transparent red -> white, not red
    np.testing.assert_allclose(out[0, 1], [0, 0, 1])
    np.testing.assert_allclose(out[0, 2], [1 - 128 / 255] * 3, atol=1e-6)


def test_greyscale_is_repeated(tmp_path):
    Image.fromarray(np.array([[100, 200]], dtype=np.uint8), "L").save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    assert out.shape == (1, 2, 3)
    np.testing.assert_allclose(out[0, :, 0], [100 / 255, 200 / 255], atol=1e-6)
    assert np.all(out[..., 0] == out[..., 2])


def test_16bit_grey_scaled_by_65535(tmp_path):
    vals = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    img = Image.fromarray(vals)
    assert img.mode == "I;16"
    img.save(tmp_path / "g16.png")
    out = load_rgb(tmp_path / "g16.png")
    np.testing.assert_allclose(out[..., 1], vals / 65535.0, atol=1e-6)


def test_16bit_rgb_png_in_unit_range(tmp_path):
    vals = np.array([[[0, 32768, 65535], [1000, 50000, 65535]]], dtype=np.uint16)
    _png16_rgb(tmp_path / "c16.png", vals)
    out = load_rgb(tmp_path / "c16.png")
    assert out.shape == (1, 2, 3)
    np.testing.assert_allclose(out, vals / 65535.0, atol=1 / 255)  # 8-bit precision, right scale


def test_palette_with_and_without_transparency(tmp_path):
    img = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), "P")
    img.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    img.save(tmp_path / "p.png")
    np.testing.assert_allclose(load_rgb(tmp_path / "p.png")[0] * 255, [[10, 20, 30], [200, 100, 0]], atol=1e-4)
    img.save(tmp_path / "pt.png", transparency=0)
    np.testing.assert_allclose(load_rgb(tmp_path / "pt.png")[0] * 255, [[255, 255, 255], [200, 100, 0]], atol=1e-4)


def test_exif_orientation_applied(tmp_path):
    px = np.zeros((2, 3, 3), dtype=np.uint8)
    px[0, 0] = [255, 0, 0]  # marker in the stored top-left corner
    img = Image.fromarray(px)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "r.png", exif=exif)
    out = load_rgb(tmp_path / "r.png")
    assert out.shape == (3, 2, 3)
    np.testing.assert_allclose(out, np.rot90(px, k=-1) / 255.0)
    assert out[0, 1, 0] == 1.0  # the marker is now top-right


def test_truncated_and_non_image_files_raise_naming_the_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.png", "text.png"):
        with pytest.raises(BadImageError, match=name) as info:
            load_rgb(tmp_path / name)
        assert isinstance(info.value, ValueError) and info.value.path == tmp_path / name
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "missing.png")


def test_iter_images_error_vs_skip(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 broken")
    Image.new("L", (5, 3)).save(tmp_path / "c.bmp")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "._a.png").write_bytes(b"macOS resource fork")  # hidden: ignored, not a bad image

    with pytest.raises(BadImageError, match="b.jpg"):
        list(iter_images(tmp_path, on_bad="error"))

    images = iter_images(tmp_path, on_bad="skip")
    got = [(p.name, a.shape) for p, a in images]
    assert got == [("a.png", (4, 4, 3)), ("c.bmp", (3, 5, 3))]
    assert [p.name for p, _ in images.skipped] == ["b.jpg"] and images.skipped[0][1]

    with pytest.raises(ValueError, match="on_bad"):
        iter_images(tmp_path, on_bad="ignore")


def test_list_images_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    for p in ("x.PNG", "sub/y.jpeg", "__MACOSX/z.png"):
        Image.new("RGB", (2, 2)).save(tmp_path / p, format="PNG")
    assert [p.name for p in list_images(tmp_path)] == ["x.PNG"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == ["sub/y.jpeg", "x.PNG"]


def test_save_png_round_trip_and_no_temp_files(tmp_path):
    arr = np.random.default_rng(1).random((5, 7, 3)).astype(np.float32)
    save_png(tmp_path / "out" / "x.png", arr)
    back = load_rgb(tmp_path / "out" / "x.png")
    assert np.abs(back - arr).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="shape"):
        save_png(tmp_path / "out" / "bad.png", np.zeros((4, 4, 2)))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png"]
    save_npy(tmp_path / "out" / "k.npy", np.eye(3))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "k.npy"), np.eye(3))
