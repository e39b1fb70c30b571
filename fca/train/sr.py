"""Training SR networks on (LR, HR) pairs: the referee's probe and the train_sr stage's product.

Two trainers share the validation, the batch draw, the build and the step:

- `train_sr`: the referee's small `SRNet` (docs/design.md, "SR probe"). One net per kind of
  pairs (bicubic, ours, oracle) with the same config and seed, so the nets start from the
  same weights and see the same crops in the same order; only the LR side of the pairs
  differs. Differences in test PSNR are then the pairs' doing.
- `train_sr_model`: the train_sr stage's `EDSR` (a model to use, `fca upscale`), with
  resumable checkpoints in the trainers' one layout (`fca.train.checkpoint`): the network
  weights (`net_<step>.pt`, which is also the published model's format) apart from the
  training state (`state_<step>.pt`: optimiser, scheduler, data RNG, loss history).

Both run in the trainers' one loop (`fca.train.loop.run_loop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fca.config import param
from fca.distributed import Dist
from fca.models.sr_arch import EDSR, SRNet
from fca.train.checkpoint import check_weights, checkpoint_config, load_checkpoint, load_weights, plain_config, seeded
from fca.train.hardware import Precision, to_device
from fca.train.loop import Checkpoints, Progress, StepFn, Training, run_loop


@dataclass(frozen=True)
class SRConfig:
    """The referee's SR probe: a small net and a fixed training budget."""

    blocks: int = param(3, ge=1, le=1000, help="residual blocks of the SR net")
    channels: int = param(32, ge=1, le=4096, help="feature channels of the SR net")
    steps: int = param(600, ge=1, le=10_000_000, help="training steps, the same for every kind of pairs")
    batch_size: int = param(16, ge=1, le=65_536)
    patch_size: int = param(48, ge=8, le=8192, help="HR crop side for SR training (a multiple of the scale)")
    lr: float = param(1e-3, gt=0, lt=10, help="Adam learning rate (cosine-decayed to 0 over the steps)")
    cuda_amp: bool = param(True, help="mixed precision on CUDA (bf16, or fp16 with a GradScaler)")


@dataclass(frozen=True)
class TrainSRConfig:
    """The train_sr stage: an EDSR-baseline-style net trained on the domain's pairs (params: train_sr)."""

    blocks: int = param(4, ge=1, le=1000, help="residual blocks (EDSR-baseline: 16)")
    channels: int = param(32, ge=1, le=4096, help="feature channels (EDSR-baseline: 64)")
    res_scale: float = param(1.0, gt=0, le=1, help="residual scaling in each block (EDSR: 0.1 for its large model)")
    bicubic_skip: bool = param(True, help="output = bicubic upscaling + the net's residual, starting at bicubic (fca.models.sr_arch.EDSR)")
    steps: int = param(200, ge=1, le=10_000_000, help="training steps per net")
    batch_size: int = param(16, ge=1, le=65_536)
    patch_size: int = param(48, ge=8, le=8192, help="HR crop side (a multiple of generator.scale, at most patches.size)")
    lr: float = param(1e-3, gt=0, lt=10, help="Adam learning rate, cosine-decayed to 0 over the steps")
    betas: tuple[float, float] = param((0.9, 0.999), ge=0, lt=1)
    cuda_amp: bool = param(True, help="mixed precision on CUDA (bf16, or fp16 with a GradScaler)")
    checkpoint_every: int = param(100, ge=1, le=10_000_000)
    samples: int = param(3, ge=1, le=100, help="validation images shown in the stage's figure (reports/sr_comparison.png)")
    seed: int = param(0, ge=0, le=2**32 - 1, help="init and crops, the same for every kind of pairs; also draws the blind recipe's pairs")


# Keys that may change between a run and its resume (they do not change the numbers).
_RESUMABLE_CHANGES = ("checkpoint_every", "samples")
# The keys that shape the network: a stored model must have them.
ARCH_KEYS = ("blocks", "channels", "res_scale", "bicubic_skip")


# --------------------------------------------------------------------------- validate


def check_pairs(lr_images: torch.Tensor, hr_images: torch.Tensor, scale: float, patch_size: int, key: str = "sr") -> int:
    """The integer scale of aligned pairs lr [N, 3, h, w], hr [N, 3, s*h, s*w]; ValueError naming
    `key`.patch_size when the crops do not fit."""
    if float(scale) != int(scale):
        raise ValueError(f"train_sr: the SR net needs an integer scale, got {scale}")
    s = int(scale)
    if lr_images.dim() != 4 or hr_images.dim() != 4 or lr_images.shape[:2] != hr_images.shape[:2]:
        raise ValueError(f"train_sr: expected [N, 3, h, w] LR and [N, 3, H, W] HR, got {tuple(lr_images.shape)} and {tuple(hr_images.shape)}")
    h, w = lr_images.shape[-2:]
    if tuple(hr_images.shape[-2:]) != (h * s, w * s):
        raise ValueError(f"train_sr: HR {tuple(hr_images.shape[-2:])} is not LR {(h, w)} times scale {s}")
    if patch_size % s:
        raise ValueError(f"train_sr: {key}.patch_size = {patch_size} is not a multiple of the scale {s}")
    if patch_size > min(hr_images.shape[-2:]):
        raise ValueError(f"train_sr: {key}.patch_size = {patch_size} is larger than the HR images {tuple(hr_images.shape[-2:])}")
    return s


# --------------------------------------------------------------------------- build / step


def _random_dihedral(lr: torch.Tensor, hr: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one of the 8 flips/rotations, the same to an LR and an HR crop [3, h, w]."""
    flip_h, flip_v, transpose = torch.randint(0, 2, (3,), generator=gen).tolist()
    if flip_h:
        lr, hr = lr.flip(-1), hr.flip(-1)
    if flip_v:
        lr, hr = lr.flip(-2), hr.flip(-2)
    if transpose:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return lr, hr


def draw_batch(lr_images: torch.Tensor, hr_images: torch.Tensor, scale: int, patch_size: int, batch_size: int,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random aligned crops (HR side patch_size), each under a random flip/rotation:
    ([b, 3, p, p], [b, 3, s*p, s*p]) with p = patch_size / scale. All randomness from `gen`."""
    n, _, h, w = lr_images.shape
    p = patch_size // scale
    idx = torch.randint(0, n, (batch_size,), generator=gen)
    ys = torch.randint(0, h - p + 1, (batch_size,), generator=gen)
    xs = torch.randint(0, w - p + 1, (batch_size,), generator=gen)
    lr_batch, hr_batch = [], []
    for i, y, x in zip(idx.tolist(), ys.tolist(), xs.tolist()):
        lr_crop = lr_images[i, :, y : y + p, x : x + p]
        hr_crop = hr_images[i, :, y * scale : (y + p) * scale, x * scale : (x + p) * scale]
        lr_crop, hr_crop = _random_dihedral(lr_crop, hr_crop, gen)
        lr_batch.append(lr_crop)
        hr_batch.append(hr_crop)
    return torch.stack(lr_batch), torch.stack(hr_batch)


@dataclass(frozen=True)
class _Pairs:
    """The aligned pairs a run crops its batches from (float, on the CPU), and how it crops them."""

    lr_images: torch.Tensor
    hr_images: torch.Tensor
    scale: int
    patch_size: int
    batch_size: int


def _build(net_of: Callable[[], nn.Module], *, seed: int, lr: float, steps: int, cuda_amp: bool, device: torch.device,
           betas: tuple[float, float] = (0.9, 0.999)) -> Training:
    """The net `net_of` makes (seeded init, on `device`), Adam with a cosine decay to 0 over
    `steps`, and the data generator seeded with `seed`."""
    with seeded(seed):
        net = net_of()
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
    return Training(net, {"net": opt}, {"net": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)},
                    Precision(device, cuda_amp), torch.Generator().manual_seed(seed))


def _step_fn(training: Training, pairs: _Pairs, device: torch.device, dist: Dist) -> StepFn:
    """One Adam step on the L1 loss of a fresh batch: {"loss": rank-averaged L1, "lr": the rate used}.

    The global batch's crops and flips are drawn on every rank (one stream); each keeps its share."""
    step_net = dist.parallel(training.model, device)  # the DDP wrapper in a multi-process job, else the net
    opt, sched, precision = training.optimizers["net"], training.schedulers["net"], training.precision

    def step(_: int) -> dict[str, float]:
        lr_batch, hr_batch = draw_batch(pairs.lr_images, pairs.hr_images, pairs.scale, pairs.patch_size, pairs.batch_size, training.rng)
        lr_in = to_device(dist.shard(lr_batch), device)
        hr_target = to_device(dist.shard(hr_batch), device)
        with precision.autocast():
            loss = F.l1_loss(step_net(lr_in).float(), hr_target)
        precision.step(loss, opt)
        precision.update()
        current_lr = sched.get_last_lr()[0]
        sched.step()
        return {"loss": dist.average({"loss": loss.item()})["loss"], "lr": float(current_lr)}

    return step


# --------------------------------------------------------------------------- the referee's probe


def train_sr(
    config: SRConfig,
    lr_images: torch.Tensor,
    hr_images: torch.Tensor,
    scale: float,
    *,
    seed: int = 0,
    progress: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "sr",
    device: torch.device = torch.device("cpu"),
    dist: Dist = Dist(),
) -> SRNet:
    """Train an SRNet on aligned pairs: lr_images [N, 3, h, w], hr_images [N, 3, s*h, s*w].

    Each step draws `batch_size` random aligned crops (HR side `patch_size`), each under a
    random flip/rotation, and takes an Adam step on the L1 loss. All randomness (init,
    crops, flips) comes from `seed`, and the global RNG is left untouched.
    `on_step(step, {"loss": l1, "lr": lr})` is called after every step (1-based).
    device: where the net trains (crops are cut on the CPU). dist: this process's place in
    a torchrun job (fca.distributed): batch_size is the global batch, each rank trains on
    its share, logged losses are averaged over ranks and rank 0 alone calls on_step.
    Raises TrainingDivergedError when the loss is NaN or inf.
    Returns the trained net in eval mode (CPU, float32).
    """
    s = check_pairs(lr_images, hr_images, scale, config.patch_size)
    dist.check_batch("evaluate.sr.batch_size", config.batch_size)
    pairs = _Pairs(lr_images.float(), hr_images.float(), s, config.patch_size, config.batch_size)
    training = _build(lambda: SRNet(s, config.blocks, config.channels), seed=seed, lr=config.lr, steps=config.steps,
                      cuda_amp=config.cuda_amp, device=device)
    training.model.train()
    run_loop(training, _step_fn(training, pairs, device, dist), steps=config.steps, checkpoints=None, dist=dist, keep_steps=False,
             on_step=on_step, progress=Progress(desc, progress, leave=False))
    return training.model.cpu().eval()


@torch.no_grad()
def sr_predict(net: nn.Module, lr: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Super-resolve [N, 3, h, w] -> [N, 3, s*h, s*w], in batches, clamped to [0, 1] (on the net's device, returned on the CPU)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    out = [net(lr[i : i + batch_size].float().to(device)).clamp_(0.0, 1.0).cpu() for i in range(0, lr.shape[0], batch_size)]
    net.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------- the stage's model


def build_sr_model(config: TrainSRConfig, scale: float) -> EDSR:
    """The network a train_sr config describes (also what `load_sr_model` rebuilds)."""
    return EDSR(scale, config.blocks, config.channels, config.res_scale, config.bicubic_skip)


def train_sr_model(
    config: TrainSRConfig,
    lr_images: torch.Tensor,
    hr_images: torch.Tensor,
    scale: float,
    *,
    pairs: str,
    checkpoint_dir: Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = False,
    device: torch.device = torch.device("cpu"),
    dist: Dist = Dist(),
) -> tuple[EDSR, list[dict[str, float]]]:
    """Train an EDSR on aligned pairs lr_images [N, 3, h, w], hr_images [N, 3, s*h, s*w] in [0, 1];
    return (the net in eval mode on the CPU, [{"step", "loss", "lr"}] per step).

    pairs: what the LR side is ("ours", "bicubic", "blind"), stored with the weights.
    checkpoint_dir: every `checkpoint_every` steps and at the end a checkpoint is written there
    (`fca.train.checkpoint`: net_<step>.pt holds the weights, config, scale and pairs, the
    format `load_sr_model` reads; state_<step>.pt the rest) and older ones removed; a run that
    finds one resumes from the newest, bit for bit on a CPU. A checkpoint written with other
    params, scale or pairs is an error naming the file.
    Raises TrainingDivergedError when the loss is NaN or inf (the checkpoints are left as they were).
    """
    s = check_pairs(lr_images, hr_images, scale, config.patch_size, "train_sr")
    dist.check_batch("train_sr.batch_size", config.batch_size)
    batches = _Pairs(lr_images.float(), hr_images.float(), s, config.patch_size, config.batch_size)
    training = _build(lambda: build_sr_model(config, s), seed=config.seed, lr=config.lr, steps=config.steps, cuda_amp=config.cuda_amp,
                      device=device, betas=config.betas)
    checkpoints = Checkpoints(checkpoint_dir, config.checkpoint_every, plain_config(config), "train_sr", "SR net",
                              resumable=_RESUMABLE_CHANGES, ties={"scale": s, "pairs": pairs})
    training.model.train()
    run_loop(training, _step_fn(training, batches, device, dist), steps=config.steps, checkpoints=checkpoints, dist=dist,
             resume=checkpoints.find(device), on_step=on_step,
             progress=Progress(f"train_sr[{pairs}]", progress, postfix=lambda m: {"loss": f"{m['loss']:.4f}"}))
    return training.model.cpu().eval(), training.history


def load_sr_model(path: Path | str, device: torch.device | str = "cpu") -> EDSR:
    """The trained SR net in a model written by the train_sr stage (or a `net_<step>.pt` of its
    checkpoints), in eval mode without gradients, on `device`. A file that is not such a model,
    a config out of range, or weights that do not fit it are one error line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no SR model file (train one with the train_sr stage: `dvc repro train_sr`)")
    state = load_checkpoint(path, map_location="cpu")
    if not isinstance(state, dict) or not {"model", "config", "scale"} <= set(state):
        raise ValueError(f"{path}: not an SR model (no 'model'/'config'/'scale' entries; fca upscale needs models/sr_*.pt from train_sr)")
    config = checkpoint_config(path, state["config"], TrainSRConfig, required=ARCH_KEYS)
    scale = state["scale"]
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= 16:
        raise ValueError(f"{path}: scale = {scale!r}: expected a whole number from 1 to 16")
    with torch.device("meta"):  # a config claiming a huge net allocates nothing before the check
        check_weights(path, build_sr_model(config, scale).state_dict(), state["model"], "SR net")
    net = build_sr_model(config, scale)
    load_weights(path, net, state["model"], "SR net")
    net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return net
