"""Device choice, CPU threads, mixed precision and host-to-device copies, shared by the trainers."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    decide with `choose_cpu_precision` (3.5x slower than fp32 on a CPU without native bf16;
    see benchmarks/generator_experiments.py).
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
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute in bf16 natively
BF16_MARGIN = 1.2  # auto picks bf16 only when the probe finds it at least this much faster than fp32
PROBE_STEPS = 3  # timed training steps per precision in the probe (after one untimed warm-up step)
PROBE_BUDGET_S = 30.0  # per precision: fewer timed steps (at least one) once this many seconds have passed


def cpu_bf16_mode(value: Any, key: str = "cpu_bf16") -> str:
    """`cpu_bf16` as one of auto | on | off. Booleans read as on / off: the older params and
    checkpoints wrote true / false, and YAML 1.1 (PyYAML) reads an unquoted on / off as a boolean."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value in CPU_BF16_MODES:
        return value
    raise ValueError(f"{key} = {value!r}: must be one of auto, on, off (true / false read as on / off)")


def native_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The native-bf16 feature flags (`NATIVE_BF16_FLAGS`: AVX-512 BF16, AMX tiles) this CPU
    advertises, empty when none: the one place that detects native bf16. `cpuinfo` is the text of
    /proc/cpuinfo (tests pass their own); by default the file `CPUINFO` is read, and a machine
    without it (not Linux) counts as having none."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return ()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, sep, rest = line.partition(":")
        if sep and name.strip() == "flags":
            flags.update(rest.split())
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


@dataclass(frozen=True)
class PrecisionChoice:
    """What a trainer computes in and why, e.g. ("bf16", "bf16: probe 2.30x faster than fp32 (CPU has amx_bf16)", 2.3).

    Logged, recorded in the stage's MLflow run and stored in the checkpoint, from which a resumed
    run takes it instead of deciding again. `speedup` is the probe's fp32 / bf16 step-time ratio
    (None: no probe ran)."""

    precision: str  # fp32 | bf16 | fp16
    reason: str
    speedup: float | None = None

    @property
    def cpu_bf16(self) -> bool:
        return self.precision == "bf16"

    def as_dict(self) -> dict[str, Any]:
        """Plain types only: checkpoints load with weights_only=True."""
        return {"precision": self.precision, "reason": self.reason, "speedup": self.speedup}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> PrecisionChoice:
        speedup = state.get("speedup")
        return cls(str(state["precision"]), str(state["reason"]), None if speedup is None else float(speedup))


def choose_cpu_precision(mode: str, probe: Callable[[], float], cpuinfo: str | None = None, margin: float | None = None) -> PrecisionChoice:
    """fp32 or bf16 (autocast + channels_last) for training on this CPU.

    mode on / off: bf16 / fp32, no questions asked. auto: fp32 on a CPU without native bf16
    (`native_bf16_flags`; `probe` is never called, so the choice costs nothing); otherwise
    `probe()` times a few steps of the real training in each precision and returns fp32's time
    over bf16's, and bf16 is taken when that is at least `margin` (default `BF16_MARGIN`).
    The margin keeps the choice from flipping with timing noise, so a fixed seed gives the same
    bits run after run on one machine (a machine whose speed-up sits at the margin can pin it
    with on / off; the choice is logged and stored, so a run's record says which it was).
    """
    mode = cpu_bf16_mode(mode)
    margin = BF16_MARGIN if margin is None else margin
    if mode == "on":
        return PrecisionChoice("bf16", "bf16: cpu_bf16 = on")
    if mode == "off":
        return PrecisionChoice("fp32", "fp32: cpu_bf16 = off")
    flags = native_bf16_flags(cpuinfo)
    if not flags:
        return PrecisionChoice("fp32", f"fp32: CPU has no native bf16 (no {' / '.join(NATIVE_BF16_FLAGS)} flag)")
    speedup = float(probe())
    has = ", ".join(flags)
    if speedup >= margin:
        return PrecisionChoice("bf16", f"bf16: probe {speedup:.2f}x faster than fp32 (CPU has {has})", speedup)
    return PrecisionChoice("fp32", f"fp32: bf16 probe {speedup:.2f}x fp32's speed, below the {margin:g}x margin (CPU has {has})", speedup)


def cuda_precision(device: torch.device, cuda_amp: bool) -> PrecisionChoice:
    """What `Precision(device, cuda_amp)` computes in on a CUDA device, as a PrecisionChoice (nothing is probed)."""
    dtype = Precision(device, cuda_amp).dtype
    if dtype is None:
        return PrecisionChoice("fp32", "fp32: cuda_amp = false")
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    return PrecisionChoice(name, f"{name}: cuda_amp = true" + ("" if name == "bf16" else " (no bf16 on this card: fp16 with a GradScaler)"))


def resolve_precision(device: torch.device, cuda_amp: bool, cpu_bf16: str, probe: Callable[[], float], *,
                      resumed: bool = False, stored: Mapping[str, Any] | None = None) -> PrecisionChoice:
    """A trainer's precision at start-up. CUDA: what `cuda_amp` gives (unchanged by cpu_bf16).
    CPU, fresh start: `choose_cpu_precision`. CPU, resumed: the choice `stored` in the
    checkpoint, never probed again, so the resumed run continues bit for bit like an
    uninterrupted one (a checkpoint from before the choice was stored: on -> bf16, else fp32;
    one written on another kind of device: decided afresh, as its bits do not carry over anyway).
    `stored` is what `PrecisionChoice.as_dict` gave, with the device type under "device"."""
    if device.type == "cuda":
        return cuda_precision(device, cuda_amp)
    if resumed and stored is not None and stored.get("device", device.type) != device.type:
        resumed = False
    if resumed:
        if stored is not None:
            return PrecisionChoice.from_dict(stored)
        on = cpu_bf16_mode(cpu_bf16) == "on"
        return PrecisionChoice("bf16" if on else "fp32", f"{'bf16' if on else 'fp32'}: resumed from a checkpoint that stores no choice")
    return choose_cpu_precision(cpu_bf16, probe)


@contextlib.contextmanager
def rng_untouched() -> Iterator[None]:
    """Leave torch's CPU RNG, numpy's and python's global RNGs as they were on entry."""
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def probe_speedup(fp32_step: Callable[[], None], bf16_step: Callable[[], None], steps: int = PROBE_STEPS,
                  budget_s: float = PROBE_BUDGET_S) -> float:
    """fp32's step time over bf16's: the median of up to `steps` timed calls of each, after one
    untimed warm-up call of each (first-call setup, optimiser state); the two alternate, so a
    neighbour's load falls on both. The callables train their own deep copies of the models and
    optimisers on batches from their own generator; the global RNGs are restored afterwards
    (`rng_untouched`), so the real run's weights, optimiser state and random streams do not
    depend on whether a probe ran."""
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with rng_untouched():
        fp32_step()
        bf16_step()
        start = time.perf_counter()
        for _ in range(max(1, steps)):
            for name, fn in (("fp32", fp32_step), ("bf16", bf16_step)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            if time.perf_counter() - start > 2 * budget_s:
                break
    return statistics.median(times["fp32"]) / max(statistics.median(times["bf16"]), 1e-12)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU batch to `device`; on CUDA through pinned memory, asynchronously."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
