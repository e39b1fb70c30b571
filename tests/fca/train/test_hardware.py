import pytest
import torch

from fca.train.hardware import Precision, resolve_device, to_device

CPU = torch.device("cpu")


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device("cuda")
        with pytest.raises(RuntimeError, match="cuda:1"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")


def test_precision_on_cpu_is_fp32_unless_asked_for_bf16():
    plain = Precision(CPU, cuda_amp=True, cpu_bf16=False)
    assert not plain.enabled and plain.scaler is None and plain.state_dict() == {}
    with plain.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    bf16 = Precision(CPU, cpu_bf16=True)
    with bf16.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_precision_step_is_a_plain_optimiser_step_without_a_scaler():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    p = Precision(CPU)
    p.step((w * 2).sum(), opt)  # d/dw = 2
    p.update()
    assert w.item() == pytest.approx(0.0)
    p.step((w * 2).sum(), opt)  # gradients were zeroed first, not accumulated
    assert w.item() == pytest.approx(-1.0)


def test_to_device_on_cpu_keeps_values():
    x = torch.arange(6.0).view(2, 3)
    assert torch.equal(to_device(x, CPU), x)


# ---------------------------------------------------------------- CPU threads

from fca.train import hardware  # noqa: E402


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake machine: set(cpus=..., v2=cpu.max text, v1=(quota, period), cgroup=/proc/self/cgroup text)."""
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc_cgroup"
    monkeypatch.setattr(hardware, "CGROUP_ROOT", root)
    monkeypatch.setattr(hardware, "PROC_CGROUP", proc)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def set_(cpus=8, v2=None, v1=None, cgroup="0::/\n", where=""):
        monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(cpus)))
        proc.write_text(cgroup)
        if v2 is not None:
            (root / where).mkdir(parents=True, exist_ok=True)
            (root / where / "cpu.max").write_text(v2)
        if v1 is not None:
            (root / "cpu" / where).mkdir(parents=True, exist_ok=True)
            (root / "cpu" / where / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
            (root / "cpu" / where / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")

    return set_


def test_available_cpus_is_the_affinity_mask_without_a_quota(machine):
    machine(cpus=6)
    assert hardware.available_cpus() == 6
    machine(cpus=6, v2="max 100000\n")  # cgroup v2 without a limit
    assert hardware.available_cpus() == 6


def test_available_cpus_rounds_a_cgroup_v2_quota_down(machine):
    machine(cpus=8, v2="150000 100000\n")  # docker --cpus 1.5
    assert hardware.available_cpus() == 1
    machine(cpus=8, v2="400000 100000\n")
    assert hardware.available_cpus() == 4
    machine(cpus=2, v2="400000 100000\n")  # the affinity mask is smaller
    assert hardware.available_cpus() == 2
    machine(cpus=8, v2="50000 100000\n")  # half a CPU: still one thread
    assert hardware.available_cpus() == 1


def test_available_cpus_reads_the_process_cgroup_and_its_ancestors(machine):
    machine(cpus=16, v2="300000 100000\n", where="job", cgroup="0::/job/step\n")  # a parent's quota counts
    assert hardware.available_cpus() == 3


def test_available_cpus_reads_a_cgroup_v1_quota(machine):
    machine(cpus=8, v1=(200000, 100000), cgroup="3:cpu,cpuacct:/\n0::/\n")
    assert hardware.available_cpus() == 2
    machine(cpus=8, v1=(-1, 100000), cgroup="3:cpu,cpuacct:/\n")  # -1: no quota
    assert hardware.available_cpus() == 8


def test_available_cpus_without_sched_getaffinity(machine, monkeypatch):
    machine()
    monkeypatch.delattr(hardware.os, "sched_getaffinity")
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 3)
    assert hardware.available_cpus() == 3


def test_default_threads_is_capped_by_the_engine_grant(machine):
    machine(cpus=4)
    assert hardware.default_threads({}) == 4
    assert hardware.default_threads({"OMP_NUM_THREADS": "1"}) == 1  # Snakemake, rule threads 1
    assert hardware.default_threads({"OMP_NUM_THREADS": "8"}) == 4  # a grant above the CPUs: the CPUs
    assert hardware.default_threads({"OMP_NUM_THREADS": "2,1"}) == 2  # OpenMP's nested list
    assert hardware.default_threads({"OMP_NUM_THREADS": "lots"}) == 4  # not a number: ignored
    assert hardware.default_threads({"OMP_NUM_THREADS": "0"}) == 4
    machine(cpus=4, v2="200000 100000\n")
    assert hardware.default_threads({"OMP_NUM_THREADS": "3"}) == 2


def test_set_threads_exact_count_or_the_default(machine, monkeypatch, caplog):
    before = torch.get_num_threads()
    try:
        machine(cpus=2)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert hardware.set_threads(0) == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert hardware.set_threads(0) == 2 and torch.get_num_threads() == 2
        with caplog.at_level("WARNING"):
            assert hardware.set_threads(3) == 3  # named counts are kept (they shape the numbers) ...
        assert torch.get_num_threads() == 3
        assert "oversubscribed" in caplog.text  # ... with a warning when the CPUs are fewer
        with pytest.raises(ValueError, match="threads = -1"):
            hardware.set_threads(-1)
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- CPU precision: bf16 or fp32

import random  # noqa: E402

import numpy as np  # noqa: E402

# /proc/cpuinfo excerpts: this project's machine (AVX2, no native bf16), a Cooper Lake (AVX-512 BF16)
# and a Sapphire Rapids (AVX-512 BF16 and AMX tiles), two processors each.
CPUINFO_AVX2 = """processor\t: 0
model name\t: AMD EPYC (no native bf16; the name mentions avx512_bf16 only to fool a substring match)
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
"""
CPUINFO_COOPER = CPUINFO_AVX2.replace("avx512_vnni", "avx512_vnni avx512_bf16")
CPUINFO_SAPPHIRE = CPUINFO_AVX2.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8")


def _never() -> float:
    raise AssertionError("the probe ran")


def test_native_bf16_is_read_from_the_cpu_flags():
    assert hardware.native_bf16_flags(CPUINFO_AVX2) == ()
    assert hardware.native_bf16_flags(CPUINFO_COOPER) == ("avx512_bf16",)
    assert hardware.native_bf16_flags(CPUINFO_SAPPHIRE) == ("avx512_bf16", "amx_bf16")
    assert hardware.native_bf16_flags("flags\t: avx2 amx_bf16\n") == ("amx_bf16",)
    assert hardware.native_bf16_flags("flags\t: avx2 avx512_bf16x amx_bf16_\n") == ()  # whole flags only
    assert hardware.native_bf16_flags("") == ()


def test_native_bf16_reads_proc_cpuinfo_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
    assert hardware.native_bf16_flags() == ()  # no such file (not Linux): no native bf16
    (tmp_path / "cpuinfo").write_text(CPUINFO_SAPPHIRE)
    assert hardware.native_bf16_flags() == ("avx512_bf16", "amx_bf16")


def test_cpu_bf16_mode_takes_auto_on_off_and_the_old_booleans():
    assert [hardware.cpu_bf16_mode(v) for v in ("auto", "on", "off", True, False)] == ["auto", "on", "off", "on", "off"]
    for bad in ("yes", "bf16", 1, None):
        with pytest.raises(ValueError, match=r"generator\.cpu_bf16 = .*must be one of auto, on, off"):
            hardware.cpu_bf16_mode(bad, "generator.cpu_bf16")


def test_auto_on_a_cpu_without_native_bf16_is_fp32_without_a_probe():
    choice = hardware.choose_cpu_precision("auto", _never, cpuinfo=CPUINFO_AVX2)
    assert choice == hardware.PrecisionChoice("fp32", "fp32: CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag)")
    assert not choice.cpu_bf16 and choice.speedup is None


@pytest.mark.parametrize("cpuinfo", [CPUINFO_COOPER, CPUINFO_SAPPHIRE])
def test_auto_with_native_bf16_follows_the_probe_with_a_margin(cpuinfo):
    fast = hardware.choose_cpu_precision("auto", lambda: 2.3, cpuinfo=cpuinfo)
    assert fast.precision == "bf16" and fast.cpu_bf16 and fast.speedup == 2.3
    assert fast.reason.startswith("bf16: probe 2.30x faster than fp32 (CPU has avx512_bf16")
    slow = hardware.choose_cpu_precision("auto", lambda: 0.3, cpuinfo=cpuinfo)
    assert slow.precision == "fp32" and slow.speedup == 0.3 and "probe 0.30x" in slow.reason
    # A little faster is not enough: the margin keeps the choice away from timing noise.
    assert hardware.choose_cpu_precision("auto", lambda: 1.15, cpuinfo=cpuinfo).precision == "fp32"
    assert hardware.choose_cpu_precision("auto", lambda: hardware.BF16_MARGIN, cpuinfo=cpuinfo).precision == "bf16"
    assert hardware.choose_cpu_precision("auto", lambda: 1.15, cpuinfo=cpuinfo, margin=1.1).precision == "bf16"


@pytest.mark.parametrize("cpuinfo", [CPUINFO_AVX2, CPUINFO_SAPPHIRE])
def test_on_and_off_force_the_precision_without_a_probe(cpuinfo):
    assert hardware.choose_cpu_precision("on", _never, cpuinfo=cpuinfo) == hardware.PrecisionChoice("bf16", "bf16: cpu_bf16 = on")
    assert hardware.choose_cpu_precision("off", _never, cpuinfo=cpuinfo) == hardware.PrecisionChoice("fp32", "fp32: cpu_bf16 = off")
    assert hardware.choose_cpu_precision(True, _never, cpuinfo=cpuinfo).precision == "bf16"  # the old boolean params


def test_a_resumed_run_takes_the_stored_choice_and_never_probes(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text(CPUINFO_SAPPHIRE)  # a probe would run on a fresh start
    stored = {"device": "cpu", **hardware.PrecisionChoice("bf16", "bf16: probe 2.30x faster than fp32", 2.3).as_dict()}
    got = hardware.resolve_precision(CPU, True, "auto", _never, resumed=True, stored=stored)
    assert got == hardware.PrecisionChoice("bf16", "bf16: probe 2.30x faster than fp32", 2.3)
    # A checkpoint from before the choice was stored: the param's forced value, else fp32; still no probe.
    assert hardware.resolve_precision(CPU, True, "auto", _never, resumed=True).precision == "fp32"
    assert hardware.resolve_precision(CPU, True, "on", _never, resumed=True).precision == "bf16"
    # A fresh start decides; so does a checkpoint written on another kind of device.
    assert hardware.resolve_precision(CPU, True, "auto", lambda: 3.0).precision == "bf16"
    cuda_state = {"device": "cuda", **hardware.PrecisionChoice("bf16", "bf16: cuda_amp = true").as_dict()}
    assert hardware.resolve_precision(CPU, True, "auto", lambda: 0.5, resumed=True, stored=cuda_state).precision == "fp32"


def test_the_choice_round_trips_through_a_checkpoint(tmp_path):
    from fca.train.checkpoint import load_checkpoint, save_checkpoint

    choice = hardware.PrecisionChoice("bf16", "bf16: probe 2.30x faster than fp32 (CPU has amx_bf16)", 2.3)
    save_checkpoint(tmp_path / "c.pt", {"precision": {"device": "cpu", **choice.as_dict()}})
    assert hardware.PrecisionChoice.from_dict(load_checkpoint(tmp_path / "c.pt")["precision"]) == choice  # weights_only load


def test_probe_times_both_alternately_and_leaves_the_random_streams_alone(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(hardware.time, "perf_counter", lambda: clock[0])
    calls = []

    def step(name: str, seconds: float):
        def run() -> None:
            calls.append(name)
            clock[0] += seconds
            torch.rand(3), np.random.rand(3), random.random()  # a training step draws from the global RNGs

        return run

    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert hardware.probe_speedup(step("fp32", 3.0), step("bf16", 1.0), steps=3) == pytest.approx(3.0)
    assert calls == ["fp32", "bf16"] * 4  # one warm-up each, then three timed each, alternating
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
    calls.clear()
    assert hardware.probe_speedup(step("fp32", 100.0), step("bf16", 50.0), steps=3, budget_s=30) == pytest.approx(2.0)
    assert calls == ["fp32", "bf16"] * 2  # past the time budget after the first timed pair
