"""generator.noise: patches in training: the bank comes from the real images, is saved with the
weights (with the call counter), and a killed and resumed run is the same run."""

import dataclasses

import pytest
import torch

from fca.kernels import effective_sigma
from fca.noise import NoiseConfig, apply_patch_noise, collect_noise_bank, fit_noise_level, flat_crops, tile_colour_noise
from fca.train.checkpoint import load_checkpoint, net_path
from fca.train.generator import load_generator, train_generator
from tests.fca.train.test_generator import CPU, TINY, ConvComparator, _blurred, _weights, photo_patches  # noqa: F401

NOISY = dataclasses.replace(TINY, noise="patches", noise_bank=32)


def _noisy(patches: torch.Tensor) -> torch.Tensor:
    real = _blurred(patches, 2.0)
    names = [f"p{i}" for i in range(len(real))]
    return (apply_patch_noise(real, names, NoiseConfig(type="gaussian", sigma=0.02), 0, "hr") * 255).round() / 255


@pytest.mark.parametrize("noise_scale", ["brightness", "constant"])
def test_the_trained_generator_holds_the_real_images_noise_bank(photo_patches, tmp_path, noise_scale):
    real = _noisy(photo_patches)
    cfg = dataclasses.replace(NOISY, steps=2, noise_scale=noise_scale)
    gen, _ = train_generator(cfg, real, None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    found = flat_crops(real, 16, NOISY.noise_detrend, NOISY.noise_flat_ratio, TINY.spectral_bins)
    # The crops are brought to unit level by their own colours' curve; the tiles' cap bounds G's level alone.
    curve = fit_noise_level(found) if noise_scale == "brightness" else None
    torch.testing.assert_close(gen.noise_bank, collect_noise_bank(found, 32, NOISY.seed, level=curve), atol=0, rtol=0)
    if curve is not None:
        capped = curve.capped(tile_colour_noise(real, 16, TINY.spectral_bins))
        torch.testing.assert_close(gen.level().variance(torch.full((1, 3, 4, 4), 0.5)), capped.variance(torch.full((1, 3, 4, 4), 0.5)))
    with torch.no_grad():
        added = gen.noise_for(torch.full((4, 3, 32, 32), 0.5))
    assert 0.018 < float(added.std()) < 0.026  # the domain's noise, sigma 0.02
    loaded = load_generator(net_path(tmp_path, 2))
    assert loaded.noise == "patches" and torch.equal(loaded.noise_bank, gen.noise_bank)
    assert torch.equal(loaded.noise_level, gen.noise_level) and torch.equal(loaded.noise_level_by, gen.noise_level_by)
    assert torch.equal(loaded.noise_level_cap, gen.noise_level_cap) and bool(gen.noise_level_cap.any()) == (noise_scale == "brightness")
    x = real[:2]
    gen.reset_noise()
    loaded.reset_noise()
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], gen(x)[0])


def test_noise_off_keeps_the_checkpoint_as_it_was(photo_patches, tmp_path):
    gen, _ = train_generator(dataclasses.replace(TINY, steps=1), photo_patches, None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    assert not [k for k in load_checkpoint(net_path(tmp_path, 1))["model"] if k.startswith("noise")]
    assert gen.noise == "none"


def test_killed_and_resumed_noisy_run_is_bit_identical(photo_patches, tmp_path):
    cfg = dataclasses.replace(NOISY, steps=6, checkpoint_every=3)
    real = _noisy(photo_patches)
    full, full_hist = train_generator(cfg, real, None, device=CPU, checkpoint_dir=tmp_path / "a", progress=False)

    def kill_at_5(step, metrics):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_generator(cfg, real, None, device=CPU, checkpoint_dir=tmp_path / "b", on_step=kill_at_5, progress=False)
    resumed, resumed_hist = train_generator(cfg, real, None, device=CPU, checkpoint_dir=tmp_path / "b", progress=False)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["noise_calls"]) >= 6 and resumed_hist == full_hist


def _kernel_sigma(cfg, real, tmp_path, name):
    gen, _ = train_generator(cfg, real, None, device=CPU, checkpoint_dir=tmp_path / name, progress=False)
    with torch.no_grad():
        return float(effective_sigma(gen.estimate_kernel(real[:8]).double()).mean())


def test_on_a_noisy_domain_the_signal_fit_finds_the_blur_of_the_noise_free_domain(photo_patches, tmp_path):
    # The same blurred scenes with and without camera noise. Fitted on the total density, the
    # noise (white at every pixel pitch) asks for a sharper LR than the scenes' blur gives and
    # the Gaussian collapses towards a delta; fitted on the signal (R less the bank's white
    # spectrum, G(x) before its noise draw) it lands where the noise-free domain puts it.
    clean = _blurred(photo_patches, 2.0)
    noisy = _noisy(photo_patches)
    cfg = dataclasses.replace(NOISY, kernel_param="gaussian", steps=60)
    reference = _kernel_sigma(dataclasses.replace(cfg, noise="none"), clean, tmp_path, "clean")
    signal = _kernel_sigma(dataclasses.replace(cfg, noise_fit="signal"), noisy, tmp_path, "signal")
    total = _kernel_sigma(dataclasses.replace(cfg, noise_fit="total"), noisy, tmp_path, "total")
    assert reference > 1.0
    assert signal == pytest.approx(reference, rel=0.1)
    assert total < 0.5 * reference


def test_the_spectral_floor_follows_the_domains_noise(photo_patches):
    # On the signal target the floor sits above the noise subtraction's error, which grows with
    # the noise: twice the noise std, about four times the floor. Elsewhere it is spectral_floor.
    # Rings only here (spectral_angles 1): with sectors each cell's floor is its ring's over the sectors.
    from fca.train.generator import _spectral_floor, noise_bank

    cfg = dataclasses.replace(NOISY, spectral_floor=1e-4, spectral_noise_floor=0.15, spectral_angles=1)
    blurred = _blurred(photo_patches, 2.0)
    floors = []
    for sigma in (0.02, 0.04):
        real = apply_patch_noise(blurred, [f"p{i}" for i in range(len(blurred))], NoiseConfig(type="gaussian", sigma=sigma), 0, "hr")
        spectrum = noise_bank(cfg, real, 16).spectrum
        floors.append(_spectral_floor(cfg, real, 16, spectrum))
        assert _spectral_floor(dataclasses.replace(cfg, noise_fit="total"), real, 16, spectrum) == 1e-4
        assert _spectral_floor(dataclasses.replace(cfg, spectral_noise_floor=0.0), real, 16, spectrum) == 1e-4
    assert floors[0] > 1e-4
    assert floors[1] / floors[0] == pytest.approx(4.0, rel=0.35)
    assert _spectral_floor(dataclasses.replace(cfg, noise="none"), blurred, 16, None) == 1e-4
    sectors = dataclasses.replace(cfg, spectral_angles=4)
    assert _spectral_floor(sectors, real, 16, spectrum) == pytest.approx(_spectral_floor(cfg, real, 16, spectrum) / 4, rel=1e-12)
    assert _spectral_floor(dataclasses.replace(sectors, noise="none"), blurred, 16, None) == 1e-4 / 4


def test_g_takes_the_real_images_jpeg_from_their_files_else_from_their_pixels(photo_patches, tmp_path):
    from fca.jpeg import JpegSetting, jpeg_round_trip
    from fca.train.generator import jpeg_setting

    clean = _blurred(photo_patches, 2.0)
    compressed = jpeg_round_trip(clean, 70, "4:2:0")
    cfg = dataclasses.replace(TINY, steps=1, jpeg="auto")
    gen, _ = train_generator(cfg, compressed, None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    assert load_generator(net_path(tmp_path, 1)).jpeg_setting() == JpegSetting(70, "4:2:0", "weights")
    files = JpegSetting(90, "4:4:4", "files")
    assert jpeg_setting(cfg, compressed, files) == files  # the files' own tables win
    assert jpeg_setting(cfg, clean, None) is None  # no JPEG history: none
    assert jpeg_setting(dataclasses.replace(cfg, jpeg="off"), compressed, files) is None
    x = compressed[:2]
    with torch.no_grad():
        lr, k = gen(x)
    torch.testing.assert_close(lr, jpeg_round_trip(gen.degrade_parts(x, k)[0], 70, "4:2:0"), atol=1e-6, rtol=0)


def test_a_bank_of_8_bit_rounding_alone_leaves_g_as_without_noise(photo_patches, tmp_path):
    # On a noise-free domain saved in 8 bits the flat crops hold the rounding (std ~0.001): G adds
    # none, and the blur is fitted on R's density as it is, not on a "signal" with the rounding
    # taken out of the top rings (that emptied them and widened the kernel).
    from fca.train.generator import noise_bank

    eight_bit = (_blurred(photo_patches, 2.0) * 255).round() / 255
    assert noise_bank(NOISY, eight_bit, 16).spectrum is None  # negligible
    assert noise_bank(NOISY, _noisy(photo_patches), 16).spectrum is not None
    gen, _ = train_generator(dataclasses.replace(NOISY, steps=1), eight_bit, None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    assert not bool(gen.noise_bank.any())
    plain, _ = train_generator(dataclasses.replace(NOISY, steps=1, noise="none"), eight_bit, None, device=CPU,
                               checkpoint_dir=tmp_path / "plain", progress=False)
    x = eight_bit[:2]
    with torch.no_grad():
        torch.testing.assert_close(gen(x)[0], plain(x)[0], atol=0, rtol=0)  # the same generator as without noise


class _Spy(ConvComparator):
    """A stand-in FDC that keeps the first image of each call: what G(x) the comparator judged."""

    def __init__(self):
        super().__init__()
        self.judged = []

    def forward(self, a, b):
        self.judged.append(a.detach().clone())
        return super().forward(a, b)


def test_the_fdc_judges_g_x_with_its_noise(photo_patches):
    # The comparator was trained on the real images as the camera made them, noise included: G(x)
    # reaches it as G makes it, noise and all, while the spectral loss reads the blur alone. The same
    # run with and without the bank: the same crops and kernel, so the judged images differ by the noise.
    real = _noisy(photo_patches)
    judged = {}
    for noise in ("patches", "none"):
        spy = _Spy()
        cfg = dataclasses.replace(NOISY, noise=noise, loss="both", steps=1)
        train_generator(cfg, real, spy, device=CPU, checkpoint_dir=None, progress=False)
        judged[noise] = spy.judged[0]
    difference = judged["patches"] - judged["none"]
    assert 0.012 < float(difference.std()) < 0.03  # the domain's noise, sigma 0.02 (0 if the FDC saw G(x) before its noise)


def test_a_generator_saved_before_the_level_could_be_read_at_luma_loads_reading_each_channel(photo_patches, tmp_path):
    from fca.train.checkpoint import save_checkpoint

    gen, _ = train_generator(dataclasses.replace(NOISY, steps=1), _noisy(photo_patches), None, device=CPU, checkpoint_dir=tmp_path, progress=False)
    state = load_checkpoint(net_path(tmp_path, 1))
    del state["model"]["noise_level_by"], state["model"]["noise_level_cap"]
    save_checkpoint(tmp_path / "old.pt", state)
    old = load_generator(tmp_path / "old.pt")
    assert old.level().by == "channel" and old.level().cap is None and torch.equal(old.noise_level, gen.noise_level)
