"""The `fca` command as a user meets it: help, clear errors, no partial output."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_stage(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_has_help(name):
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", name, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"fca {name}" in out.stdout and "--" in out.stdout


def _write_params(tmp_path, **patches_overrides):
    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())
    raw["patches"].update(patches_overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _images(folder: Path, n: int, size: int = 160) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")


def test_bad_params_value_stops_before_work_naming_the_key(tmp_path, capsys):
    params = _write_params(tmp_path, size=-8)
    _images(tmp_path / "raw", 2)
    code = cli.main(["patches", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "patches.size = -8: must be >= 16" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreadable_image_error_names_it_and_leaves_no_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCA_TRACKING", "off")
    _images(tmp_path / "raw", 3)
    (tmp_path / "raw" / "broken.png").write_bytes(b"not a png")
    params = _write_params(tmp_path)
    code = cli.main(["patches", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp folder left


def test_skip_mode_reports_bad_and_small_images(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCA_TRACKING", "off")
    _images(tmp_path / "raw", 3)
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "raw" / "tiny.png")
    (tmp_path / "raw" / "broken.png").write_bytes(b"not a png")
    params = _write_params(tmp_path, on_bad_image="skip", val_fraction=0.3)
    code = cli.main(["patches", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "1 too small, 1 unreadable" in out and "broken.png" in out
    summary = yaml.safe_load((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped_small"] == ["tiny.png"]
    assert (tmp_path / "out" / "kernel.npy").is_file() and (tmp_path / "out" / "index.csv").is_file()
