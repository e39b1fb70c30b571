"""Data-parallel training over processes started by `torchrun` (DistributedDataParallel).

How a step is split. Every rank draws the *whole* global batch from the same seeded
sampling stream (indices, crops, flips, scales: cheap), keeps the samples at positions
`rank, rank + N, rank + 2N, ...` (the positions torch's DistributedSampler would give
it), and runs the networks on those only. DDP then averages the gradients. So the
union of the ranks' batches is exactly the single-process batch, whatever N is, and an
N-process run follows the single-process run up to float rounding (tests/fca/
test_distributed.py checks it). torch's DistributedSampler itself is not used: it
splits an *epoch* (padding or dropping its tail), while our trainers sample with
replacement step by step; sharding each global batch keeps that stream unchanged.

Statistics over the batch must be global too, or N processes would train a different
model than one process:
- BatchNorm: torch's SyncBatchNorm on CUDA; on CPU (gloo), where SyncBatchNorm refuses
  to run, `GlobalBatchNorm2d` (two all-reduces per layer, differentiable).
- batch means inside a loss (the spectral loss's mean density): `Dist.mean`.

The library never reads the environment: `pipeline/stage.py` reads torchrun's
RANK / WORLD_SIZE / LOCAL_RANK and calls `init`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn


def backend_for(device: torch.device) -> str:
    """nccl for CUDA, gloo for CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum of the ranks' gradients (every rank's
    loss depends on every rank's input)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a data-parallel job; `Dist()` is a single process."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"distributed: rank {self.rank} of world size {self.world_size} is impossible")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, evaluates and writes checkpoints and outputs."""
        return self.rank == 0

    def check_batch(self, name: str, global_batch: int) -> None:
        """The global batch must split evenly, so that every rank's share weighs the same."""
        if global_batch % self.world_size:
            raise ValueError(
                f"{name} = {global_batch} is not divisible by the {self.world_size} processes; "
                "the batch size in params is the global one: pick a multiple of the process count"
            )

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's samples of a global batch (dim 0): positions rank, rank + N, ..."""
        return batch[self.rank :: self.world_size] if self.enabled else batch

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over dim 0 of the *global* batch, differentiable (x is this rank's shard)."""
        if not self.enabled:
            return x.mean(0)
        return _all_reduce_sum(x.sum(0)) / (x.shape[0] * self.world_size)

    def average(self, values: dict[str, float]) -> dict[str, float]:
        """Average logged scalars over ranks (each rank's value being its shard's mean)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        # NCCL reduces CUDA tensors only; gloo, CPU ones.
        where = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=where)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a picklable object; unchanged in a single process):
        what all ranks must agree on, such as the precision, is rank 0's."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def parallel(self, module: nn.Module, device: torch.device) -> nn.Module:
        """`module` ready for data-parallel training: BatchNorm made global, then wrapped in DDP.

        The returned wrapper is what the training step calls; keep using `module` (its
        `.module`) for checkpoints and for calls that must not synchronise (previews,
        evaluation). A single process gets `module` back unchanged.
        """
        if not self.enabled:
            return module
        sync_batchnorm(module, device)
        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        # Buffers (BatchNorm running stats) stay identical on every rank: no broadcast each step.
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)


def init(rank: int, world_size: int, device: torch.device) -> Dist:
    """Join the process group torchrun set up (MASTER_ADDR/PORT in the environment); backend from `device`
    (on CUDA, this rank's own GPU)."""
    d = Dist(rank, world_size)
    if d.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend_for(device), rank=rank, world_size=world_size)
    return d


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from the global batch over all ranks.

    For CPU process groups (gloo), where torch's SyncBatchNorm does not run. Outside a
    multi-process job, or in eval mode, it is exactly nn.BatchNorm2d; its state dict
    has the same keys.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and _active()):
            return super().forward(x)
        world = dist.get_world_size()
        count = x.numel() // x.shape[1] * world
        mean = _all_reduce_sum(x.sum((0, 2, 3))) / count
        centred = x - mean[None, :, None, None]
        var = _all_reduce_sum(centred.pow(2).sum((0, 2, 3))) / count  # two passes: as stable as BatchNorm's own
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * count / max(1, count - 1), alpha=m)
            self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d in `module` (in place) by a globally synchronised one sharing
    its parameters and buffers; returns `module`."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, (GlobalBatchNorm2d, nn.SyncBatchNorm)):
            kind = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm2d
            new = kind(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            # The very same parameter and buffer tensors: an optimiser built before this call keeps working.
            for key, value in child._parameters.items():
                new._parameters[key] = value
            for key, value in child._buffers.items():
                new._buffers[key] = value
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module

