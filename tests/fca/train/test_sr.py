import dataclasses

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


# --------------------------------------------------------------------------- train_sr_model (the stage's EDSR)

from fca.train.checkpoint import CheckpointError, TrainingDivergedError, load_checkpoint  # noqa: E402
from fca.train.checkpoint import net_path  # noqa: E402
from fca.train.sr import TrainSRConfig, load_sr_model, train_sr_model  # noqa: E402


def _model_cfg(**kw) -> TrainSRConfig:
    base = dict(blocks=1, channels=8, steps=10, batch_size=4, patch_size=16, lr=2e-3, checkpoint_every=4)
    return TrainSRConfig(**base | kw)


def test_model_training_loss_falls_and_beats_bicubic():
    lr, hr = _pairs()
    net, history = train_sr_model(_model_cfg(steps=120, batch_size=8), lr, hr, 2, pairs="bicubic")
    losses = [h["loss"] for h in history]
    assert [h["step"] for h in history] == list(range(1, 121))
    assert sum(losses[-20:]) < 0.9 * sum(losses[:20])  # it starts at bicubic: the gain is on top of that
    assert float(psnr_y(sr_predict(net, lr), hr).mean()) > float(psnr_y(upscale(lr, 2).clamp(0, 1), hr).mean()) + 0.3


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_an_interrupted_run_resumes_to_the_same_weights_bit_for_bit(tmp_path):
    lr, hr = _pairs(n=3)
    cfg = _model_cfg()
    whole, whole_hist = train_sr_model(cfg, lr, hr, 2, pairs="ours")

    def crash(step, m):
        if step == 7:  # after the checkpoint at step 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sr_model(cfg, lr, hr, 2, pairs="ours", checkpoint_dir=tmp_path, on_step=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_00000004.pt", "state_00000004.pt"]
    seen = []
    resumed, hist = train_sr_model(cfg, lr, hr, 2, pairs="ours", checkpoint_dir=tmp_path, on_step=lambda s, m: seen.append(s))
    assert seen == list(range(5, 11))
    assert _same_weights(whole, resumed)
    assert hist == whole_hist
    # The weights file alone is the model: config, scale and pairs, no optimiser state.
    weights = load_checkpoint(net_path(tmp_path, cfg.steps))
    assert set(weights) == {"config", "scale", "pairs", "step", "model"}
    assert _same_weights(load_sr_model(net_path(tmp_path, cfg.steps)), whole)


def test_weights_without_their_state_are_passed_over_for_the_previous_pair(tmp_path):
    """A crash between writing net_<step>.pt and state_<step>.pt: resume from the pair before."""
    lr, hr = _pairs(n=3)
    cfg = _model_cfg(steps=8)
    whole, _ = train_sr_model(cfg, lr, hr, 2, pairs="ours")
    train_sr_model(dataclasses.replace(cfg, steps=4), lr, hr, 2, pairs="ours", checkpoint_dir=tmp_path)
    # steps=4 wrote its pair with another config: rename it as this config's pair at step 4
    state = load_checkpoint(tmp_path / "state_00000004.pt")
    state["config"]["steps"] = 8
    torch.save(state, tmp_path / "state_00000004.pt")
    torch.save({"step": 8}, tmp_path / "net_00000008.pt")  # orphan weights of a later step
    seen = []
    resumed, _ = train_sr_model(cfg, lr, hr, 2, pairs="ours", checkpoint_dir=tmp_path, on_step=lambda s, m: seen.append(s))
    assert seen == [5, 6, 7, 8]


def test_a_checkpoint_of_other_params_or_pairs_is_refused_by_name(tmp_path):
    lr, hr = _pairs(n=3)
    train_sr_model(_model_cfg(steps=4), lr, hr, 2, pairs="ours", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"state_00000004\.pt: written with different train_sr params \(channels\)"):
        train_sr_model(_model_cfg(steps=4, channels=4), lr, hr, 2, pairs="ours", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\(pairs\)"):
        train_sr_model(_model_cfg(steps=4), lr, hr, 2, pairs="bicubic", checkpoint_dir=tmp_path)


def test_a_diverging_run_stops_naming_the_step():
    lr, hr = _pairs(n=2)
    with pytest.raises(TrainingDivergedError, match="step 1: loss = nan"):
        train_sr_model(_model_cfg(steps=2), lr * float("nan"), hr, 2, pairs="ours")


def test_load_sr_model_refuses_what_is_not_a_fitting_model(tmp_path):
    lr, hr = _pairs(n=2)
    train_sr_model(_model_cfg(steps=1, checkpoint_every=1), lr, hr, 2, pairs="ours", checkpoint_dir=tmp_path)
    good = load_checkpoint(net_path(tmp_path, 1))
    with pytest.raises(FileNotFoundError, match="no SR model file"):
        load_sr_model(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(RuntimeError, match=r"text\.pt: not a readable checkpoint"):
        load_sr_model(tmp_path / "text.pt")
    torch.save({"generator": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not an SR model"):
        load_sr_model(tmp_path / "other.pt")
    torch.save(good | {"config": good["config"] | {"channels": 16}}, tmp_path / "unfit.pt")
    with pytest.raises(CheckpointError, match=r"unfit\.pt: weights do not fit the SR net"):
        load_sr_model(tmp_path / "unfit.pt")
    torch.save(good | {"scale": 2.5}, tmp_path / "scale.pt")
    with pytest.raises(ValueError, match=r"scale\.pt: scale = 2\.5"):
        load_sr_model(tmp_path / "scale.pt")
