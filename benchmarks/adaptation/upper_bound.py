"""Upper bound: the spectral estimator's features trained on the true kernels of the real training patches."""
import sys, time, torch, math
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2])); sys.path.insert(0, str(Path(__file__).resolve().parent))
from fca.models.generator_arch import SpectralKernelEstimator
from fca.kernels import gaussian_params, effective_sigma, cov_rel_error, principal_axis, angle_difference
from data import OUT
torch.set_num_threads(1); torch.manual_seed(0)
S = torch.load(str(OUT / "mixed.pt")); T, V = S["train"], S["val"]
est = SpectralKernelEstimator(13, 32, 16, 8, 128, "gaussian", 1.2)
est.calibrate(T["real"])
P = T["params"].double()
lab = gaussian_params(0.968 * P[:, 0], 0.968 * P[:, 1], torch.deg2rad(P[:, 2])).float()
opt = torch.optim.Adam(est.parameters(), lr=1e-3)
rng = torch.Generator().manual_seed(0)
feats = est.raw_features(T["real"])  # precompute (no augmentation)
for it in range(3000):
    idx = torch.randint(0, len(lab), (32,), generator=rng)
    f = (feats[idx] - est.feature_mean) / est.feature_std
    loss = (est.mlp(f) + est.prior - lab[idx]).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad(): k = est(V["real"]).double()
kor = V["kor"]; sp, so = effective_sigma(k), effective_sigma(kor)
ro, ao = principal_axis(kor); rp, ap = principal_axis(k); m = ro >= 1.5
print("UPPER (supervised on real train, oracle-ish labels): pearson", torch.corrcoef(torch.stack([sp, so]))[0, 1].item(), "cov", cov_rel_error(k, kor).median().item(), "angle", angle_difference(ap, ao)[m].median().item(), "train loss", loss.item())
