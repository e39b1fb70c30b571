"""Do the trainers' numbers depend on torch's CPU thread count? (Not a test: a measurement.)

    python -m benchmarks.thread_numerics --patches data/patches [--params tests/params_tiny.yaml] [--steps 30]

For each trainer (fca.train.fdc.train_fdc, fca.train.generator.train_generator with
loss "both", fca.train.sr.train_sr on bicubic pairs) and each mode (plain, and
torch.use_deterministic_algorithms(True)), one fresh child process per thread count
(1 and 2) trains from the same seed and prints the sha256 of its final weights and its
wall time. A second part runs single ops on fixed inputs at 1 and 2 threads and reports
which ones give different bits (conv forward / input grad / weight grad, reductions,
FFT, resize backward, Adam, lstsq): that is where the training runs part ways.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", message="TF32 acceleration")  # torch.backends.mkldnn.flags on a CPU build
TRAINERS = ("fdc", "generator", "sr")


def weights_hash(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        if torch.is_tensor(v):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    from fca.data.patches import load_patch_set
    from pipeline.params import load_params

    params = load_params(args.params)
    _, train_real, _ = load_patch_set(args.patches, "train")
    _, val_real, _ = load_patch_set(args.patches, "val")
    t0 = time.perf_counter()
    if args.trainer == "fdc":
        from fca.train.fdc import train_fdc

        cfg = dataclasses.replace(params.fdc, steps=args.steps, eval_every=args.steps, checkpoint_every=args.steps)
        net, _ = train_fdc(cfg, train_real, val_real, progress=False)
        state = net.state_dict()
    elif args.trainer == "generator":
        from fca.models.fdc_arch import build_fdc
        from fca.train.generator import train_generator

        torch.manual_seed(123)
        fdc = build_fdc(params.fdc.channels, params.fdc.normalize_input).eval()  # any fixed comparator
        cfg = dataclasses.replace(params.generator, steps=args.steps, loss="both", image_every=10**6, checkpoint_every=10**6)
        net, _ = train_generator(cfg, train_real, fdc, device=torch.device("cpu"), checkpoint_dir=None, progress=False)
        state = net.state_dict()
    else:
        from fca.resample import downscale
        from fca.train.sr import train_sr

        s = int(params.generator.scale)
        lr = downscale(train_real.float(), s)
        cfg = dataclasses.replace(params.evaluate.sr, steps=args.steps)
        net = train_sr(cfg, lr, train_real.float(), s, seed=0)
        state = net.state_dict()
    print(json.dumps({"hash": weights_hash(state), "seconds": time.perf_counter() - t0}))


def ops() -> list[tuple[str, bool]]:
    """(op, bitwise equal at 1 and 2 threads) for single ops on fixed random inputs."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, 64, 64, generator=g)
    w = torch.randn(16, 16, 3, 3, generator=g)
    img = torch.rand(8, 3, 128, 128, generator=g)
    a, b = torch.randn(4096, 64, generator=g), torch.randn(4096, 3, generator=g)
    big = torch.randn(10_000_000, generator=g)

    def conv_fwd():
        return F.conv2d(x, w, padding=1)

    def conv_grad(which: int, mkldnn: bool = True):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.backends.mkldnn.flags(enabled=mkldnn):
            F.conv2d(xi, wi, padding=1).square().sum().backward()
        return (xi.grad, wi.grad)[which]

    def bn_grads():
        xi = x.clone().requires_grad_()
        bn = torch.nn.BatchNorm2d(16)
        bn(xi).square().sum().backward()
        return xi.grad, bn.weight.grad

    def resize_bwd():
        xi = img.clone().requires_grad_()
        F.interpolate(xi, scale_factor=0.25, mode="bicubic", antialias=True).square().sum().backward()
        return xi.grad

    def adam():
        p = torch.nn.Parameter(x.clone())
        opt = torch.optim.Adam([p], lr=1e-3)
        p.grad = x.flip(0).clone()
        opt.step()
        return p.data

    cases = {
        "conv2d forward": conv_fwd,
        "conv2d input grad": lambda: conv_grad(0),
        "conv2d weight grad (oneDNN)": lambda: conv_grad(1),
        "conv2d weight grad (oneDNN off)": lambda: conv_grad(1, mkldnn=False),
        "sum of 8x16x64x64": lambda: x.sum(),
        "sum of 1e7 elements": lambda: big.sum(),
        "mean over dims (2, 3)": lambda: x.mean(dim=(2, 3)),
        "BatchNorm2d train fwd+bwd": bn_grads,
        "rfft2 + abs": lambda: torch.fft.rfft2(img).abs(),
        "bicubic antialias downscale backward": resize_bwd,
        "Adam step": adam,
        "matmul 4096x64 @ 64x4096": lambda: a @ a.T,
        "matmul 64x4096 @ 4096x64 (long inner dim)": lambda: a.T @ a,
        "lstsq 4096x64": lambda: torch.linalg.lstsq(a.double(), b.double()).solution,
    }
    out = []
    for name, fn in cases.items():
        res = []
        for t in (1, 2):
            torch.set_num_threads(t)
            r = fn()
            r = r if isinstance(r, tuple) else (r,)
            res.append(b"".join(v.detach().contiguous().numpy().tobytes() for v in r))
        out.append((name, res[0] == res[1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patches", type=Path, help="a patches stage's output folder (for the trainers)")
    p.add_argument("--params", type=Path, default=ROOT / "tests" / "params_tiny.yaml")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated; empty: the single ops only")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--trainer", choices=TRAINERS, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    print(f"{'trainer':10} {'mode':14} {'1 thread':>18} {'2 threads':>18} {'bitwise':>8} {'s@1':>6} {'s@2':>6}")
    for trainer in filter(None, args.trainers.split(",")):
        for det in (False, True):
            res = {}
            for t in (1, 2):
                cmd = [sys.executable, "-m", "benchmarks.thread_numerics", "--child", "--trainer", trainer, "--threads", str(t),
                       "--patches", str(args.patches), "--params", str(args.params), "--steps", str(args.steps)]
                cmd += ["--deterministic"] if det else []
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if out.returncode:
                    res[t] = {"hash": "ERROR " + out.stderr.strip().splitlines()[-1][:60], "seconds": float("nan")}
                else:
                    res[t] = json.loads(out.stdout.strip().splitlines()[-1])
            mode = "deterministic" if det else "default"
            same = res[1]["hash"] == res[2]["hash"]
            print(f"{trainer:10} {mode:14} {res[1]['hash']:>18} {res[2]['hash']:>18} {str(same):>8} "
                  f"{res[1]['seconds']:6.1f} {res[2]['seconds']:6.1f}", flush=True)
    print("\nsingle ops, 1 vs 2 threads:")
    for name, same in ops():
        print(f"  {name:44} {'bitwise equal' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
