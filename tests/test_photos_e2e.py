"""A folder of photos with no known kernel (patches.blur.type: none) through the whole graph: the
report judges nothing, and the SR model trained on the pairs upscales a photo. A module of its
own, so that `make test` runs it on one worker while the other runs tests/test_engines_e2e.py."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engines_e2e import BIN, checkout, run  # noqa: E402


@pytest.mark.slow
def test_a_folder_of_photos_gets_a_no_reference_report_and_an_sr_model_that_upscales(tmp_path):
    """The photos as they are (patches.blur.type: none, here the built-in ones): no known kernel, so
    the report judges nothing, and the SR model trained on the pairs upscales a photo."""
    repo = checkout(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["patches"]["blur"] = {"type": "none"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([str(BIN / "dvc"), "repro"], repo, tmp_path, FCA_TRACKING="off")  # tracking: the dvc test above
    assert json.loads((repo / "data" / "patches" / "summary.json").read_text())["kernel_known"] is False
    import torch

    domain = torch.load(repo / "models" / "generator.pt", map_location="cpu", weights_only=True)["domain"]
    assert domain == {"kernel_known": False, "kernel_type": "none", "noise": "none"}  # fca degrade warns of none
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"noref"} and metrics["noref"]["images"] > 0
    page = (repo / "reports" / "README.md").read_text()
    assert "there is no verdict" in page and "## Verdict" not in page and "**miss**" not in page and "| pass |" not in page
    assert "no score" in page and (repo / "reports" / "figures" / "sr_model.png").is_file()
    assert "psnr_y_ours" not in json.loads((repo / "reports" / "sr.json").read_text())
    photo = sorted((repo / "data" / "raw").rglob("*.png"))[0]
    run([str(BIN / "fca"), "upscale", "--model", "models/sr_ours.pt", "--input", str(photo), "--output", "up", "--threads", "1"], repo, tmp_path)
    from PIL import Image

    with Image.open(photo) as src, Image.open(repo / "up" / f"{photo.stem}.png") as up:
        assert up.size == (4 * src.size[0], 4 * src.size[1])
