import numpy as np
import pytest
import scipy.optimize
import skimage.data
import torch

from fca.kernels import anisotropic_gaussian, conv_per_sample, effective_sigma, gaussian
from fca.metrics import psnr
from fca.oracle import fit_oracle_kernel, fit_oracle_kernels_per_image
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


def test_oracle_matches_a_generic_qp_solver_when_the_best_fit_is_outside_the_simplex():
    gen = torch.Generator().manual_seed(1)
    lr_in = torch.rand(4, 3, 16, 16, generator=gen, dtype=torch.float64)
    # A sharpening kernel (negative lobes) made the target: the unconstrained fit leaves the simplex.
    k_sharp = torch.from_numpy(np.array([[0, -0.25, 0], [-0.25, 2.0, -0.25], [0.1, -0.25, 0]]))
    target = conv_per_sample(lr_in, k_sharp)
    k_fit = fit_oracle_kernel(lr_in, target, 3)
    assert (k_fit >= 0).all() and float(k_fit.sum()) == pytest.approx(1.0)

    def loss(v: np.ndarray) -> float:
        return float(((conv_per_sample(lr_in, torch.from_numpy(v.reshape(3, 3))) - target) ** 2).sum())

    ref = scipy.optimize.minimize(
        loss, np.full(9, 1 / 9), method="SLSQP", bounds=[(0, 1)] * 9,
        constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}], options={"ftol": 1e-12, "maxiter": 500},
    )
    assert ref.success
    assert loss(k_fit.numpy().ravel()) <= ref.fun + 1e-8
    assert np.allclose(k_fit.numpy().ravel(), ref.x, atol=1e-3)


def test_per_image_oracle_recovers_each_images_kernel():
    gen = torch.Generator().manual_seed(2)
    lr_in = torch.rand(3, 3, 20, 20, generator=gen, dtype=torch.float64)
    ks = torch.stack([torch.from_numpy(gaussian(5, s)) for s in (0.5, 1.0, 1.5)])
    target = conv_per_sample(lr_in, ks)
    fitted = fit_oracle_kernels_per_image(lr_in, target, 5)
    assert fitted.shape == (3, 5, 5)
    assert torch.allclose(fitted, ks, atol=1e-6)


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
