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


@pytest.mark.parametrize("path", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_validates(path):
    assert isinstance(load_params(path), Params)


def test_mixed_preset_has_a_random_blur_and_the_default_patches():
    mixed = yaml.safe_load((ROOT / "presets/mixed.yaml").read_text())
    blur = mixed["patches"].pop("blur")
    assert blur == {"type": "random", "size": 13, "families": ["anisotropic"], "sigma_range": [1.0, 3.5], "motion_length": [3.0, 9.0], "per": "patch"}
    base = raw()
    del base["patches"]["blur"]
    assert mixed["patches"] == base["patches"] and mixed["download"] == base["download"]


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


# --------------------------------------------------------------------------- hostile params: a corpus
#
# Every case is one clear line naming the file, the key and the value: never a traceback,
# never a value that passes and makes garbage later (NaN kernels, black patches).


@pytest.mark.parametrize(
    "edits,message",
    [
        # not finite
        ({"patches.blur.sigma": float("nan")}, "patches.blur.sigma = nan: must be finite"),
        ({"patches.blur.sigma": float("inf")}, "patches.blur.sigma = inf: must be finite"),
        ({"generator.lr": float("-inf")}, "generator.lr = -inf: must be finite"),
        ({"generator.betas": [0.5, float("nan")]}, "generator.betas[1] = nan: must be finite"),
        ({"fdc.eval_scales": [3.5, float("inf")]}, "fdc.eval_scales[1] = inf: must be finite"),
        ({"generator.steps": float("nan")}, "generator.steps = nan: must be finite"),
        ({"patches.min_std": 10**400}, "patches.min_std = 1000000000"),  # an int too large for a float
        # upper bounds where a larger value can only be a typo
        ({"generator.steps": 10**12}, "generator.steps = 1000000000000: must be <= 10000000"),
        ({"generator.scale": 1000}, "generator.scale = 1000: must be <= 16"),
        ({"patches.blur.size": 1001}, "patches.blur.size = 1001: must be <= 101"),
        ({"generator.kernel_size": 1001}, "generator.kernel_size = 1001: must be <= 101"),
        ({"patches.size": 100_000}, "patches.size = 100000: must be <= 8192"),
        ({"generator.batch_size": 10**6}, "generator.batch_size = 1000000: must be <= 65536"),
        ({"generator.lr": 10}, "generator.lr = 10: must be < 10"),
        ({"fdc.seed": 2**40}, "fdc.seed = 1099511627776: must be <= 4294967295"),
        ({"generator.kernel_init_sigma": 1e-300}, "generator.kernel_init_sigma = 1e-300: must be >= 0.01"),
        # types
        ({"patches.blur.type": ["gaussian"]}, "patches.blur.type = ['gaussian']: must be one of"),
        ({"report": None}, "report: expected a mapping of keys, got nothing"),
        ({"generator": [1, 2]}, "generator: expected a mapping of keys, got list [1, 2]"),
        # limits across sections (checked at load, not when the later stage runs)
        ({"generator.spectral_bins": 17}, "generator.spectral_bins = 17: must be <= 16, half the generator's LR crop (generator.patch_size 128 / generator.scale 4 = 32 px)"),
        ({"evaluate.density_bins": 16}, "evaluate.density_bins = 16: must be <= 15; LR patches of patches.size / generator.scale = 32 px"),
        ({"generator.patch_size": 256}, "generator.patch_size = 256: must be <= patches.size = 128"),
        ({"generator.scale": 16, "generator.kernel_size": 17}, "generator.kernel_size = 17: the generator's LR crops (generator.patch_size / generator.scale = 8 px) must be larger than 8 px"),
        ({"generator.loss": "fdc", "generator.patch_size": 64, "generator.scale": 16, "generator.kernel_size": 3},
         "generator.patch_size = 64: the comparator (generator.loss = fdc) needs crops of at least 8 px"),
        ({"fdc.patch_size": 40}, "fdc.patch_size = 40: patches of patches.size = 128 shrunk by 3.5 (fdc.scale_start / fdc.eval_scales) are smaller; need fdc.patch_size <= 36"),
        ({"generator.scale": 2.5}, "generator.scale = 2.5: the evaluate stage's SR probe needs a whole-number scale"),
        ({"patches.size": 130}, "patches.size = 130: must be a multiple of generator.scale = 4"),
        ({"evaluate.sr.patch_size": 50}, "evaluate.sr.patch_size = 50: must be a multiple of generator.scale = 4"),
        ({"evaluate.sr.patch_size": 132}, "evaluate.sr.patch_size = 132: must be <= patches.size = 128"),
        ({"generator.estimator": "spectral", "generator.estimator_bins": [17, 8]}, "generator.estimator_bins = [17, 8]: at most 16 radial bins"),
        ({"generator.estimator": "paper", "generator.w_consistency": 1.0}, "generator.w_consistency = 1: the consistency loss needs generator.estimator = spectral"),
        ({"generator.consistency_sigma": [4.0, 0.5]}, "generator.consistency_sigma = [4.0, 0.5]: the first value must not exceed the second"),
    ],
    ids=lambda v: None if isinstance(v, dict) else v.split(":")[0].replace(" ", ""),
)
def test_hostile_values_are_one_line_naming_key_and_value(edits, message):
    d = raw()
    for key, value in edits.items():
        _set(d, key, value)
    with pytest.raises(ParamsError) as e:
        parse_params(d, "my.yaml")
    assert str(e.value).startswith("my.yaml: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "edits",
    [
        {"generator.loss": "fdc", "generator.spectral_bins": 17},  # spectral bins unused: no limit
        {"generator.steps": 50000.0},  # a whole number written as a float (5e4) is an integer
        {"generator.patch_size": 128, "evaluate.density_bins": 15, "generator.spectral_bins": 16},  # the limits themselves
    ],
)
def test_values_at_the_limits_are_accepted(edits):
    d = raw()
    for key, value in edits.items():
        _set(d, key, value)
    p = parse_params(d)
    assert isinstance(p.generator.steps, int)


def _line(text: str, needle: str) -> int:
    """1-based line of the only occurrence of `needle`."""
    assert text.count(needle) == 1, needle
    return text[: text.index(needle)].count("\n") + 1


def _swap(old: str, new: str):
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)
    return edit


PARAMS_TEXT = (ROOT / "params.yaml").read_text()
GEN_STEPS = "  steps: 300                 # one global kernel; the spectral estimator reading each image's blur takes 600 (presets/mixed.yaml)\n"
BETAS = "  betas: [0.9, 0.999]\n"
GEN_LR = "\n  lr: 1.0e-3"

# (id, edit of params.yaml's text (or the bytes to write), parts of the one line after "PATH: ")
HOSTILE_FILES = [
    ("nan", _swap("    sigma: 3.0", "    sigma: .nan"), ["patches.blur.sigma = nan: must be finite"]),
    ("inf", _swap("    sigma: 3.0", "    sigma: .inf"), ["patches.blur.sigma = inf: must be finite"]),
    ("minus-inf", _swap(GEN_LR, "\n  lr: -.inf"), ["generator.lr = -inf: must be finite"]),
    ("nan-in-a-list", _swap(BETAS, "  betas: [0.9, .NaN]\n"), ["fdc.betas[1] = nan: must be finite"]),
    ("overflow-1e400", _swap(GEN_LR, "\n  lr: 1e400"), ["generator.lr = inf: must be finite"]),
    ("steps-1e12", _swap(GEN_STEPS, "  steps: 1e12\n"), ["generator.steps = 1000000000000.0: must be <= 10000000"]),
    ("scale-1000", _swap("  scale: 4.0", "  scale: 1000"), ["generator.scale = 1000: must be <= 16"]),
    ("scientific-is-a-number", _swap("  w_spectral: 1.0", "  w_spectral: -2E+1"), ["generator.w_spectral = -20.0: must be >= 0"]),
    ("duplicate-key", _swap(GEN_STEPS, GEN_STEPS + "  steps: 5\n"),
     [f"duplicate key generator.steps on line {_line(PARAMS_TEXT, GEN_STEPS) + 1} (first on line {_line(PARAMS_TEXT, GEN_STEPS)})"]),
    ("duplicate-section", lambda t: t + "report:\n  gallery_size: 3\n",
     [f"duplicate key report on line {PARAMS_TEXT.count(chr(10)) + 1} (first on line {_line(PARAMS_TEXT, 'report:')})"]),
    ("unclosed-list", _swap(BETAS, "  betas: [0.9, 0.999\n"), ["not valid YAML at line", "expected ',' or ']'"]),
    ("bad-indent", _swap("  scale: 4.0\n", "  scale: 4.0\n    bogus: 1\n"),
     [f"not valid YAML at line {_line(PARAMS_TEXT, '  scale: 4.0') + 1}, column 10: mapping values are not allowed here"]),
    ("tab", _swap("  scale: 4.0", "\tscale: 4.0"), [f"not valid YAML at line {_line(PARAMS_TEXT, '  scale: 4.0')}, column 1: found character '\\t'"]),
    ("control-character", _swap("  loss: mse", "  loss: \"ms\x07e\""), [f"not valid YAML at line {_line(PARAMS_TEXT, '  loss: mse')}, column 12: character '\\x07' is not allowed"]),
    ("two-documents", lambda t: t + "---\nreport: {}\n", ["not valid YAML at line", "expected a single document"]),
    ("python-tag", _swap("  loss: mse", "  loss: !!python/name:os.system"), ["not valid YAML at line", "could not determine a constructor"]),
    ("empty", lambda t: "", ["holds no settings (empty, or only comments)"]),
    ("only-comments", lambda t: "# nothing here\n", ["holds no settings (empty, or only comments)"]),
    ("top-level-list", lambda t: "- download\n- patches\n", ["the top level is a list (['download', 'patches']), not a mapping of sections"]),
    ("top-level-string", lambda t: "params\n", ["the top level is a string ('params'), not a mapping of sections"]),
    ("not-utf8", lambda t: ("# caf\xe9\n" + t).encode("latin-1"), ["not UTF-8 text (byte 0xe9 on line 1, offset 5)"]),
    ("non-string-key", lambda t: t + "1: one\n", ["top level: unknown key(s) 1 (allowed:"]),
    ("empty-section", _swap("report:\n  gallery_size: 6\n", "report:\n"), ["report: expected a mapping of keys, got nothing"]),
    ("spectral-bins-across-sections", _swap("  spectral_bins: 16", "  spectral_bins: 17"), ["generator.spectral_bins = 17: must be <= 16"]),
    ("density-bins-across-sections", _swap("  density_bins: 15", "  density_bins: 16"), ["evaluate.density_bins = 16: must be <= 15"]),
]


@pytest.mark.parametrize("edit,parts", [c[1:] for c in HOSTILE_FILES], ids=[c[0] for c in HOSTILE_FILES])
def test_hostile_params_files_are_one_line_naming_the_file(tmp_path, edit, parts):
    path = tmp_path / "params.yaml"
    content = edit(PARAMS_TEXT)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ParamsError) as e:
        load_params(path)
    message = str(e.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize("edit,parts", [c[1:] for c in HOSTILE_FILES], ids=[c[0] for c in HOSTILE_FILES])
def test_a_stage_with_hostile_params_exits_2_with_one_line_and_no_output(tmp_path, capsys, edit, parts):
    from pipeline import cli

    path = tmp_path / "params.yaml"
    content = edit(PARAMS_TEXT)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "raw").mkdir()
    code = cli.main(["patches", "--params", str(path), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{path}: " in errors[0], err
    for part in parts:
        assert part in errors[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "raw"]


@pytest.mark.parametrize(
    "old,new,key,value",
    [
        (GEN_LR, "\n  lr: 1e-3", "generator.lr", 0.001),
        (GEN_LR, "\n  lr: 5E-4", "generator.lr", 0.0005),
        ("  spectral_floor: 1.0e-4", "  spectral_floor: 1e-4", "generator.spectral_floor", 1e-4),
        (GEN_STEPS, "  steps: 5e4\n", "generator.steps", 50000),
        (GEN_STEPS, "  steps: 1.0e4\n", "generator.steps", 10000),
        ("  w_wd: 0.001", "  w_wd: +1e-3", "generator.w_wd", 0.001),
        ("  w_wd: 0.001", "  w_wd: .5e-2", "generator.w_wd", 0.005),
    ],
)
def test_scientific_notation_is_a_number(tmp_path, old, new, key, value):
    path = tmp_path / "params.yaml"
    path.write_text(_swap(old, new)(PARAMS_TEXT))
    p = load_params(path)
    section, name = key.split(".")
    got = getattr(getattr(p, section), name)
    assert got == value and type(got) is type(value)


def test_merge_keys_may_override_and_strings_stay_strings(tmp_path):
    from pipeline.params import read_yaml

    path = tmp_path / "x.yaml"
    path.write_text("base: &b {a: 1, b: 2}\nderived:\n  <<: *b\n  b: 3\nwords: [1e, e5, 1.2.3, '1e-3', 12abc]\n")
    data = read_yaml(path)
    assert data["derived"] == {"a": 1, "b": 3}
    assert data["words"] == ["1e", "e5", "1.2.3", "1e-3", "12abc"]
