"""The camera noise model (fca.noise), the noisy synthetic real domain and the generator's noise bank."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fca.data.patches import load_noise, load_patch_set
from fca.evaluate import real_lr_views
from fca.kernels import conv_per_sample, gaussian
from fca.models.generator_arch import Generator
from fca.jpeg import jpeg_round_trip
from fca.noise import (
    NoiseConfig,
    NoiseLevel,
    PatchNoise,
    add_noise,
    apply_patch_noise,
    collect_noise_bank,
    detrend,
    fit_noise_level,
    channel_correlation,
    colour_lookup,
    flat_crops,
    neighbour_correlation,
    noise_from_dict,
    noise_variance,
    patch_generator,
    tile_colour_noise,
)
from fca.resample import downscale

ROOT = Path(__file__).resolve().parents[2]
GAUSS = NoiseConfig(type="gaussian", sigma=0.02)
PG = NoiseConfig(type="poisson_gaussian", sigma=0.01, gain=0.002)


def _rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth(seed: int, n: int = 2, side: int = 64) -> torch.Tensor:
    """Smooth random images in (0.1, 0.9): upscaled low-resolution noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, side // 8, side // 8, generator=g)
    return (0.1 + 0.8 * torch.nn.functional.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)).clamp(0.1, 0.9)


# --------------------------------------------------------------------------- the model


def test_gaussian_noise_has_the_variance_sigma_squared_and_zero_mean():
    x = torch.full((3, 256, 256), 0.5)
    y = add_noise(x, GAUSS, _rng())
    d = (y - x).double()
    assert abs(float(d.var()) / 0.02**2 - 1) < 0.03
    assert abs(float(d.mean())) < 3 * 0.02 / 256
    assert y.dtype == x.dtype and y.shape == x.shape


def test_poisson_gaussian_variance_grows_with_the_signal():
    measured = []
    for level in (0.1, 0.4, 0.8):
        x = torch.full((3, 256, 256), level)
        d = (add_noise(x, PG, _rng(1)) - x).double()
        expected = float(noise_variance(x, PG)[0, 0, 0])
        assert expected == pytest.approx(0.002 * level + 0.01**2)
        assert abs(float(d.var()) / expected - 1) < 0.04, level
        assert abs(float(d.mean())) < 4 * expected**0.5 / 256  # unbiased
        measured.append(float(d.var()))
    assert measured[0] < measured[1] < measured[2]


def test_output_is_clipped_to_the_unit_range():
    x = torch.tensor([0.0, 1.0]).view(1, 1, 2).expand(3, 64, 2).contiguous()
    y = add_noise(x, NoiseConfig(type="gaussian", sigma=0.2), _rng())
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_jpeg_round_trip_changes_the_image_and_is_8_bit():
    x = _smooth(0, 1)[0]
    x = x + 0.05 * torch.randn(x.shape, generator=_rng(2))  # fine detail JPEG throws away
    x = x.clamp(0, 1)
    y = jpeg_round_trip(x, 50)
    q8 = (x * 255).round() / 255
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float((y - q8).abs().mean()) > 2 / 255
    torch.testing.assert_close(y * 255, (y * 255).round(), atol=1e-4, rtol=0)
    # in the model: after the noise; quality 0 is no JPEG
    with_jpeg = add_noise(x, NoiseConfig(type="gaussian", sigma=0.0, jpeg_quality=90), _rng())
    assert 0 < float((with_jpeg - x).abs().mean()) < 0.05
    torch.testing.assert_close(add_noise(x, NoiseConfig(type="gaussian", sigma=0.0, jpeg_quality=0), _rng()), x)


def test_a_fixed_rng_gives_the_same_noise_and_another_seed_other_noise():
    x = _smooth(3, 1)[0]
    for cfg in (GAUSS, PG):
        a, b, c = add_noise(x, cfg, _rng(7)), add_noise(x, cfg, _rng(7)), add_noise(x, cfg, _rng(8))
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert not torch.equal(a, c)
    # per patch: (seed, name, view) fix the draws; any of them changed changes them
    s = lambda seed, name, view: torch.randn(4, generator=patch_generator(seed, name, view))  # noqa: E731
    assert torch.equal(s(0, "a.png", "hr"), s(0, "a.png", "hr"))
    assert not torch.equal(s(0, "a.png", "hr"), s(1, "a.png", "hr"))
    assert not torch.equal(s(0, "a.png", "hr"), s(0, "b.png", "hr"))
    assert not torch.equal(s(0, "a.png", "hr"), s(0, "a.png", "lr"))


def test_none_returns_the_images_untouched():
    x = _smooth(4)
    assert add_noise(x, NoiseConfig(), _rng()) is x
    assert apply_patch_noise(x, ["a", "b"], NoiseConfig(), 0, "hr") is x
    clean, real = x, x.clone()
    k = torch.from_numpy(gaussian(5, 1.0))
    _, plain = real_lr_views(clean, real, k, 4)
    _, with_none = real_lr_views(clean, real, k, 4, PatchNoise(NoiseConfig(), 0, ("a", "b")))
    assert torch.equal(plain, with_none)


def test_summary_round_trip_and_old_summaries_have_no_noise(tmp_path):
    for cfg in (NoiseConfig(), GAUSS, PG, NoiseConfig(type="gaussian", sigma=0.01, jpeg_quality=90)):
        assert noise_from_dict(json.loads(json.dumps(cfg.as_dict()))) == cfg
    (tmp_path / "summary.json").write_text(json.dumps({"kernel_known": True}))
    assert load_noise(tmp_path) == (NoiseConfig(), 0)
    (tmp_path / "summary.json").write_text(json.dumps({"noise": PG.as_dict(), "noise_seed": 5}))
    assert load_noise(tmp_path) == (PG, 5)


def test_noise_params_are_a_tagged_union_that_names_the_key():
    from pipeline.params import ParamsError, parse_params

    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())
    raw["patches"]["noise"] = {"type": "poisson_gaussian", "sigma": 0.01, "gain": 0.001, "jpeg_quality": 0}
    assert parse_params(raw).patches.noise == NoiseConfig(type="poisson_gaussian", sigma=0.01, gain=0.001, jpeg_quality=0)
    raw["patches"]["noise"] = {"type": "gaussian", "sigma": 0.01, "gain": 0.001, "jpeg_quality": 0}
    with pytest.raises(ParamsError, match="gain"):
        parse_params(raw)
    raw["patches"]["noise"] = {"type": "gaussian", "sigma": 2.0, "jpeg_quality": 0}
    with pytest.raises(ParamsError, match="patches.noise.sigma"):
        parse_params(raw)


# --------------------------------------------------------------------------- R and L_true


def test_l_true_and_r_get_the_same_noise_model_at_their_own_grids():
    """A flat grey domain: R's noise at HR pixels and L_true's at LR pixels have the model's variance."""
    n, side, s, level = 6, 128, 4, 0.4
    clean = torch.full((n, 3, side, side), level)
    k = torch.from_numpy(gaussian(7, 1.5))
    names = tuple(f"p{i}.png" for i in range(n))
    noise = PatchNoise(PG, 3, names)
    real = noise(conv_per_sample(clean, k.float()).clamp(0, 1), "hr")
    down, true = real_lr_views(clean, real, k, s, noise)
    expected = 0.002 * level + 0.01**2
    r_var = float((real - level).double().var())
    t_var = float((true - level).double().var())
    assert abs(r_var / expected - 1) < 0.05 and abs(t_var / expected - 1) < 0.05
    # bicubic down(R) averages R's noise away: far below the camera's own level
    assert float((down - level).double().var()) < 0.3 * expected
    # reproducible: the referee's L_true is the same every time it is computed
    _, again = real_lr_views(clean, real, k, s, PatchNoise(PG, 3, names))
    assert torch.equal(true, again)
    _, other = real_lr_views(clean, real, k, s, PatchNoise(PG, 4, names))
    assert not torch.equal(true, other)


def _run_patches_stage(tmp_path, monkeypatch, noise: dict) -> Path:
    from pipeline import cli

    monkeypatch.setenv("FCA_TRACKING", "off")
    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())
    raw["patches"].update(stride=64, max_per_image=4, val_fraction=0.34, noise=noise)
    params = tmp_path / f"params_{noise['type']}.yaml"
    params.write_text(yaml.safe_dump(raw))
    folder = tmp_path / "raw"
    if not folder.is_dir():
        folder.mkdir()
        for i in range(3):
            Image.fromarray((_smooth(10 + i, 1, 192)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"img{i}.png")
    out = tmp_path / f"out_{noise['type']}"
    assert cli.main(["patches", "--params", str(params), "--raw", str(folder), "--out", str(out), "--no-progress"]) == 0
    return out


def test_patches_stage_adds_the_noise_to_r_only_and_records_it(tmp_path, monkeypatch):
    plain = _run_patches_stage(tmp_path, monkeypatch, {"type": "none"})
    noisy = _run_patches_stage(tmp_path, monkeypatch, {"type": "gaussian", "sigma": 0.03, "jpeg_quality": 0})
    assert json.loads((plain / "summary.json").read_text())["noise"] == {"type": "none"}
    assert load_noise(noisy) == (NoiseConfig(type="gaussian", sigma=0.03, jpeg_quality=0), 0)
    assert (plain / "index.csv").read_bytes() == (noisy / "index.csv").read_bytes()
    for split in ("train", "val"):
        clean0, real0, names0 = load_patch_set(plain, split)
        clean1, real1, names1 = load_patch_set(noisy, split)
        assert names0 == names1 and torch.equal(clean0, clean1)
        # the noise-free stage's R is the blur alone (8-bit rounding), as before the noise existed
        k = torch.from_numpy(np.load(plain / "kernel.npy")).float()
        assert float((conv_per_sample(clean0.float(), k).clamp(0, 1) - real0.float()).abs().max()) <= 1 / 255 + 1e-6
        # R = noise(I (*) k), each patch with its own seeded draws: exactly reproducible
        expected = apply_patch_noise(real0.float(), names0, NoiseConfig(type="gaussian", sigma=0.03, jpeg_quality=0), 0, "hr")
        assert float((expected - real1.float()).abs().max()) <= 1 / 255 + 1e-6
        assert abs(float((real1.float() - real0.float()).var()) / 0.03**2 - 1) < 0.1


# --------------------------------------------------------------------------- the generator's noise bank


def _half_flat(n: int = 4, side: int = 64, noise_std: float = 0.01) -> torch.Tensor:
    """Left half flat grey + noise, right half the same noise on strong texture (stripes and blobs
    a few pixels wide: structure, unlike the noise, lives in the lower rings)."""
    g = torch.Generator().manual_seed(5)
    x = torch.full((n, 3, side, side), 0.5) + noise_std * torch.randn(n, 3, side, side, generator=g)
    yy, xx = torch.meshgrid(torch.arange(side).float(), torch.arange(side // 2).float(), indexing="ij")
    phase = 6.28 * torch.rand(n, 3, 1, 1, generator=g)
    texture = 0.3 * torch.sin(6.28 * xx / 9 + phase) * torch.cos(6.28 * yy / 13 + 2 * phase)
    x[..., side // 2 :] += texture
    return x.clamp(0, 1)


def test_the_bank_holds_flat_crops_only_with_their_mean_removed():
    x = _half_flat(8, 128)
    found = flat_crops(x, 32)
    # of the left half's 2 x 4 crops of each image most (an estimate of noise varies from crop to
    # crop, and the rule keeps the quieter part), none of the textured ones
    assert 8 * 8 * 0.5 <= len(found.crops) <= 8 * 8 and float(found.means[:, 0].max()) < 0.52
    torch.testing.assert_close(found.crops.mean((2, 3)), torch.zeros(len(found.crops), 3), atol=1e-6, rtol=0)
    assert found.means.shape == (len(found.crops), 3) and abs(float(found.means.mean()) - 0.5) < 0.01  # mid-grey
    assert abs(float(found.crops.std()) / 0.01 - 1) < 0.1
    assert float(found.white.mean()) == pytest.approx(0.01**2, rel=0.15)  # each channel's white variance
    bank = collect_noise_bank(found, 80, seed=0)  # more than there are: cycled
    assert bank.shape == (80, 3, 32, 32) and float(bank.flatten(1).std(1).max()) < 0.015
    torch.testing.assert_close(bank, collect_noise_bank(found, 80, seed=0), atol=0, rtol=0)
    # clipped crops are not flat: clipping removes the noise
    dark = torch.zeros(1, 3, 32, 32)
    assert len(flat_crops(dark, 16).crops) == 0
    with pytest.raises(ValueError, match="no flat crops"):
        collect_noise_bank(flat_crops(dark, 16), 4, seed=0)


@pytest.mark.parametrize("noise_std", [0.003, 0.02, 0.08])
def test_flat_crops_are_found_from_the_data_at_any_noise_level(noise_std):
    # No threshold on the std: the same rule keeps the flat half's crops and none of the textured
    # ones whether the noise is 8-bit-like or stronger than a fixed 0.05 threshold allowed.
    x = _half_flat(8, 128, noise_std=noise_std)
    found = flat_crops(x, 32, detrend_sigma=3.0)
    assert float((found.means - 0.5).abs().max()) < 0.02  # no textured crop (the stripes move the mean)
    assert len(found.crops) >= 8 * 8 * 0.5
    assert float(found.white.mean()) == pytest.approx(noise_std**2, rel=0.2)


def test_texture_a_blur_left_along_one_direction_is_not_noise():
    # A motion-blurred texture keeps its detail across the streak only: the flattest crops of such a
    # domain are that detail, and once taken for noise it emptied the signal target's upper rings.
    from fca.kernels import conv_per_sample, motion_kernel

    g = torch.Generator().manual_seed(3)
    texture = 0.5 + 0.2 * torch.randn(8, 3, 128, 128, generator=g)
    streaks = conv_per_sample(texture, torch.from_numpy(motion_kernel(13, 9.0, 30.0)).float())
    assert len(flat_crops(streaks, 32, detrend_sigma=3.0).crops) == 0
    faint = 0.5 + 0.05 * (streaks - 0.5)  # faint streaks under noise: the noise is found
    found = flat_crops(faint + 0.02 * torch.randn(streaks.shape, generator=g), 32, detrend_sigma=3.0)
    assert len(found.crops) > 0 and float(found.white.mean()) == pytest.approx(0.02**2, rel=0.3)


def test_detrending_takes_out_shading_and_keeps_white_noise():
    g = torch.Generator().manual_seed(11)
    white = 0.02 * torch.randn(32, 3, 32, 32, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    shading = 0.04 * torch.sin(3 * xx + 2 * yy)  # a smooth gradient across the crop, twice the noise's std
    out = detrend(white + shading, 3.0)
    noise_kept = detrend(white, 3.0)
    assert 0.93 < float(noise_kept.var() / white.var()) < 1.0
    assert float((out - noise_kept).pow(2).mean()) < 0.05 * float(shading.pow(2).mean())  # shading mostly gone
    lag1 = float((out[..., 1:] * out[..., :-1]).mean() / out.pow(2).mean())
    assert abs(lag1) < 0.1  # white again; with the shading it was strongly correlated
    assert float(((white + shading)[..., 1:] * (white + shading)[..., :-1]).mean() / (white + shading).pow(2).mean()) > 0.5
    assert torch.equal(detrend(white, 0.0), white)


def _generator(noise: str) -> Generator:
    torch.manual_seed(0)
    return Generator(scale=4.0, estimator="paper", noise=noise, noise_bank=64, noise_side=16, noise_seed=3,
                     kernel_size=5, channels=4, dense_blocks=1, res_blocks=1)


def test_generator_noise_patches_adds_the_banks_noise_reproducibly():
    x = _smooth(6, 4, 64)
    plain = _generator("none")
    g = _generator("patches")
    g.set_noise_bank(collect_noise_bank(flat_crops(_half_flat(32, 64, 0.02), 16), 64, seed=1))
    with torch.no_grad():
        lr0, k0 = plain(x)
        lr1, k1 = g(x)
        lr2, _ = g(x)
        g.reset_noise()
        lr3, _ = g(x)
    torch.testing.assert_close(k0, k1)  # the same estimator: only the noise differs
    added = (lr1 - lr0).double()
    assert abs(float(added.var()) / float(g.noise_bank.double().var()) - 1) < 0.1
    assert torch.equal(lr1, lr3) and not torch.equal(lr1, lr2)  # call index fixes the draw
    # the bank and the call counter are saved with the weights
    state = g.state_dict()
    g2 = _generator("patches")
    g2.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(g2(x)[0], lr2, atol=0, rtol=0)
    g.reset_noise(5)
    draws = [g.sample_noise(1, 16, 16) for _ in range(4)]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1 :])  # every call its own draw
    g.reset_noise(6)
    assert torch.equal(g.sample_noise(1, 16, 16), draws[1])


def test_generator_noise_none_is_the_plain_generator():
    x = _smooth(7, 2, 64)
    g = _generator("none")
    assert not [k for k in g.state_dict() if k.startswith("noise")]
    assert g.sample_noise(1, 8, 8) is None
    with torch.no_grad():
        lr, k = g(x)
    torch.testing.assert_close(lr, conv_per_sample(downscale(x, 4.0), k), atol=0, rtol=0)
    with pytest.raises(ValueError, match="noise"):
        g.set_noise_bank(torch.zeros(64, 3, 16, 16))


def _rising_level() -> NoiseLevel:
    knots = torch.linspace(0, 1, 6, dtype=torch.float64).repeat(3, 1)
    return NoiseLevel(knots, 1e-4 + 1e-3 * knots)


@pytest.mark.parametrize("level, jpeg", [(None, None), (_rising_level(), None), (_rising_level(), 80)])
def test_degrade_image_adds_the_generators_noise_and_jpeg_as_g_does(level, jpeg):
    from fca.degrade import DegradeConfig, degrade_image
    from fca.jpeg import JpegSetting

    x = _smooth(8, 1, 96)
    g = _generator("patches")
    g.set_noise_bank(collect_noise_bank(flat_crops(_half_flat(8, 64, 0.02), 16), 64, seed=1, level=level), level)
    g.set_jpeg(JpegSetting(jpeg, "4:2:0", "pixels") if jpeg else None)
    with torch.no_grad():
        lr, k = g(x)
        g.reset_noise()
        out = degrade_image(g, x, k[0], DegradeConfig(work_tile=32))
    torch.testing.assert_close(torch.from_numpy(out).permute(2, 0, 1)[None], lr, atol=1e-5, rtol=0)


def test_the_noise_level_follows_brightness_as_poisson_gaussian_noise_does():
    # flat images at four brightnesses with Poisson-Gaussian noise: read variance 1e-4, gain 2e-3
    levels = torch.tensor([0.15, 0.35, 0.55, 0.75]).repeat_interleave(4)
    flat = levels.view(-1, 1, 1, 1).expand(-1, 3, 64, 64).contiguous()
    names = [f"f{i}" for i in range(len(flat))]
    noisy = apply_patch_noise(flat, names, PG, 0, "hr")
    level = fit_noise_level(flat_crops(noisy, 32))
    at = torch.tensor([0.15, 0.35, 0.55, 0.75], dtype=torch.float64)
    got = level.of_means(at[:, None].expand(-1, 3))  # [4, 3]: each channel's variance at each brightness
    truth = (PG.sigma**2 + PG.gain * at)[:, None].expand(-1, 3)
    torch.testing.assert_close(got, truth, rtol=0.2, atol=0)
    # beyond the crops' brightness the end segments go on (shot noise keeps growing), within 4x
    assert float(level.of_means(torch.full((1, 3), 0.95))[0, 0]) > float(got[-1, 0])
    # one brightness: a constant
    one = fit_noise_level(flat_crops(noisy[:4], 32))
    assert torch.equal(one.values, one.values[:, :1].expand(-1, 6))


def test_the_generators_noise_follows_each_pixels_brightness_with_a_noise_level():
    # Poisson-Gaussian noise (variance 1e-4 + 2e-3 x) is four times as strong at 0.75 as at 0.15.
    # With the domain's level the bank holds unit-level crops and each pixel gets its own
    # brightness's noise; without one (noise_scale: constant) every pixel gets the crops' mix.
    levels = torch.tensor([0.15, 0.35, 0.55, 0.75]).repeat_interleave(4)
    flat = levels.view(-1, 1, 1, 1).expand(-1, 3, 64, 64).contiguous()
    noisy = apply_patch_noise(flat, [f"f{i}" for i in range(len(flat))], PG, 0, "hr")
    found = flat_crops(noisy, 16, bins=8)
    level = fit_noise_level(found)
    lr = torch.cat([torch.full((8, 3, 32, 32), 0.15), torch.full((8, 3, 32, 32), 0.75)])

    def added_variance(bank_level):
        g = _generator("patches")
        g.set_noise_bank(collect_noise_bank(found, 64, seed=0, level=bank_level), bank_level)
        n = g.noise_for(lr).double()
        return float(n[:8].var()), float(n[8:].var())

    dark, bright = added_variance(level)
    assert dark == pytest.approx(PG.sigma**2 + PG.gain * 0.15, rel=0.2)
    assert bright == pytest.approx(PG.sigma**2 + PG.gain * 0.75, rel=0.2)
    dark, bright = added_variance(None)
    assert bright / dark == pytest.approx(1.0, abs=0.15)
    assert dark == pytest.approx(PG.sigma**2 + PG.gain * 0.45, rel=0.2)  # the crops' mean brightness


def test_the_bank_carries_the_cameras_noise_at_every_brightness_of_a_photo():
    # A blurred photo with Poisson-Gaussian noise: the noise G adds to the clean LR signal,
    # binned by brightness, has the camera's variance (within 25 %) from the shadows to the
    # highlights. Without detrending the flat crops' shading and blurred texture add to it;
    # without the brightness level the highlights get the flat crops' (darker) noise.
    from fca.data.builtin import load_photo

    photo = torch.from_numpy(load_photo("astronaut")).permute(2, 0, 1).float()
    photo = photo / 255 if photo.max() > 1.5 else photo
    tiles = photo.unfold(1, 128, 128).unfold(2, 128, 128).permute(1, 2, 0, 3, 4).reshape(-1, 3, 128, 128)
    signal = conv_per_sample(tiles, torch.from_numpy(gaussian(13, 2.5)).float()).clamp(0, 1)
    camera = NoiseConfig(type="poisson_gaussian", sigma=0.01, gain=0.001)
    real = apply_patch_noise(signal, [f"t{i}" for i in range(len(signal))], camera, 0, "hr")
    level = fit_noise_level(flat_crops(real, 32, 3.0))
    lr = signal[:, :, ::4, ::4].contiguous()  # any clean image at the LR grid: its brightness sets the noise
    mu = lr.mean(1)
    bins = [(0.05, 0.3), (0.3, 0.6), (0.6, 0.95)]
    truth = [camera.sigma**2 + camera.gain * float(mu[(mu >= a) & (mu < b)].mean()) for a, b in bins]

    def added(bank_level, sigma):
        g = Generator(scale=4.0, estimator="paper", noise="patches", noise_bank=256, noise_side=32, noise_seed=0,
                      kernel_size=5, channels=4, dense_blocks=1, res_blocks=1)
        g.set_noise_bank(collect_noise_bank(flat_crops(real, 32, sigma), 256, seed=0, level=bank_level), bank_level)
        n = g.noise_for(lr).pow(2).mean(1)
        return [float(n[(mu >= a) & (mu < b)].mean()) for a, b in bins]

    ours = added(level, 3.0)
    assert all(t * 0.75 < v < t * 1.25 for v, t in zip(ours, truth)), (ours, truth)
    assert added(level, 0.0)[1] > 1.1 * truth[1]  # the flattest crops left undetrended still carry some shading
    constant = added(None, 3.0)
    assert constant[2] < 0.8 * truth[2] or constant[0] > 1.25 * truth[0]


def test_the_bank_carries_a_cameras_noise_that_falls_with_brightness_per_channel():
    # A camera pipeline (fca.camera: raw shot + read noise, white balance, Malvar demosaicing,
    # gamma, sharpening; no JPEG here) on flat patches of many colours: in display values its noise
    # falls with brightness (the gamma stretches the shadows), differs by channel (white balance)
    # and is correlated between neighbours (demosaicing). Its std, about 0.05, is above any
    # threshold a user would have set by hand. G's noise on the same signal, binned by each
    # channel's brightness, has the camera's variance within 30 % in every bin and channel, and
    # its neighbour correlation. (Not closer: after demosaicing a channel's noise depends on the
    # other channels' brightness too, which a curve per channel does not see.)
    from fca.camera import CameraConfig, camera

    cam = CameraConfig(psf="gaussian", sigma=0.5, jpeg_quality=0)
    g = torch.Generator().manual_seed(3)
    colours = 0.3 + 0.45 * torch.rand(48, 3, 1, 1, generator=g)  # little clipping (it takes noise out)
    flat = colours.expand(-1, -1, 64, 64).contiguous()
    real = camera(flat, cam, torch.Generator().manual_seed(1))
    found = flat_crops(real, 32, 3.0)
    assert len(found.crops) >= 24  # of 192, many clipped by noise this strong
    level = fit_noise_level(found)
    assert bool((level.values[:, 0] > 1.3 * level.values[:, -1]).all())  # falls with brightness in every channel
    gen = Generator(scale=4.0, estimator="paper", noise="patches", noise_bank=128, noise_side=32, noise_seed=0,
                    kernel_size=5, channels=4, dense_blocks=1, res_blocks=1)
    gen.set_noise_bank(collect_noise_bank(found, 128, seed=0, level=level), level)
    signal = camera(flat, dataclasses.replace(cam, shot_gain=0.0, read_std=0.0), torch.Generator().manual_seed(0))
    two = camera(flat, cam, torch.Generator().manual_seed(2)), camera(flat, cam, torch.Generator().manual_seed(4))
    ours = gen.noise_for(signal), gen.noise_for(signal)
    camera_diff, ours_diff = (two[0] - two[1]).double(), (ours[0] - ours[1]).double()
    for c in range(3):
        bright = signal[:, c].mean((1, 2))
        for lo, hi in [(0.0, 0.45), (0.45, 0.6), (0.6, 1.0)]:
            pick = (bright >= lo) & (bright < hi)
            truth = float(camera_diff[pick, c].pow(2).mean() / 2)
            got = float(ours_diff[pick, c].pow(2).mean() / 2)
            assert 0.7 < got / truth < 1.3, (c, lo, hi, got, truth)

    def lag1(d):
        return float((d[..., 1:] * d[..., :-1]).mean() / d.pow(2).mean())

    assert lag1(ours_diff) == pytest.approx(lag1(camera_diff), abs=0.05)
    assert lag1(camera_diff) > 0.1  # the camera's noise is not white: the comparison has teeth


def _coloured_flat_noise(shared: bool) -> torch.Tensor:
    """Flat patches of 64 colours with noise whose variance falls with brightness, 4e-3 * (1 - b)^2 + 1e-4:
    shared, one noise field in every channel with b the pixel's luma (as after demosaicing and 4:2:0 JPEG);
    else each channel's own field with b the channel's value (noise drawn per channel)."""
    from fca.frequency import LUMA

    colours = 0.15 + 0.7 * torch.rand(64, 3, 1, 1, generator=_rng(5))
    flat = colours.expand(-1, -1, 64, 64)
    luma = (colours * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    b = luma.expand_as(flat) if shared else flat
    field = torch.randn(64, 1 if shared else 3, 64, 64, generator=_rng(6)).expand_as(flat)
    return flat + field * (4e-3 * (1 - b) ** 2 + 1e-4).sqrt()


@pytest.mark.parametrize("shared", [True, False])
def test_the_level_is_read_where_the_flat_crops_say_the_noise_follows(shared):
    """Noise shared by the channels follows the pixel's luma: the fit reads its curves at luma and a red
    pixel gets the noise of its luma in every channel (a curve per channel value would give its red
    channel the quiet noise of 0.8 and its green the loud noise of 0.2). Noise drawn per channel follows
    each channel's own value, and the fit keeps reading it there."""
    level = fit_noise_level(flat_crops(_coloured_flat_noise(shared), 32))
    assert level.by == ("luma" if shared else "channel")
    red = torch.tensor([[0.8, 0.2, 0.2]], dtype=torch.float64)
    got = level.of_means(red)[0]
    b = torch.full((3,), 0.299 * 0.8 + 0.587 * 0.2 + 0.114 * 0.2, dtype=torch.float64) if shared else red[0]
    torch.testing.assert_close(got, 4e-3 * (1 - b) ** 2 + 1e-4, rtol=0.2, atol=0)


def test_a_noise_level_reads_its_curves_at_luma_or_at_each_channel():
    knots = torch.linspace(0, 1, 6, dtype=torch.float64).repeat(3, 1)
    values = (1 - knots) * torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)  # falls with brightness, channel c at c + 1
    x = torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1, 1)
    luma = 0.299 + 0.114 * 0.5
    torch.testing.assert_close(NoiseLevel(knots, values, "luma").variance(x).flatten().double(),
                               (1 - luma) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(NoiseLevel(knots, values).variance(x).flatten().double(), torch.tensor([0.0, 2.0, 1.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="NoiseLevel.by = 'hue'"):
        NoiseLevel(knots, values, "hue")


def test_noise_correlations_of_white_shared_and_smoothed_noise():
    white = torch.randn(8, 3, 64, 64, generator=_rng(1))
    h, v = neighbour_correlation(white)
    assert abs(h) < 0.02 and abs(v) < 0.02
    torch.testing.assert_close(channel_correlation(white), torch.eye(3, dtype=torch.float64), atol=0.02, rtol=0)
    shared = white[:, :1].expand(-1, 3, -1, -1)
    torch.testing.assert_close(channel_correlation(shared), torch.ones(3, 3, dtype=torch.float64))
    smooth = white[..., 1:] + white[..., :-1]  # neighbours share half their power along the rows only
    h, v = neighbour_correlation(smooth)
    assert h == pytest.approx(0.5, abs=0.03) and abs(v) < 0.02


def test_the_generator_keeps_where_its_noise_level_is_read():
    """G scales its bank by the level read where the fit said: at each pixel's luma, a red pixel's green
    channel gets the noise of the pixel's luma (0.36), not that of its own value (0.2)."""
    found = flat_crops(_coloured_flat_noise(True), 16, bins=8)
    level = fit_noise_level(found)
    g = _generator("patches")
    g.set_noise_bank(collect_noise_bank(found, 64, seed=0, level=level), level)
    assert g.level().by == "luma" and int(g.noise_level_by) == 1
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1).expand(16, 3, 32, 32)
    green = float(g.noise_for(red)[:, 1].double().var())
    luma = 0.299 * 0.8 + 0.587 * 0.2 + 0.114 * 0.2
    assert green == pytest.approx(4e-3 * (1 - luma) ** 2 + 1e-4, rel=0.25)
    g.set_noise_bank(g.noise_bank.clone(), NoiseLevel(level.knots, level.values))  # the same curves read at each channel
    assert float(g.noise_for(red)[:, 1].double().var()) > 1.4 * green


def test_the_tiles_lower_the_level_where_they_see_less_noise_and_never_raise_it():
    """Tiles of three colours: grey and red with noise of variance 1e-4, blue with strong texture (which
    adds to its upper rings). A level of 4e-4 everywhere (as curves fitted to other colours' flat crops
    can be) is lowered to the tiles' noise at grey and red, and kept at blue, whose tiles hold more power
    than it, not raised to their texture."""
    colours = {"grey": (0.5, 0.5, 0.5), "red": (0.8, 0.3, 0.2), "blue": (0.2, 0.3, 0.8)}
    rng = _rng(2)
    tiles = []
    for name, colour in colours.items():
        flat = torch.tensor(colour).view(1, 3, 1, 1).expand(24, 3, 32, 32)
        noise = 0.01 * torch.randn(24, 3, 32, 32, generator=rng)
        if name == "blue":  # stripes two pixels wide: power in the upper rings
            noise = noise + 0.08 * (torch.arange(32) // 2 % 2).float().view(1, 1, 1, 32)
        tiles.append(flat + noise)
    cap = tile_colour_noise(torch.cat(tiles), 32)
    level = NoiseLevel.constant(4e-4).capped(cap)
    at = {name: level.of_means(torch.tensor([colour], dtype=torch.float64))[0] for name, colour in colours.items()}
    for name in ("grey", "red"):
        torch.testing.assert_close(at[name], torch.full((3,), 1e-4, dtype=torch.float64), rtol=0.15, atol=0)
    torch.testing.assert_close(at["blue"], torch.full((3,), 4e-4, dtype=torch.float64))
    assert float(colour_lookup(cap, torch.tensor([0.2, 0.3, 0.8]).view(3, 1, 1)).min()) > 4e-4  # the texture is there


def test_the_cap_reads_the_least_textured_tiles_of_a_colour():
    """Most tiles of a scene's colours hold texture as well as noise (texture only adds to their
    upper rings): at grey, 6 noise-only tiles among its 16 nearest and 10 striped ones. The cap reads
    the noise (a low quantile of the 16), where their median would read the stripes."""
    rng = _rng(5)
    grey = torch.full((1, 3, 1, 1), 0.5)
    quiet = grey + 0.01 * torch.randn(6, 3, 32, 32, generator=rng)
    stripes = 0.04 * (torch.arange(32) // 2 % 2 * 2 - 1).float().view(1, 1, 1, 32)  # zero mean
    busy = grey + 0.02 + stripes + 0.01 * torch.randn(18, 3, 32, 32, generator=rng)  # a little further in colour
    cap = tile_colour_noise(torch.cat([quiet, busy]), 32)
    at_grey = colour_lookup(cap, torch.full((3, 1, 1), 0.5))[:, 0, 0]
    torch.testing.assert_close(at_grey, torch.full((3,), 1e-4, dtype=torch.float64), rtol=0.2, atol=0)


def test_colour_lookup_is_trilinear_over_rgb():
    axis = torch.linspace(0, 1, 9, dtype=torch.float64)
    r, g, b = torch.meshgrid(axis, axis, axis, indexing="ij")
    table = torch.stack([r, 2 * g, r + 3 * b])  # linear in each colour: trilinear lookup is exact
    x = torch.tensor([[0.1, 0.7, 0.33], [1.0, 0.0, 0.5]]).T.reshape(3, 1, 2)
    got = colour_lookup(table, x)[:, 0]
    want = torch.tensor([[0.1, 1.4, 0.1 + 0.99], [1.0, 0.0, 1.0 + 1.5]], dtype=torch.float64).T
    torch.testing.assert_close(got, want)


def test_g_adds_its_noise_after_its_jpeg():
    """The bank holds the photos' noise as their JPEG left it: G compresses the signal and adds the noise
    after, so two draws differ by the noise alone, not by what a second compression makes of it."""
    from fca.jpeg import JpegSetting

    found = flat_crops(_coloured_flat_noise(True), 16, bins=8)
    level = fit_noise_level(found)
    g = _generator("patches")
    g.set_noise_bank(collect_noise_bank(found, 64, seed=0, level=level), level)
    g.set_jpeg(JpegSetting(60, "4:2:0", "pixels"))
    x = _smooth(2, 4, 64)
    k = torch.from_numpy(gaussian(5, 1.0)).float().expand(len(x), -1, -1)
    with torch.no_grad():
        blurred, first = g.degrade_parts(x, k)
        _, second = g.degrade_parts(x, k)
        g.reset_noise()
        n1, n2 = g.noise_for(blurred), g.noise_for(blurred)
    torch.testing.assert_close(first - second, n1 - n2, atol=1e-6, rtol=0)
    torch.testing.assert_close(first - n1, g.compress(blurred), atol=1e-6, rtol=0)
