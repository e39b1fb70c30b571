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


# --------------------------------------------------------------------------- EDSR (the train_sr stage's net)

from fca.models.sr_arch import EDSR, upsample_stages  # noqa: E402


@pytest.mark.parametrize("scale, stages", [(1, []), (2, [2]), (3, [3]), (4, [2, 2]), (8, [2, 2, 2]), (6, [6])])
def test_edsr_upsampler_stages(scale, stages):
    assert upsample_stages(scale) == stages
    out = EDSR(scale, blocks=1, channels=4)(torch.rand(1, 3, 5, 7))
    assert out.shape == (1, 3, 5 * scale, 7 * scale)


def test_edsr_with_bicubic_skip_starts_at_bicubic_and_without_it_does_not():
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 8, 8)
    assert torch.equal(EDSR(4, blocks=1, channels=4, bicubic_skip=True)(lr), upscale(lr, 4, "bicubic"))
    plain = EDSR(4, blocks=1, channels=4, bicubic_skip=False)
    assert not torch.allclose(plain(lr), upscale(lr, 4, "bicubic"), atol=1e-3)
    assert plain.conv_last.weight.abs().sum() > 0  # a plain EDSR is not zero-initialised


def test_edsr_has_basicsr_role_names_and_no_batch_norm():
    net = EDSR(4, blocks=2, channels=8)
    names = {n.split(".")[0] for n, _ in net.named_parameters()}
    assert names == {"conv_first", "body", "conv_after_body", "upsample", "conv_last"}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert "mean" not in net.state_dict()  # a constant, not a weight to store


@pytest.mark.parametrize("scale, blocks, skip", [(4, 2, True), (3, 1, False), (2, 3, True)])
def test_edsr_margin_is_exactly_how_far_the_input_reaches(scale, blocks, skip):
    """Changing the input `margin` pixels from a region changes nothing there; each block widens
    the reach, so margin() must not be smaller (fca.upscale cuts tiles with it)."""
    torch.manual_seed(0)
    net = EDSR(scale, blocks=blocks, channels=4, bicubic_skip=skip)
    torch.nn.init.normal_(net.conv_last.weight, std=0.1)
    m = net.margin()
    lr = torch.rand(1, 3, 40, 40)
    far = lr.clone()
    far[..., :, 20 + m :] = torch.rand(1, 3, 40, 20 - m)  # columns from 20 + m on
    a, b = net(lr), net(far)
    assert torch.allclose(a[..., : 20 * scale], b[..., : 20 * scale], atol=1e-6)  # columns < 20 untouched
    assert not torch.allclose(a[..., : 20 * scale + scale * m], b[..., : 20 * scale + scale * m], atol=1e-6)
