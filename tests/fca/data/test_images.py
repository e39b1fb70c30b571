import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fca.data.images import BadImageError, iter_images, list_images, load_rgb, printable, save_npy, save_png


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


# ---------------------------------------------------------------- 32-bit and float images, the pixel limit


def _png_with_size(path, width, height):
    """A valid 1x1 RGB PNG whose IHDR then claims width x height (CRC recomputed): a decompression bomb header."""
    import io as _io

    buf = _io.BytesIO()
    Image.new("RGB", (1, 1), (9, 9, 9)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_32bit_unsigned_tiff_is_scaled_by_its_full_range(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    vals = np.array([[0, 65535, 2**31, 2**32 - 1]], dtype=np.uint32)
    tifffile.imwrite(tmp_path / "u32.tif", vals)
    out = load_rgb(tmp_path / "u32.tif")
    np.testing.assert_allclose(out[0, :, 0], vals[0] / (2**32 - 1), rtol=1e-6, atol=1e-9)
    assert out[0, 2, 0] == pytest.approx(0.5, abs=1e-6)  # not clipped to 1 (65535 scale), not wrapped negative


def test_32bit_signed_tiff_and_float_tiffs(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "i32.tif", np.array([[0, 2**30, 2**31 - 1]], dtype=np.int32))
    np.testing.assert_allclose(load_rgb(tmp_path / "i32.tif")[0, :, 1], [0, 2**30 / (2**31 - 1), 1.0], rtol=1e-6)
    tifffile.imwrite(tmp_path / "neg.tif", np.array([[0, -5]], dtype=np.int32))
    with pytest.raises(BadImageError, match=r"neg.tif: cannot read image: signed 32-bit TIFF with negative values"):
        load_rgb(tmp_path / "neg.tif")
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.0, 0.25, 1.00001]], dtype=np.float32))
    np.testing.assert_allclose(load_rgb(tmp_path / "f.tif")[0, :, 2], [0.0, 0.25, 1.0], atol=1e-7)
    tifffile.imwrite(tmp_path / "hdr.tif", np.array([[0.0, 3.5]], dtype=np.float32))
    with pytest.raises(BadImageError, match=r"hdr.tif: cannot read image: float image with values in \[0, 3.5\]: expected \[0, 1\]"):
        load_rgb(tmp_path / "hdr.tif")
    tifffile.imwrite(tmp_path / "nan.tif", np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(BadImageError, match="NaN"):
        load_rgb(tmp_path / "nan.tif")


def test_16bit_pgm_comes_out_scaled(tmp_path):
    (tmp_path / "g.pgm").write_bytes(b"P5\n3 1\n1000\n" + np.array([0, 500, 1000], dtype=">u2").tobytes())
    np.testing.assert_allclose(load_rgb(tmp_path / "g.pgm")[0, :, 0], [0, 0.5, 1.0], atol=1e-4)


def test_the_pixel_limit_replaces_pillows(tmp_path):
    from fca.data.images import DEFAULT_MAX_PIXELS, ImageTooLargeError, open_image

    bomb = _png_with_size(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageTooLargeError) as info:
        load_rgb(bomb)
    assert str(info.value).startswith(f"{bomb}: 100000 x 100000 = 10000000000 pixels exceeds --max-pixels {DEFAULT_MAX_PIXELS}")
    assert isinstance(info.value, BadImageError)  # so on_bad_image: skip lists it
    # Pillow's own guard (179 MP) is off: a 15000 x 15000 header (225 MP) opens under our default limit
    with open_image(_png_with_size(tmp_path / "big.png", 15_000, 15_000)) as img:
        assert img.size == (15_000, 15_000)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # and Pillow's setting is back for everyone else
    Image.new("RGB", (64, 32)).save(tmp_path / "small.png")
    with pytest.raises(ImageTooLargeError, match=r"small.png: 64 x 32 = 2048 pixels exceeds --max-pixels 2000"):
        load_rgb(tmp_path / "small.png", max_pixels=2000)
    assert load_rgb(tmp_path / "small.png", max_pixels=None).shape == (32, 64, 3)


def test_scan_names_every_entry_it_does_not_read(tmp_path):
    import os

    from fca.data.images import scan_images

    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(d / "a.png")
    Image.new("RGB", (4, 4)).save(d / "sub" / "b.gif")  # every format Pillow decodes is read
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    (d / "notes.txt").write_text("x")
    (d / "noext").write_bytes(b"x")
    (d / "drawing.eps").write_text("%!PS")
    (d / ".hidden.png").write_bytes(b"x")
    (d / ".git").mkdir()
    (d / ".git" / "c.png").write_bytes(b"x")
    (d / "link_out.png").symlink_to(tmp_path / "outside.png")
    (d / "link_in.png").symlink_to(d / "a.png")
    (d / "broken.png").symlink_to(d / "missing.png")
    (d / "dirlink").symlink_to(d / "sub")
    os.mkfifo(d / "pipe.png")
    (d / os.fsdecode(b"caf\xe9.png")).write_bytes(b"x")
    (d / ".fca-output").write_text("{}")  # our own mark: skipped in silence
    scan = scan_images(d, recursive=True)
    assert [p.relative_to(d).as_posix() for p in scan.images] == ["a.png", "link_in.png", "sub/b.gif"]
    why = {printable(p.relative_to(d)): r for p, r in scan.ignored}
    assert sorted(why) == sorted([".git", ".hidden.png", "broken.png", "caf\\xe9.png", "dirlink", "drawing.eps", "link_out.png", "noext", "notes.txt", "pipe.png"])
    assert why["notes.txt"] == "not an image file: suffix '.txt' is not a format this tool reads"
    assert why["noext"] == "not an image file: no file suffix"
    assert "outside the input folder" in why["link_out.png"] and "broken symbolic link" in why["broken.png"]
    assert "fifo" in why["pipe.png"] and "not valid UTF-8" in why["caf\\xe9.png"] and "external programs" in why["drawing.eps"]
    assert "folder" in why["dirlink"] and "hidden folder" in why[".git"] and "hidden file" in why[".hidden.png"]
    assert [p.name for p in scan_images(d).images] == ["a.png", "link_in.png"]
    assert ("a sub-folder (not searched)") in dict((p.name, r) for p, r in scan_images(d).ignored).values()


@pytest.mark.parametrize("error", [KeyError("tag"), OverflowError("int too large"), IndexError("palette"), struct.error("unpack"), ZeroDivisionError()])
def test_any_decoder_failure_is_a_bad_image_naming_the_file(tmp_path, monkeypatch, error):
    """Pillow's plugins raise all sorts of exceptions on malformed files; each is 'cannot read this file'."""
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")

    def broken_load(self):
        raise error

    monkeypatch.setattr(Image.Image, "load", broken_load)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", broken_load)
    with pytest.raises(BadImageError, match=rf"a.png: cannot read image: {type(error).__name__}"):
        load_rgb(tmp_path / "a.png")


def test_scan_skips_the_named_files_at_the_top_only(tmp_path):
    from fca.data.images import scan_images

    (tmp_path / "sub").mkdir()
    for p in (tmp_path / "manifest.csv", tmp_path / "sub" / "manifest.csv"):
        p.write_text("file\n")
    scan = scan_images(tmp_path, recursive=True, skip=("manifest.csv",))
    assert [p.relative_to(tmp_path).as_posix() for p, _ in scan.ignored] == ["sub/manifest.csv"]  # a user's file elsewhere is still named
    assert len(scan_images(tmp_path, recursive=True).ignored) == 2
