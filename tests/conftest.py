import os
import re

import pytest
import torch

from fca.train import hardware

# The library's tests use tiny tensors: on a 2-core machine a second OpenMP thread
# mostly waits for the first. The engines' end-to-end runs take their threads from
# dvc.yaml's --threads (the stages that train or evaluate) or the CPUs they may use.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread_after_each_test():
    """A test that leaves torch at more threads slows every later test of its worker by up to
    30x beside the other worker (OpenMP threads spin for cores that are busy): an error."""
    yield
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
        pytest.fail(f"the test left torch at {n} threads (commands give the caller back its count: pipeline/stage.py run)")


@pytest.fixture(autouse=True, scope="session")
def _cpu_without_amx(tmp_path_factory):
    """In-process tests see this machine's CPU less its AMX flag, so `cpu_bf16: auto` trains in
    fp32 on every CPU and a test's bits and tolerances do not depend on which CPU runs it. The
    bf16 paths are tested by forcing them (cpu_bf16: on, or tests/fca/train/conftest.py's
    fake_cpu). The engines' end-to-end runs read tests/params_tiny.yaml, which pins off."""
    try:
        text = hardware.CPUINFO.read_text(errors="replace")
    except OSError:
        text = ""
    path = tmp_path_factory.mktemp("cpu") / "cpuinfo"
    path.write_text(re.sub(rf"(?<=\s){hardware.AUTO_BF16_FLAG}(?=\s|$)", "", text, flags=re.M))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hardware, "CPUINFO", path)
        yield


def pytest_collection_modifyitems(items):
    """The end-to-end runs (marked slow, minutes each) first: under `pytest -n` (the Makefile's
    `make test`) each worker starts on one, and the many short tests fill the gaps after, so
    no worker is left with a long test at the end while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
