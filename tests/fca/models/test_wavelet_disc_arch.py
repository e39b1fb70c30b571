import torch

from fca.models.wavelet_disc_arch import HaarHighBands, WaveletDiscriminator


def _disc() -> WaveletDiscriminator:
    torch.manual_seed(0)
    return WaveletDiscriminator(3, 8).eval()


def test_output_is_a_patch_map():
    d = _disc()
    assert d(torch.rand(2, 3, 32, 32)).shape == (2, 1, 4, 4)  # H/8: Haar halves, then two stride-2 convs
    assert HaarHighBands()(torch.rand(2, 3, 32, 32)).shape == (2, 9, 16, 16)


def test_low_pass_band_does_not_influence_the_output():
    d = _disc()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g)
    # A constant, and an image constant on each 2x2 Haar block, live only in the LL band.
    blocks = torch.rand(2, 3, 16, 16, generator=g).repeat_interleave(2, -1).repeat_interleave(2, -2)
    with torch.no_grad():
        base = d(x)
        torch.testing.assert_close(d(x + 0.3), base, atol=1e-5, rtol=0)
        torch.testing.assert_close(d(x + blocks), base, atol=1e-5, rtol=0)
        # A checkerboard is all high band: it must change the output.
        checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float() * 0.3
        assert (d(x + checker) - base).abs().max() > 1e-3


def test_gradients_flow_to_the_input():
    d = _disc()
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    d(x).mean().backward()
    assert x.grad.abs().sum() > 0
