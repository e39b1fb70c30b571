"""Stage `train_generator`: learn G(x) = bicubic_down(x, s) (*) k(x) against the frozen FDC."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fca.data.patches import load_domain, load_files_jpeg, load_patch_set
from fca.fsutil import atomic_file
from fca.plots import image_grid, kernel_gallery
from fca.train.checkpoint import net_path
from fca.train.fdc import load_fdc
from fca.train.generator import train_generator
from pipeline import stage
from pipeline.params import Params

DESCRIPTION = """\
Train the adaptation generator on the real-domain training patches (params:
generator). generator.loss picks the objective: fdc (the paper's comparator),
spectral (a direct, differentiable frequency-density distance) or both; the
wavelet discriminator always adds w_wd * L_WD. Every generator.image_every steps
the predicted kernels and HR / bicubic / ours triptychs go to MLflow.
Checkpoints in --checkpoints/<fingerprint>/ survive a crash: run it again to resume."""


def build() -> argparse.ArgumentParser:
    p = stage.parser("train-generator", DESCRIPTION)
    p.add_argument("--patches", type=Path, required=True, help="the patches stage's output folder")
    p.add_argument("--fdc", type=Path, required=True, help="trained FDC (.pt) from train-fdc")
    p.add_argument("--out", type=Path, required=True, help="trained generator (.pt)")
    p.add_argument("--curve", type=Path, required=True, help="losses and kernel width per step (.csv)")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints/train_generator"), help="resumable checkpoints root")
    stage.add_device(p)
    return p


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.generator
    _, train_real, _ = load_patch_set(args.patches, "train")
    fdc = load_fdc(args.fdc) if cfg.loss in ("fdc", "both") else None
    ckpt = stage.checkpoint_dir(args.checkpoints, cfg, [args.patches / "index.csv", args.fdc])
    run_params = {"fdc.scale_end": params.fdc.scale_end}
    with stage.distributed(args) as (device, dist), stage.tracked("train_generator", stage.run_params(cfg, device, dist, **run_params), dist) as run:

        def on_images(step: int, kernels: torch.Tensor, hr: torch.Tensor, bicubic: torch.Tensor, ours: torch.Tensor) -> None:
            k = kernels.detach().float().cpu().numpy()
            run.log_figure(kernel_gallery([(f"image {i}", k[i]) for i in range(len(k))]), f"kernels/step_{step:06d}.png")
            rows = [[_to_hwc(hr[i]), _to_hwc(bicubic[i]), _to_hwc(ours[i])] for i in range(min(3, len(hr)))]
            run.log_figure(image_grid(rows, ["HR (real domain)", "bicubic", "ours"]), f"samples/step_{step:06d}.png")

        _, history = train_generator(
            cfg, train_real, fdc, device=device, checkpoint_dir=ckpt, fdc_scale=params.fdc.scale_end,
            on_step=lambda step, m: run.log_metrics(m, step), on_images=on_images,
            progress=stage.progress_enabled(args), dist=dist, on_precision=lambda choice: stage.record_precision(run, choice),
            jpeg_files=load_files_jpeg(args.patches),
        )
        if not dist.is_main:
            return  # rank 0 writes the outputs
        with atomic_file(args.curve) as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)
        with atomic_file(args.out) as tmp:
            # The domain it learned: `fca degrade` warns when it is a synthetic camera (the demo's).
            stage.publish_checkpoint(net_path(ckpt, cfg.steps), tmp, stage.runtime(device, dist), domain=load_domain(args.patches))
        run.log_artifact(args.curve)
        run.log_artifact(args.out, "model")
    shutil.rmtree(ckpt, ignore_errors=True)
    last = history[-1]
    print(f"train_generator: {len(history)} steps, final kernel sigma {last.get('kernel_sigma', float('nan')):.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("train-generator", argv, build, body)
