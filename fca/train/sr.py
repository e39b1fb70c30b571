"""Training the referee's small SR network on (LR, HR) pairs (docs/design.md, "SR probe").

The referee trains one `SRNet` per kind of pairs (bicubic, ours, oracle) with the same
config and seed, so the nets start from the same weights and see the same crops in the
same order; only the LR side of the pairs differs. Differences in test PSNR are then
the pairs' doing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fca.progress import track

from fca.config import param
from fca.distributed import Dist
from fca.models.sr_arch import SRNet
from fca.train.hardware import Precision, to_device


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


def _check_pairs(lr_images: torch.Tensor, hr_images: torch.Tensor, scale: int, patch_size: int) -> None:
    if lr_images.dim() != 4 or hr_images.dim() != 4 or lr_images.shape[:2] != hr_images.shape[:2]:
        raise ValueError(f"train_sr: expected [N, 3, h, w] LR and [N, 3, H, W] HR, got {tuple(lr_images.shape)} and {tuple(hr_images.shape)}")
    h, w = lr_images.shape[-2:]
    if tuple(hr_images.shape[-2:]) != (h * scale, w * scale):
        raise ValueError(f"train_sr: HR {tuple(hr_images.shape[-2:])} is not LR {(h, w)} times scale {scale}")
    if patch_size % scale:
        raise ValueError(f"train_sr: sr.patch_size = {patch_size} is not a multiple of the scale {scale}")
    if patch_size > min(hr_images.shape[-2:]):
        raise ValueError(f"train_sr: sr.patch_size = {patch_size} is larger than the HR images {tuple(hr_images.shape[-2:])}")


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
    Returns the trained net in eval mode (CPU, float32).
    """
    if float(scale) != int(scale):
        raise ValueError(f"train_sr: the SR net needs an integer scale, got {scale}")
    s = int(scale)
    _check_pairs(lr_images, hr_images, s, config.patch_size)
    dist.check_batch("evaluate.sr.batch_size", config.batch_size)
    lr_images, hr_images = lr_images.float(), hr_images.float()
    n, _, h, w = lr_images.shape
    p = config.patch_size // s

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SRNet(s, config.blocks, config.channels)
    net.to(device)
    step_net = dist.parallel(net, device)
    precision = Precision(device, config.cuda_amp)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    net.train()
    for step in track(range(1, config.steps + 1), desc=desc, enabled=progress and dist.is_main, leave=False):
        # The global batch's crops and flips are drawn on every rank (one stream); each keeps its share.
        idx = torch.randint(0, n, (config.batch_size,), generator=gen)
        ys = torch.randint(0, h - p + 1, (config.batch_size,), generator=gen)
        xs = torch.randint(0, w - p + 1, (config.batch_size,), generator=gen)
        lr_batch, hr_batch = [], []
        for i, y, x in zip(idx.tolist(), ys.tolist(), xs.tolist()):
            lr_crop = lr_images[i, :, y : y + p, x : x + p]
            hr_crop = hr_images[i, :, y * s : (y + p) * s, x * s : (x + p) * s]
            lr_crop, hr_crop = _random_dihedral(lr_crop, hr_crop, gen)
            lr_batch.append(lr_crop)
            hr_batch.append(hr_crop)
        lr_in = to_device(dist.shard(torch.stack(lr_batch)), device)
        hr_target = to_device(dist.shard(torch.stack(hr_batch)), device)
        with precision.autocast():
            loss = F.l1_loss(step_net(lr_in).float(), hr_target)
        precision.step(loss, opt)
        precision.update()
        current_lr = sched.get_last_lr()[0]
        sched.step()
        value = dist.average({"loss": loss.item()})["loss"]
        if on_step is not None and dist.is_main:
            on_step(step, {"loss": value, "lr": float(current_lr)})
    return net.cpu().eval()


@torch.no_grad()
def sr_predict(net: SRNet, lr: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Super-resolve [N, 3, h, w] -> [N, 3, s*h, s*w], in batches, clamped to [0, 1]."""
    was_training = net.training
    net.eval()
    out = [net(lr[i : i + batch_size].float()).clamp_(0.0, 1.0) for i in range(0, lr.shape[0], batch_size)]
    net.train(was_training)
    return torch.cat(out)
