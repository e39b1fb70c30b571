"""Train G with the project's trainer on the mixed domain and score it: python train_eval.py '{"steps": 600, "w_wd": 0}' (GeneratorConfig overrides)."""
import sys, time, torch, math, dataclasses, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2])); sys.path.insert(0, str(Path(__file__).resolve().parent))
from fca.train.generator import GeneratorConfig, train_generator
from fca.kernels import conv_per_sample, effective_sigma, cov_rel_error, principal_axis, angle_difference
from fca.resample import downscale
from fca.oracle import fit_oracle_kernel
from data import OUT
torch.set_num_threads(1)
S = torch.load(str(OUT / "mixed.pt")); T, V = S["train"], S["val"]
over = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
cfg = dataclasses.replace(GeneratorConfig(), loss="spectral", **{k: tuple(v) if isinstance(v, list) else v for k, v in over.items()})
t0 = time.time()
gen, hist = train_generator(cfg, T["real"], None, device=torch.device("cpu"), checkpoint_dir=None, progress=False)
tt = time.time() - t0
with torch.no_grad():
    t0 = time.time(); k = gen.estimate_kernel(V["real"]).double(); dt = (time.time() - t0) / len(k)
kor = V["kor"]
sp, so = effective_sigma(k), effective_sigma(kor)
r = torch.corrcoef(torch.stack([sp, so]))[0, 1].item()
ro, ao = principal_axis(kor); rp, ap = principal_axis(k); m = ro >= 1.5
down = downscale(V["real"].double(), 4)
true = conv_per_sample(downscale(V["clean"].double(), 4), V["k"])
psnr = lambda a: 10 * torch.log10(1 / ((a - true) ** 2).mean((1, 2, 3))).mean().item()
kg = fit_oracle_kernel(down, true, 13)
print(over, f"pearson {r:.3f} cov_err_med {cov_rel_error(k, kor).median():.3f} angle_med {angle_difference(ap, ao)[m].median():.1f} "
      f"lrpsnr ours {psnr(conv_per_sample(down, k)):.2f} global {psnr(conv_per_sample(down, kg)):.2f} oracle {psnr(conv_per_sample(down, kor)):.2f} "
      f"sig pred {sp.mean():.2f} oracle {so.mean():.2f}; train {tt:.0f}s, {dt*1000:.2f} ms/img; last losses {hist[-1]}", flush=True)
torch.save({"sp": sp, "so": so, "k": k}, str(OUT / "last_pred.pt"))
