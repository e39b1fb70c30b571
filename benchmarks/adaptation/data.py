"""Build the mixed-kernel domain of the table in docs/results.md in memory (cached as work/mixed.pt): per-patch anisotropic
Gaussians, sigma_x, sigma_y ~ U(1.0, 3.5) HR px, theta ~ U(0, 180), 13x13, and each patch's oracle kernel."""
import sys, math, torch, numpy as np
from pathlib import Path
OUT = Path(__file__).resolve().parent / "work"; OUT.mkdir(exist_ok=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fca.data.builtin import load_photo, dead_leaves
from fca.kernels import anisotropic_gaussian, conv_per_sample, effective_sigma
from fca.frequency import to_luma
from fca.resample import downscale
from fca.oracle import fit_oracle_kernel

VAL = ["astronaut", "chelsea", "coffee", "rocket"]
TRAIN = ["motorcycle_left", "motorcycle_right", "hubble_deep_field", "ihc", "retina"]

def crops(img, size=128, stride=96, max_n=64, rng=None):
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    h, w = x.shape[1:]
    out = [x[:, y:y+size, x0:x0+size] for y in range(0, h-size+1, stride) for x0 in range(0, w-size+1, stride)]
    c = torch.stack(out)
    c = c[to_luma(c).flatten(1).std(1) >= 0.02]
    if len(c) > max_n:
        c = c[torch.from_numpy(rng.choice(len(c), max_n, replace=False))]
    return c

def build(seed=0, ndl=8):
    rng = np.random.default_rng(seed)
    sets = {}
    imgs_tr = [load_photo(n) for n in TRAIN] + [dead_leaves(512, np.random.default_rng(100+i)) for i in range(ndl)]
    imgs_va = [load_photo(n) for n in VAL]
    for split, imgs in (("train", imgs_tr), ("val", imgs_va)):
        clean = torch.cat([crops(im, rng=rng) for im in imgs])
        ks, params = [], []
        for _ in range(len(clean)):
            sx, sy, th = rng.uniform(1.0, 3.5), rng.uniform(1.0, 3.5), rng.uniform(0, 180)
            ks.append(anisotropic_gaussian(13, sx, sy, th)); params.append((sx, sy, th))
        k = torch.from_numpy(np.stack(ks))
        real = conv_per_sample(clean.double(), k).clamp(0, 1)
        real = (real * 255).round() / 255
        clean = (clean.double() * 255).round() / 255
        down = downscale(real, 4)
        true = conv_per_sample(downscale(clean, 4), k)
        kor = torch.stack([fit_oracle_kernel(down[i:i+1], true[i:i+1], 13) for i in range(len(clean))])
        sets[split] = dict(clean=clean.float(), real=real.float(), k=k, params=torch.tensor(params), kor=kor)
        print(split, len(clean), "oracle sigma range", effective_sigma(kor).min().item(), effective_sigma(kor).max().item(), flush=True)
    torch.save(sets, str(OUT / "mixed.pt"))

if __name__ == "__main__":
    torch.set_num_threads(1)
    build()
