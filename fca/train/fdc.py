"""Stage `train_fdc`: train the Frequency Density Comparator with a scale curriculum.

Pairs (docs/design.md, "Frequency Density Comparator (FDC)"): from a real-domain patch R make
an anchor x, x_D (R shrunk by s more than x: denser in high frequencies), x_U (R
enlarged by s relative to x: sparser) and x' (another crop at the anchor's scale),
each cropped to `patch_size` at an independent random place. Targets:
C(x_D, x) = +1, C(x', x) = 0, C(x_U, x) = -1.

What we add to the paper's recipe, each measured in benchmarks/fdc_experiments.py:
- every resampled image draws its resampler (area / bilinear / bicubic) at random,
  so the comparator cannot key on one resampler's signature;
- `anchor_jitter`: the anchor itself is R resized by a random factor t0 (x_D and x_U
  are then R resized by t0*s and t0/s), so "is this image native" is no cue either;
  the generator compares a resampled output with native crops, and must not be
  judged by that difference;
- the curriculum lowers s from scale_start to scale_end, and with
  `scale_sampling: range` each pair draws its own s log-uniformly between the
  current s and scale_start, so easy scales are not forgotten;
- random flips / 90-degree rotations (a density has no orientation);
- extra-blur pairs (`blur_weight`): x_B = x (*) Gaussian, asked only for
  C(x_B, x) < 0. Resampling changes zoom and blur together, so a comparator
  trained on it alone can rank by zoom (how busy the content looks) and barely
  react to blur; then a generator adds far too much blur (docs/design.md, "Calibration").
  x_B changes the blur alone. No value target: how much sparser x_B is depends on
  the real domain's own blur, which is unknown.

Ordering accuracy at scale s (`evaluate_fdc`): on held-out patches, anchors at
native scale, x_D and x_U made with one resampler (bicubic, what the generator uses);
each pair is judged on its own: a (x_D, x) pair is right when C(x_D, x) > 0, a
(x_U, x) pair when C(x_U, x) < 0. acc_s{s} is the share of right judgements over
both kinds (acc_down_s{s} and acc_up_s{s} split it) when the three crops are centred
on the same scene point, so a pair differs in scale only; acc_rand_s{s} is the same
with crops at independent places, where the content of two 32 px crops differs more
than a 1.2x change of scale does (hand-made density measures score ~0.77 there at
s = 1.2; see benchmarks/fdc_experiments.py). same_abs is the mean |C(x', x)| and
same_mean the mean C(x', x) for same-scale pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fca.config import param
from fca.distributed import Dist
from fca.kernels import conv_per_sample, gaussian
from fca.models.fdc_arch import FDC, build_fdc
from fca.resample import RESAMPLERS, resize, scaled_size
from fca.train.checkpoint import load_checkpoint, plain_config, seeded
from fca.train.hardware import Precision, PrecisionChoice, cpu_bf16_mode, to_device
from fca.train.loop import Callback, Checkpoints, Periodic, Progress, Resume, Training, run_loop, run_precision

TARGETS = {"down": 1.0, "same": 0.0, "up": -1.0}


@dataclass(frozen=True)
class FDCConfig:
    patch_size: int = param(32, ge=8, le=8192, help="side of the crops the comparator sees (generator: its LR output side)")
    channels: int = param(32, ge=1, le=4096)
    normalize_input: bool = param(True, help="standardise each image before the encoder (density is contrast-free)")
    batch_size: int = param(16, ge=1, le=65_536, help="source patches per step (each gives 3 pairs)")
    steps: int = param(600, ge=1, le=10_000_000)
    lr: float = param(1e-3, gt=0, lt=10)
    lr_final: float = param(0.1, ge=0, le=1, help="cosine decay to lr * lr_final at the last step")
    betas: tuple[float, float] = param((0.9, 0.999), ge=0, lt=1)
    loss: str = param("mse", choices=("mse", "logistic"), help="mse to +-1/0 (paper) or a logistic ranking loss")
    scale_start: float = param(3.5, ge=1.0, le=16, help="curriculum: first (easiest) scale")
    scale_end: float = param(1.2, ge=1.0, le=16, help="curriculum: last (hardest) scale")
    curriculum_fraction: float = param(0.5, gt=0, le=1, help="share of the steps over which s goes from start to end")
    scale_sampling: str = param("range", choices=("current", "range"), help="all pairs at the current s, or s drawn in [current, start]")
    anchor_jitter: float = param(1.25, ge=1.0, le=16, help="anchor resized by t0 in [1/j, j] (log-uniform); 1 = native anchors")
    augment: bool = param(True, help="random flips and 90-degree rotations")
    aligned: float = param(0.0, ge=0, le=1, help="share of training pairs whose crops show the same scene point")
    blur_weight: float = param(0.0, ge=0, le=1e6, help="weight of the extra-blur pairs C(x_B, x) < 0 (0 = none)")
    blur_sigma: tuple[float, float] = param((1.0, 3.0), gt=0, le=100, help="sigma range (px) of the extra blur of x_B")
    resamplers: list[str] = param(["bicubic", "bilinear", "area"], choices=RESAMPLERS, nonempty=True)
    eval_every: int = param(200, ge=1, le=10_000_000)
    eval_scales: list[float] = param([3.5, 2.0, 1.2], ge=1.0, le=16, nonempty=True)
    eval_repeats: int = param(4, ge=1, le=10_000, help="random crops per held-out patch, scale and crop policy")
    cpu_bf16: Any = param("auto", help="CPU: bf16 autocast + channels_last (on), fp32 (off), or auto: bf16 where the CPU has AMX "
                                       "(amx_bf16; measured 1.5x faster there), else fp32 (fca.train.hardware.choose_cpu_precision); "
                                       "true / false read as on / off")
    cuda_amp: bool = param(True, help="mixed precision on CUDA (bf16, or fp16 with a GradScaler)")
    checkpoint_every: int = param(200, ge=1, le=10_000_000)
    seed: int = param(0, ge=0, le=2**32 - 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cpu_bf16", cpu_bf16_mode(self.cpu_bf16, "fdc.cpu_bf16"))
        if self.scale_end > self.scale_start:
            raise ValueError(f"fdc.scale_end = {self.scale_end} must be <= fdc.scale_start = {self.scale_start}")
        if self.blur_sigma[0] > self.blur_sigma[1]:
            raise ValueError(f"fdc.blur_sigma = {list(self.blur_sigma)}: the first value must be <= the second")


class PairBatch(NamedTuple):
    """Images for the FDC pairs, each [N, 3, P, P]; `scale` [N] is s per pair.

    `blurred` (or None) is the anchor blurred further by a Gaussian: the same zoom,
    fewer high frequencies, so C(x_B, x) < 0 whatever the content.
    """

    anchor: torch.Tensor
    down: torch.Tensor
    up: torch.Tensor
    same: torch.Tensor
    scale: torch.Tensor
    blurred: torch.Tensor | None = None


# ---------------------------------------------------------------------------- pairs


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def _random_crop(img: torch.Tensor, patch: int, gen: torch.Generator) -> torch.Tensor:
    """[C, H, W] -> [C, patch, patch] at a random place."""
    h, w = img.shape[-2:]
    y = int(torch.randint(0, h - patch + 1, (), generator=gen))
    x = int(torch.randint(0, w - patch + 1, (), generator=gen))
    return img[:, y : y + patch, x : x + patch]


def _crop_around(img: torch.Tensor, cy: float, cx: float, shrink: float, patch: int) -> torch.Tensor:
    """[C, h, w] (a source image shrunk by `shrink`) -> the [C, patch, patch] crop centred on source point (cy, cx)."""
    h, w = img.shape[-2:]
    y = min(max(round(cy / shrink - patch / 2), 0), h - patch)
    x = min(max(round(cx / shrink - patch / 2), 0), w - patch)
    return img[:, y : y + patch, x : x + patch]


def _resized(img: torch.Tensor, shrink: float, modes: list[str], gen: torch.Generator) -> torch.Tensor:
    """[C, H, W] shrunk by `shrink` (< 1 enlarges) with a resampler drawn from `modes`; 1 is a no-op."""
    if shrink == 1.0:
        return img
    mode = modes[int(torch.randint(0, len(modes), (), generator=gen))]
    size = scaled_size(img.shape[-2], img.shape[-1], 1.0 / shrink)
    return resize(img.unsqueeze(0), size, mode)[0]


def _dihedral(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(0, 4, (), generator=gen))
    img = torch.rot90(img, k, dims=(-2, -1))
    if torch.rand((), generator=gen).item() < 0.5:
        img = img.flip(-1)
    return img


def make_pairs(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    patch: int,
    generator_rng: torch.Generator,
    resamplers: list[str] | tuple[str, ...] = RESAMPLERS,
    *,
    anchor_jitter: float = 1.0,
    augment: bool = False,
    aligned: bool | float = False,
    blur_sigma: tuple[float, float] | None = None,
) -> PairBatch:
    """Build the FDC training/evaluation pairs from real-domain patches.

    x: [N, 3, H, W] real-domain patches at native scale. scale: s > 1, one float or
    [N] (one per patch). Returns a PairBatch of [N, 3, patch, patch] images:
    anchor = R resized by 1/t0 (t0 log-uniform in [1/anchor_jitter, anchor_jitter],
    capped so x_D still fits; t0 = 1 is a plain crop), down = R shrunk by t0*s,
    up = R resized by s/t0 (enlarged), same = another crop of the anchor's image.
    Crops are at independent random places, or with `aligned` (True, or the
    probability per patch) the anchor, down and up crops are centred on one random
    scene point (the pair differs in scale, not in what it shows; `same` stays elsewhere).
    With `blur_sigma` = (lo, hi), `blurred` is the anchor crop convolved with a
    Gaussian whose sigma is uniform in [lo, hi] (pixels).
    Every resize draws its resampler from `resamplers`; all randomness comes from
    `generator_rng` (a CPU torch.Generator), so the pairs are reproducible.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"make_pairs: expected real patches [N, 3, H, W], got {tuple(x.shape)}")
    n, _, h, w = x.shape
    scales = torch.as_tensor(scale, dtype=torch.float64).flatten()
    if scales.numel() == 1:
        scales = scales.expand(n)
    if scales.numel() != n:
        raise ValueError(f"make_pairs: {scales.numel()} scales for {n} patches")
    if (scales <= 1.0).any():
        raise ValueError(f"make_pairs: scales must be > 1, got min {scales.min().item()}")
    if anchor_jitter < 1.0:
        raise ValueError(f"make_pairs: anchor_jitter must be >= 1, got {anchor_jitter}")
    modes = list(resamplers)
    for m in modes:
        if m not in RESAMPLERS:
            raise ValueError(f"make_pairs: unknown resampler {m!r}; expected one of {RESAMPLERS}")
    out: dict[str, list[torch.Tensor]] = {"anchor": [], "down": [], "up": [], "same": []}
    for i in range(n):
        s = float(scales[i])
        most = min(h, w) / patch  # the largest shrink that still leaves a full crop
        if s > most + 1e-9:
            raise ValueError(f"make_pairs: {h}x{w} patches shrunk by s = {s:g} are smaller than patch {patch}; need s <= {most:.3g}")
        src = _dihedral(x[i], generator_rng) if augment else x[i]
        t0 = 1.0
        if anchor_jitter > 1.0:
            hi = min(anchor_jitter, most / s)
            lo = 1.0 / anchor_jitter
            t0 = math.exp(_uniform(generator_rng, math.log(lo), math.log(max(hi, lo))))
        shrink = {"anchor": t0, "down": t0 * s, "up": t0 / s}
        imgs = {k: _resized(src, f, modes, generator_rng) for k, f in shrink.items()}
        if float(aligned) >= 1.0 or (float(aligned) > 0.0 and torch.rand((), generator=generator_rng).item() < float(aligned)):
            # a scene point every crop can be centred on
            half = shrink["down"] * patch / 2
            cy, cx = _uniform(generator_rng, half, h - half), _uniform(generator_rng, half, w - half)
            for k, f in shrink.items():
                out[k].append(_crop_around(imgs[k], cy, cx, f, patch))
        else:
            for k in shrink:
                out[k].append(_random_crop(imgs[k], patch, generator_rng))
        out["same"].append(_random_crop(imgs["anchor"], patch, generator_rng))
    batch = PairBatch(**{k: torch.stack(v) for k, v in out.items()}, scale=scales.float().clone())
    if blur_sigma is not None:
        lo, hi = blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"make_pairs: blur_sigma must be 0 < lo <= hi, got {blur_sigma}")
        size = min(2 * math.ceil(2.5 * hi) + 1, 2 * ((patch - 1) // 2) - 1)  # odd, and reflect padding needs size//2 < patch
        sig = [_uniform(generator_rng, lo, hi) for _ in range(n)]
        kernels = torch.stack([torch.from_numpy(gaussian(size, sg)) for sg in sig]).to(batch.anchor.dtype)
        batch = batch._replace(blurred=conv_per_sample(batch.anchor, kernels))
    return batch


def pairs_to(pairs: PairBatch, device: torch.device, dist: Dist = Dist()) -> PairBatch:
    """This rank's share of a batch of pairs (fca.distributed), copied to `device`."""
    return PairBatch(*(None if t is None else to_device(dist.shard(t), device) for t in pairs))


# ---------------------------------------------------------------------------- schedule and loss


def curriculum_scale(step: int, config: FDCConfig) -> float:
    """The current (smallest) scale at 1-based `step`: log-linear from scale_start to scale_end over curriculum_fraction of the steps."""
    span = max(1, round(config.curriculum_fraction * config.steps))
    frac = min(1.0, (step - 1) / max(1, span - 1)) if span > 1 else 1.0
    return math.exp(math.log(config.scale_start) + frac * (math.log(config.scale_end) - math.log(config.scale_start)))


def _batch_scales(current: float, config: FDCConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    if config.scale_sampling == "current" or current >= config.scale_start:
        return torch.full((n,), current, dtype=torch.float64)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(current) + u * (math.log(config.scale_start) - math.log(current)))


def learning_rate(step: int, config: FDCConfig) -> float:
    """Cosine decay from lr (step 1) to lr * lr_final (last step)."""
    frac = (step - 1) / max(1, config.steps - 1)
    return config.lr * (config.lr_final + (1 - config.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))


def pair_loss(c: dict[str, torch.Tensor], kind: str = "mse", blur_weight: float = 1.0) -> torch.Tensor:
    """Loss on the comparator outputs `c` (from `comparator_outputs`, each [N]).

    mse: (C(x_D,x) - 1)^2 + C(x',x)^2 + (C(x_U,x) + 1)^2, the paper's targets.
    logistic: softplus(-C(x_D,x)) + softplus(C(x_U,x)) + C(x',x)^2 (a ranking loss
    that does not saturate the outputs at +-1).
    If `c` has "blur": + blur_weight * softplus(4 C(x_B,x)) / 4, sign only (a smooth
    hinge at 0): how much sparser a blurred image is depends on the real domain's own
    blur, which we do not know, so no value target.
    """
    if kind == "mse":
        loss = (c["down"] - TARGETS["down"]) ** 2 + (c["same"] - TARGETS["same"]) ** 2 + (c["up"] - TARGETS["up"]) ** 2
    elif kind == "logistic":
        loss = F.softplus(-c["down"]) + F.softplus(c["up"]) + c["same"] ** 2
    else:
        raise ValueError(f"unknown FDC loss {kind!r}; expected 'mse' or 'logistic'")
    if "blur" in c:
        loss = loss + blur_weight * F.softplus(4.0 * c["blur"]) / 4.0
    return loss.mean()


class Scorer(nn.Module):
    """The FDC's `score` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, fdc: FDC):
        super().__init__()
        self.fdc = fdc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fdc.score(x)


def comparator_outputs(score: Callable[[torch.Tensor], torch.Tensor], pairs: PairBatch) -> dict[str, torch.Tensor]:
    """C(x_D, x), C(x', x), C(x_U, x) (and C(x_B, x) if there is `blurred`), each [N], keyed down/same/up/blur.

    score: [B, 3, P, P] -> [B] (`fdc.score`, or a DDP-wrapped `Scorer`). All image sets go
    through the encoder as one batch (one set of BatchNorm statistics).
    """
    n = pairs.anchor.shape[0]
    names = ["down", "same", "up"] + (["blur"] if pairs.blurred is not None else [])
    images = [pairs.anchor, pairs.down, pairs.same, pairs.up] + ([pairs.blurred] if pairs.blurred is not None else [])
    s = score(torch.cat(images)).view(len(images), n)
    return {k: s[i + 1] - s[0] for i, k in enumerate(names)}


# ---------------------------------------------------------------------------- evaluation


def scale_key(prefix: str, s: float) -> str:
    """Metric name for a scale: scale_key('acc', 2) -> 'acc_s2.0'."""
    return f"{prefix}_s{float(s)}"


@torch.no_grad()
def evaluate_fdc(
    fdc: FDC,
    patches: torch.Tensor,
    scales: list[float],
    seed: int,
    *,
    patch_size: int = 32,
    resampler: str = "bicubic",
    repeats: int = 4,
    batch_size: int = 64,
) -> dict[str, float]:
    """Ordering accuracy of `fdc` on held-out real patches [M, 3, H, W] (see the module docstring).

    Anchors are native crops; x_D / x_U use `resampler` only. Each patch gives
    `repeats` random pairs per scale and crop policy, drawn from a generator seeded
    with `seed`, so the same patches and seed give the same numbers. Returns, per
    scale s: acc_s{s}, acc_down_s{s}, acc_up_s{s} (aligned crops: x_D, x, x_U show
    the same scene point), acc_s{s}_lo / _hi (its 95 % interval, a bootstrap over the held-out
    patches) and acc_rand_s{s} (crops at independent places); and
    same_abs / same_mean, the mean |C(x', x)| and C(x', x).
    The FDC is evaluated in eval mode (BatchNorm running statistics) and its mode is restored.
    """
    was_training = fdc.training
    fdc.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next((p.device for p in fdc.parameters()), torch.device("cpu"))  # parameter-free probes: CPU
    metrics: dict[str, float] = {}
    same_vals: list[torch.Tensor] = []
    try:
        for s in scales:
            for aligned in (True, False):
                downs, ups = [], []
                for _ in range(repeats):
                    for start in range(0, patches.shape[0], batch_size):
                        chunk = patches[start : start + batch_size].float()
                        pairs = make_pairs(chunk, s, patch_size, gen, [resampler], aligned=aligned)
                        c = comparator_outputs(fdc.score, pairs_to(pairs, device))
                        downs.append(c["down"])
                        ups.append(c["up"])
                        same_vals.append(c["same"])
                c_down, c_up = torch.cat(downs), torch.cat(ups)
                down, up = (c_down > 0).float(), (c_up < 0).float()
                if aligned:
                    metrics[scale_key("acc", s)] = torch.cat([down, up]).mean().item()
                    # Pairs from one patch share its content: the interval resamples patches, not pairs.
                    per_patch = (down + up).view(repeats, -1).mean(0).double().numpy() / 2
                    lo, hi = _patch_bootstrap(per_patch, seed)
                    metrics[scale_key("acc", s) + "_lo"], metrics[scale_key("acc", s) + "_hi"] = lo, hi
                    metrics[scale_key("acc_down", s)] = down.mean().item()
                    metrics[scale_key("acc_up", s)] = up.mean().item()
                    metrics[scale_key("mean_down", s)] = c_down.mean().item()
                    metrics[scale_key("mean_up", s)] = c_up.mean().item()
                else:
                    metrics[scale_key("acc_rand", s)] = torch.cat([down, up]).mean().item()
        same = torch.cat(same_vals)
        metrics["same_abs"] = same.abs().mean().item()
        metrics["same_mean"] = same.mean().item()
    finally:
        fdc.train(was_training)
    return metrics


ACC_BOOTSTRAP = 1000  # resamples of the held-out patches for the accuracy's 95 % interval


def _patch_bootstrap(per_patch: np.ndarray, seed: int) -> tuple[float, float]:
    """The 95 % percentile interval of the mean of per-patch accuracies over patches drawn with replacement."""
    rng = np.random.default_rng(seed)
    n = per_patch.size
    means = per_patch[rng.integers(0, n, (ACC_BOOTSTRAP, n))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


@torch.no_grad()
def blur_probe(
    fdc: FDC,
    patches: torch.Tensor,
    scale: float,
    sigmas: list[float],
    *,
    patch_size: int = 32,
    kernel_size: int = 13,
    crops: int = 2,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[dict[float, float], float]:
    """Where would a generator trained against this FDC put its kernel width?

    For real patches R [N, 3, H, W] and each Gaussian sigma (0 = no blur), the mean
    of score(crop(down(R, scale) (*) k_sigma)) - score(crop(R)) over `crops` random
    crops per patch (bicubic `down`, as the generator's). Returns (curve, crossing):
    the sigma where the curve first goes from > 0 to <= 0, linearly interpolated
    (nan if it does not). Needs only real patches, so it can be logged while training.
    """
    lr_h, lr_w = scaled_size(patches.shape[-2], patches.shape[-1], 1.0 / scale)
    if min(lr_h, lr_w) < patch_size:
        raise ValueError(f"blur_probe: {patches.shape[-2]}x{patches.shape[-1]} patches shrunk by {scale} are smaller than patch {patch_size}")
    was_training = fdc.training
    fdc.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        sums = dict.fromkeys(sigmas, 0.0)
        ref_sum, count = 0.0, 0
        for start in range(0, patches.shape[0], batch_size):
            real = patches[start : start + batch_size].float()
            lr = resize(real, (lr_h, lr_w), "bicubic")
            places = [(_random_crop_places(real, patch_size, gen), _random_crop_places(lr, patch_size, gen)) for _ in range(crops)]
            for real_at, _ in places:
                ref_sum += fdc.score(_crop_batch(real, real_at, patch_size)).sum().item()
            for sg in sigmas:
                blurred = lr if sg == 0 else conv_per_sample(lr, torch.from_numpy(gaussian(kernel_size, sg)).float())
                for _, lr_at in places:
                    sums[sg] += fdc.score(_crop_batch(blurred, lr_at, patch_size)).sum().item()
            count += real.shape[0] * crops
    finally:
        fdc.train(was_training)
    curve = {sg: (sums[sg] - ref_sum) / count for sg in sigmas}
    return curve, zero_crossing(curve)


def _random_crop_places(images: torch.Tensor, patch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = images.shape
    return torch.randint(0, h - patch + 1, (n,), generator=gen), torch.randint(0, w - patch + 1, (n,), generator=gen)


def _crop_batch(images: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor], patch: int) -> torch.Tensor:
    return torch.stack([im[:, y : y + patch, x : x + patch] for im, y, x in zip(images, at[0].tolist(), at[1].tolist())])


def zero_crossing(curve: dict[float, float]) -> float:
    """First x (in sorted order) where curve goes from > 0 to <= 0, linearly interpolated; nan if it never does."""
    xs = sorted(curve)
    for a, b in zip(xs, xs[1:]):
        if curve[a] > 0 >= curve[b]:
            return a + (b - a) * curve[a] / (curve[a] - curve[b])
    return math.nan


# ---------------------------------------------------------------------------- training


def _check_patches(name: str, patches: torch.Tensor, config: FDCConfig) -> None:
    if patches.dim() != 4 or patches.shape[1] != 3:
        raise ValueError(f"train_fdc: {name} must be [N, 3, H, W], got {tuple(patches.shape)}")
    if patches.shape[0] == 0:
        raise ValueError(f"train_fdc: {name} is empty")
    need = max(config.scale_start, *config.eval_scales) * config.patch_size
    if min(patches.shape[-2:]) < need - 1e-6:
        raise ValueError(
            f"train_fdc: {name} are {patches.shape[-2]}x{patches.shape[-1]}, too small to shrink by "
            f"{max(config.scale_start, *config.eval_scales)} and still crop fdc.patch_size = {config.patch_size}; "
            f"need at least {math.ceil(need)} px"
        )


def _train_step(config: FDCConfig, score: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer, precision: Precision,
                train_patches: torch.Tensor, rng: torch.Generator, step: int, device: torch.device, dist: Dist) -> tuple[torch.Tensor, float, float]:
    """One training step at 1-based `step`: this step's lr, the global batch's pairs drawn from
    `rng` (each rank keeps its share), the loss and the optimiser step. Returns (loss, lr, scale)."""
    lr = learning_rate(step, config)
    for group in opt.param_groups:
        group["lr"] = lr
    current = curriculum_scale(step, config)
    idx = torch.randint(0, train_patches.shape[0], (config.batch_size,), generator=rng)
    scales = _batch_scales(current, config, config.batch_size, rng)
    pairs = make_pairs(
        train_patches[idx],
        scales,
        config.patch_size,
        rng,
        config.resamplers,
        anchor_jitter=config.anchor_jitter,
        augment=config.augment,
        aligned=config.aligned,
        blur_sigma=tuple(config.blur_sigma) if config.blur_weight > 0 else None,
    )
    # Every rank made the global batch's pairs (one sampling stream); each keeps its share.
    pairs = pairs_to(pairs, device, dist)
    with precision.autocast():
        loss = pair_loss(comparator_outputs(score, pairs), kind=config.loss, blur_weight=config.blur_weight)
    precision.step(loss, opt)
    precision.update()
    return loss, lr, current


def _build(config: FDCConfig, device: torch.device, dist: Dist, resume: Resume | None,
           on_precision: Callable[[PrecisionChoice], None] | None) -> Training:
    """The comparator (seeded init), its Adam, the data generator and the precision (a resumed run
    keeps the stored one). The step sets Adam's rate itself (`learning_rate`): no scheduler."""
    with seeded(config.seed):
        fdc = build_fdc(config.channels, config.normalize_input).to(device)
    opt = torch.optim.Adam(fdc.parameters(), lr=config.lr, betas=tuple(config.betas))
    # On CPU bf16 + channels_last or fp32, by cpu_bf16 and the CPU's flags.
    precision, record = run_precision("train_fdc", device, config.cuda_amp, config.cpu_bf16, resume, dist, on_precision)
    if device.type == "cpu" and precision.enabled:
        fdc.to(memory_format=torch.channels_last)
    return Training(fdc, {"comparator": opt}, {}, precision, torch.Generator().manual_seed(config.seed),
                    records={"precision": record})


def train_fdc(
    config: FDCConfig,
    train_patches: torch.Tensor,
    val_patches: torch.Tensor,
    *,
    on_step: Callback | None = None,
    on_eval: Callback | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    device: torch.device = torch.device("cpu"),
    dist: Dist = Dist(),
    on_precision: Callable[[PrecisionChoice], None] | None = None,
) -> tuple[FDC, list[dict]]:
    """Train an FDC on real-domain patches with the scale curriculum; returns (fdc in eval mode, history).

    train_patches [N, 3, H, W], val_patches [M, 3, H, W], values in [0, 1], H and W
    at least max(scale_start, eval_scales) * patch_size. on_step(step, {loss, scale,
    lr}) runs after every step, on_eval(step, evaluate_fdc metrics) every
    eval_every steps and at the end; history is the list of eval records
    ({"step": ..., **metrics}). With `checkpoint_dir`, a checkpoint (`fca.train.checkpoint`:
    net_<step>.pt, the comparator that `load_fdc` reads, and state_<step>.pt) is written
    there every checkpoint_every steps and at the end, and a run that finds one resumes
    from it (bit-exact on CPU); a checkpoint made with another config is an error.
    device: where the comparator trains (pairs are made on the CPU and copied over).
    dist: this process's place in a torchrun job (fca.distributed): config.batch_size is
    the global batch, each rank trains on its share, and rank 0 alone evaluates, calls
    the callbacks and writes checkpoints (the history is rank 0's).
    on_precision(choice): once, before the first step: what the run computes in and why
    (config.cpu_bf16; `fca.train.hardware.resolve_precision`); also logged and stored in the
    checkpoint, from which a resumed run takes it.
    """
    _check_patches("train_patches", train_patches, config)
    _check_patches("val_patches", val_patches, config)
    dist.check_batch("fdc.batch_size", config.batch_size)
    train_patches, val_patches = train_patches.float(), val_patches.float()
    checkpoints = Checkpoints(checkpoint_dir, config.checkpoint_every, plain_config(config), "fdc", "comparator",
                              resumable=("checkpoint_every",))
    resume = checkpoints.find(device)
    training = _build(config, device, dist, resume, on_precision)
    fdc = training.model
    # The module the step calls: the comparator's score, in DDP (global BatchNorm) when there are several ranks.
    score = dist.parallel(Scorer(fdc), device)

    def step_fn(step: int) -> dict[str, float]:
        loss, lr, current = _train_step(config, score, training.optimizers["comparator"], training.precision, train_patches,
                                        training.rng, step, device, dist)
        return {"loss": dist.average({"loss": loss.item()})["loss"], "scale": current, "lr": lr}

    def evaluate(step: int) -> None:
        metrics = evaluate_fdc(fdc, val_patches, list(config.eval_scales), config.seed, patch_size=config.patch_size,
                               repeats=config.eval_repeats)
        training.history.append({"step": step, **metrics})
        if on_eval is not None:
            on_eval(step, metrics)

    fdc.train()
    run_loop(training, step_fn, steps=config.steps, checkpoints=checkpoints, dist=dist, resume=resume, keep_steps=False,
             on_step=on_step, periodic=[Periodic(config.eval_every, evaluate)],
             progress=Progress("train_fdc", progress, postfix=lambda m: {"loss": f"{m['loss']:.3f}", "s": f"{m['scale']:.2f}"}))
    fdc.eval()
    fdc.to(memory_format=torch.contiguous_format)
    return fdc, training.history


def load_fdc(path: Path | str) -> FDC:
    """A frozen FDC (eval mode, no grads) from a checkpoint's weights file (`net_<step>.pt`, models/fdc.pt) written by train_fdc."""
    from fca.train.checkpoint import check_weights, checkpoint_config, load_weights

    state = load_checkpoint(path)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"{path}: not an FDC checkpoint (no 'config'/'model')")
    # As load_generator: the stored config passes the params.yaml checks, the weights must fit and be finite.
    config = checkpoint_config(path, state["config"], FDCConfig, required=("channels", "normalize_input"))
    with torch.device("meta"):
        check_weights(path, build_fdc(config.channels, config.normalize_input).state_dict(), state["model"], "comparator")
    fdc = build_fdc(config.channels, config.normalize_input)
    load_weights(path, fdc, state["model"], "comparator")
    fdc.eval()
    for p in fdc.parameters():
        p.requires_grad_(False)
    return fdc
