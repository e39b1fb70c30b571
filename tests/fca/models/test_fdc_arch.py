import pytest
import torch

from fca.models.fdc_arch import FDC



def _fdc(**kw) -> FDC:
    torch.manual_seed(0)
    return FDC(channels=8, **kw)


def test_encode_gives_an_eighth_size_map_and_forward_one_score_per_pair():
    fdc = _fdc()
    x = torch.rand(3, 3, 32, 48)
    assert fdc.encode(x).shape == (3, 1, 4, 6)
    assert fdc(x, torch.rand(3, 3, 32, 48)).shape == (3,)


def test_first_convs_are_1x3_3x1_and_3x3():
    # The masked filters must stay a row, a column and a full 3x3 after a training step.
    fdc = _fdc()
    first = fdc.body[0]
    opt = torch.optim.SGD(fdc.parameters(), lr=1.0)
    fdc(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)).pow(2).sum().backward()
    opt.step()
    w = first.conv.weight * first.mask
    c = 8
    assert torch.all(w[:c, :, [0, 2], :] == 0) and torch.any(w[:c, :, 1, :] != 0)
    assert torch.all(w[c : 2 * c, :, :, [0, 2]] == 0) and torch.any(w[c : 2 * c, :, :, 1] != 0)
    assert torch.all(w[2 * c :, :, 0, 0] != 0)


@pytest.mark.parametrize("training", [True, False])
def test_siamese_comparator_is_antisymmetric_and_zero_on_equal_inputs(training):
    fdc = _fdc()
    fdc.train(training)
    a, b = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    assert torch.equal(fdc(a, a), torch.zeros(4))
    ab, ba = fdc(a, b), fdc(b, a)
    assert ab.abs().max() > 0
    torch.testing.assert_close(ab, -ba)


def test_compares_inputs_of_different_sizes_in_eval_mode():
    # The generator compares a 32 px LR output with crops of another size.
    fdc = _fdc().eval()
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    c = fdc(a, b)
    assert c.shape == (2,)
    torch.testing.assert_close(c, fdc.score(a) - fdc.score(b))


def test_gradients_reach_both_inputs():
    fdc = _fdc().eval()
    a = torch.rand(2, 3, 32, 32, requires_grad=True)
    b = torch.rand(2, 3, 40, 40, requires_grad=True)
    fdc(a, b).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_normalized_input_ignores_brightness_and_contrast():
    fdc = _fdc(normalize_input=True).eval()
    x = torch.rand(2, 3, 32, 32) * 0.5
    torch.testing.assert_close(fdc.score(x), fdc.score(0.3 + 1.7 * x), atol=1e-5, rtol=1e-4)
    raw = _fdc(normalize_input=False).eval()
    assert (raw.score(x) - raw.score(0.3 + 1.7 * x)).abs().max() > 1e-4  # without it, it does not


def test_reflect_padding_of_the_image_hides_its_brightness_at_the_border():
    # Zero padding of the image would make a bright flat image's border differ from a dark one's.
    first = _fdc(normalize_input=False).body[0]
    for level in (0.1, 0.9):
        out = first(torch.full((1, 3, 16, 16), level))
        torch.testing.assert_close(out, out[..., 8:9, 8:9].expand_as(out))


def test_bad_input_shapes_are_errors():
    fdc = _fdc()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        fdc.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 8x8"):
        fdc.encode(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        fdc(torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        FDC(channels=0)
