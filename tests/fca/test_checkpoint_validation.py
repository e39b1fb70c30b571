"""Hostile checkpoints: each corruption is one line naming the file and the key, never a
traceback, never silent garbage (black LR images, NaN kernels marked "ok").

The configs stored in checkpoints go through the params.yaml checks
(`fca.config.build_config` via `fca.train.checkpoint.checkpoint_config`); the weights must
fit the network the config describes and be finite (`check_weights`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fca.degrade import DegradeConfig, NonFiniteOutputError, degrade_folder
from fca.models.fdc_arch import build_fdc
from fca.train.checkpoint import CheckpointError, save_checkpoint
from fca.train.fdc import FDCConfig, load_fdc
from fca.train.generator import GeneratorConfig, build_generator, load_generator
from pipeline import cli

ROOT = Path(__file__).resolve().parents[2]
GEN = GeneratorConfig(estimator="paper", kernel_param="free", kernel_size=7, channels=8, dense_blocks=1, res_blocks=1, wd_channels=8)
FDC = FDCConfig(channels=8)


def _plain(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _generator_state() -> dict:
    torch.manual_seed(0)
    return {"config": _plain(GEN), "generator": build_generator(GEN).state_dict(), "step": 1}


def _fdc_state() -> dict:
    torch.manual_seed(0)
    return {"config": _plain(FDC), "model": build_fdc(FDC.channels, FDC.normalize_input).state_dict(), "step": 1}


def _set(path: str, value):
    def edit(state):
        *keys, last = path.split("/")
        d = state
        for k in keys:
            d = d[k]
        d[last] = value
    return edit


def _delete(path: str):
    def edit(state):
        *keys, last = path.split("/")
        d = state
        for k in keys:
            d = d[k]
        del d[last]
    return edit


def _fill(key: str, value: float, where=(0,)):
    def edit(state):
        weights = state["generator"] if "generator" in state else state["model"]
        weights[key].view(-1)[list(where)] = value
    return edit


def _with(entry: str, config):
    def edit(state):
        state[entry] = build_generator(config).state_dict() if entry == "generator" else build_fdc(config.channels, config.normalize_input).state_dict()
    return edit


# (case id, edit of a sound checkpoint, substrings of the one-line message after "PATH: ")
GENERATOR_CORRUPTIONS = [
    ("config-is-a-list", _set("config", [1, 2]), ["config: expected a mapping of keys, got list [1, 2]"]),
    ("config-is-a-string", _set("config", "scale=4"), ["config: expected a mapping of keys, got str 'scale=4'"]),
    ("config-scale-nan", _set("config/scale", math.nan), ["config.scale = nan: must be finite"]),
    ("config-scale-inf", _set("config/scale", math.inf), ["config.scale = inf: must be finite"]),
    ("config-init-sigma-minus-inf", _set("config/kernel_init_sigma", -math.inf), ["config.kernel_init_sigma = -inf: must be finite"]),
    ("config-scale-out-of-range", _set("config/scale", 1000.0), ["config.scale = 1000.0: must be <= 16"]),
    ("config-scale-below-one", _set("config/scale", 0.5), ["config.scale = 0.5: must be >= 1"]),
    ("config-kernel-size-even", _set("config/kernel_size", 8), ["config.kernel_size = 8: must be odd"]),
    ("config-channels-a-string", _set("config/channels", "8"), ["config.channels = '8': expected an integer"]),
    ("config-channels-nan", _set("config/channels", math.nan), ["config.channels = nan: must be finite"]),
    ("config-kernel-param-unknown", _set("config/kernel_param", "box"), ["config.kernel_param = 'box': must be one of"]),
    ("config-betas-nan", _set("config/betas", [0.5, math.nan]), ["config.betas[1] = nan: must be finite"]),
    ("config-missing-scale", _delete("config/scale"), ["config: missing key(s) scale"]),
    ("config-missing-kernel-size", _delete("config/kernel_size"), ["config: missing key(s) kernel_size"]),
    ("weights-nan-prior", _fill("estimator.prior", math.nan), ["weight estimator.prior holds NaN or inf"]),
    ("weights-inf-conv", _fill("estimator.head.0.weight", math.inf, (3,)), ["weight estimator.head.0.weight holds NaN or inf"]),
    ("weights-for-another-width", _with("generator", dataclasses.replace(GEN, channels=16)),
     ["weights do not fit the generator its config describes (estimator.branches.0.weight: shape [16, 3, 1, 3] in the file, [8, 3, 1, 3] expected)"]),
    ("weights-for-another-kernel-param", _with("generator", dataclasses.replace(GEN, kernel_param="gaussian")),
     ["weights do not fit the generator its config describes (estimator.prior: shape [1] in the file, [7, 7] expected)"]),
    ("weights-for-fewer-blocks", _with("generator", dataclasses.replace(GEN, res_blocks=0)),
     ["weights do not fit the generator its config describes (estimator.body.1.conv1.weight: missing from the file)"]),
    ("weights-with-an-extra-entry", _set("generator/estimator.extra", torch.zeros(2)),
     ["weights do not fit the generator its config describes (estimator.extra: in the file, not in the generator)"]),
    ("weights-missing-prior", _delete("generator/estimator.prior"),
     ["weights do not fit the generator its config describes (estimator.prior: missing from the file)"]),
    ("weights-not-a-mapping", _set("generator", [1, 2]), ["the generator weights are a list, not a mapping of tensors"]),
    ("weight-not-a-tensor", _set("generator/estimator.prior", "zeros"), ["weight estimator.prior is a str, not a tensor"]),
    ("config-claims-a-huge-net", _set("config/channels", 4096),
     ["weights do not fit the generator its config describes (estimator.branches.0.weight: shape [8, 3, 1, 3] in the file, [4096, 3, 1, 3] expected)"]),
]


@pytest.mark.parametrize("edit,expected", [c[1:] for c in GENERATOR_CORRUPTIONS], ids=[c[0] for c in GENERATOR_CORRUPTIONS])
def test_a_corrupt_generator_checkpoint_is_one_line_naming_file_and_key(tmp_path, edit, expected):
    state = _generator_state()
    edit(state)
    path = tmp_path / "generator.pt"
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError) as e:
        load_generator(path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, message


def test_a_sound_generator_checkpoint_loads_and_tolerates_keys_of_older_versions(tmp_path):
    state = _generator_state()
    state["config"]["renamed_long_ago"] = 3  # unknown keys are ignored
    del state["config"]["steps"]  # training-only keys take their defaults
    path = tmp_path / "generator.pt"
    save_checkpoint(path, state)
    gen = load_generator(path)
    assert gen.kernel_size == 7 and gen.scale == 4.0
    assert torch.equal(gen.estimator.prior, state["generator"]["estimator.prior"])


@pytest.mark.parametrize("state,expected", [
    ([1, 2, 3], "not a generator checkpoint"),
    ({"generator": {}}, "not a generator checkpoint"),
])
def test_something_else_saved_as_a_checkpoint_is_named(tmp_path, state, expected):
    path = tmp_path / "generator.pt"
    save_checkpoint(path, state)
    with pytest.raises(ValueError, match=expected) as e:
        load_generator(path)
    assert str(e.value).startswith(f"{path}: ")


def test_a_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "generator.pt"
    save_checkpoint(path, _generator_state())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="not a readable checkpoint") as e:
        load_generator(path)
    assert str(e.value).startswith(f"{path}: ")


FDC_CORRUPTIONS = [
    ("config-is-a-list", _set("config", [1]), ["config: expected a mapping of keys, got list [1]"]),
    ("config-lr-nan", _set("config/lr", math.nan), ["config.lr = nan: must be finite"]),
    ("config-channels-negative", _set("config/channels", -1), ["config.channels = -1: must be >= 1"]),
    ("config-missing-channels", _delete("config/channels"), ["config: missing key(s) channels"]),
    ("config-scales-crossed", _set("config/scale_end", 9.0), ["fdc.scale_end = 9.0 must be <= fdc.scale_start = 3.5"]),
    ("weights-nan", _fill("body.11.weight", math.nan), ["weight body.11.weight holds NaN or inf"]),
    ("weights-for-another-width", _with("model", dataclasses.replace(FDC, channels=16)),
     ["weights do not fit the comparator its config describes (body.0.conv.weight: shape [48, 3, 3, 3] in the file, [24, 3, 3, 3] expected)"]),
    ("weights-not-a-mapping", _set("model", "weights"), ["the comparator weights are a str, not a mapping of tensors"]),
]


@pytest.mark.parametrize("edit,expected", [c[1:] for c in FDC_CORRUPTIONS], ids=[c[0] for c in FDC_CORRUPTIONS])
def test_a_corrupt_fdc_checkpoint_is_one_line_naming_file_and_key(tmp_path, edit, expected):
    state = _fdc_state()
    edit(state)
    path = tmp_path / "fdc.pt"
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError) as e:
        load_fdc(path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, message


def test_an_fdc_checkpoint_that_is_not_a_mapping_is_named(tmp_path):
    path = tmp_path / "fdc.pt"
    save_checkpoint(path, [1, 2])
    with pytest.raises(ValueError, match="not an FDC checkpoint") as e:
        load_fdc(path)
    assert str(e.value).startswith(f"{path}: ")


# --------------------------------------------------------------------------- through `fca degrade`


def _images(folder: Path, n: int = 2, size: int = 96) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")


def _overflowing(state: dict) -> None:
    """Finite weights whose kernel logits overflow to inf: softmax gives NaN kernels."""
    state["generator"]["estimator.prior"].fill_(3e38)
    state["generator"]["estimator.head.2.bias"].fill_(3e38)


STAGE_CASES = [
    ("nan-weights", _fill("estimator.prior", math.nan), ["generator.pt: weight estimator.prior holds NaN or inf"]),
    ("nan-scale", _set("config/scale", math.nan), ["generator.pt: config.scale = nan: must be finite"]),
    ("config-a-list", _set("config", [1, 2]), ["generator.pt: config: expected a mapping of keys"]),
    ("wrong-shapes", _with("generator", dataclasses.replace(GEN, channels=16)),
     ["generator.pt: weights do not fit the generator its config describes (estimator.branches.0.weight: shape [16, 3, 1, 3]"]),
    ("overflowing-weights", _overflowing, ["img0.png: the generator gave a kernel with NaN or inf values"]),
]


@pytest.mark.parametrize("edit,expected", [c[1:] for c in STAGE_CASES], ids=[c[0] for c in STAGE_CASES])
def test_fca_degrade_with_a_hostile_checkpoint_exits_2_with_one_line_and_no_output(tmp_path, capsys, monkeypatch, edit, expected):
    monkeypatch.setenv("FCA_TRACKING", "off")
    state = _generator_state()
    edit(state)
    save_checkpoint(tmp_path / "generator.pt", state)
    _images(tmp_path / "in")
    code = cli.main(["degrade", "--params", str(ROOT / "tests" / "params_tiny.yaml"), "--checkpoint", str(tmp_path / "generator.pt"),
                     "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for part in expected:
        assert part in errors[0], err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], sorted(p.name for p in tmp_path.iterdir())


class _NaNSource:
    """A kernel source whose kernels hold NaN (a broken generator)."""

    scale = 4.0
    kernel_size = 7

    def __init__(self, bad_from: int = 0, value: float = math.nan):
        self.calls, self.bad_from, self.value = 0, bad_from, value

    def estimate_kernel(self, x):
        self.calls += 1
        k = torch.full((x.shape[0], 7, 7), 1 / 49)
        if self.calls > self.bad_from:
            k[:, 3, 3] = self.value
        return k


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("bad_from", [0, 1])  # the first image already, or only the second one
def test_degrade_folder_stops_naming_the_image_when_a_kernel_is_not_finite(tmp_path, value, bad_from):
    _images(tmp_path / "in")
    config = DegradeConfig(kernel_from="center")
    with pytest.raises(NonFiniteOutputError) as e:
        degrade_folder(_NaNSource(bad_from, value), tmp_path / "in", tmp_path / "out", config, progress=False)
    assert f"img{bad_from}.png: the generator gave a kernel with NaN or inf values" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary folder left either


def test_fca_patches_stops_naming_the_image_when_a_kernel_is_not_finite(tmp_path, capsys, monkeypatch):
    """patches.blur validation makes this impossible from params.yaml; the stage checks anyway."""
    import pipeline.patches as patches_stage

    cut_patches = patches_stage.cut_patches

    def poisoned(*args, **kwargs):
        cut = cut_patches(*args, **kwargs)
        if cut is not None and len(cut.real):
            cut.real = cut.real.clone()
            cut.real[0, 0, 0, 0] = math.nan
            if cut.kernels is not None:
                cut.kernels = np.array(cut.kernels, dtype=np.float64)
                cut.kernels[0, 0, 0] = math.nan
        return cut

    monkeypatch.setattr(patches_stage, "cut_patches", poisoned)
    monkeypatch.setenv("FCA_TRACKING", "off")
    _images(tmp_path / "raw", 3, size=160)
    code = cli.main(["patches", "--params", str(ROOT / "tests" / "params_tiny.yaml"), "--raw", str(tmp_path / "raw"),
                     "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "img0.png: its" in errors[0] and "NaN or inf" in errors[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
