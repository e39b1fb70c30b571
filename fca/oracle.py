"""The oracle kernel: the best K x K blur for a known answer (docs/design.md, "Oracle kernel").

Given LR inputs (e.g. down(R)) and the true LR images (L_true), the oracle kernel
k_or is the K x K kernel, non-negative and summing to 1, that minimises

    || conv_per_sample(lr_in, k) - target ||^2   over all images and channels.

The convolution is linear in k, so this is a least-squares problem with simplex
constraints. We build its normal equations from shifted copies of the
reflect-padded input (the same padding `conv_per_sample` uses), in float64, and
solve the small K^2-variable QP exactly: non-negative least squares (Lawson-Hanson)
with the sum constraint as a heavily weighted extra row gives a near-optimal feasible
start, and primal active-set iterations (equality-constrained solves on the support)
remove the penalty's small bias and end at the exact optimum (KKT checked).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.optimize
import torch
import torch.nn.functional as F

# Weight of the "sum to 1" row relative to the data rows: large enough that the
# NNLS support is the constrained one, small enough for Householder QR in float64.
_SUM_WEIGHT = 1e4
_CHUNK_PIXELS = 1 << 14  # pixels per im2col block: small blocks stay in cache


def _check_pair(lr_in: torch.Tensor, target: torch.Tensor, size: int) -> None:
    if lr_in.dim() != 4 or lr_in.shape != target.shape:
        raise ValueError(f"oracle: lr_in {tuple(lr_in.shape)} and target {tuple(target.shape)} must be equal [N, C, h, w]")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"oracle: kernel size must be a positive odd number, got {size}")
    pad = size // 2
    if pad >= lr_in.shape[-2] or pad >= lr_in.shape[-1]:
        raise ValueError(f"oracle: a {size}x{size} kernel needs images larger than {pad} pixels, got {tuple(lr_in.shape[-2:])}")


def _normal_equations(lr_in: torch.Tensor, target: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix A^T A [K^2, K^2] and A^T t [K^2] of one least-squares problem.

    Column (i*K + j) of A is the padded input shifted by (i, j), i.e. what multiplies
    the *flipped* kernel entry (i, j) in `conv_per_sample`; the caller flips back.
    """
    n, c, h, w = lr_in.shape
    pad = size // 2
    gram = torch.zeros(size * size, size * size, dtype=torch.float64)
    rhs = torch.zeros(size * size, dtype=torch.float64)
    per_chunk = max(1, _CHUNK_PIXELS // (h * w))  # image planes (one channel of one image) per chunk
    x = lr_in.detach().double().reshape(n * c, 1, h, w)
    t = target.detach().double().reshape(n * c, h * w, 1)
    for start in range(0, n * c, per_chunk):
        xs = F.pad(x[start : start + per_chunk], (pad, pad, pad, pad), mode="reflect")
        cols = F.unfold(xs, size)  # [P, K*K, h*w]: row (i*K + j) is xs[y + i, x + j]
        # Batched products avoid copying the im2col block into one tall matrix.
        gram += torch.bmm(cols, cols.mT).sum(0)
        rhs += torch.bmm(cols, t[start : start + per_chunk]).sum(0)[:, 0]
    return gram.numpy(), rhs.numpy()


def _solve_simplex_qp(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """argmin_k 0.5 k^T G k - b^T k subject to k >= 0, sum(k) = 1 (G symmetric PSD)."""
    m = gram.shape[0]
    scale = np.trace(gram) / m
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("oracle: the input images are all zero (or not finite); no kernel can be fitted")
    g = gram / scale
    b = rhs / scale
    # A tiny ridge keeps the Cholesky factor defined when shifted copies are nearly collinear
    # (smooth images); relative to the unit mean diagonal it does not move the solution.
    g = g + 1e-10 * np.eye(m)
    r = scipy.linalg.cholesky(g, lower=False)  # g = r^T r
    d = scipy.linalg.solve_triangular(r, b, trans="T")  # ||A k - t||^2 = ||r k - d||^2 + const
    a_aug = np.vstack([r, _SUM_WEIGHT * np.ones((1, m))])
    d_aug = np.concatenate([d, [_SUM_WEIGHT]])
    k, _ = scipy.optimize.nnls(a_aug, d_aug, maxiter=50 * m)
    k = np.clip(k, 0.0, None)
    k /= k.sum()
    return _active_set_polish(g, b, k)


def _active_set_polish(g: np.ndarray, b: np.ndarray, k: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Primal active-set iterations from a feasible k to the exact simplex-QP optimum.

    The weighted-row NNLS solution is (nearly) right but carries a small penalty bias;
    starting from its support this usually ends after one equality-constrained solve.
    """
    m = k.size
    free = k > 0
    for _ in range(10 * m):
        idx = np.flatnonzero(free)
        s = idx.size
        kkt = np.zeros((s + 1, s + 1))
        kkt[:s, :s] = g[np.ix_(idx, idx)]
        kkt[:s, s] = kkt[s, :s] = 1.0
        sol = np.linalg.lstsq(kkt, np.concatenate([b[idx], [1.0]]), rcond=None)[0]
        target, nu = sol[:s], sol[s]
        if (target > 0).all():
            k = np.zeros(m)
            k[idx] = target
            mu = g @ k - b + nu  # multipliers of k_j >= 0; all >= 0 at the optimum
            mu[free] = 0.0
            j = int(np.argmin(mu))
            if mu[j] >= -tol * (1.0 + np.abs(b).max()):
                return k
            free[j] = True
            continue
        # Step from the feasible k towards the support's optimum until a coordinate hits 0.
        step = target - k[idx]
        blocking = step < 0
        ratios = np.full(s, np.inf)
        ratios[blocking] = k[idx][blocking] / -step[blocking]
        alpha = min(1.0, ratios.min())
        k[idx] = k[idx] + alpha * step
        k[idx[ratios <= alpha]] = 0.0
        free = k > 0
    raise RuntimeError("oracle: active-set iterations did not converge")


def _gradient_gram(size: int) -> np.ndarray:
    """D^T D [K^2, K^2] for D the horizontal and vertical neighbour differences on the K x K grid:
    k^T D^T D k is the kernel's squared gradient norm (symmetric, so the flip does not matter)."""
    rows = []
    for i in range(size):
        for j in range(size):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < size and j + dj < size:
                    r = np.zeros(size * size)
                    r[i * size + j], r[(i + di) * size + j + dj] = -1.0, 1.0
                    rows.append(r)
    d = np.array(rows).reshape(-1, size * size)
    return d.T @ d


def fit_oracle_kernel(lr_in: torch.Tensor, target: torch.Tensor, size: int, smooth: float = 0.0) -> torch.Tensor:
    """The K x K kernel k (k >= 0, sum 1) minimising ||conv_per_sample(lr_in, k) - target||^2
    (+ smooth * mean(diag A^T A) * ||grad k||^2).

    lr_in, target: [N, C, h, w] (e.g. down(R) and L_true). Pooled over all images and
    channels. Returns a float64 tensor [size, size] to pass to `conv_per_sample` as is.

    smooth > 0 picks, among kernels that fit almost as well, the smoothest: frequencies that
    down(R) barely contains (near LR Nyquist, after the camera's blur) leave the exact fit's
    kernel free there, and it fills them with a checkerboard that fits quantisation noise.
    The weight is relative to the data term's mean diagonal, so it does not depend on the
    number of images or their contrast.
    """
    return fit_oracle_kernels(lr_in, target, size, (smooth,))[0]


def fit_oracle_kernels(lr_in: torch.Tensor, target: torch.Tensor, size: int, smooths: Sequence[float]) -> list[torch.Tensor]:
    """`fit_oracle_kernel` at each weight in `smooths`, from one build of the normal equations
    (the costly part: a pass over every image; each solve is a small QP)."""
    _check_pair(lr_in, target, size)
    if any(w < 0 for w in smooths):
        raise ValueError(f"oracle: smooth must be >= 0, got {min(smooths)}")
    gram, rhs = _normal_equations(lr_in, target, size)
    scale = np.trace(gram) / gram.shape[0]
    kernels = []
    for w in smooths:
        flipped = _solve_simplex_qp(gram + w * scale * _gradient_gram(size) if w > 0 else gram, rhs).reshape(size, size)
        # The unknowns multiply shifted copies in cross-correlation order; conv_per_sample flips.
        kernels.append(torch.from_numpy(np.ascontiguousarray(flipped[::-1, ::-1])))
    return kernels


def fit_oracle_kernels_per_image(lr_in: torch.Tensor, target: torch.Tensor, size: int,
                                 smooths: Sequence[float] = (0.0,)) -> list[torch.Tensor]:
    """One oracle kernel per image at each weight in `smooths`: [N, C, h, w] pairs -> a
    [N, size, size] float64 tensor per weight (the normal equations built once per image).

    Small images give few equations per kernel, so these are noisier than the pooled fit.
    """
    _check_pair(lr_in, target, size)
    per_image = [fit_oracle_kernels(lr_in[i : i + 1], target[i : i + 1], size, smooths) for i in range(lr_in.shape[0])]
    return [torch.stack([fits[j] for fits in per_image]) for j in range(len(smooths))]
