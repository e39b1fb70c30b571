"""Where a profile kernel starts: the Gaussian, unless a fitted radial profile matches the domain clearly better.

With `kernel_param = profile` (an ellipse with a never-rising radial profile,
`fca.kernels.profile_kernels`) each start below is fitted to the spectral loss alone and judged
by its density distance on a fixed set of crops. The Gaussian (only its ellipse fitted) is kept
unless its distance is more than 1 + PROFILE_MARGIN times a free profile's: on the default Gaussian domain
(sigma 3) free profiles fit the density 1.06x and 1.09x nearer than the Gaussian (0.068 from the
Gaussian start, 0.066 from a flat top, against 0.072), yet the first's kernel costs the SR nets
(gain fraction 0.86 against the Gaussian kernel's 0.98, docs/results.md): a near tie is no reason
to leave the Gaussian; on a defocus disk (radius 4 px) the flat start
is 2.96x nearer (0.121 against 0.357), on a motion streak (9 px) the Gaussian start 1.76x (0.222
against 0.391). Between the free starts the simpler one wins a near tie (MARGIN): on the disk,
from the Gaussian start the profile turns into a spike on wide tails (0.132, shape error 0.53),
from the flat start it ends at the disk (0.121, shape error 0.04).

A domain whose images each have their own blur (`per_image`, the spectral estimator) keeps the
Gaussian: the profile is one lens for the domain, and the domain's mean density mixes many blurs,
which a free profile matches better than any single kernel does (1.77x on presets/mixed.yaml)
though every image's blur there is a Gaussian.

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

# The starts, simplest first: (slope logits of the radial profile (`fca.kernels`), whether the fit moves
# the profile), all of width kernel_init_sigma. "gaussian" is the Gaussian itself: only its ellipse is fitted.
STARTS: dict[str, tuple[Callable[[], torch.Tensor], bool]] = {
    "gaussian": (gaussian_profile, False),
    "gaussian-start": (gaussian_profile, True),
    "flat-start": (flat_profile, True),
}
# A free profile is taken only when the Gaussian's density distance exceeds the free profile's by more than
# this share (module docstring: 1.09x on the Gaussian domain, 1.76x and 2.96x on the streak and the disk).
PROFILE_MARGIN = 0.35
# Between the free starts, a later one wins only when it is nearer than the simpler one by more than this share.
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
    spectral loss (`bins` rings x `angles` sectors, `floor`, cell `weights` or None) against `target`."""

    size: int
    init_sigma: float
    steps: int
    lr: float
    betas: tuple[float, float]
    bins: int
    angles: int
    floor: float
    seed: int
    weights: torch.Tensor | None = None


def _distance(lr_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], kernel: torch.Tensor, judge: torch.Tensor,
              target: torch.Tensor, fit: StartFit, chunk: int = 32) -> float:
    """The spectral loss of one kernel on all judging crops at once (their mean density)."""
    total = torch.zeros_like(target, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, judge.shape[0], chunk):
            x = judge[start : start + chunk]
            total += density_cells(lr_of(x, kernel.expand(x.shape[0], -1, -1)).float(), fit.bins, fit.angles).double().sum(0)
    return float(floored_log_l1((total / judge.shape[0]).float(), target, fit.floor, fit.weights))


def _fit_one(profile: torch.Tensor, free: bool, lr_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             sample: Callable[[torch.Generator], torch.Tensor], target: torch.Tensor, fit: StartFit) -> tuple[torch.Tensor, torch.Tensor]:
    """One start fitted: (ellipse [3], profile [S]), detached."""
    ellipse = torch.tensor([[math.log(fit.init_sigma), 0.0, 0.0]], requires_grad=True)
    profile = profile.clone().float().requires_grad_(free)
    opt = torch.optim.Adam([ellipse, profile] if free else [ellipse], lr=fit.lr, betas=fit.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / fit.steps)))
    rng = torch.Generator().manual_seed(fit.seed)  # every start sees the same crops
    for _ in range(fit.steps):
        x = sample(rng)
        kernels = profile_kernels(ellipse, profile, fit.size).expand(x.shape[0], -1, -1)
        loss = floored_log_l1(density_cells(lr_of(x, kernels).float(), fit.bins, fit.angles).mean(0), target, fit.floor, fit.weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return ellipse.detach()[0], profile.detach()


def kernel_start(lr_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sample: Callable[[torch.Generator], torch.Tensor],
                 judge: torch.Tensor, target: torch.Tensor, fit: StartFit, per_image: bool = False) -> KernelStart:
    """Fit the starts of STARTS (the Gaussian's alone with `per_image`) and keep the one `choose` picks by
    their density distances to the target on `judge`.

    lr_of(x [b, 3, H, W], kernels [b, K, K]) -> the LR images the spectral loss compares (G's, as
    the trainer fits them); sample(rng) -> a batch of training crops; judge: fixed crops
    [n, 3, H, W]; target: the spectral loss's target density [bins * angles]. Deterministic."""
    target = target.float()
    fitted, distances = {}, {}
    for name, (make, free) in STARTS.items():
        if per_image and free:
            continue
        fitted[name] = _fit_one(make(), free, lr_of, sample, target, fit)
        kernel = profile_kernels(fitted[name][0][None], fitted[name][1], fit.size)
        distances[name] = _distance(lr_of, kernel, judge, target, fit)
    chosen = choose(distances)
    return KernelStart(*fitted[chosen], chosen, distances)


def choose(distances: dict[str, float]) -> str:
    """The Gaussian unless its distance exceeds the nearest free start's by more than PROFILE_MARGIN; then the first free
    start (in STARTS' order, simplest first) within MARGIN of the nearest one."""
    free = {name: d for name, d in distances.items() if STARTS[name][1]}
    if not free or distances["gaussian"] <= min(free.values()) * (1 + PROFILE_MARGIN):
        return "gaussian"
    best = min(free.values())
    return next(name for name, d in free.items() if d <= best * (1 + MARGIN))
