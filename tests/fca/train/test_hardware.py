import time

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


def test_cpu_description_names_the_model_and_the_flags_that_shape_the_numbers():
    assert hardware.cpu_description(CPUINFO_SAPPHIRE) == {
        "cpu": "AMD EPYC (no native bf16; the name mentions avx512_bf16 only to fool a substring match)",
        "cpu_flags": "avx2 avx512f avx512_bf16 amx_bf16"}
    plain = hardware.cpu_description("flags\t: sse2 avx avx2 fma\n")
    assert plain["cpu_flags"] == "avx2" and plain["cpu"]  # no model line: the platform's name stands in


def test_cpu_bf16_mode_takes_auto_on_off_and_the_old_booleans():
    assert [hardware.cpu_bf16_mode(v) for v in ("auto", "on", "off", True, False)] == ["auto", "on", "off", "on", "off"]
    for bad in ("yes", "bf16", 1, None):
        with pytest.raises(ValueError, match=r"generator\.cpu_bf16 = .*must be one of auto, on, off"):
            hardware.cpu_bf16_mode(bad, "generator.cpu_bf16")


def test_auto_is_bf16_exactly_on_a_cpu_with_amx():
    assert hardware.choose_cpu_precision("auto", cpuinfo=CPUINFO_AVX2) == hardware.PrecisionChoice(
        "fp32", "fp32: cpu_bf16 = auto and the CPU has no amx_bf16")
    # AVX-512 BF16 without AMX: no measured speed-up, so fp32.
    assert hardware.choose_cpu_precision("auto", cpuinfo=CPUINFO_COOPER).precision == "fp32"
    assert hardware.choose_cpu_precision("auto", cpuinfo=CPUINFO_SAPPHIRE) == hardware.PrecisionChoice(
        "bf16", "bf16: cpu_bf16 = auto and the CPU has amx_bf16")


def test_auto_is_the_same_choice_whatever_the_load(monkeypatch):
    """Nothing is timed: a choice that read a clock could flip between two runs of the same params."""
    def no_clock(*_):
        raise AssertionError("the precision choice read a clock")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    monkeypatch.setattr(time, "monotonic", no_clock)
    monkeypatch.setattr(time, "time", no_clock)
    choices = {hardware.choose_cpu_precision("auto", cpuinfo=CPUINFO_SAPPHIRE) for _ in range(5)}
    assert len(choices) == 1


@pytest.mark.parametrize("cpuinfo", [CPUINFO_AVX2, CPUINFO_SAPPHIRE])
def test_on_and_off_force_the_precision(cpuinfo):
    assert hardware.choose_cpu_precision("on", cpuinfo=cpuinfo) == hardware.PrecisionChoice("bf16", "bf16: cpu_bf16 = on")
    assert hardware.choose_cpu_precision("off", cpuinfo=cpuinfo) == hardware.PrecisionChoice("fp32", "fp32: cpu_bf16 = off")
    assert hardware.choose_cpu_precision(True, cpuinfo=cpuinfo).precision == "bf16"  # the old boolean params


def test_a_resumed_run_takes_the_stored_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text(CPUINFO_AVX2)  # a fresh start here would choose fp32
    stored = {"device": "cpu", **hardware.PrecisionChoice("bf16", "bf16: cpu_bf16 = auto and the CPU has amx_bf16").as_dict()}
    assert hardware.resolve_precision(CPU, True, "auto", stored=stored).precision == "bf16"
    assert hardware.resolve_precision(CPU, True, "auto").precision == "fp32"
    # A checkpoint written on another kind of device: decided afresh.
    cuda_state = {"device": "cuda", **hardware.PrecisionChoice("bf16", "bf16: cuda_amp = true").as_dict()}
    assert hardware.resolve_precision(CPU, True, "auto", stored=cuda_state).precision == "fp32"


def test_every_rank_takes_what_share_hands_back(tmp_path, monkeypatch):
    """A torchrun rank on a CPU without AMX still computes in rank 0's bf16 (Dist.from_main)."""
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text(CPUINFO_AVX2)
    rank0 = hardware.PrecisionChoice("bf16", "bf16: cpu_bf16 = auto and the CPU has amx_bf16")
    seen = []
    got = hardware.resolve_precision(CPU, True, "auto", share=lambda mine: seen.append(mine) or rank0)
    assert got == rank0 and seen == [hardware.PrecisionChoice("fp32", "fp32: cpu_bf16 = auto and the CPU has no amx_bf16")]


def test_the_choice_round_trips_through_a_checkpoint(tmp_path):
    from fca.train.checkpoint import load_checkpoint, save_checkpoint

    choice = hardware.PrecisionChoice("bf16", "bf16: cpu_bf16 = auto and the CPU has amx_bf16")
    save_checkpoint(tmp_path / "c.pt", {"precision": {"device": "cpu", **choice.as_dict()}})
    assert hardware.PrecisionChoice.from_dict(load_checkpoint(tmp_path / "c.pt")["precision"]) == choice  # weights_only load
