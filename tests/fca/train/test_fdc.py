import dataclasses
import math

import pytest
import numpy as np
import torch
import torch.nn as nn

from fca.frequency import high_frequency_share, radial_density
from fca.kernels import conv_per_sample, gaussian
from fca.train.checkpoint import TrainingDivergedError, net_path
from fca.train.fdc import (
    FDCConfig,
    blur_probe,
    comparator_outputs,
    curriculum_scale,
    evaluate_fdc,
    load_fdc,
    make_pairs,
    pair_loss,
    train_fdc,
    zero_crossing,
)



def _real_patches(n: int, size: int = 64, sigma: float = 1.5, seed: int = 0) -> torch.Tensor:
    """Blurred noise: a 'real domain' whose density moves with scale like a blurred photo's does."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    return conv_per_sample(x, torch.from_numpy(gaussian(9, sigma)).float()).clamp(0, 1)


class OracleComparator(nn.Module):
    """A hand-made comparator: score = share of the radial density above 0.15 cycles/pixel."""

    def __init__(self, sign: float = 1.0):
        super().__init__()
        self.sign = sign

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign * high_frequency_share(radial_density(x, 8), 0.15)


TINY = FDCConfig(
    patch_size=16, channels=4, batch_size=3, steps=6, lr=1e-3, eval_every=3, eval_scales=[3.5, 1.5], eval_repeats=1, checkpoint_every=2,
    blur_weight=1.0,  # the extra-blur pairs on (off by default), so training and resume cover them
    cpu_bf16="off",  # bit-identity tests pin their precision: auto would train in bf16 on an AMX CPU
)


def test_make_pairs_sizes_and_density_order():
    x = _real_patches(8)
    g = torch.Generator().manual_seed(0)
    p = make_pairs(x, 2.0, 24, g, ["bicubic", "area"], anchor_jitter=1.2, augment=True)
    for t in (p.anchor, p.down, p.up, p.same):
        assert t.shape == (8, 3, 24, 24)
    assert p.scale.shape == (8,)
    # Targets +1 / -1 are right: x_D is denser than the anchor, x_U sparser, for every pair here.
    hf = {k: high_frequency_share(radial_density(getattr(p, k), 12), 0.15) for k in ("anchor", "down", "up")}
    assert torch.all(hf["down"] > hf["anchor"]) and torch.all(hf["up"] < hf["anchor"])


def test_make_pairs_native_anchor_is_a_plain_crop_and_is_reproducible():
    x = _real_patches(4)
    a = make_pairs(x, torch.tensor([1.5, 2.0, 2.5, 3.0]), 16, torch.Generator().manual_seed(5), ["bicubic"])
    b = make_pairs(x, torch.tensor([1.5, 2.0, 2.5, 3.0]), 16, torch.Generator().manual_seed(5), ["bicubic"])
    for t, u in zip(a[:5], b[:5]):
        assert torch.equal(t, u)
    # With anchor_jitter 1 and no augmentation the anchor is a crop of x itself.
    crop = a.anchor[0]
    found = any(torch.equal(crop, x[0, :, i : i + 16, j : j + 16]) for i in range(49) for j in range(49))
    assert found


def test_make_pairs_rejects_scales_too_large_for_the_patches():
    with pytest.raises(ValueError, match="s <= 2"):
        make_pairs(_real_patches(2, size=64), 3.0, 32, torch.Generator(), ["bicubic"])
    with pytest.raises(ValueError, match="> 1"):
        make_pairs(_real_patches(2), 1.0, 16, torch.Generator(), ["bicubic"])


def test_evaluation_scores_an_oracle_comparator_near_one_and_its_negation_near_zero():
    patches = _real_patches(12)
    m = evaluate_fdc(OracleComparator(), patches, [3.5, 1.2], seed=0, patch_size=16, repeats=2)
    assert m["acc_s3.5"] >= 0.95
    assert m["acc_s1.2"] > 0.7
    assert set(m) >= {"acc_s3.5", "acc_down_s3.5", "acc_up_s3.5", "acc_s1.2", "same_abs", "same_mean"}
    anti = evaluate_fdc(OracleComparator(-1.0), patches, [3.5], seed=0, patch_size=16, repeats=2)
    assert anti["acc_s3.5"] <= 0.05


def test_the_accuracy_carries_an_interval_over_the_held_out_patches():
    patches = _real_patches(12)
    m = evaluate_fdc(OracleComparator(), patches, [1.2], seed=0, patch_size=16, repeats=2)
    assert m["acc_s1.2_lo"] <= m["acc_s1.2"] <= m["acc_s1.2_hi"] and m["acc_s1.2_hi"] > m["acc_s1.2_lo"]
    # Right on half the patches and wrong on the rest: the spread of 12 patch means, 0.5 +- ~0.28.
    from fca.train.fdc import _patch_bootstrap

    lo, hi = _patch_bootstrap(np.repeat([1.0, 0.0], 6), seed=0)
    assert 0.15 < lo < 0.3 and 0.7 < hi < 0.85
    assert _patch_bootstrap(np.ones(12), seed=0) == (1.0, 1.0)


def test_curriculum_goes_from_start_to_end_then_stays():
    cfg = dataclasses.replace(TINY, steps=100, curriculum_fraction=0.5, scale_start=3.5, scale_end=1.2)
    assert curriculum_scale(1, cfg) == pytest.approx(3.5)
    assert curriculum_scale(50, cfg) == pytest.approx(1.2)
    assert curriculum_scale(100, cfg) == pytest.approx(1.2)
    mids = [curriculum_scale(s, cfg) for s in range(1, 51)]
    assert all(a > b for a, b in zip(mids, mids[1:]))


def _c(down, same, up, blur=None):
    one = torch.ones(4)
    c = {"down": down * one, "same": same * one, "up": up * one}
    if blur is not None:
        c["blur"] = blur * one
    return c


def test_mse_loss_is_zero_at_the_targets_and_logistic_ranks():
    assert pair_loss(_c(1.0, 0.0, -1.0), "mse").item() == 0.0
    assert pair_loss(_c(1.0, 0.1, -1.0), "mse").item() > 0.0
    assert pair_loss(_c(5.0, 0.0, -5.0), "logistic").item() < pair_loss(_c(-1.0, 0.0, 1.0), "logistic").item()
    # The blurred pair only asks for a sign: far below zero costs ~nothing, above zero costs.
    assert pair_loss(_c(1.0, 0.0, -1.0, blur=-3.0), "mse").item() < 1e-4
    assert pair_loss(_c(1.0, 0.0, -1.0, blur=1.0), "mse").item() > 0.9


def test_blurred_image_is_the_anchor_blurred_and_sparser():
    x = _real_patches(6)
    p = make_pairs(x, 1.5, 24, torch.Generator().manual_seed(3), ["bicubic"], blur_sigma=(1.0, 2.0))
    assert p.blurred.shape == p.anchor.shape
    hf = lambda t: high_frequency_share(radial_density(t, 12), 0.15)  # noqa: E731
    assert torch.all(hf(p.blurred) < hf(p.anchor))
    assert make_pairs(x, 1.5, 24, torch.Generator(), ["bicubic"]).blurred is None


def test_resumed_run_ends_bit_exactly_where_an_uninterrupted_one_does(tmp_path):
    train, val = _real_patches(10, seed=1), _real_patches(4, seed=2)
    full, hist_full = train_fdc(TINY, train, val, checkpoint_dir=tmp_path / "a", progress=False)

    class Crash(Exception):
        pass

    def crash_at_5(step, metrics):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_fdc(TINY, train, val, on_step=crash_at_5, checkpoint_dir=tmp_path / "b", progress=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["net_00000004.pt", "state_00000004.pt"]
    steps = []
    resumed, hist_resumed = train_fdc(TINY, train, val, on_step=lambda s, m: steps.append(s), checkpoint_dir=tmp_path / "b", progress=False)
    assert steps == [5, 6]
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert hist_full == hist_resumed
    assert [h["step"] for h in hist_full] == [3, 6]
    # No temp files or older checkpoints left behind; the saved model loads frozen and equal.
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["net_00000006.pt", "state_00000006.pt"]
    frozen = load_fdc(net_path(tmp_path / "b", 6))
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    x = val[:, :, :16, :16]
    torch.testing.assert_close(frozen.score(x), resumed.score(x))


def test_resume_with_another_config_is_an_error(tmp_path):
    train, val = _real_patches(6, seed=1), _real_patches(2, seed=2)
    train_fdc(dataclasses.replace(TINY, steps=2), train, val, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"state_00000002\.pt: written with different fdc params \(lr\)"):
        train_fdc(dataclasses.replace(TINY, steps=2, lr=5e-4), train, val, checkpoint_dir=tmp_path, progress=False)


def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    train, val = _real_patches(6, seed=1), _real_patches(2, seed=2)
    # lr = inf: the first step makes every weight inf/nan, so the second step's loss is nan.
    cfg = dataclasses.replace(TINY, lr=float("inf"), lr_final=1.0, checkpoint_every=1)
    with pytest.raises(TrainingDivergedError, match=r"at step 2: loss = nan; the last good checkpoint is kept"):
        train_fdc(cfg, train, val, checkpoint_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_00000001.pt", "state_00000001.pt"]


def test_short_training_lowers_the_loss_on_a_fixed_batch():
    train, val = _real_patches(16, seed=1), _real_patches(2, seed=2)
    cfg = dataclasses.replace(TINY, steps=30, channels=8, batch_size=8, scale_start=3.0, scale_end=3.0, eval_every=1000)
    fixed = make_pairs(train[:8], 3.0, 16, torch.Generator().manual_seed(9), ["bicubic"])
    torch.manual_seed(cfg.seed)
    from fca.models.fdc_arch import build_fdc

    untrained = build_fdc(cfg.channels, cfg.normalize_input)  # the same init train_fdc starts from
    trained, _ = train_fdc(cfg, train, val, progress=False)
    with torch.no_grad():
        before = pair_loss(comparator_outputs(untrained.train().score, fixed)).item()
        after = pair_loss(comparator_outputs(trained.train().score, fixed)).item()
    assert after < 0.7 * before


def test_too_small_patches_are_an_error():
    with pytest.raises(ValueError, match="too small"):
        train_fdc(dataclasses.replace(TINY, patch_size=32), _real_patches(4), _real_patches(2), progress=False)


def test_blur_probe_of_an_oracle_crosses_zero_between_no_blur_and_heavy_blur():
    # Real = noise blurred with sigma 1.5; down by 2 leaves ~0.75 px of blur, so some
    # extra Gaussian in between 0 and 3 px makes the LR as dense as the real crops.
    patches = _real_patches(12, size=64)
    curve, cross = blur_probe(OracleComparator(), patches, 2.0, [0.0, 0.5, 1.0, 1.5, 2.0, 3.0], patch_size=16, kernel_size=9)
    assert curve[0.0] > 0 > curve[3.0]
    assert 0.5 < cross < 2.5
    assert all(a >= b for a, b in zip(curve.values(), list(curve.values())[1:]))


def test_zero_crossing_interpolates_and_is_nan_without_a_crossing():
    assert zero_crossing({0.0: 1.0, 1.0: 0.5, 2.0: -0.5}) == pytest.approx(1.5)
    assert math.isnan(zero_crossing({0.0: 1.0, 1.0: 0.5}))


# ---------------------------------------------------------------- CPU precision (cpu_bf16: auto | on | off)

from fca.train import loop as loop_module  # noqa: E402
from fca.train.hardware import PrecisionChoice  # noqa: E402

NATIVE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


def _train(cfg, ckpt=None, **kw):
    train, val = _real_patches(8, seed=1), _real_patches(2, seed=2)
    choices: list[PrecisionChoice] = []
    model, hist = train_fdc(cfg, train, val, checkpoint_dir=ckpt, progress=False, on_precision=choices.append, **kw)
    return model.state_dict(), hist, choices


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


PREC = dataclasses.replace(TINY, steps=4, eval_every=4, checkpoint_every=1000, cpu_bf16="auto")


def test_cpu_bf16_takes_auto_on_off_and_the_old_booleans():
    assert FDCConfig().cpu_bf16 == "auto" and FDCConfig(cpu_bf16=True).cpu_bf16 == "on" and FDCConfig(cpu_bf16=False).cpu_bf16 == "off"
    with pytest.raises(ValueError, match=r"fdc\.cpu_bf16 = 'bf16': must be one of auto, on, off"):
        FDCConfig(cpu_bf16="bf16")


@pytest.mark.parametrize("cpuinfo, forced", [(NO_BF16, "off"), (NATIVE, "on")])
def test_auto_computes_in_what_the_cpu_flags_choose(tmp_path, fake_cpu, caplog, cpuinfo, forced):
    fake_cpu(cpuinfo)
    with caplog.at_level("INFO", logger="fca.train.loop"):
        weights, hist, choices = _train(PREC, tmp_path / "auto")
    assert choices[0].precision == {"on": "bf16", "off": "fp32"}[forced]
    assert f"train_fdc: {choices[0].reason}" in caplog.text
    assert torch.load(net_path(tmp_path / "auto", PREC.steps), weights_only=True)["precision"] == {"device": "cpu", **choices[0].as_dict()}
    for mode in ("on", "off"):  # bit for bit the forced run; the other precision differs
        w, h, _ = _train(dataclasses.replace(PREC, cpu_bf16=mode))
        assert _same(weights, w) == (mode == forced) and (h == hist) == (mode == forced)


def test_a_killed_and_resumed_bf16_run_keeps_the_stored_choice_and_the_bits(tmp_path, fake_cpu):
    cfg = dataclasses.replace(TINY, checkpoint_every=2, cpu_bf16="auto")
    fake_cpu(NATIVE)
    full, full_hist, full_choices = _train(cfg, tmp_path / "a")
    assert full_choices[0].precision == "bf16"

    class Crash(Exception):
        pass

    def crash_at_5(step, metrics):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        _train(cfg, tmp_path / "b", on_step=crash_at_5)
    fake_cpu(NO_BF16)  # the resumed run's CPU would say fp32: it keeps the stored bf16
    resumed, resumed_hist, choices = _train(cfg, tmp_path / "b")
    assert choices == full_choices
    assert _same(full, resumed) and resumed_hist == full_hist


@pytest.mark.parametrize("mode", ["on", "off"])
def test_bf16_trains_in_channels_last_and_hands_back_a_contiguous_model(monkeypatch, mode):
    seen = []

    class Spy(loop_module.Precision):
        def step(self, loss, optimizer):
            convs = [p for g in optimizer.param_groups for p in g["params"] if p.dim() == 4]
            channels_last = all(p.is_contiguous(memory_format=torch.channels_last) for p in convs) and not all(p.is_contiguous() for p in convs)
            seen.append((self.dtype, channels_last))
            super().step(loss, optimizer)

    monkeypatch.setattr(loop_module, "Precision", Spy)
    weights, _, _ = _train(dataclasses.replace(PREC, steps=1, cpu_bf16=mode))
    assert seen == [(torch.bfloat16, True)] if mode == "on" else seen == [(None, False)]
    assert all(w.is_contiguous() for w in weights.values())
