"""A PNG writer that takes an image a strip of rows at a time, for outputs too large to hold.

PIL encodes a PNG only from a whole image in memory; a 4x upscaling of an 8000 x 8000
photo is 32000 x 32000 x 3 = 3 GB. PNG itself streams: after the IHDR header the
pixels are one zlib stream of rows (each row led by its filter type), which may be
cut into any number of IDAT chunks. So each strip is filtered, fed to one
`zlib.compressobj`, and the compressed bytes go out as IDAT chunks as they come.
Memory is one strip plus zlib's window, whatever the image size.

Rows use the Sub filter (each byte minus the byte one pixel to its left, mod 256):
cheap to compute over a whole strip with numpy, and on photos it compresses much
better than no filter.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SUB = 1  # PNG filter type 1
_CHUNK_BYTES = 1 << 20  # IDAT size: large enough that chunk overhead is nil, small enough to stream


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def sub_filter(rows: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3] -> the filtered scanlines [h, 1 + 3w]: filter byte 1, then x - left pixel (mod 256)."""
    flat = rows.reshape(rows.shape[0], -1)
    out = np.empty((flat.shape[0], flat.shape[1] + 1), np.uint8)
    out[:, 0] = _SUB
    out[:, 1:4] = flat[:, :3]
    np.subtract(flat[:, 3:], flat[:, :-3], out=out[:, 4:])  # uint8 arithmetic wraps mod 256, as PNG wants
    return out


class PngStreamWriter:
    """Write an 8-bit RGB PNG of `width` x `height` to the binary file `f`, strip by strip.

    `write_rows(uint8 [h, width, 3])` any number of times, top to bottom, then `close()`,
    which fails unless exactly `height` rows were written (a short image is an error, not
    a silently truncated file). `level`: zlib's compression level (1 fast .. 9 small).
    """

    def __init__(self, f: BinaryIO, width: int, height: int, level: int = 3) -> None:
        if not (1 <= width < 2**31 and 1 <= height < 2**31):
            raise ValueError(f"PNG size {width} x {height}: each side must be from 1 to 2^31 - 1")
        self.f, self.width, self.height, self.rows = f, width, height, 0
        self._zip = zlib.compressobj(level)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        f.write(SIGNATURE)
        # bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))

    def write_rows(self, rows: np.ndarray) -> None:
        if rows.dtype != np.uint8 or rows.ndim != 3 or rows.shape[1:] != (self.width, 3):
            raise ValueError(f"PNG rows: expected uint8 [h, {self.width}, 3], got {rows.dtype} {tuple(rows.shape)}")
        if self.rows + rows.shape[0] > self.height:
            raise ValueError(f"PNG rows: {self.rows + rows.shape[0]} rows written to an image of height {self.height}")
        self._emit(self._zip.compress(sub_filter(rows).tobytes()))
        self.rows += rows.shape[0]

    def _emit(self, data: bytes, flush: bool = False) -> None:
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= _CHUNK_BYTES or (flush and self._pending_bytes):
            self.f.write(_chunk(b"IDAT", b"".join(self._pending)))
            self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        if self.rows != self.height:
            raise ValueError(f"PNG rows: {self.rows} of {self.height} rows written")
        self._emit(self._zip.flush(), flush=True)
        self.f.write(_chunk(b"IEND", b""))
