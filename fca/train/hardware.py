"""Device choice, CPU threads, mixed precision and host-to-device copies, shared by the trainers."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")  # where cgroup v2 (or v1's controllers) are mounted
PROC_CGROUP = Path("/proc/self/cgroup")  # this process's cgroup path(s)
CPUINFO = Path("/proc/cpuinfo")  # where Linux lists the CPU's feature flags


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
    a GradScaler. On CPU only with `cpu_bf16` (True: bf16 autocast), which the trainers
    decide with `resolve_precision`.
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


# --------------------------------------------------------------------------- CPU precision: bf16 or fp32

CPU_BF16_MODES = ("auto", "on", "off")
# /proc/cpuinfo flags that shape a CPU run's speed and bits: the vector width oneDNN and the BLAS
# pick kernels by (so fp32 sums round differently on AVX2 and AVX-512 machines), and native bf16.
CPU_FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPUs that compute in bf16 natively
# auto trains in bf16 only where it was measured to pay: with AMX tiles, bf16 trains the FDC 1.47x
# and the generator 1.55x faster than fp32 (one thread, interleaved runs) with the same verdict.
# Without native bf16 torch emulates it (3.5x slower, benchmarks/generator_experiments.py); on
# AVX-512 BF16 alone (no AMX) no speed-up was measured, so auto keeps fp32 there.
AUTO_BF16_FLAG = "amx_bf16"


def cpu_bf16_mode(value: Any, key: str = "cpu_bf16") -> str:
    """`cpu_bf16` as one of auto | on | off. Booleans read as on / off: the older params and
    checkpoints wrote true / false, and YAML 1.1 (PyYAML) reads an unquoted on / off as a boolean."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value in CPU_BF16_MODES:
        return value
    raise ValueError(f"{key} = {value!r}: must be one of auto, on, off (true / false read as on / off)")


def _cpuinfo_text(cpuinfo: str | None) -> str:
    if cpuinfo is not None:
        return cpuinfo
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux: no flags known
        return ""


def _cpuinfo_field(cpuinfo: str, field: str) -> str:
    """The first value of `field` ("flags", "model name") in /proc/cpuinfo's text, "" when absent."""
    for line in cpuinfo.splitlines():
        name, sep, rest = line.partition(":")
        if sep and name.strip() == field:
            return rest.strip()
    return ""


def cpu_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The flags of `CPU_FLAGS_OF_NOTE` this CPU advertises. `cpuinfo` is the text of
    /proc/cpuinfo (tests pass their own); by default the file `CPUINFO` is read."""
    flags = set(_cpuinfo_field(_cpuinfo_text(cpuinfo), "flags").split())
    return tuple(f for f in CPU_FLAGS_OF_NOTE if f in flags)


def native_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The native-bf16 flags (`NATIVE_BF16_FLAGS`) this CPU advertises, empty when none."""
    return tuple(f for f in cpu_flags(cpuinfo) if f in NATIVE_BF16_FLAGS)


def cpu_description(cpuinfo: str | None = None) -> dict[str, str]:
    """What a result records about the CPU that made it: {"cpu": model name, "cpu_flags": the
    flags of note, space-separated ("" when none)}."""
    text = _cpuinfo_text(cpuinfo)
    model = _cpuinfo_field(text, "model name") or platform.processor() or platform.machine() or "unknown"
    return {"cpu": model, "cpu_flags": " ".join(cpu_flags(text))}


@dataclass(frozen=True)
class PrecisionChoice:
    """What a trainer computes in and why, e.g. ("bf16", "bf16: cpu_bf16 = auto and the CPU has amx_bf16").

    A function of the params and the CPU's flags alone, never of a timing, so the same params
    on the same machine compute in the same precision whatever the load. Logged, recorded in
    the stage's MLflow run and stored in the checkpoint, from which a resumed run takes it."""

    precision: str  # fp32 | bf16 | fp16
    reason: str

    @property
    def cpu_bf16(self) -> bool:
        return self.precision == "bf16"

    def as_dict(self) -> dict[str, Any]:
        """Plain types only: checkpoints load with weights_only=True."""
        return {"precision": self.precision, "reason": self.reason}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> PrecisionChoice:
        return cls(str(state["precision"]), str(state["reason"]))


def choose_cpu_precision(mode: str, cpuinfo: str | None = None) -> PrecisionChoice:
    """fp32 or bf16 (autocast + channels_last) for training on this CPU.

    on / off: bf16 / fp32. auto: bf16 where the CPU has `AUTO_BF16_FLAG` (AMX), else fp32.
    Deterministic: the same mode on the same CPU always gives the same choice."""
    mode = cpu_bf16_mode(mode)
    if mode == "on":
        return PrecisionChoice("bf16", "bf16: cpu_bf16 = on")
    if mode == "off":
        return PrecisionChoice("fp32", "fp32: cpu_bf16 = off")
    if AUTO_BF16_FLAG in cpu_flags(cpuinfo):
        return PrecisionChoice("bf16", f"bf16: cpu_bf16 = auto and the CPU has {AUTO_BF16_FLAG}")
    return PrecisionChoice("fp32", f"fp32: cpu_bf16 = auto and the CPU has no {AUTO_BF16_FLAG}")


def cuda_precision(device: torch.device, cuda_amp: bool) -> PrecisionChoice:
    """What `Precision(device, cuda_amp)` computes in on a CUDA device, as a PrecisionChoice."""
    dtype = Precision(device, cuda_amp).dtype
    if dtype is None:
        return PrecisionChoice("fp32", "fp32: cuda_amp = false")
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    return PrecisionChoice(name, f"{name}: cuda_amp = true" + ("" if name == "bf16" else " (no bf16 on this card: fp16 with a GradScaler)"))


def resolve_precision(device: torch.device, cuda_amp: bool, cpu_bf16: str, *, stored: Mapping[str, Any] | None = None,
                      share: Callable[[PrecisionChoice], PrecisionChoice] | None = None) -> PrecisionChoice:
    """A trainer's precision at start-up. CUDA: what `cuda_amp` gives (cpu_bf16 is not read).
    CPU, fresh start: `choose_cpu_precision`. CPU, resumed (`stored`: what the checkpoint holds,
    `PrecisionChoice.as_dict` with the device type under "device"): the stored choice, so the
    resumed run continues bit for bit like an uninterrupted one even on a machine whose flags
    would choose otherwise (one written on another kind of device is decided afresh: its bits
    do not carry over anyway). `share(choice)`: a torchrun job's ranks all take rank 0's choice
    (`fca.distributed.Dist.from_main`), whatever their own CPUs' flags."""
    if device.type == "cuda":
        choice = cuda_precision(device, cuda_amp)
    elif stored is not None and stored.get("device", device.type) == device.type:
        choice = PrecisionChoice.from_dict(stored)
    else:
        choice = choose_cpu_precision(cpu_bf16)
    return share(choice) if share is not None else choice


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU batch to `device`; on CUDA through pinned memory, asynchronously."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
