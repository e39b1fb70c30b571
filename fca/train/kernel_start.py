"""Where a profile kernel starts: the best of a few starts, each fitted to the spectral loss alone.

With `kernel_param = profile` (an ellipse with a never-rising radial profile,
`fca.kernels.profile_kernels`) the spectral loss has more than one basin. Fitted alone to the
domain of a defocus disk (radius 4 px), from the Gaussian start the profile turns into a spike on
wide tails (density distance 0.132 on the judging crops, shape error 0.53 against the disk);
from a flat-topped start it ends at the disk (0.121, shape error 0.04). On the default Gaussian
domain (sigma 3) both starts end near the Gaussian (0.068 and 0.066; shape errors 0.08 and 0.09). So G's kernel starts from the start that fits the domain's
density best, judged on a fixed set of crops, the simpler one on a near tie (MARGIN); the ellipse
is fitted with the profile.

Pure: the caller gives the LR images a kernel makes (`lr_of`), the crops to fit on (`sample`),
the target density and the floor of the spectral loss it trains with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fca.kernels import flat_profile, gaussian_profile, profile_kernels
from fca.losses import density_cells, floored_log_l1

# The starts, simplest first: slope logits of each radial profile (`fca.kernels`), all of width kernel_init_sigma.
STARTS: dict[str, Callable[[], torch.Tensor]] = {"gaussian": gaussian_profile, "flat": flat_profile}
# A later start wins only when its density distance is below the simpler one's by more than this share. Why:
# on Gaussian domains both starts fit the density about equally (the flat one 2.9 % nearer on the default
# domain, 0.4 % on the noisy one) and the flat one leaves a flatter top than the domain's blur; on the disk
# the flat start is 8.5 % nearer.
MARGIN = 0.05


@dataclass(frozen=True)
class KernelStart:
    """The chosen start: smooth ellipse parameters [3] (`fca.kernels.gaussian_params`), profile slope
    logits [S], its name and every start's density distance on the judging crops."""

    ellipse: torch.Tensor
    profile: torch.Tensor
    chosen: str
    distances: dict[str, float]


@dataclass(frozen=True)
class StartFit:
    """How each start is fitted: Adam (lr, betas) for `steps` steps, cosine-decayed to 0, on the
    spectral loss (`bins` rings x `angles` sectors, `floor`) against `target`."""

    size: int
    init_sigma: float
    steps: int
    lr: float
    betas: tuple[float, float]
    bins: int
    angles: int
    floor: float
    seed: int


def _distance(lr_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], kernel: torch.Tensor, judge: torch.Tensor,
              target: torch.Tensor, fit: StartFit, chunk: int = 32) -> float:
    """The spectral loss of one kernel on all judging crops at once (their mean density)."""
    total = torch.zeros_like(target, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, judge.shape[0], chunk):
            x = judge[start : start + chunk]
            total += density_cells(lr_of(x, kernel.expand(x.shape[0], -1, -1)).float(), fit.bins, fit.angles).double().sum(0)
    return float(floored_log_l1((total / judge.shape[0]).float(), target, fit.floor))


def _fit_one(profile: torch.Tensor, lr_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             sample: Callable[[torch.Generator], torch.Tensor], target: torch.Tensor, fit: StartFit) -> tuple[torch.Tensor, torch.Tensor]:
    """One start fitted: (ellipse [3], profile [S]), detached."""
    ellipse = torch.tensor([[math.log(fit.init_sigma), 0.0, 0.0]], requires_grad=True)
    profile = profile.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([ellipse, profile], lr=fit.lr, betas=fit.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / fit.steps)))
    rng = torch.Generator().manual_seed(fit.seed)  # every start sees the same crops
    for _ in range(fit.steps):
        x = sample(rng)
        kernels = profile_kernels(ellipse, profile, fit.size).expand(x.shape[0], -1, -1)
        loss = floored_log_l1(density_cells(lr_of(x, kernels).float(), fit.bins, fit.angles).mean(0), target, fit.floor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return ellipse.detach()[0], profile.detach()


def kernel_start(lr_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sample: Callable[[torch.Generator], torch.Tensor],
                 judge: torch.Tensor, target: torch.Tensor, fit: StartFit) -> KernelStart:
    """Fit every start of STARTS and keep the simplest whose kernel is within MARGIN of the nearest to the
    target density on `judge`.

    lr_of(x [b, 3, H, W], kernels [b, K, K]) -> the LR images the spectral loss compares (G's, as
    the trainer fits them); sample(rng) -> a batch of training crops; judge: fixed crops
    [n, 3, H, W]; target: the spectral loss's target density [bins * angles]. Deterministic."""
    target = target.float()
    fitted, distances = {}, {}
    for name, make in STARTS.items():
        fitted[name] = _fit_one(make(), lr_of, sample, target, fit)
        kernel = profile_kernels(fitted[name][0][None], fitted[name][1], fit.size)
        distances[name] = _distance(lr_of, kernel, judge, target, fit)
    chosen = choose(distances)
    return KernelStart(*fitted[chosen], chosen, distances)


def choose(distances: dict[str, float]) -> str:
    """The first start (in STARTS' order, simplest first) within MARGIN of the nearest one's distance."""
    best = min(distances.values())
    return next(name for name, d in distances.items() if d <= best * (1 + MARGIN))
