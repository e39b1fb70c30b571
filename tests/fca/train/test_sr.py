import pytest
import torch

from fca.kernels import conv_per_sample, gaussian
from fca.metrics import psnr_y
from fca.resample import downscale, upscale
from fca.train.sr import SRConfig, sr_predict, train_sr



def _pairs(n: int = 6, size: int = 32, scale: int = 2):
    """Smooth random HR images (blurred noise) and their bicubic LR: [n, 3, size/s, size/s], [n, 3, size, size]."""
    gen = torch.Generator().manual_seed(0)
    hr = conv_per_sample(torch.rand(n, 3, size, size, generator=gen), torch.from_numpy(gaussian(5, 1.0)).float())
    return downscale(hr, scale), hr


def test_training_beats_bicubic_on_its_training_distribution():
    lr, hr = _pairs()
    cfg = SRConfig(blocks=1, channels=8, steps=100, batch_size=8, patch_size=16, lr=2e-3)
    losses = []
    net = train_sr(cfg, lr, hr, 2, seed=0, on_step=lambda step, m: losses.append((step, m["loss"])))
    assert [s for s, _ in losses] == list(range(1, 101))
    assert sum(l for _, l in losses[-20:]) < sum(l for _, l in losses[:20])
    sr = sr_predict(net, lr)
    assert sr.shape == hr.shape and sr.min() >= 0 and sr.max() <= 1
    assert float(psnr_y(sr, hr).mean()) > float(psnr_y(upscale(lr, 2).clamp(0, 1), hr).mean()) + 0.3


def test_same_seed_same_net_and_global_rng_untouched():
    lr, hr = _pairs(n=3)
    cfg = SRConfig(blocks=1, channels=4, steps=5, batch_size=2, patch_size=16)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train_sr(cfg, lr, hr, 2, seed=7)
    after = torch.rand(1)
    b = train_sr(cfg, lr, hr, 2, seed=7)
    c = train_sr(cfg, lr, hr, 2, seed=8)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_bad_pairs_are_refused_with_the_reason():
    lr, hr = _pairs(n=2)
    cfg = SRConfig(blocks=1, channels=4, steps=1, batch_size=1, patch_size=16)
    with pytest.raises(ValueError, match="not LR"):
        train_sr(cfg, lr, hr[..., :30, :30], 2)
    with pytest.raises(ValueError, match="multiple of the scale"):
        train_sr(SRConfig(blocks=1, channels=4, steps=1, batch_size=1, patch_size=15), lr, hr, 2)
    with pytest.raises(ValueError, match="larger than"):
        train_sr(SRConfig(blocks=1, channels=4, steps=1, batch_size=1, patch_size=64), lr, hr, 2)
    with pytest.raises(ValueError, match="integer scale"):
        train_sr(cfg, lr, hr, 2.5)
