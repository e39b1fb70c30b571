"""Stage `train_fdc`: train the Frequency Density Comparator on real-domain patches."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fca.data.patches import load_patch_set
from fca.fsutil import atomic_file, write_json
from fca.train.checkpoint import net_path
from fca.train.fdc import train_fdc
from pipeline import stage
from pipeline.params import Params

DESCRIPTION = """\
Train the FDC (a Siamese comparator: C(a, b) > 0 when a is denser in high
frequencies than b) on the real-domain training patches with a scale curriculum
(params: fdc). Held-out ordering accuracy at fdc.eval_scales goes to --metrics and
--curve. Checkpoints in --checkpoints/<fingerprint>/ survive a crash: run the same
command (or dvc repro / snakemake) again and training resumes where it stopped."""


def build() -> argparse.ArgumentParser:
    p = stage.parser("train-fdc", DESCRIPTION)
    p.add_argument("--patches", type=Path, required=True, help="the patches stage's output folder")
    p.add_argument("--out", type=Path, required=True, help="trained FDC (.pt)")
    p.add_argument("--metrics", type=Path, required=True, help="final held-out accuracies (.json)")
    p.add_argument("--curve", type=Path, required=True, help="accuracy per evaluation step (.csv)")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints/train_fdc"), help="resumable checkpoints root")
    stage.add_device(p)
    return p


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.fdc
    _, train_real, _ = load_patch_set(args.patches, "train")
    _, val_real, _ = load_patch_set(args.patches, "val")
    ckpt = stage.checkpoint_dir(args.checkpoints, cfg, [args.patches / "index.csv"])
    with stage.distributed(args) as (device, dist), stage.tracked("train_fdc", stage.run_params(cfg, device, dist), dist) as run:
        fdc, history = train_fdc(
            cfg, train_real, val_real,
            on_step=lambda step, m: run.log_metrics(m, step),
            on_eval=lambda step, m: run.log_metrics({f"val.{k}": v for k, v in m.items()}, step),
            checkpoint_dir=ckpt, progress=stage.progress_enabled(args), device=device, dist=dist,
            on_precision=lambda choice: stage.record_precision(run, choice),
        )
        if not dist.is_main:
            return  # rank 0 writes the outputs
        final = {k: v for k, v in history[-1].items() if k != "step"}
        write_json(args.metrics, final)
        with atomic_file(args.curve) as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)
        with atomic_file(args.out) as tmp:
            stage.publish_checkpoint(net_path(ckpt, cfg.steps), tmp, stage.runtime(device, dist))
        run.log_artifact(args.curve)
        run.log_artifact(args.out, "model")
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: the output is the model now
    print("train_fdc: held-out ordering accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in final.items()
                                                          if k.startswith("acc") and not k.endswith(("_lo", "_hi"))))


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("train-fdc", argv, build, body)
