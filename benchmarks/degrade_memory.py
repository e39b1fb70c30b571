"""Peak memory and speed of `fca.degrade` on one large image (default 8000 x 8000).

    python benchmarks/degrade_memory.py [--size 8000] [--threads 2] [--source standin|generator]

Writes a synthetic 8-bit PNG to a temporary folder (in a child process, so its
memory is not counted), then measures, each in a fresh child process so each
peak RSS (`ru_maxrss`) is its own:
  folder  `degrade_folder` end to end: load_rgb (float32), kernel, tiled
          degradation, PNG/npy writes, manifest
  uint8   the image read by PIL as uint8 [H, W, 3] (the memory floor: 3 bytes
          per pixel), `estimate_image_kernel` + `degrade_image`, which convert
          to float one block at a time
Prints peak RSS and HR megapixels per second. Targets: < 2 GB, >= 20 HR MP/s on
2 cores. `--source standin` (default) is a fixed Gaussian kernel, so the numbers
are those of the degradation itself; `--source generator` uses an untrained
default `Generator` to add the kernel estimator's cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def make_image(path: Path, size: int) -> None:
    """Smooth colour gradients plus texture and noise, so the PNG is neither trivial nor incompressible."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = np.empty((size, size, 3), np.uint8)
    x = np.linspace(0, 1, size, dtype=np.float32)
    for r0 in range(0, size, 512):  # in strips: float temporaries stay small
        y = np.linspace(r0 / size, min(size, r0 + 512) / size, min(512, size - r0), dtype=np.float32)[:, None]
        base = 0.5 + 0.25 * np.sin(40 * x[None, :] + 7 * y) * np.cos(31 * y - 5 * x[None, :])
        for c in range(3):
            v = base + 0.1 * c * y + rng.normal(0, 0.03, base.shape).astype(np.float32)
            img[r0 : r0 + 512, :, c] = np.clip(v * 255, 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, compress_level=1)


def make_source(kind: str, scale: float, kernel_size: int):
    import torch

    from fca.kernels import gaussian

    if kind == "generator":
        from fca.models.generator_arch import Generator

        return Generator(scale=scale, kernel_size=kernel_size).eval()

    class StandIn:
        def __init__(self) -> None:
            self.scale, self.kernel_size = scale, kernel_size
            self.k = torch.tensor(gaussian(kernel_size, 2.0), dtype=torch.float32)

        def estimate_kernel(self, x: torch.Tensor) -> torch.Tensor:
            return self.k.expand(x.shape[0], -1, -1)

    return StandIn()


def child(args: argparse.Namespace) -> dict:
    import torch

    from fca.degrade import DegradeConfig, degrade_folder, degrade_image, estimate_image_kernel

    torch.set_num_threads(args.threads)
    src = make_source(args.source, args.scale, args.kernel_size)
    cfg = DegradeConfig(tile=512, work_tile=args.work_tile)  # 512 px kernel tiles: the paper-size estimator's patch
    base = peak_rss_mb()
    t0 = time.perf_counter()
    out: dict = {"mode": args.mode, "rss_before_mb": round(base, 1)}
    if args.mode == "folder":
        degrade_folder(src, args.dir / "in", args.dir / "out", cfg, progress=False, overwrite=True)
        out["seconds_total"] = time.perf_counter() - t0
    else:
        from PIL import Image

        with Image.open(args.dir / "in" / "big.png") as im:
            img = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # uint8 [H, W, 3]
        t1 = time.perf_counter()
        out["seconds_load"] = t1 - t0
        k = estimate_image_kernel(src, img, cfg)
        t2 = time.perf_counter()
        out["seconds_kernel"] = t2 - t1
        degrade_image(src, img, k, cfg)
        out["seconds_degrade"] = time.perf_counter() - t2
        out["seconds_total"] = time.perf_counter() - t0
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8000)
    p.add_argument("--scale", type=float, default=4.0)
    p.add_argument("--kernel-size", type=int, default=13)
    p.add_argument("--work-tile", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--source", choices=("standin", "generator"), default="standin")
    p.add_argument("--mode", choices=("make", "folder", "uint8"), help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode == "make":
        make_image(args.dir / "in" / "big.png", args.size)
        return
    if args.mode:
        print(json.dumps(child(args)))
        return

    common = [f"--size={args.size}", f"--scale={args.scale}", f"--kernel-size={args.kernel_size}",
              f"--work-tile={args.work_tile}", f"--threads={args.threads}", f"--source={args.source}"]
    with tempfile.TemporaryDirectory(prefix="degrade_bench_") as d:
        d = Path(d)
        (d / "in").mkdir()
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--mode=make", f"--dir={d}", *common], check=True)
        png_mb = (d / "in" / "big.png").stat().st_size / 2**20
        print(f"synthetic {args.size}x{args.size} PNG: {png_mb:.0f} MB, written in {time.perf_counter() - t:.1f} s")
        mp = args.size**2 / 1e6
        print(f"x{args.scale:g}, {args.kernel_size}x{args.kernel_size} kernel ({args.source}), work_tile {args.work_tile}, {args.threads} threads")
        for mode in ("uint8", "folder"):
            r = subprocess.run([sys.executable, __file__, f"--mode={mode}", f"--dir={d}", *common],
                               check=True, capture_output=True, text=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            line = f"{mode:>6}: peak RSS {res['peak_rss_mb']:7.0f} MB (after imports {res['rss_before_mb']:.0f} MB), " \
                   f"total {res['seconds_total']:6.2f} s = {mp / res['seconds_total']:5.1f} HR MP/s"
            if mode == "uint8":
                line += (f"  [load {res['seconds_load']:.2f} s, kernel {res['seconds_kernel']:.2f} s, "
                         f"degrade {res['seconds_degrade']:.2f} s = {mp / res['seconds_degrade']:.1f} HR MP/s]")
            print(line, flush=True)


if __name__ == "__main__":
    main()
