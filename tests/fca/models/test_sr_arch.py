import pytest
import torch

from fca.models.sr_arch import SRNet
from fca.resample import upscale


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shapes(scale):
    net = SRNet(scale, blocks=2, channels=8)
    out = net(torch.rand(2, 3, 10, 12))
    assert out.shape == (2, 3, 10 * scale, 12 * scale)


def test_untrained_net_is_exactly_bicubic_upscaling():
    torch.manual_seed(0)
    net = SRNet(4.0, blocks=1, channels=4)
    lr = torch.rand(1, 3, 8, 8)
    assert torch.equal(net(lr), upscale(lr, 4, "bicubic"))


def test_residual_path_is_trainable():
    torch.manual_seed(0)
    net = SRNet(2, blocks=1, channels=4)
    lr = torch.rand(1, 3, 8, 8)
    net(lr).sum().backward()
    assert net.tail.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [1.5, 0])
def test_non_integer_scale_is_refused(scale):
    with pytest.raises(ValueError, match="integer scale"):
        SRNet(scale)
