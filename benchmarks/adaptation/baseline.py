"""The non-learned per-image baseline (fca.baseline) on the mixed domain: python baseline.py [angular_bins] [floor].

angular_bins 4 / floor 2.5e-5 is the referee's baseline; 1 / 1e-4 is the radial-density variant of the table in docs/results.md."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import OUT  # noqa: E402
from fca.baseline import fit_kernels_by_density  # noqa: E402
from fca.evaluate import kernel_agreement  # noqa: E402
from fca.kernels import conv_per_sample  # noqa: E402
from fca.resample import downscale  # noqa: E402

torch.set_num_threads(1)
ab = int(sys.argv[1]) if len(sys.argv) > 1 else 4
floor = float(sys.argv[2]) if len(sys.argv) > 2 else 2.5e-5
V = torch.load(OUT / "mixed.pt")["val"]
k, seconds = fit_kernels_by_density(V["real"], 4, 13, angular_bins=ab, floor=floor)
down = downscale(V["real"].double(), 4)
true = conv_per_sample(downscale(V["clean"].double(), 4), V["k"])
psnr = 10 * torch.log10(1 / ((conv_per_sample(down, k) - true) ** 2).mean((1, 2, 3))).mean().item()
print(kernel_agreement(k, V["kor"]), f"LR PSNR {psnr:.2f} dB, {seconds / len(k):.2f} s per image")
