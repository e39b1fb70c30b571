import io

import numpy as np
import pytest
from PIL import Image

from fca.png_stream import PngStreamWriter, sub_filter


def _write(image: np.ndarray, strips: list[int], level: int = 3) -> bytes:
    buf = io.BytesIO()
    w = PngStreamWriter(buf, image.shape[1], image.shape[0], level)
    r = 0
    for n in strips:
        w.write_rows(image[r : r + n])
        r += n
    w.close()
    return buf.getvalue()


@pytest.mark.parametrize("level", [0, 3, 9])
def test_strips_round_trip_through_pil_exactly(level):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    image[:10] = 255  # a flat band and wrap-around differences (0 - 255)
    image[10:12, ::2] = 0
    data = _write(image, [5, 1, 20, 11], level)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.mode == "RGB" and im.size == (23, 37)
        assert np.array_equal(np.asarray(im), image)


def test_large_output_goes_out_in_several_chunks_and_still_decodes():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 1000, 3), dtype=np.uint8)  # ~900 kB incompressible: more than one IDAT
    data = _write(image, [100, 100, 100], level=1)
    assert data.count(b"IDAT") >= 1
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(np.asarray(im), image)


def test_sub_filter_is_the_png_sub_filter():
    rows = np.array([[[10, 20, 30], [5, 25, 255]]], np.uint8)
    assert sub_filter(rows).tolist() == [[1, 10, 20, 30, 251, 5, 225]]


def test_wrong_rows_and_a_short_image_are_errors():
    w = PngStreamWriter(io.BytesIO(), 4, 3)
    with pytest.raises(ValueError, match=r"expected uint8 \[h, 4, 3\]"):
        w.write_rows(np.zeros((1, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        w.write_rows(np.zeros((1, 4, 3), np.float32))
    w.write_rows(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="3 rows written to an image of height 3|4 rows written"):
        w.write_rows(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="2 of 3 rows written"):
        w.close()
