"""Training SR networks on (LR, HR) pairs: the referee's probe and the train_sr stage's product.

Two trainers share the validation, the batch draw, the build and the step:

- `train_sr`: the referee's small `SRNet` (docs/design.md, "SR probe"). One net per kind of
  pairs (bicubic, ours, oracle) with the same config and seed, so the nets start from the
  same weights and see the same crops in the same order; only the LR side of the pairs
  differs. Differences in test PSNR are then the pairs' doing.
- `train_sr_model`: the train_sr stage's `EDSR` (a model to use, `fca upscale`), with
  resumable checkpoints. As in BasicSR the network weights (`net_<step>.pt`, which is also
  the published model's format) are saved apart from the training state
  (`state_<step>.pt`: optimiser, scheduler, data RNG, loss history).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fca.config import param
from fca.distributed import Dist
from fca.models.sr_arch import EDSR, SRNet
from fca.progress import progress_bar, track
from fca.train.checkpoint import TrainingDivergedError, check_weights, checkpoint_config, load_checkpoint, load_weights, save_checkpoint
from fca.train.hardware import Precision, to_device

log = logging.getLogger(__name__)


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
    seed: int = param(0, ge=0, le=2**32 - 1, help="init and crops; the same for both kinds of pairs")


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


@dataclass
class Trainer:
    """What one SR training run holds between steps."""

    net: nn.Module
    step_net: nn.Module  # the DDP wrapper in a multi-process job, else the net
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    gen: torch.Generator  # crops and flips
    device: torch.device
    dist: Dist


def build_trainer(net: nn.Module, *, lr: float, steps: int, seed: int, cuda_amp: bool, device: torch.device, dist: Dist,
                  betas: tuple[float, float] = (0.9, 0.999)) -> Trainer:
    """Adam with a cosine decay to 0 over `steps`, the data generator seeded with `seed`."""
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
    return Trainer(net, dist.parallel(net, device), opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps),
                   Precision(device, cuda_amp), torch.Generator().manual_seed(seed), device, dist)


def train_step(tr: Trainer, lr_images: torch.Tensor, hr_images: torch.Tensor, scale: int, patch_size: int, batch_size: int) -> dict[str, float]:
    """One Adam step on the L1 loss of a fresh batch: {"loss": rank-averaged L1, "lr": the rate used}.

    The global batch's crops and flips are drawn on every rank (one stream); each keeps its share."""
    lr_batch, hr_batch = draw_batch(lr_images, hr_images, scale, patch_size, batch_size, tr.gen)
    lr_in = to_device(tr.dist.shard(lr_batch), tr.device)
    hr_target = to_device(tr.dist.shard(hr_batch), tr.device)
    with tr.precision.autocast():
        loss = F.l1_loss(tr.step_net(lr_in).float(), hr_target)
    tr.precision.step(loss, tr.opt)
    tr.precision.update()
    current_lr = tr.sched.get_last_lr()[0]
    tr.sched.step()
    return {"loss": tr.dist.average({"loss": loss.item()})["loss"], "lr": float(current_lr)}


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
    Returns the trained net in eval mode (CPU, float32).
    """
    s = check_pairs(lr_images, hr_images, scale, config.patch_size)
    dist.check_batch("evaluate.sr.batch_size", config.batch_size)
    lr_images, hr_images = lr_images.float(), hr_images.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SRNet(s, config.blocks, config.channels)
    tr = build_trainer(net, lr=config.lr, steps=config.steps, seed=seed, cuda_amp=config.cuda_amp, device=device, dist=dist)
    net.train()
    for step in track(range(1, config.steps + 1), desc=desc, enabled=progress and dist.is_main, leave=False):
        metrics = train_step(tr, lr_images, hr_images, s, config.patch_size, config.batch_size)
        if on_step is not None and dist.is_main:
            on_step(step, metrics)
    return net.cpu().eval()


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


def _plain(config: TrainSRConfig) -> dict[str, Any]:
    """The config as checkpoint-safe plain values (tuples -> lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


_NET = re.compile(r"^net_(\d{8})\.pt$")


def _latest_pair(folder: Path) -> tuple[Path, Path] | None:
    """The newest (net_<step>.pt, state_<step>.pt) pair in `folder`: a crash between the two
    writes leaves a net without its state, which is passed over for the previous pair."""
    steps = sorted((int(m.group(1)) for p in folder.glob("net_*.pt") if (m := _NET.match(p.name))), reverse=True)
    for step in steps:
        net, state = folder / f"net_{step:08d}.pt", folder / f"state_{step:08d}.pt"
        if state.is_file():
            return net, state
    return None


def final_weights(checkpoint_dir: Path | str, steps: int) -> Path:
    """The weights file `train_sr_model` leaves in `checkpoint_dir` after its last step (the model to publish)."""
    return Path(checkpoint_dir) / f"net_{steps:08d}.pt"


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

    pairs: what the LR side is ("ours", "bicubic"), stored with the weights.
    checkpoint_dir: every `checkpoint_every` steps and at the end, `net_<step>.pt` (the weights,
    config, scale and pairs: the format `load_sr_model` reads) and then `state_<step>.pt`
    (optimiser, scheduler, data RNG, history) are written there and older pairs removed; a
    run that finds a pair resumes from the newest one, bit for bit on a CPU. A checkpoint
    written with other params, scale or pairs is an error naming the file.
    Raises TrainingDivergedError when the loss is NaN or inf (the checkpoints are left as they were).
    """
    s = check_pairs(lr_images, hr_images, scale, config.patch_size, "train_sr")
    dist.check_batch("train_sr.batch_size", config.batch_size)
    lr_images, hr_images = lr_images.float(), hr_images.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = build_sr_model(config, s)
    tr = build_trainer(net, lr=config.lr, steps=config.steps, seed=config.seed, cuda_amp=config.cuda_amp, device=device, dist=dist,
                       betas=config.betas)
    step, history = 0, []
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    found = _latest_pair(folder) if folder is not None and folder.is_dir() else None
    if found is not None:
        step, history = _resume(tr, found, config, s, pairs)
        log.info("train_sr[%s]: resuming from %s at step %d of %d", pairs, found[0], step, config.steps)

    def checkpoint() -> None:
        if folder is None or not dist.is_main:
            return
        net_path, state_path = folder / f"net_{step:08d}.pt", folder / f"state_{step:08d}.pt"
        save_checkpoint(net_path, {"config": _plain(config), "scale": s, "pairs": pairs, "step": step,
                                   "model": {k: v.cpu() for k, v in net.state_dict().items()}})
        save_checkpoint(state_path, {"step": step, "config": _plain(config), "scale": s, "pairs": pairs,
                                     "opt": tr.opt.state_dict(), "sched": tr.sched.state_dict(), "scaler": tr.precision.state_dict(),
                                     "data_rng": tr.gen.get_state(), "history": history})
        for old in [*folder.glob("net_*.pt"), *folder.glob("state_*.pt")]:
            if old not in (net_path, state_path):
                old.unlink(missing_ok=True)

    net.train()
    bar = progress_bar(total=config.steps, initial=step, enabled=progress and dist.is_main, desc=f"sr[{pairs}]")
    while step < config.steps:
        metrics = train_step(tr, lr_images, hr_images, s, config.patch_size, config.batch_size)
        if not math.isfinite(metrics["loss"]):
            raise TrainingDivergedError(step + 1, "loss", metrics["loss"])
        step += 1
        history.append({"step": step, **metrics})
        if on_step is not None and dist.is_main:
            on_step(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if step % config.checkpoint_every == 0 or step == config.steps:
            checkpoint()
            dist.barrier()  # no rank runs ahead of the checkpoint on disk
    bar.close()
    return net.cpu().eval(), history


def _resume(tr: Trainer, found: tuple[Path, Path], config: TrainSRConfig, scale: int, pairs: str) -> tuple[int, list[dict[str, float]]]:
    """Load a (weights, state) pair into the trainer; return (step, history)."""
    net_path, state_path = found
    weights, state = load_checkpoint(net_path, map_location="cpu"), load_checkpoint(state_path, map_location=tr.device)
    now = _plain(config)
    stored = state.get("config", {})
    changed = [k for k in now if k not in _RESUMABLE_CHANGES and stored.get(k) != now[k]]
    if state.get("scale") != scale:
        changed.append("scale")
    if state.get("pairs") != pairs:
        changed.append("pairs")
    if changed or weights.get("step") != state.get("step"):
        raise ValueError(f"{state_path}: written with different train_sr params or pairs ({', '.join(changed) or 'step'}); "
                         "delete the checkpoint folder to start over")
    load_weights(net_path, tr.net, weights["model"], "SR net")
    tr.opt.load_state_dict(state["opt"])
    tr.sched.load_state_dict(state["sched"])
    tr.precision.load_state_dict(state.get("scaler", {}))
    tr.gen.set_state(state["data_rng"])
    return int(state["step"]), list(state["history"])


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
