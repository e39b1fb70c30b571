from pathlib import Path

import pytest
import yaml

from pipeline.params import Params, ParamsError, load_params, parse_params, section_dict

ROOT = Path(__file__).resolve().parents[2]


def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("name", ["params.yaml", "presets/paper.yaml", "tests/params_tiny.yaml"])
def test_shipped_params_files_validate(name):
    p = load_params(ROOT / name)
    assert isinstance(p, Params)


def test_paper_preset_has_the_papers_settings():
    p = load_params(ROOT / "presets/paper.yaml")
    assert p.patches.size == 512 and p.generator.patch_size == 512
    assert p.generator.scale == 4.0
    assert (p.fdc.scale_start, p.fdc.scale_end) == (3.5, 1.2)
    assert (p.generator.w_fdc, p.generator.w_wd) == (1.0, 0.001)
    assert p.generator.lr == 1e-4 and p.generator.betas == (0.5, 0.99) and p.generator.batch_size == 8


def _set(d, dotted, value):
    *path, last = dotted.split(".")
    for k in path:
        d = d[k]
    d[last] = value


def _delete(d, dotted):
    *path, last = dotted.split(".")
    for k in path:
        d = d[k]
    del d[last]


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("patches.size", -8, "patches.size = -8: must be >= 16"),
        ("patches.size", 64.5, "patches.size = 64.5: expected an integer"),
        ("patches.size", True, "expected an integer"),
        ("generator.scale", 0.5, "generator.scale = 0.5: must be >= 1"),
        ("generator.kernel_size", 12, "generator.kernel_size = 12: must be odd"),
        ("patches.blur.size", 8, "patches.blur.size = 8: must be odd"),
        ("patches.blur.sigma", 0, "patches.blur.sigma = 0: must be > 0"),
        ("patches.blur.type", "box", "patches.blur.type = 'box': must be one of"),
        ("patches.val_fraction", 1.0, "patches.val_fraction = 1.0: must be < 1"),
        ("patches.on_bad_image", "ignore", "patches.on_bad_image = 'ignore': must be one of"),
        ("generator.loss", "l2", "generator.loss = 'l2': must be one of"),
        ("generator.betas", [0.5, 1.5], "generator.betas = [0.5, 1.5]: must be < 1"),
        ("generator.betas", [0.5], "expected 2 items"),
        ("fdc.resamplers", ["lanczos"], "fdc.resamplers = 'lanczos': must be one of"),
        ("fdc.resamplers", [], "must not be empty"),
        ("download.dataset", "imagenet", "download.dataset = 'imagenet': must be one of"),
        ("download.photos", ["lena"], "download.photos = 'lena': must be one of"),
        ("fdc.steps", 0, "fdc.steps = 0: must be >= 1"),
        ("fdc.lr", "fast", "fdc.lr = 'fast': expected a number"),
    ],
)
def test_bad_values_are_rejected_naming_key_and_value(key, value, message):
    d = raw()
    _set(d, key, value)
    with pytest.raises(ParamsError) as e:
        parse_params(d, "my.yaml")
    assert str(e.value).startswith("my.yaml: ")
    assert message in str(e.value)


def test_unknown_and_missing_keys_are_errors():
    d = raw()
    d["fdc"]["stpes"] = 10
    with pytest.raises(ParamsError, match=r"fdc: unknown key\(s\) stpes"):
        parse_params(d)
    d = raw()
    _delete(d, "generator.lr")
    with pytest.raises(ParamsError, match=r"generator: missing key\(s\) lr"):
        parse_params(d)
    d = raw()
    d["extra"] = {}
    with pytest.raises(ParamsError, match=r"top level: unknown key\(s\) extra"):
        parse_params(d)


def test_blur_keys_depend_on_its_type():
    d = raw()
    d["patches"]["blur"] = {"type": "anisotropic", "size": 13, "sigma_x": 3.0, "sigma_y": 1.0, "theta_deg": 30}
    assert parse_params(d).patches.blur.theta_deg == 30.0
    d["patches"]["blur"]["sigma"] = 3.0
    with pytest.raises(ParamsError, match=r"patches.blur: unknown key\(s\) sigma"):
        parse_params(d)
    d["patches"]["blur"] = {"type": "file"}
    with pytest.raises(ParamsError, match=r"patches.blur: missing key\(s\) path"):
        parse_params(d)
    d["patches"]["blur"] = {"type": "none"}
    assert parse_params(d).patches.blur.type == "none"


def test_cross_field_rule_names_the_key():
    d = raw()
    d["download"]["dataset"] = "folder"
    with pytest.raises(ParamsError, match="download: source = ''"):
        parse_params(d)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fdc: [unclosed")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_ints_become_floats_and_section_dict_flattens():
    d = raw()
    d["generator"]["scale"] = 4
    p = parse_params(d)
    assert isinstance(p.generator.scale, float)
    flat = section_dict(p.patches)
    assert flat["blur.type"] == "gaussian" and flat["size"] == 128
    assert "blur.path" not in flat
