"""Device choice, mixed precision and host-to-device copies, shared by the trainers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'; 'cuda' or 'cuda:N' (an error if there is none)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device = {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch.cuda.is_available() is False")
    return torch.device(name)


class Precision:
    """Mixed precision for one trainer: the autocast dtype (or none) and, for fp16, a GradScaler.

    On CUDA with `cuda_amp`: bf16 where the card has it (no scaler needed), else fp16 with
    a GradScaler. On CPU only with `cpu_bf16` (measured slower than fp32 on CPUs without
    native bf16; see benchmarks/generator_experiments.py).
    """

    def __init__(self, device: torch.device, cuda_amp: bool = True, cpu_bf16: bool = False):
        self.device = device
        self.dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        if device.type == "cuda" and cuda_amp:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self.dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        elif device.type == "cpu" and cpu_bf16:
            self.dtype = torch.bfloat16

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                yield

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward (scaled for fp16) and the optimiser step."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        else:
            loss.backward()
            optimizer.step()

    def update(self) -> None:
        """Once per training step, after every optimiser stepped (adapts the fp16 loss scale)."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU batch to `device`; on CUDA through pinned memory, asynchronously."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
