"""Device choice, CPU threads, mixed precision and host-to-device copies, shared by the trainers."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")  # where cgroup v2 (or v1's controllers) are mounted
PROC_CGROUP = Path("/proc/self/cgroup")  # this process's cgroup path(s)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'; 'cuda' or 'cuda:N' (an error if there is none)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device = {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch.cuda.is_available() is False")
    return torch.device(name)


def _cgroup_quota() -> float | None:
    """The CPU quota (in CPUs, e.g. 1.5) of this process's cgroup and its ancestors, the
    smallest one; None when there is none. cgroup v2: `cpu.max` ("max 100000" or "150000
    100000"); cgroup v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1 = none)."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        lines = []
    v2, v1 = "/", "/"
    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            v2 = path or "/"
        elif "cpu" in controllers.split(","):
            v1 = path or "/"

    def ancestors(top: Path, rel: str) -> list[Path]:
        here = top / rel.strip("/")
        return [here, *[p for p in here.parents if p.is_relative_to(top)]]

    quotas = []
    for folder in ancestors(CGROUP_ROOT, v2):
        try:
            limit, period = (folder / "cpu.max").read_text().split()[:2]
            if limit != "max" and float(period) > 0:
                quotas.append(float(limit) / float(period))
        except (OSError, ValueError):
            pass
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in ancestors(CGROUP_ROOT / mount, v1):
            try:
                quota = float((folder / "cpu.cfs_quota_us").read_text())
                period = float((folder / "cpu.cfs_period_us").read_text())
                if quota > 0 and period > 0:
                    quotas.append(quota / period)
            except (OSError, ValueError):
                pass
    return min(quotas) if quotas else None


def available_cpus() -> int:
    """How many CPUs this process may keep busy: its CPU affinity mask (taskset, cpusets,
    Slurm), capped by a cgroup CPU quota (docker --cpus, Kubernetes limits) rounded down
    (1.5 CPUs -> 1: a second thread would be throttled, and torch's threads wait for the
    slowest one); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def engine_grant(environ: Mapping[str, str] | None = None) -> int | None:
    """The thread count the engine granted this job: OMP_NUM_THREADS, which Snakemake sets to
    a rule's `threads:` (and torchrun to 1 per process); None when unset or not a number."""
    raw = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    try:
        n = int(raw.split(",")[0].strip())  # OpenMP allows a nested list "4,2"
    except ValueError:
        return None
    return n if n >= 1 else None


def default_threads(environ: Mapping[str, str] | None = None) -> int:
    """The thread count a stage takes when none is given: the CPUs it may use
    (`available_cpus`), capped by the engine's grant (`engine_grant`). Never more threads
    than CPUs, so a stage does not slow itself down by oversubscription (the project's
    2-core machine ran 7-10x slower with 2 torch threads beside another busy process)."""
    grant = engine_grant(environ)
    cpus = available_cpus()
    return min(cpus, grant) if grant is not None else cpus


def set_threads(requested: int = 0) -> int:
    """Set torch's intra-op CPU threads and return the count set.

    requested > 0: exactly that many, whatever the machine: on a CPU, a trained network's
    bits depend on the thread count (convolution weight gradients, long reductions and
    matmuls split their sums by thread; benchmarks/thread_numerics.py), so a stage whose
    numbers must be reproducible names its count (dvc.yaml: `--threads 1`). Asking for more
    threads than `available_cpus()` keeps the numbers and costs speed (a warning says so).
    requested = 0: `default_threads()`, which never oversubscribes.
    """
    if requested < 0:
        raise ValueError(f"threads = {requested}: expected 0 (automatic) or a positive count")
    n = requested or default_threads()
    cpus = available_cpus()
    if requested > cpus:
        log.warning("threads = %d but this process may use %d CPU(s): the numbers are those of %d threads, "
                    "the run is slower (oversubscribed)", requested, cpus, requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


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
