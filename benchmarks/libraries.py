"""The installed libraries beside the hand-written pieces they could replace. (Not a test: a measurement.)

    python -m benchmarks.libraries [--only imports,config,download,progress,locks,kernels] [--kornia DIR]

Each hand-written piece that a library installed here could do carries a comment with the numbers
this prints: config validation (fca/config.py: pydantic), HTTP downloads (fca/data/download.py:
requests and urllib3's Retry), progress in log files (fca/progress.py: tqdm), output locks
(fca/fsutil.py: filelock) and kernel generators (fca/kernels.py: kornia, not a dependency: give
`--kornia DIR`, a folder made by `pip install --no-deps --target DIR kornia kornia-rs`).
Import times are the best of 9 fresh processes, so a busy machine shows less than it would.
"""

from __future__ import annotations

import argparse
import http.server
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("imports", "config", "download", "progress", "locks", "kernels")


def import_ms(statement: str, before: str = "", path: str = "") -> int:
    """Best of 9 fresh processes: milliseconds that `statement` takes after `before`."""
    code = f"import time\n{before}\nt = time.perf_counter()\n{statement}\nprint((time.perf_counter() - t) * 1000)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), path) if p))
    runs = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout) for _ in range(9)]
    return round(min(runs))


def imports(kornia: str) -> None:
    for statement, before in [
        ("import fca.config", ""), ("from pydantic import TypeAdapter, Field", ""),
        ("import urllib.request", ""), ("import requests", ""),
        ("import fcntl", ""), ("from filelock import FileLock", ""), ("import tqdm", ""),
    ] + ([("import kornia.filters", "import torch")] if kornia else []):
        print(f"  {statement}{f' (after {before})' if before else ''}: {import_ms(statement, before, kornia)} ms")


def config() -> None:
    import dataclasses
    from typing import Annotated

    import yaml
    from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

    from pipeline.params import Params, parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    t = time.perf_counter()
    adapter = TypeAdapter(Params)
    print(f"  pydantic TypeAdapter(Params), the schema: {(time.perf_counter() - t) * 1000:.0f} ms")
    try:
        adapter.validate_python(raw)
    except (TypeError, ValidationError) as e:
        print(f"  pydantic on our dataclasses (it reads param()'s metadata): {type(e).__name__}: {e}")
    parse_params(raw, "params.yaml")
    t = time.perf_counter()
    for _ in range(50):
        parse_params(raw, "params.yaml")
    print(f"  ours, all of params.yaml: {(time.perf_counter() - t) / 50 * 1000:.2f} ms")

    # Two of FDCConfig's fields, as pydantic would declare them (types, not this module's string annotations).
    FDC = dataclasses.make_dataclass("FDC", [("steps", Annotated[int, Field(ge=1)], 300), ("augment", bool, True)], frozen=True)
    FDC.__pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)

    strict = TypeAdapter(Annotated[int, Field(strict=True)])
    for name, check in [
        ("steps: 0", lambda: TypeAdapter(FDC).validate_python({"steps": 0})),
        ('augment: "yes"', lambda: TypeAdapter(FDC).validate_python({"augment": "yes"})),
        ('steps: "7"', lambda: TypeAdapter(FDC).validate_python({"steps": "7"})),
        ("steps: 5e4, strict", lambda: strict.validate_python(5e4)),
    ]:
        try:
            print(f"  pydantic, {name}: accepted as {check()!r}")
        except ValidationError as e:
            text = str(e)
            print(f"  pydantic, {name}: {text.count(chr(10)) + 1} lines: {text!r}")


class _CutShort(http.server.BaseHTTPRequestHandler):
    """Sends half of a 1 MiB body and hangs up, and records each request's Range header."""

    body = bytes(range(256)) * 4096
    seen: list = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Range"))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[: len(self.body) // 2])
        self.close_connection = True


def download() -> None:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    from fca.data.download import DownloadError
    from fca.data.download import download as fca_download

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/f.bin"
    try:
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=Retry(total=5, backoff_factor=0, status_forcelist=[500, 502, 503, 504])))
        got = 0
        try:
            with session.get(url, stream=True, timeout=10) as r:
                for chunk in r.iter_content(1 << 16):
                    got += len(chunk)
            print(f"  requests + Retry(total=5): all {got} bytes")
        except requests.RequestException as e:
            print(f"  requests + Retry(total=5): {type(e).__name__} after {got} bytes; requests (Range): {_CutShort.seen}")
        _CutShort.seen.clear()
        with tempfile.TemporaryDirectory() as d:
            try:
                fca_download(url, Path(d) / "f.bin", retries=2, backoff_s=0, progress=False)
            except DownloadError:
                print(f"  fca download(retries=2): requests (Range): {_CutShort.seen}")
    finally:
        server.shutdown()


def progress() -> None:
    from tqdm import tqdm

    from fca.progress import NullProgress, progress_bar

    def run(bar: object) -> None:
        for _ in range(1000):
            time.sleep(0.001)
            bar.update(1)
            bar.set_postfix(loss=f"{0.5:.3f}")
        bar.close()

    file = io.StringIO()
    run(tqdm(total=1000, desc="train_fdc", unit="step", file=file))
    text = file.getvalue()
    print(f"  tqdm into a file, 1000 steps: {len(text)} bytes, {text.count(chr(10))} newline(s), {text.count(chr(13))} carriage returns")
    file = io.StringIO()
    tqdm(range(3), file=file, disable=None).close()
    print(f"  tqdm(disable=None) into a file: {len(file.getvalue())} bytes")
    log, out = logging.getLogger("fca.progress"), io.StringIO()
    handler = logging.StreamHandler(out)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        run(progress_bar(total=1000, desc="train_fdc", unit="step", stream=io.StringIO()))
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    print(f"  fca.progress into a file, 1000 steps: {len(text)} bytes, {text.count(chr(10))} lines, {text.count(chr(13))} carriage returns")
    print("  tqdm.format_meter, 9 MiB in 30 s:", tqdm.format_meter(9 * 2**20, None, 30, prefix="download", unit="B", unit_scale=True, unit_divisor=1024))
    bar = tqdm(total=10, disable=True)
    bar.update(3)
    first = import_ms("tqdm(total=10, disable=True)", "from tqdm import tqdm")  # a fresh process: tqdm's first instance
    makes_lock = subprocess.run(
        [sys.executable, "-c", "import sys; from tqdm import tqdm; tqdm(disable=True); print('multiprocessing.synchronize' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    t = time.perf_counter()
    NullProgress()
    print(f"  a process's first tqdm(disable=True): {first} ms, loads multiprocessing's locks: {makes_lock}, n after update(3): {bar.n}; "
          f"NullProgress(): {(time.perf_counter() - t) * 1000:.3f} ms")


_OTHER_ACCOUNT = """
import sys
from filelock import FileLock
from fca.fsutil import output_lock
for name, lock in [("filelock", lambda: FileLock(sys.argv[1] + "/.out.lock", blocking=False)), ("output_lock", lambda: output_lock(sys.argv[1] + "/out"))]:
    try:
        with lock():
            print(f"  {name}: taken")
    except OSError as e:
        print(f"  {name}: {type(e).__name__}: {e}")
"""


def locks() -> None:
    import filelock
    import filelock._native._unix as unix  # the flock call, to run a release between a contender's open and its flock

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ".out.lock"
        with filelock.FileLock(path, blocking=False):
            pass
        print(f"  filelock {filelock.__version__}: lock file there after release: {path.exists()}")
        holder, contender = filelock.FileLock(path, blocking=False), filelock.FileLock(path, blocking=False)
        holder.acquire()
        flock = unix.lock_fd_nonblocking

        def holder_releases_first(fd: int) -> bool:
            unix.lock_fd_nonblocking = flock
            os.unlink(path)  # what output_lock does on release, so that no lock file stays
            holder.release()
            return flock(fd)

        unix.lock_fd_nonblocking = holder_releases_first
        try:
            contender.acquire()
            print("  filelock, holder unlinks and releases during a contender's try: taken")
            contender.release()
        except filelock.Timeout:
            print("  filelock, holder unlinks and releases during a contender's try: Timeout, though nobody holds it")
        finally:
            unix.lock_fd_nonblocking = flock
    if os.geteuid() == 0 and shutil.which("setpriv"):
        # Root without CAP_DAC_OVERRIDE is refused write access to a file of another account, as a user would be.
        shared = Path(tempfile.mkdtemp())
        try:
            shared.chmod(0o777)
            (shared / ".out.lock").touch(0o644)
            os.chown(shared / ".out.lock", 65534, 65534)
            print("  another account's leftover lock file, 0644:")
            subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", _OTHER_ACCOUNT, str(shared)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
        finally:
            shutil.rmtree(shared, ignore_errors=True)
    else:
        print("  another account's lock file: needs root and setpriv; skipped")


def kernels() -> None:
    try:
        import kornia.filters as kf
    except ImportError:
        print("  kornia is not installed: give --kornia DIR (pip install --no-deps --target DIR kornia kornia-rs)")
        return
    import inspect

    import numpy as np
    import torch

    from fca.kernels import gaussian

    ours = gaussian(13, 3.0)
    theirs = kf.get_gaussian_kernel2d((13, 13), torch.tensor([[3.0, 3.0]], dtype=torch.float64))[0].numpy()
    print(f"  13 x 13, sigma 3: max |ours - kornia| = {np.abs(ours - theirs).max():.2g}, bitwise equal: {np.array_equal(ours, theirs)}")
    print(f"  get_gaussian_kernel2d{tuple(inspect.signature(kf.get_gaussian_kernel2d).parameters)}; get_motion_kernel2d{tuple(inspect.signature(kf.get_motion_kernel2d).parameters)}")
    motion = kf.get_motion_kernel2d(13, 30.0, 0.0)[0]
    print(f"  kornia's 13 x 13 motion kernel at 30 degrees: {(motion > 0).sum().item()} taps, weights {sorted({round(w, 4) for w in motion[motion > 0].tolist()})}")
    print(f"  kornia disk kernels: {[n for n in dir(kf) if 'disk' in n.lower()]}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    p.add_argument("--kornia", default="", help="a folder with kornia and kornia_rs in it (pip install --target)")
    args = p.parse_args(argv)
    if args.kornia:
        sys.path.insert(0, args.kornia)
    for part in args.only.split(","):
        print(f"{part}:")
        {"imports": lambda: imports(args.kornia), "config": config, "download": download, "progress": progress,
         "locks": locks, "kernels": kernels}[part]()


if __name__ == "__main__":
    main()
