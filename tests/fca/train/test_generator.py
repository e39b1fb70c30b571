import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from fca.data.builtin import load_photo
from fca.kernels import conv_per_sample, gaussian
from fca.train.checkpoint import CheckpointError, load_checkpoint, net_path, save_checkpoint, state_path
from fca.train.generator import (
    GeneratorConfig,
    TrainingDivergedError,
    half_then_linear_decay,
    train_generator,
)

CPU = torch.device("cpu")

TINY = GeneratorConfig(
    scale=4.0, patch_size=64, kernel_size=7, kernel_init_sigma=1.0, kernel_start_steps=0, channels=4, dense_blocks=1, res_blocks=1,
    wd_channels=4, loss="spectral", w_wd=0.0, spectral_bins=8, batch_size=4, steps=40, lr=1e-3, lr_prior=0.1,
    checkpoint_every=1000, image_every=1000, seed=0, estimator_bins=(8, 4), estimator_hidden=16, consistency_batch=4,
    cpu_bf16="off",  # bit-identity tests pin their precision: auto would train in bf16 on an AMX CPU
    noise="none", jpeg="off",  # the blur fit alone; the noise bank and JPEG have their tests (test_generator_noise.py)
)  # fmt: skip



@pytest.fixture(scope="module")
def photo_patches() -> torch.Tensor:
    """32 sharp 64 px patches of the astronaut photo, 8-bit like the patches stage's PNGs: [32, 3, 64, 64]."""
    img = torch.from_numpy(load_photo("astronaut")).permute(2, 0, 1)
    tiles = img.unfold(1, 64, 64).unfold(2, 64, 64).permute(1, 2, 0, 3, 4).reshape(-1, 3, 64, 64)
    return tiles[torch.randperm(len(tiles), generator=torch.Generator().manual_seed(0))[:32]]


def _blurred(patches: torch.Tensor, sigma: float) -> torch.Tensor:
    out = conv_per_sample(patches, torch.from_numpy(gaussian(9, sigma)).float()).clamp(0, 1)
    return (out * 255).round() / 255


class ConvComparator(nn.Module):
    """A stand-in FDC with the real one's interface: C(a, b) = E(a) - E(b) -> [B]."""

    def __init__(self, nan_from_call: int | None = None):
        super().__init__()
        torch.manual_seed(123)
        self.enc = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))
        self.calls, self.nan_from_call = 0, nan_from_call

    def forward(self, a, b):
        self.calls += 1
        c = self.enc(a).mean((1, 2, 3)) - self.enc(b).mean((1, 2, 3))
        if self.nan_from_call is not None and self.calls >= self.nan_from_call:
            c = c * float("nan")
        return c


def _weights(gen) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in gen.state_dict().items()}


def test_spectral_fit_widens_the_kernel_for_a_blurred_real_domain(photo_patches):
    real = _blurred(photo_patches, 3.0)
    gen, hist = train_generator(TINY, real, None, device=CPU, checkpoint_dir=None, progress=False)
    first = np.mean([h["loss_spectral"] for h in hist[:5]])
    last = np.mean([h["loss_spectral"] for h in hist[-5:]])
    assert last < 0.7 * first
    assert hist[0]["kernel_sigma"] == pytest.approx(1.0, abs=0.05)  # starts at the init Gaussian
    assert hist[-1]["kernel_sigma"] > 1.3
    # Control: with a sharp real domain the same run narrows the kernel instead.
    _, sharp_hist = train_generator(TINY, photo_patches, None, device=CPU, checkpoint_dir=None, progress=False)
    assert sharp_hist[-1]["kernel_sigma"] < 0.9


def test_a_profile_kernel_starts_from_the_spectral_fit(photo_patches, caplog):
    # TINY trains from the init Gaussian; with kernel_start_steps the first step already has the
    # blurred domain's width (fca.train.kernel_start), and the run says which start it took.
    real = _blurred(photo_patches, 3.0)
    cfg = dataclasses.replace(TINY, kernel_param="profile", kernel_start_steps=60, steps=2)
    with caplog.at_level("INFO", logger="fca.train.generator"):
        _, hist = train_generator(cfg, real, None, device=CPU, checkpoint_dir=None, progress=False)
    assert hist[0]["kernel_sigma"] > 1.3
    assert "the kernel starts from the" in caplog.text


def test_killed_and_resumed_run_is_bit_identical(photo_patches, tmp_path):
    cfg = dataclasses.replace(TINY, loss="both", w_wd=0.001, steps=6, checkpoint_every=3)
    real = _blurred(photo_patches, 2.0)
    full, full_hist = train_generator(cfg, real, ConvComparator(), device=CPU, checkpoint_dir=tmp_path / "a", progress=False)

    def kill_at_5(step, metrics):
        if step == 5:
            raise KeyboardInterrupt  # dies after the step-3 checkpoint, mid-way to the next one

    with pytest.raises(KeyboardInterrupt):
        train_generator(cfg, real, ConvComparator(), device=CPU, checkpoint_dir=tmp_path / "b", on_step=kill_at_5, progress=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["net_00000003.pt", "state_00000003.pt"]
    resumed, resumed_hist = train_generator(cfg, real, ConvComparator(), device=CPU, checkpoint_dir=tmp_path / "b", progress=False)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed_hist == full_hist
    # The discriminator trains alongside G: its weights are training state, and resume to the same bits too.
    da, db = (load_checkpoint(state_path(tmp_path / run, 6))["nets"]["discriminator"] for run in "ab")
    assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)


def test_resume_with_changed_params_is_an_error(photo_patches, tmp_path):
    cfg = dataclasses.replace(TINY, steps=2)
    train_generator(cfg, photo_patches, None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="kernel_size"):
        train_generator(dataclasses.replace(cfg, kernel_size=5), photo_patches, None, device=CPU, checkpoint_dir=tmp_path, progress=False)


def test_resume_from_weights_of_other_code_is_one_line_naming_the_file_and_the_key(photo_patches, tmp_path):
    # The same params, but a checkpoint whose weights an earlier version wrote (a buffer of another shape).
    cfg = dataclasses.replace(TINY, steps=2)
    train_generator(cfg, photo_patches, None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    state = load_checkpoint(net_path(tmp_path, 2))
    key = next(iter(state["model"]))
    state["model"][key] = torch.zeros(3)
    save_checkpoint(net_path(tmp_path, 2), state)
    with pytest.raises(CheckpointError, match=rf"net_00000002.pt: weights do not fit .*\({key}: shape \[3\].*delete the checkpoint folder"):
        train_generator(cfg, photo_patches, None, device=CPU, checkpoint_dir=tmp_path, progress=False)


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(photo_patches, tmp_path):
    cfg = dataclasses.replace(TINY, loss="fdc", w_wd=0.001, steps=10, checkpoint_every=2)
    fdc = ConvComparator(nan_from_call=3 * 4 + 1)  # three calls per step: step 5 is the first bad one
    with pytest.raises(TrainingDivergedError, match="step 5: loss_fdc") as err:
        train_generator(cfg, photo_patches, fdc, device=CPU, checkpoint_dir=tmp_path, progress=False)
    assert err.value.step == 5 and err.value.loss_name == "loss_fdc"
    state = load_checkpoint(net_path(tmp_path, 4))
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_00000004.pt", "state_00000004.pt"]


def test_fdc_is_frozen_and_callbacks_get_what_they_promise(photo_patches):
    cfg = dataclasses.replace(TINY, loss="both", w_wd=0.001, steps=4, image_every=2)
    fdc = ConvComparator()
    before = {k: v.clone() for k, v in fdc.state_dict().items()}
    steps, images = [], []
    train_generator(
        cfg, photo_patches, fdc, device=CPU, checkpoint_dir=None, progress=False,
        on_step=lambda s, m: steps.append((s, m)),
        on_images=lambda s, k, hr, bic, ours: images.append((s, k.shape, hr.shape, bic.shape, ours.shape)),
    )  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in fdc.state_dict().items())
    assert not fdc.training and not any(p.requires_grad for p in fdc.parameters())
    assert [s for s, _ in steps] == [1, 2, 3, 4]
    m = steps[-1][1]
    assert set(m) == {"loss_g", "loss_d", "loss_fdc", "loss_spectral", "loss_wd", "loss_consistency", "lr", "kernel_sigma"}
    assert m["loss_fdc"] > 0 and m["loss_spectral"] > 0 and m["loss_d"] > 0
    assert images == [(2, (4, 7, 7), (4, 3, 64, 64), (4, 3, 16, 16), (4, 3, 16, 16))] * 1 + [
        (4, (4, 7, 7), (4, 3, 64, 64), (4, 3, 16, 16), (4, 3, 16, 16))
    ]


def test_fdc_loss_without_a_comparator_is_an_error(photo_patches):
    with pytest.raises(ValueError, match="needs a trained FDC"):
        train_generator(dataclasses.replace(TINY, loss="fdc"), photo_patches, None, device=CPU, checkpoint_dir=None, progress=False)


def test_lr_schedule_constant_then_linear_to_zero():
    f = half_then_linear_decay(10)
    assert [f(t) for t in range(11)] == [1, 1, 1, 1, 1, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0]


def test_too_many_bins_for_the_lr_size_is_an_error_naming_the_key(photo_patches):
    with pytest.raises(ValueError, match="spectral_bins = 16: at most 8"):
        train_generator(dataclasses.replace(TINY, spectral_bins=16), photo_patches, None, device=CPU, checkpoint_dir=None, progress=False)


def test_load_generator_rebuilds_the_trained_model(photo_patches, tmp_path):
    from fca.train.generator import load_generator

    gen, _ = train_generator(dataclasses.replace(TINY, steps=2), photo_patches, None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    loaded = load_generator(net_path(tmp_path, 2))
    x = photo_patches[:2]
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], gen(x)[0])


def _per_patch_blur(patches: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Each patch blurred by its own isotropic Gaussian (HR px), 8-bit: the mixed-kernel real domain in miniature."""
    kernels = torch.stack([torch.from_numpy(gaussian(13, float(sg))).float() for sg in sigmas])
    return (conv_per_sample(patches, kernels).clamp(0, 1) * 255).round() / 255


@pytest.mark.parametrize("kernel_param", ["gaussian", "free"])
def test_consistency_loss_makes_the_estimator_read_each_images_blur(photo_patches, kernel_param):
    """The per-image signal: with the consistency loss the predicted width follows each image's
    own blur (held-out patches); without it (the domain-level loss alone) every image gets about
    the same kernel. This is the adaptation the method claims; a frozen or image-blind head fails it."""
    gen_rng = torch.Generator().manual_seed(1)
    sigmas = 0.8 + 2.7 * torch.rand(32, generator=gen_rng)
    real = _per_patch_blur(photo_patches, sigmas)
    train, held, held_sigma = real[:24], real[24:], sigmas[24:]
    cfg = dataclasses.replace(TINY, estimator="spectral", w_consistency=1.0, kernel_size=9, steps=150, consistency_batch=16,
                              estimator_hidden=32, kernel_param=kernel_param,
                              consistency_sigma=(0.5, 4.0),
                              # rings only: with 4 orientation sectors the domain loss alone already
                              # made the widths follow the blurs here (r 0.63), which hides what
                              # the consistency loss itself carries
                              spectral_angles=1)
    with_signal, _ = train_generator(cfg, train, None, device=CPU, checkpoint_dir=None, progress=False)
    blind, _ = train_generator(dataclasses.replace(cfg, w_consistency=0.0), train, None, device=CPU, checkpoint_dir=None, progress=False)
    from fca.kernels import effective_sigma

    def pearson(gen) -> float:
        with torch.no_grad():
            pred = effective_sigma(gen.estimate_kernel(held).double())
        return float(torch.corrcoef(torch.stack([pred, held_sigma.double()]))[0, 1])

    r_with, r_blind = pearson(with_signal), pearson(blind)
    assert r_with > 0.45 and r_with > r_blind + 0.3, (r_with, r_blind)


def test_consistency_loss_needs_the_spectral_estimator(photo_patches):
    cfg = dataclasses.replace(TINY, estimator="paper", w_consistency=1.0)
    with pytest.raises(ValueError, match="generator.w_consistency"):
        train_generator(cfg, photo_patches, None, device=CPU, checkpoint_dir=None, progress=False)


# ---------------------------------------------------------------- CPU precision (cpu_bf16: auto | on | off)

from fca.train import loop as loop_module  # noqa: E402
from fca.train.hardware import PrecisionChoice  # noqa: E402

NATIVE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
# A step with every network: the discriminator and the consistency loss run in both precisions too.
PREC = dataclasses.replace(TINY, estimator="spectral", w_consistency=1.0, w_wd=0.001, steps=3, checkpoint_every=1000, cpu_bf16="auto")


def _run(cfg, patches, ckpt=None, **kw):
    choices: list[PrecisionChoice] = []
    gen, hist = train_generator(cfg, patches, None, device=CPU, checkpoint_dir=ckpt, progress=False, on_precision=choices.append, **kw)
    return _weights(gen), hist, choices


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cpu_bf16_takes_auto_on_off_and_the_old_booleans():
    assert GeneratorConfig().cpu_bf16 == "auto"
    assert GeneratorConfig(cpu_bf16=True).cpu_bf16 == "on" and GeneratorConfig(cpu_bf16=False).cpu_bf16 == "off"
    with pytest.raises(ValueError, match=r"generator\.cpu_bf16 = 'fast': must be one of auto, on, off"):
        GeneratorConfig(cpu_bf16="fast")
    # A generator checkpoint written before auto existed (cpu_bf16: false) still loads.
    from fca.train.checkpoint import checkpoint_config

    old = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(TINY).items()} | {"cpu_bf16": False}
    assert checkpoint_config("old.pt", old, GeneratorConfig, required=()).cpu_bf16 == "off"


@pytest.mark.parametrize("cpuinfo, forced", [(NO_BF16, "off"), (NATIVE, "on")])
def test_auto_computes_in_what_the_cpu_flags_choose(photo_patches, tmp_path, fake_cpu, caplog, cpuinfo, forced):
    """auto on an AVX2 CPU is the fp32 run bit for bit, on an AMX CPU the bf16 run (forced here on
    any CPU: torch emulates bf16 where the CPU lacks it), and the choice is stored and logged."""
    fake_cpu(cpuinfo)
    with caplog.at_level("INFO", logger="fca.train.loop"):
        weights, hist, choices = _run(PREC, photo_patches, tmp_path / "auto")
    assert len(choices) == 1 and choices[0].precision == {"on": "bf16", "off": "fp32"}[forced]
    assert f"train_generator: {choices[0].reason}" in caplog.text
    assert load_checkpoint(net_path(tmp_path / "auto", PREC.steps))["precision"] == {"device": "cpu", **choices[0].as_dict()}
    for mode in ("on", "off"):
        w, h, c = _run(dataclasses.replace(PREC, cpu_bf16=mode), photo_patches)
        assert c[0].reason == f"{c[0].precision}: cpu_bf16 = {mode}"
        assert _same(weights, w) == (mode == forced) and (hist == h) == (mode == forced)


def test_a_killed_and_resumed_bf16_run_keeps_the_stored_choice_and_the_bits(photo_patches, tmp_path, fake_cpu):
    cfg = dataclasses.replace(PREC, steps=6, checkpoint_every=3)
    fake_cpu(NATIVE)
    full, full_hist, full_choices = _run(cfg, photo_patches, tmp_path / "a")
    assert full_choices[0].precision == "bf16"

    def kill_at_5(step, metrics):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(cfg, photo_patches, tmp_path / "b", on_step=kill_at_5)
    assert load_checkpoint(net_path(tmp_path / "b", 3))["precision"]["precision"] == "bf16"
    # The resumed run finds a CPU that would now say fp32: it keeps bf16.
    fake_cpu(NO_BF16)
    resumed, resumed_hist, choices = _run(cfg, photo_patches, tmp_path / "b")
    assert choices == full_choices
    assert _same(full, resumed) and resumed_hist == full_hist


@pytest.mark.parametrize("mode", ["on", "off"])
def test_bf16_trains_in_channels_last_and_hands_back_a_contiguous_generator(photo_patches, monkeypatch, mode):
    seen = []

    class Spy(loop_module.Precision):
        def step(self, loss, optimizer):
            convs = [p for g in optimizer.param_groups for p in g["params"] if p.dim() == 4]
            channels_last = all(p.is_contiguous(memory_format=torch.channels_last) for p in convs) and not all(p.is_contiguous() for p in convs)
            seen.append((self.dtype, channels_last))
            super().step(loss, optimizer)

    monkeypatch.setattr(loop_module, "Precision", Spy)
    cfg = dataclasses.replace(TINY, w_wd=0.001, steps=1, cpu_bf16=mode)  # the paper estimator: convolutions in G too
    weights, _, _ = _run(cfg, photo_patches)
    assert seen == ([(torch.bfloat16, True)] if mode == "on" else [(None, False)]) * 2  # D's step, then G's
    assert all(w.is_contiguous() for w in weights.values())


@pytest.mark.parametrize("written, read", [("auto", "auto"), ("on", "on"), ("off", "off"), ("true", "on"), ("false", "off"), ('"on"', "on")])
def test_params_files_spell_cpu_bf16_as_auto_on_off(tmp_path, written, read):
    """YAML 1.1 (PyYAML) reads an unquoted on / off as a boolean, and the older params wrote true / false."""
    from fca.config import ConfigError, build_config
    from pipeline.params import read_yaml

    (tmp_path / "p.yaml").write_text(f"generator:\n  cpu_bf16: {written}\nfdc:\n  cpu_bf16: {written}\n")
    raw = read_yaml(tmp_path / "p.yaml")
    from fca.train.fdc import FDCConfig

    assert build_config(GeneratorConfig, raw["generator"], "generator", required=()).cpu_bf16 == read
    assert build_config(FDCConfig, raw["fdc"], "fdc", required=()).cpu_bf16 == read
    with pytest.raises(ConfigError, match=r"generator\.cpu_bf16 = 'sometimes': must be one of auto, on, off"):
        build_config(GeneratorConfig, {"cpu_bf16": "sometimes"}, "generator", required=())
