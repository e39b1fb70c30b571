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
