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
