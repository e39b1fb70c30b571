import numpy as np
import pytest
import skimage.data
import torch

from fca.kernels import anisotropic_gaussian, conv_per_sample, effective_sigma, gaussian
from fca.metrics import psnr
from fca.oracle import fit_oracle_kernel, fit_oracle_kernels, fit_oracle_kernels_per_image
from fca.resample import downscale



def _photo_crops(size: int = 128) -> torch.Tensor:
    """[N, 3, size, size] grid crops of three bundled photos, in [0, 1]."""
    out = []
    for img in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()):
        t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)
        h, w = t.shape[-2:]
        out += [t[:, y : y + size, x : x + size] for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]
    return torch.stack(out)


def test_oracle_reproduces_true_lr_for_the_paper_kernel():
    clean = _photo_crops()
    k_gt = torch.from_numpy(gaussian(13, 3.0))
    real = conv_per_sample(clean, k_gt)
    lr_in = downscale(real, 4)
    l_true = conv_per_sample(downscale(clean, 4), k_gt)
    k_or = fit_oracle_kernel(lr_in, l_true, 13)
    assert k_or.shape == (13, 13) and k_or.dtype == torch.float64
    assert (k_or >= 0).all() and float(k_or.sum()) == pytest.approx(1.0, abs=1e-9)
    fitted = conv_per_sample(lr_in, k_or)
    assert float(psnr(fitted, l_true).mean()) > 45.0
    assert float(psnr(lr_in, l_true).mean()) < 35.0  # the bicubic LR alone is far off
    assert float(effective_sigma(k_or)) == pytest.approx(2.67, abs=0.15)


@pytest.mark.parametrize("kernel", ["isotropic", "anisotropic", "shifted"])
def test_oracle_recovers_an_exact_kernel_in_the_right_orientation(kernel):
    gen = torch.Generator().manual_seed(0)
    lr_in = torch.rand(12, 3, 24, 24, generator=gen, dtype=torch.float64)
    if kernel == "isotropic":
        k = gaussian(7, 1.2)
    elif kernel == "anisotropic":
        k = anisotropic_gaussian(7, 2.0, 0.6, 30.0)
    else:  # asymmetric under flips: mass off centre, top-left heavy
        k = np.zeros((7, 7))
        k[1, 2], k[3, 3], k[4, 5] = 0.6, 0.3, 0.1
    k_known = torch.from_numpy(k)
    target = conv_per_sample(lr_in, k_known)
    k_fit = fit_oracle_kernel(lr_in, target, 7)
    assert torch.allclose(k_fit, k_known, atol=1e-6)
    flipped = k_known.flip(-1, -2)
    if not torch.allclose(flipped, k_known):
        assert not torch.allclose(k_fit, flipped, atol=1e-3)


def _design_matrix(lr_in: torch.Tensor, size: int) -> np.ndarray:
    """Column j: lr_in convolved (by `conv_per_sample`) with the j-th unit kernel, flattened.

    The fit's residual conv_per_sample(lr_in, k) - target is linear in k, so it is
    A k - t with this A. Built from `conv_per_sample` itself, not from the oracle's
    own shifted-copy normal equations, so the check below is independent of them.
    """
    cols = []
    for j in range(size * size):
        unit = torch.zeros(size * size, dtype=torch.float64)
        unit[j] = 1.0
        cols.append(conv_per_sample(lr_in, unit.reshape(size, size)).reshape(-1).numpy())
    return np.stack(cols, 1)


def _simplex_kkt_violations(gram: np.ndarray, rhs: np.ndarray, k: np.ndarray, rel_tol: float = 1e-7) -> list[str]:
    """Which KKT conditions of  min 0.5 k'Gk - b'k  s.t. k >= 0, sum(k) = 1  fail at k (empty: k is optimal).

    With g = G k - b, optimality means: k feasible; some nu with g_j + nu = mu_j, where
    mu_j >= 0 for all j (multipliers of k_j >= 0) and mu_j = 0 where k_j > 0
    (complementary slackness). The problem is convex, so these are sufficient.
    Tolerances scale with the problem: |g| is of the size of max|G| + max|b|.
    """
    scale = np.abs(gram).max() + np.abs(rhs).max()
    tol = rel_tol * scale
    bad = []
    if k.min() < 0:
        bad.append(f"infeasible: min k = {k.min():.3g} < 0")
    if abs(k.sum() - 1.0) > 1e-9:
        bad.append(f"infeasible: sum k = {k.sum():.12f} != 1")
    g = gram @ k - rhs
    support = k > 1e-12
    nu = -g[support].mean()  # on the support mu_j = 0, so g_j = -nu there
    mu = g + nu
    if np.abs(mu[support]).max() > tol:
        bad.append(f"stationarity: g varies by {np.ptp(g[support]):.3g} on the support (tol {tol:.3g})")
    if mu.min() < -tol:
        bad.append(f"dual feasibility: min mu = {mu.min():.3g} < -{tol:.3g} (moving mass to entry {int(mu.argmin())} lowers the loss)")
    if np.abs(mu * k).sum() > tol:
        bad.append(f"complementary slackness: sum |mu_j k_j| = {np.abs(mu * k).sum():.3g} > {tol:.3g}")
    return bad


def _project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {k >= 0, sum k = 1} (sort-based, Held et al. 1974)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.flatnonzero(u - css / np.arange(1, v.size + 1) > 0)[-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def _projected_gradient(gram: np.ndarray, rhs: np.ndarray, iters: int = 20000) -> np.ndarray:
    """A slow, plain reference: projected gradient with step 1/L from the uniform kernel.

    Converges on any machine for a convex QP (no line search, no tolerance-driven exits).
    """
    step = 1.0 / np.linalg.eigvalsh(gram).max()
    k = np.full(rhs.size, 1.0 / rhs.size)
    for _ in range(iters):
        k = _project_to_simplex(k - step * (gram @ k - rhs))
    return k


def test_oracle_is_the_simplex_qp_optimum_when_the_best_fit_is_outside_the_simplex():
    gen = torch.Generator().manual_seed(1)
    lr_in = torch.rand(4, 3, 16, 16, generator=gen, dtype=torch.float64)
    # A kernel with negative lobes (sum 1) plus noise made the target: the unconstrained fit
    # leaves the simplex and the optimum lies inside a face (several entries > 0, some = 0),
    # not at a vertex, so every KKT condition below is exercised.
    k_lobes = torch.from_numpy(np.array([[0.35, 0.25, -0.15], [0.3, 0.3, 0.1], [-0.1, 0.05, -0.1]]))
    target = conv_per_sample(lr_in, k_lobes) + 0.02 * torch.randn(lr_in.shape, generator=gen, dtype=torch.float64)
    k_fit = fit_oracle_kernel(lr_in, target, 3)
    assert (k_fit >= 0).all() and float(k_fit.sum()) == pytest.approx(1.0)

    a = _design_matrix(lr_in, 3)
    t = target.reshape(-1).numpy()
    gram, rhs = a.T @ a, a.T @ t
    assert np.linalg.lstsq(a, t, rcond=None)[0].min() < -0.1  # the constraints are active: a real QP

    k = k_fit.numpy().ravel()
    assert _simplex_kkt_violations(gram, rhs, k) == []
    # Some bounds k_j >= 0 are active and several are not (the optimum lies inside a face).
    assert (k == 0).sum() >= 2 and (k > 0.01).sum() >= 3

    # Objective, not coefficients, against a plain reference solver that converges everywhere.
    def loss(v: np.ndarray) -> float:
        return float(((a @ v - t) ** 2).sum())

    k_ref = _projected_gradient(gram, rhs)
    assert _simplex_kkt_violations(gram, rhs, k_ref, rel_tol=1e-5) == []  # the reference did converge
    assert loss(k) <= loss(k_ref) * (1 + 1e-9) + 1e-12

    # The check has teeth: moving a little mass between two entries breaks it.
    i, j = int(np.argmax(k)), int(np.argmin(np.where(k > 0, k, np.inf)))
    nudged = k.copy()
    nudged[i] -= 1e-3
    nudged[j] += 1e-3
    assert _simplex_kkt_violations(gram, rhs, nudged) != []
    assert loss(nudged) > loss(k)


def test_per_image_oracle_recovers_each_images_kernel():
    gen = torch.Generator().manual_seed(2)
    lr_in = torch.rand(3, 3, 20, 20, generator=gen, dtype=torch.float64)
    ks = torch.stack([torch.from_numpy(gaussian(5, s)) for s in (0.5, 1.0, 1.5)])
    target = conv_per_sample(lr_in, ks)
    (fitted,) = fit_oracle_kernels_per_image(lr_in, target, 5)
    assert fitted.shape == (3, 5, 5)
    assert torch.allclose(fitted, ks, atol=1e-6)


def test_several_smoothing_weights_from_one_build_are_the_single_fits():
    gen = torch.Generator().manual_seed(3)
    lr_in = torch.rand(2, 3, 24, 24, generator=gen, dtype=torch.float64)
    target = conv_per_sample(lr_in, torch.from_numpy(gaussian(5, 1.1))) + 0.01 * torch.randn(2, 3, 24, 24, generator=gen, dtype=torch.float64)
    weights = (0.0, 1e-3, 1e-1)
    together = fit_oracle_kernels(lr_in, target, 5, weights)
    for w, k in zip(weights, together):
        assert torch.equal(k, fit_oracle_kernel(lr_in, target, 5, smooth=w))
    assert not torch.allclose(together[0], together[2], atol=1e-3)  # the weights matter
    per_image = fit_oracle_kernels_per_image(lr_in, target, 5, weights)
    for j, w in enumerate(weights):
        assert torch.equal(per_image[j][1], fit_oracle_kernel(lr_in[1:], target[1:], 5, smooth=w))
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        fit_oracle_kernels(lr_in, target, 5, (0.0, -1.0))


def test_oracle_errors_name_the_problem():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="odd"):
        fit_oracle_kernel(x, x, 4)
    with pytest.raises(ValueError, match="must be equal"):
        fit_oracle_kernel(x, x[:1], 3)
    with pytest.raises(ValueError, match="larger than"):
        fit_oracle_kernel(x, x, 17)
    with pytest.raises(ValueError, match="all zero"):
        fit_oracle_kernel(torch.zeros_like(x), x, 3)
