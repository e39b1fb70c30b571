"""Peak memory of `fca upscale` on a large image against a small one: memory is bounded.

    python benchmarks/upscale_memory.py [--size 8000] [--small 500] [--tile 256] [--threads 2]

Writes synthetic 8-bit PNGs of `--small` and `--size` pixels a side and a tiny x4 SR
model (EDSR, 1 block of 4 channels: the point is the tiling and the streaming PNG,
not the net), then upscales each with `fca.upscale.upscale_file` in a fresh child
process and prints its peak RSS (`ru_maxrss`) and time. A 4x output of 8000 x 8000 is
32000 x 32000 x 3 = 3 GB of pixels; bounded memory means the large run's peak is the
small run's plus the decoded input (3 bytes per input pixel: 192 MB at 8000 x 8000),
not plus the output. The output PNG is checked for its size from its header, then deleted.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.degrade_memory import make_image  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def make_model(path: Path) -> None:
    import torch

    from fca.train.sr import TrainSRConfig, build_sr_model
    from fca.train.checkpoint import save_checkpoint
    import dataclasses

    cfg = TrainSRConfig(blocks=1, channels=4)
    torch.manual_seed(0)
    net = build_sr_model(cfg, 4)
    torch.nn.init.normal_(net.conv_last.weight, std=0.01)  # not the bare bicubic skip
    save_checkpoint(path, {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()},
                           "scale": 4, "pairs": "benchmark", "step": 0, "model": net.state_dict()})


def child(args: argparse.Namespace) -> dict:
    import torch

    from fca.train.sr import load_sr_model
    from fca.upscale import upscale_file

    torch.set_num_threads(args.threads)
    net = load_sr_model(args.dir / "model.pt")
    base = peak_rss_mb()
    t0 = time.perf_counter()
    out = args.dir / "out" / f"{args.name}.png"
    w, h = upscale_file(net, args.dir / "in" / f"{args.name}.png", out, tile=args.tile, level=1)
    seconds = time.perf_counter() - t0
    with open(out, "rb") as f:
        header = f.read(24)
    assert struct.unpack(">II", header[16:24]) == (w, h)
    png_mb = out.stat().st_size / 2**20
    out.unlink()
    return {"rss_before_mb": round(base, 1), "peak_rss_mb": round(peak_rss_mb(), 1), "seconds": seconds, "out": [w, h], "png_mb": png_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8000)
    p.add_argument("--small", type=int, default=500)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", choices=("make", "model", "run"), help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode == "make":
        make_image(args.dir / "in" / f"{args.name}.png", int(args.name.split("_")[1]))
        return
    if args.mode == "model":
        make_model(args.dir / "model.pt")
        return
    if args.mode == "run":
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="upscale_bench_") as d:
        d = Path(d)
        (d / "in").mkdir()
        subprocess.run([sys.executable, __file__, "--mode=model", f"--dir={d}"], check=True)
        for size in (args.small, args.size):
            subprocess.run([sys.executable, __file__, "--mode=make", f"--dir={d}", f"--name=img_{size}"], check=True)
        print(f"x4, tiny EDSR (1 block, 4 channels), tile {args.tile}, {args.threads} threads, PNG zlib level 1")
        for size in (args.small, args.size):
            r = subprocess.run([sys.executable, __file__, "--mode=run", f"--dir={d}", f"--name=img_{size}", f"--tile={args.tile}",
                                f"--threads={args.threads}"], check=True, capture_output=True, text=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            w, h = res["out"]
            print(f"{size:>5} x {size:<5} -> {w} x {h}: peak RSS {res['peak_rss_mb']:7.0f} MB (after imports and model "
                  f"{res['rss_before_mb']:.0f} MB), {res['seconds']:7.1f} s, PNG {res['png_mb']:.0f} MB, "
                  f"output pixels {3 * w * h / 2**20:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
