"""Per source photo: r, mean width and RMSE of the last train_eval.py run."""
import sys, torch, numpy as np
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2])); sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import crops, VAL, OUT
from fca.data.builtin import load_photo
rng = np.random.default_rng(0)
counts = [len(crops(load_photo(n), rng=rng)) for n in VAL]
d = torch.load(str(OUT / "last_pred.pt")); sp, so = d["sp"], d["so"]
S = torch.load(str(OUT / "mixed.pt")); P = S["val"]["params"]
i = 0
for n, c in zip(VAL, counts):
    a, b = sp[i:i+c], so[i:i+c]
    print(f"{n:10s} n={c:2d} pearson {torch.corrcoef(torch.stack([a,b]))[0,1]:.2f} mean pred {a.mean():.2f} oracle {b.mean():.2f} rmse {((a-b)**2).mean().sqrt():.2f}")
    i += c
print("total", i, len(sp))
