import os

import pytest
import torch

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
