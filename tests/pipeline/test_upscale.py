"""`fca upscale`: a folder in, PNGs out; a bad model or image is one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fca.train.checkpoint import net_path
from fca.train.sr import TrainSRConfig, train_sr_model
from pipeline import cli


@pytest.fixture()
def model(tmp_path):
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = TrainSRConfig(blocks=1, channels=4, steps=1, batch_size=2, patch_size=16, checkpoint_every=1)
    train_sr_model(cfg, torch.nn.functional.avg_pool2d(hr, 2), hr, 2, pairs="ours", checkpoint_dir=tmp_path / "ckpt")
    return net_path(tmp_path / "ckpt", 1)


def _photos(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)


def test_a_folder_is_upscaled_into_pngs_of_the_same_stem(tmp_path, model, monkeypatch, capsys):
    monkeypatch.setenv("FCA_PROGRESS", "off")
    _photos(tmp_path / "in", {"a.png": (20, 30), "b.jpg": (17, 9)})
    argv = ["upscale", "--model", str(model), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--tile", "16"]
    assert cli.main(argv) == 0
    sizes = {p.name: Image.open(p).size for p in sorted((tmp_path / "out").iterdir())}
    assert sizes == {"a.png": (60, 40), "b.png": (18, 34)}
    assert cli.main(argv) == 2  # outputs exist
    assert "a.png: exists; give --overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize("what", ["model", "image"])
def test_bad_model_or_image_is_one_line_naming_the_file(tmp_path, model, capsys, what):
    _photos(tmp_path / "in", {"a.png": (20, 30)})
    if what == "model":
        bad = tmp_path / "generator.pt"
        torch.save({"generator": {}, "config": {}}, bad)
        model, needle = bad, f"{bad}: not an SR model"
    else:
        (tmp_path / "in" / "z.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
        needle = str(tmp_path / "in" / "z.png")
    assert cli.main(["upscale", "--model", str(model), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fca upscale: error: ") and needle in err[0], err
    assert len(err) == 2  # the error, and the FCA_DEBUG hint


def test_tile_out_of_range_is_a_usage_error(tmp_path, model, capsys):
    with pytest.raises(SystemExit):
        cli.main(["upscale", "--model", str(model), "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--tile", "4"])
    assert "expected a whole number from 16 to 8192" in capsys.readouterr().err
