"""The train_sr stage's files, on a hand-made patches folder and a stand-in generator (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from fca.blind import BlindConfig, blind_degrade
from fca.data.patches import load_patch_set
from fca.kernels import conv_per_sample, gaussian
from fca.resample import downscale
from fca.train.sr import load_sr_model
from pipeline import cli
from pipeline import train_sr as stage_train_sr

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp: Path) -> Path:
    from pipeline.params import with_defaults

    raw = with_defaults(yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text()))
    raw["train_sr"] |= {"steps": 4, "checkpoint_every": 2, "samples": 2}
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "params.yaml"


def _patches(root: Path, kernel_known: bool = True) -> None:
    """index.csv, {train,val}/{clean,real}/*.png, kernels.npy and summary.json, as the patches stage writes them."""
    rng = np.random.default_rng(0)
    k = gaussian(7, 1.5)
    rows = []
    for split, n in (("train", 4), ("val", 3)):
        for d in ("clean", "real"):
            (root / split / d).mkdir(parents=True)
        for i in range(n):
            clean = torch.from_numpy(rng.random((1, 3, 64, 64), dtype=np.float32))
            real = conv_per_sample(clean, torch.from_numpy(k).float())
            for d, img in (("clean", clean), ("real", real)):
                Image.fromarray((img[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)).save(root / split / d / f"{i}.png")
            rows.append({"file": f"{i}.png", "split": split, "kernel": 0})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    np.save(root / "kernels.npy", k[None])
    (root / "summary.json").write_text(json.dumps({"kernel_known": kernel_known, "kernel_type": "gaussian" if kernel_known else "none"}))


class _Generator(torch.nn.Module):
    """G(x) = down(x) blurred a little, with its kernels."""

    scale = 4.0

    def forward(self, x):
        k = torch.from_numpy(gaussian(5, 0.8)).float()
        return conv_per_sample(downscale(x, 4), k), k.expand(x.shape[0], -1, -1)


def _differ(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_stage_writes_the_three_models_the_loss_curve_metrics_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("FCA_TRACKING", "off")
    monkeypatch.setenv("FCA_PROGRESS", "off")
    monkeypatch.chdir(tmp_path)
    _patches(tmp_path / "patches")
    (tmp_path / "generator.pt").write_bytes(b"stand-in")  # fingerprinted, not read: load_generator is replaced
    monkeypatch.setattr(stage_train_sr, "load_generator", lambda path, device: _Generator())
    trained_on = {}  # the LR side each net was given, by the pairs it is stored as
    train = stage_train_sr.train_sr_model

    def recording(cfg, lr, hr, scale, pairs, **kw):
        trained_on[pairs] = lr.clone()
        return train(cfg, lr, hr, scale, pairs=pairs, **kw)

    monkeypatch.setattr(stage_train_sr, "train_sr_model", recording)
    argv = ["train-sr", "--params", str(_params(tmp_path)), "--patches", "patches", "--generator", "generator.pt",
            "--out-ours", "models/sr_ours.pt", "--out-bicubic", "models/sr_bicubic.pt", "--out-blind", "models/sr_blind.pt",
            "--curve", "reports/plots/sr_loss.csv", "--metrics", "reports/sr.json", "--figure", "reports/sr_comparison.png",
            "--checkpoints", "ckpt", "--threads", "1"]
    assert cli.main(argv) == 0
    curve = pd.read_csv("reports/plots/sr_loss.csv")
    assert list(curve.columns) == ["step", "loss_bicubic", "loss_blind", "loss_ours", "lr"] and curve.step.tolist() == [1, 2, 3, 4]
    metrics = json.loads(Path("reports/sr.json").read_text())
    kinds = ("upscaling", "bicubic", "blind", "ours")
    assert set(metrics) == {f"{m}_{k}" for m in ("psnr_y", "ssim_y") for k in kinds} | {"images", "scale"}
    assert all(np.isfinite(metrics[f"{m}_blind"]) for m in ("psnr_y", "ssim_y"))
    assert metrics["images"] == 3 and metrics["scale"] == 4
    with Image.open("reports/sr_comparison.png") as im:
        assert im.size[0] > im.size[1] > 100  # 2 rows of 6 images
    ours, bicubic, blind = (load_sr_model(f"models/sr_{k}.pt") for k in ("ours", "bicubic", "blind"))
    assert ours.scale == blind.scale == 4
    # Same seed and budget, different LR side: different nets (a blind net trained on bicubic pairs would equal that one).
    assert _differ(ours, bicubic) and _differ(blind, bicubic) and _differ(blind, ours)
    stored = torch.load("models/sr_ours.pt", weights_only=True)
    assert stored["pairs"] == "ours" and stored["runtime"]["threads"] == 1
    assert stored["validation"]["psnr_y"] == pytest.approx(metrics["psnr_y_ours"])
    stored = torch.load("models/sr_blind.pt", weights_only=True)
    assert stored["pairs"] == "blind" and stored["validation"]["psnr_y"] == pytest.approx(metrics["psnr_y_blind"])
    # The blind net's LR side is the referee's blind recipe drawn as the SR probe draws it (seeded by train_sr.seed),
    # the HR patches' size over the scale, and not the bicubic pairs'.
    hr = load_patch_set("patches", "train")[1]
    assert set(trained_on) == {"bicubic", "blind", "ours"}
    assert torch.equal(trained_on["blind"], blind_degrade(hr, 4, BlindConfig(), np.random.default_rng(0)))
    assert trained_on["blind"].shape == trained_on["bicubic"].shape == (4, 3, 16, 16)
    assert (trained_on["blind"] - trained_on["bicubic"]).abs().mean() > 0.01
    assert not any(Path("ckpt").iterdir())  # finished: the checkpoints are gone


def test_real_photos_without_a_known_kernel_get_upscaled_but_not_scored(tmp_path, monkeypatch):
    """No known kernel: no true LR image to score against, so no PSNR; the figure shows the photos upscaled, no target column."""
    monkeypatch.setenv("FCA_TRACKING", "off")
    monkeypatch.setenv("FCA_PROGRESS", "off")
    monkeypatch.chdir(tmp_path)
    _patches(tmp_path / "patches", kernel_known=False)
    (tmp_path / "generator.pt").write_bytes(b"stand-in")
    monkeypatch.setattr(stage_train_sr, "load_generator", lambda path, device: _Generator())
    argv = ["train-sr", "--params", str(_params(tmp_path)), "--patches", "patches", "--generator", "generator.pt",
            "--out-ours", "o.pt", "--out-bicubic", "b.pt", "--out-blind", "r.pt", "--curve", "c.csv", "--metrics", "sr.json", "--figure", "f.png",
            "--checkpoints", "ckpt", "--threads", "1"]
    assert cli.main(argv) == 0
    assert json.loads(Path("sr.json").read_text()) == {"images": 3, "scale": 4}
    with Image.open("f.png") as im:
        wide, high = im.size
    # 5 columns of 256-px upscalings of the 64-px photos (not 6 with a target): the photos themselves went in
    assert wide / high == pytest.approx(5 / 2, rel=0.1)
    assert load_sr_model("o.pt").scale == load_sr_model("r.pt").scale == 4
