import numpy as np
import pytest
import torch
from PIL import Image

from fca.models.sr_arch import EDSR
from fca.upscale import input_files, plan_outputs, upscale_file, upscale_image


def _net(scale: int = 3, skip: bool = True) -> EDSR:
    """An EDSR whose every layer does something (conv_last is not left at zero)."""
    torch.manual_seed(0)
    net = EDSR(scale, blocks=2, channels=6, bicubic_skip=skip).eval()
    torch.nn.init.normal_(net.conv_last.weight, std=0.05)
    return net


def _untiled(net: EDSR, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = net(torch.from_numpy(image).float().div(255).permute(2, 0, 1)[None])[0]
    return (out.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("scale, skip", [(3, True), (2, False)])
def test_tiled_output_equals_the_untiled_one(scale, skip):
    net = _net(scale, skip)
    image = np.random.default_rng(0).integers(0, 256, (45, 38, 3), dtype=np.uint8)
    whole = _untiled(net, image)
    for tile in (16, 20, 64):
        tiled = upscale_image(net, image, tile=tile)
        assert tiled.shape == whole.shape == (45 * scale, 38 * scale, 3)
        assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # float rounding may flip the last 8-bit step
        assert (tiled != whole).mean() < 1e-3


def test_a_margin_too_small_shows_seams():
    """The test above has teeth: tiles cut with less than the net's reach differ at the seams."""
    net = _net()
    image = np.random.default_rng(0).integers(0, 256, (45, 38, 3), dtype=np.uint8)
    net.margin = lambda: 2
    assert np.abs(upscale_image(net, image, tile=16).astype(int) - _untiled(net, image).astype(int)).max() > 1


def test_upscale_file_writes_a_png_equal_to_the_in_memory_result(tmp_path):
    net = _net()
    image = np.random.default_rng(2).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.jpg", quality=95)
    from fca.data.images import load_rgb

    decoded = load_rgb(tmp_path / "photo.jpg", uint8=True)
    assert upscale_file(net, tmp_path / "photo.jpg", tmp_path / "out" / "photo.png", tile=16) == (123, 90)
    with Image.open(tmp_path / "out" / "photo.png") as im:
        assert np.array_equal(np.asarray(im), upscale_image(net, decoded, tile=16))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["photo.png"]  # no temporary left


def test_a_bad_image_is_an_error_naming_it_and_leaves_no_output(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"broken\.png"):
        upscale_file(_net(), tmp_path / "broken.png", tmp_path / "out" / "broken.png")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_outputs_are_planned_before_any_work(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.jpg", "notes.txt"):
        (src / name).write_bytes(b"x")
    files = input_files(src)
    assert [p.name for p in files] == ["a.png", "b.jpg"]
    assert [d.name for _, d in plan_outputs(files, tmp_path / "out")] == ["a.png", "b.png"]
    (src / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a\.jpg and .*a\.png would both be written to .*out/a\.png"):
        plan_outputs(input_files(src), tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"b\.png: exists; give --overwrite"):
        plan_outputs([src / "b.jpg"], tmp_path / "out")
    assert plan_outputs([src / "b.jpg"], tmp_path / "out", overwrite=True)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        input_files(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        input_files(tmp_path / "empty")
