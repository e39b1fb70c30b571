"""Stage `train_sr`: an SR model trained on our pairs (HR patch, G(patch)), and ones on bicubic and blind-recipe pairs to compare."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fca.blind import BlindConfig, blind_degrade
from fca.data.patches import load_kernel_known, load_noise, load_patch_kernels, load_patch_set
from fca.evaluate import real_lr_views
from fca.fsutil import atomic_file, write_json
from fca.metrics import mean_ssim_y, pooled_psnr_y
from fca.noise import PatchNoise
from fca.plots import image_grid, save_figure
from fca.resample import downscale, upscale
from fca.train.checkpoint import load_checkpoint, net_path
from fca.train.generator import load_generator
from fca.train.sr import sr_predict, train_sr_model
from pipeline import stage
from pipeline.params import Params

DESCRIPTION = """\
Train an EDSR-style SR network (params: train_sr) on the training patches of the real
domain, paired the way this project is for: HR = a real-domain patch, LR = the trained
generator's output G(HR) (--out-ours). For comparison the same network, with the same
seed and budget, is trained on bicubic pairs, LR = bicubic_down(HR) (--out-bicubic),
and on the practitioners' blind pairs, LR = Real-ESRGAN's first-order random
degradation of HR (fca.blind, one draw per patch seeded by train_sr.seed, as the
referee's SR probe draws them) (--out-blind). All three are judged on the validation
patches: input the true real-world LR image (the clean patch downscaled, then blurred
by its known kernel), target the real HR patch; PSNR/SSIM on Y with an s-pixel border
cropped, PSNR pooled over the patches (--metrics). Also written: the per-step training
losses (--curve) and a figure of a few validation images, bicubic upscaling vs
SR(bicubic pairs) vs SR(blind pairs) vs SR(our pairs) (--figure). On real photos without
a known kernel (patches.blur.type: none) there is no true LR image and no target: the
figure then shows the validation photos themselves upscaled by each, and --metrics holds
no PSNR. The models are what `fca upscale --model` takes.
Checkpoints in --checkpoints/<fingerprint>/ survive a crash: run it again to resume."""

KINDS = ("bicubic", "blind", "ours")  # the LR side of the pairs: bicubic_down(HR), the blind recipe's, G(HR)
LABELS = {"upscaling": "bicubic upscaling", "bicubic": "SR, bicubic pairs", "blind": "SR, blind pairs", "ours": "SR, our pairs"}


def build() -> argparse.ArgumentParser:
    p = stage.parser("train-sr", DESCRIPTION)
    p.add_argument("--patches", type=Path, required=True, help="the patches stage's output folder")
    p.add_argument("--generator", type=Path, required=True, help="trained generator (.pt) from train-generator; makes the LR side and gives the scale")
    p.add_argument("--out-ours", type=Path, required=True, help="SR model trained on our pairs (.pt)")
    p.add_argument("--out-bicubic", type=Path, required=True, help="SR model trained on bicubic pairs (.pt)")
    p.add_argument("--out-blind", type=Path, required=True, help="SR model trained on the blind recipe's pairs (.pt)")
    p.add_argument("--curve", type=Path, required=True, help="training loss of each model per step (.csv)")
    p.add_argument("--metrics", type=Path, required=True, help="validation PSNR/SSIM (.json)")
    p.add_argument("--figure", type=Path, required=True, help="validation images side by side (.png)")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints/train_sr"), help="resumable checkpoints root")
    stage.add_device(p)
    return p


@torch.no_grad()
def generator_pairs(generator: torch.nn.Module, hr: torch.Tensor, device: torch.device, batch_size: int = 16) -> torch.Tensor:
    """G(hr) for [N, 3, H, W] in batches -> [N, 3, H/s, W/s] on the CPU, float32."""
    return torch.cat([generator(hr[i : i + batch_size].to(device))[0].float().cpu() for i in range(0, hr.shape[0], batch_size)])


def training_lr(generator: torch.nn.Module, hr: torch.Tensor, scale: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The LR side of each kind of training pairs (KINDS) for the HR patches `hr` [N, 3, H, W].
    blind: drawn exactly as the referee's SR probe draws its blind pairs (`fca.evaluate._pairs_lr`:
    default recipe, one numpy generator seeded by `seed`), so its net sees what the probe's did."""
    return {"bicubic": downscale(hr, scale),
            "blind": blind_degrade(hr, scale, BlindConfig(), np.random.default_rng(seed)),
            "ours": generator_pairs(generator, hr, device)}


def validation_views(patches: Path, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(true real-world LR [N, 3, h, w], real HR target [N, 3, H, W]) of the validation patches:
    L_true, the referee's test input (`fca.evaluate.real_lr_views`: each patch's own kernel, and
    the domain's camera noise drawn as evaluate draws it)."""
    clean, real, names = load_patch_set(patches, "val")
    noise, noise_seed = load_noise(patches)
    _, true = real_lr_views(clean, real, load_patch_kernels(patches, "val"), scale, PatchNoise(noise, noise_seed, tuple(names)))
    return true.float().clamp(0, 1), real


def quality(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, float]:
    return {"psnr_y": pooled_psnr_y(sr, hr, scale), "ssim_y": mean_ssim_y(sr, hr, scale)}


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def comparison_figure(lr: torch.Tensor, outputs: dict[str, torch.Tensor], hr: torch.Tensor | None, scale: int):
    """One row per validation image: the LR input (pixels enlarged), the upscalings, the HR target (none for real photos)."""
    shown = ("upscaling", *KINDS)
    columns = ["LR input (real)", *(LABELS[k] for k in shown)] + (["HR (real)"] if hr is not None else [])
    rows = []
    for i in range(lr.shape[0]):
        nearest = lr[i].repeat_interleave(scale, -1).repeat_interleave(scale, -2)
        row = [_hwc(nearest), *(_hwc(outputs[k][i]) for k in shown)]
        rows.append(row + ([_hwc(hr[i])] if hr is not None else []))
    return image_grid(rows, columns)


def publish(src: Path, dst: Path, extra: dict) -> None:
    """The final weights file `src` (weights, config, scale, pairs), with `extra` added, atomically at `dst`."""
    state = load_checkpoint(src)
    state |= extra
    with atomic_file(dst) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # a file object: bytes that do not depend on the temporary name (stage.publish_checkpoint)


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.train_sr
    _, train_real, _ = load_patch_set(args.patches, "train")
    ckpt_root = stage.checkpoint_dir(args.checkpoints, cfg, [args.patches / "index.csv", args.generator])
    outs = {"ours": args.out_ours, "bicubic": args.out_bicubic, "blind": args.out_blind}
    with stage.distributed(args) as (device, dist), stage.tracked("train_sr", stage.run_params(cfg, device, dist), dist) as run:
        generator = load_generator(args.generator, device)
        scale = int(generator.scale)
        lr_side = training_lr(generator, train_real, scale, cfg.seed, device)
        del generator
        nets, histories = {}, {}
        for kind in KINDS:
            nets[kind], histories[kind] = train_sr_model(
                cfg, lr_side[kind], train_real, scale, pairs=kind, checkpoint_dir=ckpt_root / kind,
                on_step=lambda step, m, kind=kind: run.log_metrics({f"{kind}.{k}": v for k, v in m.items()}, step),
                progress=stage.progress_enabled(args), device=device, dist=dist,
            )
        if not dist.is_main:
            return  # rank 0 writes the outputs
        if load_kernel_known(args.patches):
            val_lr, val_hr = validation_views(args.patches, scale)
        else:  # real photos: nothing to score against; the photos themselves are the input a user has
            val_lr, val_hr = load_patch_set(args.patches, "val")[1], None
        outputs = {"upscaling": upscale(val_lr, scale).clamp(0, 1), **{k: sr_predict(nets[k], val_lr) for k in KINDS}}
        scores = {name: quality(out, val_hr, scale) if val_hr is not None else {} for name, out in outputs.items()}
        metrics = {f"{m}_{name}": v for name, q in scores.items() for m, v in q.items()} | {"images": int(val_lr.shape[0]), "scale": scale}
        write_json(args.metrics, metrics)
        curve = pd.DataFrame({"step": [h["step"] for h in histories["ours"]]}
                             | {f"loss_{k}": [h["loss"] for h in histories[k]] for k in KINDS}
                             | {"lr": [h["lr"] for h in histories["ours"]]})
        with atomic_file(args.curve) as tmp:
            curve.to_csv(tmp, index=False, float_format="%.6g")
        n = min(cfg.samples, val_lr.shape[0])
        save_figure(comparison_figure(val_lr[:n], {k: v[:n] for k, v in outputs.items()}, val_hr[:n] if val_hr is not None else None, scale), args.figure)
        for kind in KINDS:
            publish(net_path(ckpt_root / kind, cfg.steps), outs[kind],
                    {"runtime": stage.runtime(device, dist), "validation": dict(scores[kind])})
        run.log_metrics({f"val.{k}": v for k, v in metrics.items()})
        for path in (args.metrics, args.curve, args.figure):
            run.log_artifact(path)
        for kind in KINDS:
            run.log_artifact(outs[kind], "model")
    shutil.rmtree(ckpt_root, ignore_errors=True)  # finished: the outputs are the models now
    if "psnr_y_ours" not in metrics:
        print(f"train_sr: no known kernel, so no score; the validation photos upscaled by each model: {args.figure}")
        return
    print("train_sr: validation PSNR-Y (pooled) bicubic upscaling {:.2f} dB, SR on bicubic pairs {:.2f} dB, "
          "SR on blind pairs {:.2f} dB, SR on our pairs {:.2f} dB"
          .format(metrics["psnr_y_upscaling"], metrics["psnr_y_bicubic"], metrics["psnr_y_blind"], metrics["psnr_y_ours"]))


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("train-sr", argv, build, body)
