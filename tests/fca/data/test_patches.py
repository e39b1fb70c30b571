import copy
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from fca.data.patches import (
    BlurConfig,
    BlurKernels,
    PatchesConfig,
    cut_patches,
    grid_origins,
    kernels_differ,
    load_patch_kernels,
    load_patch_set,
    make_blur_kernel,
    split_sources,
)
from fca.kernels import conv_per_sample, effective_sigma

ROOT = Path(__file__).resolve().parents[3]


def test_split_is_by_source_with_no_leakage_and_deterministic():
    sources = [f"img{i}.png" for i in range(9)]
    train, val = split_sources(sources, 0.25, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(sources)
    assert len(val) == 2
    assert split_sources(list(reversed(sources)), 0.25, seed=3) == (train, val)
    assert split_sources(sources, 0.25, seed=4) != (train, val)


def test_split_keeps_one_image_on_each_side():
    train, val = split_sources(["a", "b"], 0.9, seed=0)
    assert len(train) == 1 and len(val) == 1
    with pytest.raises(ValueError, match="at least 2 source images"):
        split_sources(["a"], 0.5, seed=0)


def test_grid_covers_the_image_flush_to_the_border():
    origins = grid_origins(300, 200, 128, 96)
    assert (0, 0) in origins and (300 - 128, 200 - 128) in origins
    assert all(y + 128 <= 300 and x + 128 <= 200 for y, x in origins)


def test_cut_patches_drops_flat_blurs_real_and_skips_small():
    rng = np.random.default_rng(0)
    image = np.zeros((256, 128, 3), dtype=np.float32) + 0.5  # top half flat
    image[128:] = rng.random((128, 128, 3), dtype=np.float32)
    kernel = make_blur_kernel(BlurConfig(type="gaussian", size=7, sigma=1.5))
    cfg = PatchesConfig(size=128, stride=128, max_per_image=10, min_std=0.02)
    cut = cut_patches(image, kernel, cfg, random.Random(0))
    assert cut.origins == [(128, 0)] and cut.dropped_flat == 1
    expected = conv_per_sample(cut.clean, torch.from_numpy(kernel).float()).clamp(0, 1)
    torch.testing.assert_close(cut.real, expected)
    assert cut.real.std() < cut.clean.std()
    assert cut_patches(image[:100], kernel, cfg, random.Random(0)) is None


def test_blur_kernel_variants(tmp_path):
    aniso = make_blur_kernel(BlurConfig(type="anisotropic", size=21, sigma_x=4.0, sigma_y=1.0, theta_deg=0.0))
    assert aniso.shape == (21, 21) and aniso.sum() == pytest.approx(1.0)
    assert aniso[10, :].sum() > aniso[:, 10].sum()  # wide along x
    path = tmp_path / "k.npy"
    np.save(path, np.ones((5, 5)))
    assert make_blur_kernel(BlurConfig(type="file", path=str(path))).sum() == pytest.approx(1.0)
    np.save(path, np.ones((4, 4)))
    with pytest.raises(ValueError, match="odd"):
        make_blur_kernel(BlurConfig(type="file", path=str(path)))
    with pytest.raises(FileNotFoundError, match="patches.blur.path"):
        make_blur_kernel(BlurConfig(type="file", path=str(tmp_path / "none.npy")))
    assert make_blur_kernel(BlurConfig(type="none")).shape == (1, 1)
    g = make_blur_kernel(BlurConfig(type="gaussian", size=13, sigma=3.0))
    assert 2.6 < float(effective_sigma(torch.from_numpy(g))) < 2.8


def _random_blur(**overrides) -> BlurConfig:
    keys = {"type": "random", "size": 13, "families": ("anisotropic", "motion"), "sigma_range": (1.0, 3.5), "motion_length": (3.0, 9.0), "per": "patch"}
    return BlurConfig(**(keys | overrides))


def _textured(seed: int, h: int = 256, w: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_random_blur_params_load_and_bad_values_name_the_key():
    from pipeline.params import ParamsError, parse_params

    raw = yaml.safe_load((ROOT / "presets" / "mixed.yaml").read_text())
    blur = parse_params(raw).patches.blur
    assert (blur.type, blur.size, blur.families, blur.sigma_range, blur.per) == ("random", 13, ("anisotropic",), (1.0, 3.5), "patch")
    bad = [
        ({"sigma_range": [3.0, 1.0]}, "patches.blur.sigma_range = [3.0, 1.0]: lo must be <= hi"),
        ({"motion_length": [9.0, 3.0]}, "patches.blur.motion_length = [9.0, 3.0]: lo must be <= hi"),
        ({"families": ["motion"], "motion_length": [3.0, 11.0]}, "patches.blur.motion_length = [3.0, 11.0]: a motion of length 11.0 does not fit a 13 x 13 kernel"),
        ({"families": ["anisotropic", "blob"]}, "patches.blur.families = 'blob': must be one of ['anisotropic', 'motion']"),
        ({"families": []}, "patches.blur.families = []: must not be empty"),
        ({"size": 12}, "patches.blur.size = 12: must be odd"),
        ({"sigma_range": [0.0, 2.0]}, "patches.blur.sigma_range = [0.0, 2.0]: must be > 0"),
        ({"sigma_range": [1.0]}, "patches.blur.sigma_range = [1.0]: expected 2 items"),
        ({"per": "batch"}, "patches.blur.per = 'batch': must be one of ['patch', 'image']"),
    ]
    for change, message in bad:
        d = copy.deepcopy(raw)
        d["patches"]["blur"].update(change)
        with pytest.raises(ParamsError) as e:
            parse_params(d, "my.yaml")
        assert message in str(e.value) and "\n" not in str(e.value), (change, str(e.value))
    d = copy.deepcopy(raw)
    d["patches"]["blur"].update(families=["anisotropic"], size=7, motion_length=[3.0, 11.0])
    assert parse_params(d).patches.blur.size == 7  # motion_length is only checked against size when motion is drawn
    del d["patches"]["blur"]["per"]
    with pytest.raises(ParamsError, match=r"patches.blur: missing key\(s\) per"):
        parse_params(d)
    with pytest.raises(ValueError, match="no single kernel"):
        make_blur_kernel(_random_blur())


def test_random_kernels_are_seeded_by_the_patches_seed():
    def draw(seed):
        return BlurKernels(_random_blur(), seed).draw(6)

    a, info_a = draw(0)
    b, info_b = draw(0)
    np.testing.assert_array_equal(a, b)
    assert info_a == info_b
    assert not np.array_equal(draw(1)[0], a)
    assert a.shape == (6, 13, 13) and kernels_differ(a)


def test_per_patch_and_per_image_kernels_and_each_is_the_one_applied():
    cfg = PatchesConfig(size=64, stride=64, max_per_image=3, min_std=0.0)
    for per in ("patch", "image"):
        kernels = BlurKernels(_random_blur(per=per), seed=0)
        cuts = [cut_patches(_textured(i), kernels, cfg, random.Random(0)) for i in range(2)]
        for cut in cuts:
            assert cut.kernels.shape == (3, 13, 13) and len(cut.kernel_info) == 3
            assert kernels_differ(cut.kernels) == (per == "patch")
            for k, info in zip(cut.kernels, cut.kernel_info):
                assert info["sigma_eff"] == pytest.approx(float(effective_sigma(torch.from_numpy(k))))
            # each patch's recorded kernel is the one that made its real patch
            expected = conv_per_sample(cut.clean, torch.from_numpy(cut.kernels).float()).clamp(0, 1)
            torch.testing.assert_close(cut.real, expected, rtol=0, atol=1e-6)
        assert not np.array_equal(cuts[0].kernels[0], cuts[1].kernels[0])  # per image: images differ too


def test_random_blur_keeps_the_patch_subset_of_the_fixed_variants():
    cfg = PatchesConfig(size=64, stride=32, max_per_image=4, min_std=0.0)
    fixed = cut_patches(_textured(0), make_blur_kernel(BlurConfig(type="gaussian", size=13, sigma=3.0)), cfg, random.Random(5))
    mixed = cut_patches(_textured(0), BlurKernels(_random_blur(), seed=5), cfg, random.Random(5))
    assert fixed.origins == mixed.origins
    torch.testing.assert_close(fixed.clean, mixed.clean)
    assert not kernels_differ(fixed.kernels) and fixed.kernel_info[0]["family"] == "fixed"


def _run_patches_stage(tmp_path, monkeypatch, blur: dict) -> Path:
    from pipeline import cli

    monkeypatch.setenv("FCA_TRACKING", "off")
    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())
    raw["patches"].update(stride=64, max_per_image=4, val_fraction=0.34, blur=blur)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    folder = tmp_path / "raw"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray((_textured(i, 192, 192) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    out = tmp_path / f"out_{blur['type']}_{blur.get('per', '')}"
    code = cli.main(["patches", "--params", str(params), "--raw", str(folder), "--out", str(out), "--no-progress"])
    assert code == 0
    return out


@pytest.mark.parametrize("per", ["patch", "image"])
def test_patches_stage_records_each_patchs_kernel(tmp_path, monkeypatch, per):
    blur = {"type": "random", "size": 7, "families": ["anisotropic", "motion"], "sigma_range": [0.8, 2.0], "motion_length": [2.0, 4.0], "per": per}
    out = _run_patches_stage(tmp_path, monkeypatch, blur)
    index = pd.read_csv(out / "index.csv")
    table = np.load(out / "kernels.npy")
    assert table.dtype == np.float64 and table.shape == (index.kernel.nunique(), 7, 7)
    assert list(index.kernel.drop_duplicates()) == list(range(len(table)))  # rows in order of first use
    assert set(index.family) <= {"anisotropic", "motion"}
    shared = index.groupby("source").kernel.nunique()
    if per == "image":
        assert (shared == 1).all() and index.groupby("kernel").source.nunique().max() == 1
    else:
        assert len(table) == len(index)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kernel_type"] == "random" and "mean" in summary["kernel_npy"]
    np.testing.assert_allclose(np.load(out / "kernel.npy"), table[index.kernel].mean(0), atol=1e-15)
    assert (out / "kernels.png").is_file()
    for split in ("train", "val"):
        clean, real, names = load_patch_set(out, split)
        kernels = load_patch_kernels(out, split)
        assert kernels.dtype == torch.float64 and kernels.shape == (len(names), 7, 7)
        assert kernels_differ(kernels) == (per == "patch" or split == "train")
        rows = index[index.split == split]
        assert list(rows.file) == names
        np.testing.assert_allclose(rows.sigma_eff, effective_sigma(kernels).numpy(), atol=1e-6)
        # re-blurring the saved clean patch with its recorded kernel gives the saved real patch, to 8-bit rounding
        reblurred = conv_per_sample(clean.double(), kernels).clamp(0, 1)
        assert float((reblurred - real.double()).abs().max()) <= 1 / 255 + 1e-6
        assert len(load_patch_kernels(out, split, limit=2)) == 2


def test_fixed_kernel_is_one_row_that_every_patch_points_to(tmp_path, monkeypatch):
    out = _run_patches_stage(tmp_path, monkeypatch, {"type": "gaussian", "size": 7, "sigma": 1.5})
    index = pd.read_csv(out / "index.csv")
    table = np.load(out / "kernels.npy")
    assert table.shape == (1, 7, 7) and (index.kernel == 0).all()
    np.testing.assert_array_equal(table[0], np.load(out / "kernel.npy"))
    assert (index.family == "gaussian").all() and (index.sigma_x == 1.5).all()
    kernels = load_patch_kernels(out, "val")
    assert kernels.shape[0] == (index.split == "val").sum() and not kernels_differ(kernels)
    assert json.loads((out / "summary.json").read_text())["kernel_type"] == "gaussian"



def test_a_camera_domain_is_each_clean_patch_through_the_simulated_camera(tmp_path, monkeypatch):
    """patches.blur.type: camera: R = camera(I) per patch, from the patch's own `hr` draw; summary.json
    keeps the camera, which `load_camera` gives back to the referee; k_gt is the camera's PSF."""
    import dataclasses

    from fca.camera import CameraConfig, PatchCamera, psf_kernel
    from fca.data.patches import load_camera, load_kernel_known

    cfg = CameraConfig(jpeg_quality=90)
    out = _run_patches_stage(tmp_path, monkeypatch, {"type": "camera", "camera": dataclasses.asdict(cfg)})
    assert load_kernel_known(out)
    np.testing.assert_allclose(np.load(out / "kernel.npy"), psf_kernel(cfg), atol=1e-12)
    clean, real, names = load_patch_set(out, "val")
    cam = load_camera(out, names)
    assert cam == PatchCamera(cfg, 0, tuple(names))
    again = cam(clean.double(), "hr")  # the saved real patch is the camera's photo of the saved clean one
    assert float((again - real.double()).abs().max()) <= 1 / 255 + 1e-6
    assert load_camera(_run_patches_stage(tmp_path, monkeypatch, {"type": "gaussian", "size": 7, "sigma": 1.0}), names) is None
