import hashlib
import io
import re
import socket
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from fca.data import download as dl
from fca.data.download import DownloadConfig, DownloadError, download, fetch, parse_url_list
from fca.data.images import BadImageError, load_rgb

FAST = dict(backoff_s=0.001, progress=False, timeout_s=5.0)


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; server.script[path] is a list of one-shot behaviours for the next requests."""

    timeout = 5  # a stuck client cannot hold a handler thread for long

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path not in srv.files:
            self.send_error(404)
            return
        script = srv.script.get(self.path, [])
        action = script.pop(0) if script else "ok"
        if action == "500":
            self.send_error(500)
            return
        if action == "slow":
            time.sleep(0.6)
        body = srv.files[self.path]
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(m.group(1)) if m and action != "ignore-range" else 0
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if action == "cut":  # half the body, then hang up
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The client hung up mid-response (the tests that cut transfers or time out do
        # this on purpose): nothing to report. Anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.script, srv.requests = {}, {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BODY = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def test_download_ok_and_cached(server, tmp_path):
    server.files["/f.bin"] = BODY
    out = download(f"{server.url}/f.bin", tmp_path / "f.bin", _sha(BODY), size=len(BODY), **FAST)
    assert out.read_bytes() == BODY
    assert server.requests == [("/f.bin", None)]
    download(f"{server.url}/f.bin", tmp_path / "f.bin", _sha(BODY), **FAST)  # checksum matches: no request
    assert len(server.requests) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_cut_transfer_is_resumed_with_range(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.script["/f.bin"] = ["cut"]
    out = download(f"{server.url}/f.bin", tmp_path / "f.bin", _sha(BODY), retries=1, **FAST)
    assert out.read_bytes() == BODY
    assert server.requests == [("/f.bin", None), ("/f.bin", f"bytes={len(BODY) // 2}-")]
    assert not (tmp_path / "f.bin.part").exists()


def test_server_ignoring_range_restarts(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.script["/f.bin"] = ["ignore-range"]
    (tmp_path / "f.bin.part").write_bytes(b"junk from an older run")  # would corrupt the file if appended to
    out = download(f"{server.url}/f.bin", tmp_path / "f.bin", _sha(BODY), **FAST)
    assert out.read_bytes() == BODY
    assert server.requests == [("/f.bin", "bytes=22-")]


def test_404_is_immediate_and_leaves_nothing(server, tmp_path):
    url = f"{server.url}/missing.zip"
    with pytest.raises(DownloadError, match=re.escape(url) + ".*404"):
        download(url, tmp_path / "m.zip", None, retries=5, **FAST)
    assert len(server.requests) == 1  # no retries on 404
    assert list(tmp_path.iterdir()) == []


def test_500_is_retried(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.script["/f.bin"] = ["500", "500"]
    assert download(f"{server.url}/f.bin", tmp_path / "f.bin", _sha(BODY), retries=2, **FAST).read_bytes() == BODY
    assert len(server.requests) == 3

    server.script["/f.bin"] = ["500"] * 5
    with pytest.raises(DownloadError, match="giving up after 1 retries.*500"):
        download(f"{server.url}/f.bin", tmp_path / "g.bin", _sha(BODY), retries=1, **FAST)
    assert len(server.requests) == 5
    assert not (tmp_path / "g.bin").exists()


def test_timeout_and_refused_connections_are_retried(server, tmp_path):
    server.files["/f.bin"] = BODY
    server.script["/f.bin"] = ["slow"]
    out = download(f"{server.url}/f.bin", tmp_path / "f.bin", _sha(BODY), retries=1, backoff_s=0.001, timeout_s=0.2, progress=False)
    assert out.read_bytes() == BODY and len(server.requests) == 2

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}.*giving up after 2 retries"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", None, retries=2, **FAST)


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/f.bin"] = BODY
    wrong = "0" * 64
    url = f"{server.url}/f.bin"
    with pytest.raises(DownloadError, match=f"{re.escape(url)}: sha256 mismatch: expected {wrong}, got {_sha(BODY)}"):
        download(url, tmp_path / "f.bin", wrong, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_parse_url_list_errors_name_the_line(tmp_path):
    good = tmp_path / "ok.txt"
    good.write_text(f"# images\n\nhttps://x.org/a.png {'A' * 64}  # trailing comment\nhttp://x.org/b.zip {'b' * 64}\n")
    assert parse_url_list(good) == [("https://x.org/a.png", "a" * 64), ("http://x.org/b.zip", "b" * 64)]
    for line, why in [("https://x.org/a.png", "expected 'URL SHA256'"), (f"ftp://x.org/a.png {'a' * 64}", "not an http"),
                      ("https://x.org/a.png abc", "not a SHA-256")]:
        bad = tmp_path / "bad.txt"
        bad.write_text(f"# header\n{line}\n")
        with pytest.raises(ValueError, match=f"bad.txt:2: .*{why}"):
            parse_url_list(bad)


# ---------------------------------------------------------------- fetch


def _png_bytes(mode, size, colour, fmt="PNG"):
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _no_temp_siblings(parent, expected):
    assert sorted(p.name for p in parent.iterdir()) == sorted(expected)


def test_fetch_builtin(tmp_path):
    cfg = DownloadConfig(photos=["chelsea"], procedural_count=1, procedural_size=32)
    df = fetch(cfg, tmp_path / "raw", tmp_path / "cache", progress=False)
    assert list(df.columns) == ["file", "width", "height", "sha256", "source", "jpeg_quality", "jpeg_subsampling"]
    assert list(df["file"]) == ["builtin/chelsea.png", "builtin/dead_leaves_000.png"]
    assert list(df["source"]) == ["skimage:chelsea", "dead-leaves:seed=0:index=0"]
    for row in df.itertuples():
        assert _sha((tmp_path / "raw" / row.file).read_bytes()) == row.sha256
    _no_temp_siblings(tmp_path, ["raw"])
    # Run again with fewer images: the old folder is replaced, not merged into.
    fetch(DownloadConfig(photos=[], procedural_count=1, procedural_size=32), tmp_path / "raw", tmp_path / "cache", progress=False)
    assert sorted(p.name for p in (tmp_path / "raw" / "builtin").iterdir()) == ["dead_leaves_000.png"]
    _no_temp_siblings(tmp_path, ["raw"])


def _zip_of_images():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("HR/0001.png", _png_bytes("RGB", (6, 4), (10, 20, 30)))
        zf.writestr("HR/0002.jpg", _png_bytes("RGB", (5, 3), (200, 200, 200), fmt="JPEG"))
        zf.writestr("HR/0003.png", _png_bytes("RGBA", (2, 2), (0, 0, 0, 0)))
    return buf.getvalue()


def test_fetch_div2k_from_a_mirror(server, tmp_path, monkeypatch):
    data = _zip_of_images()
    server.files["/mirror/DIV2K_valid_HR.zip"] = data
    monkeypatch.setitem(dl.DIV2K_ARCHIVES, "div2k-valid-hr", ("DIV2K_valid_HR.zip", len(data), _sha(data)))
    cfg = DownloadConfig(dataset="div2k-valid-hr", div2k_mirror=f"{server.url}/mirror/")
    df = fetch(cfg, tmp_path / "raw", tmp_path / "cache", progress=False, backoff_s=0.001)
    assert list(df["file"]) == ["div2k-valid-hr/HR/0001.png", "div2k-valid-hr/HR/0002.png", "div2k-valid-hr/HR/0003.png"]
    assert list(zip(df["width"], df["height"])) == [(6, 4), (5, 3), (2, 2)]
    assert df["source"][0] == f"{server.url}/mirror/DIV2K_valid_HR.zip!/HR/0001.png"
    raw = tmp_path / "raw" / "div2k-valid-hr" / "HR"
    assert (raw / "0001.png").read_bytes() == _png_bytes("RGB", (6, 4), (10, 20, 30))  # plain RGB PNG: copied as is
    np.testing.assert_allclose(load_rgb(raw / "0003.png"), 1.0)  # transparent -> white
    assert (tmp_path / "cache" / "DIV2K_valid_HR.zip").read_bytes() == data  # kept for the next run
    _no_temp_siblings(tmp_path, ["raw", "cache"])

    # A mirror that answers 404: a clear error, the old dataset is untouched.
    bad = DownloadConfig(dataset="div2k-train-hr", div2k_mirror=f"{server.url}/nowhere")
    with pytest.raises(DownloadError, match="nowhere/DIV2K_train_HR.zip: HTTP 404"):
        fetch(bad, tmp_path / "raw", tmp_path / "cache", progress=False, backoff_s=0.001)
    assert (raw / "0001.png").exists()
    _no_temp_siblings(tmp_path, ["raw", "cache"])


def test_fetch_url_list(server, tmp_path):
    img, arc = _png_bytes("L", (3, 3), 128), _zip_of_images()
    server.files.update({"/x/grey.png": img, "/x/set.zip": arc})
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# test\n{server.url}/x/grey.png {_sha(img)}\n{server.url}/x/set.zip {_sha(arc)}\n")
    df = fetch(DownloadConfig(dataset="url-list", source=str(listing)), tmp_path / "raw", tmp_path / "cache", progress=False)
    assert list(df["file"]) == ["url-list/grey.png", "url-list/set/HR/0001.png", "url-list/set/HR/0002.png", "url-list/set/HR/0003.png"]
    assert load_rgb(tmp_path / "raw" / "url-list" / "grey.png").shape == (3, 3, 3)


def test_fetch_folder_converts_and_fails_cleanly(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    px = np.zeros((2, 3, 3), dtype=np.uint8)
    px[0, 0] = 255
    im = Image.fromarray(px)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(src / "sub" / "rot.png", exif=exif)
    (src / "a.bmp").write_bytes(_png_bytes("RGB", (4, 4), (1, 2, 3), fmt="BMP"))
    df = fetch(DownloadConfig(dataset="folder", source=str(src)), tmp_path / "raw", tmp_path / "cache", progress=False)
    assert list(df["file"]) == ["folder/a.png", "folder/sub/rot.png"]
    assert list(df["source"]) == ["folder:a.bmp", "folder:sub/rot.png"]
    assert load_rgb(tmp_path / "raw" / "folder" / "sub" / "rot.png").shape == (3, 2, 3)  # EXIF rotation baked in
    assert (df["width"][1], df["height"][1]) == (2, 3)

    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(BadImageError, match="broken.jpg"):
        fetch(DownloadConfig(dataset="folder", source=str(src)), tmp_path / "out2", tmp_path / "cache", progress=False)
    (src / "broken.jpg").unlink()
    (src / "a.png").write_bytes(_png_bytes("RGB", (4, 4), (1, 2, 3)))
    with pytest.raises(ValueError, match="a.png and folder:a.bmp|a.bmp and folder:a.png"):
        fetch(DownloadConfig(dataset="folder", source=str(src)), tmp_path / "out2", tmp_path / "cache", progress=False)
    _no_temp_siblings(tmp_path, ["src", "raw"])


def test_a_folder_of_jpeg_photos_keeps_their_quality_in_the_manifest(tmp_path):
    """The download stage stores every photo as PNG; the quality and subsampling their JPEG files were
    written at are read first and kept in the manifest, so the patches stage can give G's LR the
    same round trip (`manifest_jpeg`: the median quality, the most common subsampling)."""
    from fca.jpeg import manifest_jpeg

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, quality, sampling in (("a", 70, 2), ("b", 90, 2), ("c", 80, 0)):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(src / f"{name}.jpg", quality=quality, subsampling=sampling)
    (src / "d.bmp").write_bytes(_png_bytes("RGB", (4, 4), (1, 2, 3), fmt="BMP"))
    raw = tmp_path / "raw"
    df = fetch(DownloadConfig(dataset="folder", source=str(src)), raw, tmp_path / "cache", progress=False)
    assert list(df["jpeg_quality"].astype(object).fillna(0)) == [70, 90, 80, 0]
    assert list(df["jpeg_subsampling"].fillna("")) == ["4:2:0", "4:2:0", "4:4:4", ""]
    df.to_csv(raw / "manifest.csv", index=False)  # as the download stage writes it
    pngs = sorted((raw / "folder").glob("*.png"))
    assert [p.suffix for p in pngs] == [".png"] * 4  # the files themselves hold no JPEG tables any more
    found = manifest_jpeg(raw, pngs)
    assert (found.quality, found.subsampling, found.source) == (80, "4:2:0", "files")
    assert manifest_jpeg(raw, pngs[3:]) is None  # the BMP alone
    df.drop(columns=["jpeg_quality", "jpeg_subsampling"]).to_csv(raw / "manifest.csv", index=False)
    assert manifest_jpeg(raw, pngs) is None  # a manifest from before the columns: the PNGs are read as they are
