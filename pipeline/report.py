"""Stage `report`: figures and reports/README.md from the evaluation (all figures also go to MLflow)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fca.data.images import load_rgb
from fca.fsutil import atomic_dir, atomic_file
from fca.plots import (
    curves_figure,
    density_figure,
    histograms_figure,
    image_grid,
    kernel_gallery,
    kernel_grid,
    noise_level_figure,
    noise_model_figure,
    running_mean,
    save_figure,
    scatter_figure,
)
from fca.report import plural, readme_markdown, renamed_key
from pipeline import stage, tracking
from pipeline.params import Params, section_dict

DESCRIPTION = """\
Draw the run's figures into --out (frequency density on a log axis, the kernel
gallery true / oracle / predicted, SR crops, training curves, degraded images)
and write --readme, a page that states the verdict against the referee's targets.
When the domain's kernel is unknown (metrics.json holds `noref`), the page says so
and has no verdict: it shows the density match of G(x) and bicubic down(x) to the
photos, per-image distances, the distribution and a gallery of G's kernels, and
sample crops (photo, bicubic, G)."""


def build() -> argparse.ArgumentParser:
    p = stage.parser("report", DESCRIPTION)
    p.add_argument("--patches", type=Path, required=True, help="the patches stage's output folder")
    p.add_argument("--evaluation", type=Path, required=True, help="the evaluate stage's arrays folder")
    p.add_argument("--degraded", type=Path, required=True, help="the degrade stage's output folder")
    p.add_argument("--metrics", type=Path, required=True, help="metrics JSON from evaluate")
    p.add_argument("--fdc-metrics", type=Path, required=True, help="the FDC's held-out accuracies (.json) from train-fdc")
    p.add_argument("--density", type=Path, required=True, help="density curves CSV from evaluate")
    p.add_argument("--fdc-curve", type=Path, required=True, help="FDC accuracy CSV from train-fdc")
    p.add_argument("--generator-curve", type=Path, required=True, help="generator losses CSV from train-generator")
    p.add_argument("--sr-metrics", type=Path, help="train-sr's validation scores (.json); with --sr-figure, the page shows the SR models")
    p.add_argument("--sr-figure", type=Path, help="train-sr's figure of validation images upscaled by each model (.png)")
    p.add_argument("--out", type=Path, required=True, help="figures folder (replaced as a whole)")
    p.add_argument("--readme", type=Path, required=True, help="the report page (Markdown)")
    return p


def _label(key: str) -> str:
    """A curve's name in a figure: the CSV column l_true is the true LR images, L_true (the curve the
    density check judges against; `fca.plots.DENSITY_STYLES` draws it as the reference)."""
    return {"l_true": "L_true"}.get(key, key)


def _hwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (1, 2, 0))


def _nearest_up(x: np.ndarray, size: int) -> np.ndarray:
    f = max(1, size // x.shape[0])
    return np.repeat(np.repeat(x, f, axis=0), f, axis=1)


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def machine_info(evaluation: Path) -> dict[str, str]:
    """The report header's account of what made the numbers, from evaluate's runtime.json: the
    CPU and the flags that shape its numbers, threads, torch, the generator's precision, and the
    JPEG round trip its LR ends with.
    Results move within their intervals on another CPU (AVX-512 sums round otherwise than AVX2's)."""
    path = evaluation / "runtime.json"
    rt = json.loads(path.read_text()) if path.is_file() else {}
    flags = rt.get("cpu_flags", "")
    return {"CPU": f"{rt.get('cpu', 'unknown')} ({flags or 'no AVX2'})", "threads": str(rt.get("threads", "unknown")),
            "torch": str(rt.get("torch", "unknown")), "generator precision": str(rt.get("generator_precision", "unknown")),
            "G's JPEG": str(rt.get("generator_jpeg", "unknown"))}


# What the report reads from each input. A file without it (another version's, or the wrong
# file) is one error naming the file and what it lacks, not a KeyError traceback.
ARRAYS = ("kernels_pred", "kernel_true", "kernel_oracle", "kernel_oracle_smooth", "sample_hr_real", "sample_lr_true", "sample_sr_bicubic",
          "sample_sr_ours", "sample_sr_oracle")
# The same for a domain without a known kernel (fca.evaluate.referee_no_reference).
NOREF_ARRAYS = ("kernels_pred", "kernel_sigma", "kernel_axis_ratio", "kernel_angle", "kernel_oriented", "image_gap_bicubic",
                "image_gap_ours", "sample_hr_real", "sample_lr_bicubic", "sample_lr_ours")


def _need(source: Path, have: Any, keys: Sequence[str], what: str = "key") -> None:
    missing = [k for k in keys if k not in have]
    if missing:
        raise ValueError(f"{source}: no {what} {', '.join(map(repr, missing))}; is it the output of this version of the pipeline?")


def _read_metrics(path: Path) -> dict[str, Any]:
    metrics = json.loads(path.read_text())
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics, got a {type(metrics).__name__}")
    return metrics


def _refuse_old_names(path: Path, metrics: dict[str, Any]) -> None:
    """An evaluate output from before our method's keys said `ours` is one error naming a key and what
    to do: read under the new names, its rows for our method would be n/a beside a verdict that looks whole."""
    old = [f"{section}.{key}" for section, values in metrics.items() if isinstance(values, dict) for key in values
           if renamed_key(f"{section}.{key}") != f"{section}.{key}"]
    if old:
        raise ValueError(f"{path}: key {old[0]!r} is from an fca evaluate before our method's keys said `ours` "
                         f"(now {renamed_key(old[0])!r}): run fca evaluate again")


def sr_nets(params: Params) -> dict[str, str]:
    """The SR probe's and train_sr's networks and budgets in words (fca.report: why their PSNRs for our
    pairs differ); dvc.yaml declares these params for the report stage."""
    probe, model = params.evaluate.sr, params.train_sr
    return {"probe": f"{plural(probe.blocks, 'block')} of {plural(probe.channels, 'channel')}, {plural(probe.steps, 'step')} each",
            "train_sr": f"{plural(model.blocks, 'block')} of {plural(model.channels, 'channel')}, {plural(model.steps, 'step')}"}


def _known_kernel_figures(a: Any, cfg: Any) -> dict[str, object]:
    """The kernel gallery (true / oracle / ours), on a mixed-kernel domain the adaptation figures, and the SR crops."""
    figures: dict[str, object] = {}
    preds = a["kernels_pred"][: cfg.gallery_size]
    figures["kernels"] = kernel_gallery([("k_gt (true)", a["kernel_true"]), ("k_or (exact fit)", a["kernel_oracle"]),
                                         ("k_or (smooth)", a["kernel_oracle_smooth"])] + [(f"ours, image {i}", k) for i, k in enumerate(preds)])
    hr = a["sample_hr_real"].shape[-1]
    # Bicubic, blind (when the probe trained on the blind recipe's pairs), ours and oracle side by side.
    kinds = [k for k in ("bicubic", "blind", "ours", "oracle") if f"sample_sr_{k}" in a.files]
    rows = [[_nearest_up(_hwc(a["sample_lr_true"][i]), hr), *[_hwc(a[f"sample_sr_{k}"][i]) for k in kinds], _hwc(a["sample_hr_real"][i])]
            for i in range(len(a["sample_hr_real"]))]
    if "kernels_oracle" in a.files:  # a mixed-kernel domain: one oracle per image
        from fca.kernels import effective_sigma
        import torch

        sig = lambda k: effective_sigma(torch.from_numpy(np.asarray(k, dtype=np.float64))).numpy()  # noqa: E731
        series = {"ours (one forward pass)": sig(a["kernels_pred"])}
        if "kernels_baseline" in a.files:
            series["per-image density fit (baseline)"] = sig(a["kernels_baseline"])
        figures["adapt_scatter"] = scatter_figure(sig(a["kernels_oracle"]), series, "oracle kernel sigma (LR px)",
                                                  "predicted kernel sigma (LR px)", "Each validation image's kernel width")
        columns = ["k (true, HR)", "k_or (oracle)", "ours"] + (["baseline"] if "kernels_baseline" in a.files else [])
        shown = range(min(cfg.gallery_size, len(a["kernels_pred"])))
        grid = [[a["kernels_true"][i], a["kernels_oracle"][i], a["kernels_pred"][i]]
                + ([a["kernels_baseline"][i]] if "kernels_baseline" in a.files else []) for i in shown]
        figures["adapt_gallery"] = kernel_grid(grid, columns, [f"image {i}" for i in shown])
    titles = {"bicubic": "SR, bicubic pairs", "blind": "SR, blind recipe's pairs", "ours": "SR, our pairs", "oracle": "SR, oracle pairs"}
    figures["crops"] = image_grid(rows, ["input L_true", *[titles[k] for k in kinds], "target R"])
    if "noise_var_camera" in a.files:  # a noisy domain: the camera's noise and G's, by brightness
        figures["noise"] = noise_level_figure(a["noise_brightness"], {"camera (L_true)": a["noise_var_camera"], "ours (G's noise)": a["noise_var_ours"]})
    return figures


def spread_sample(values: np.ndarray, n: int) -> list[int]:
    """Indices of at most n items at evenly spaced ranks of `values`, smallest first: a sample that spans their range."""
    order = np.argsort(values, kind="stable")
    ranks = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [int(order[r]) for r in ranks]


def _noref_figures(a: Any, cfg: Any) -> dict[str, object]:
    """No known kernel: per-image density distances, the distribution and a gallery of G's kernels, and sample crops."""
    figures: dict[str, object] = {}
    figures["noref_distances"] = scatter_figure(
        a["image_gap_bicubic"], {"G(x), ours": a["image_gap_ours"]}, "down(x), bicubic: log-density L1 to its photo x",
        "G(x), ours: log-density L1 to its photo x", "Each validation photo (below the line: G(x) is closer to x)")
    panels = [("effective sigma of G's kernels", a["kernel_sigma"], "LR px")]
    if len(np.unique(a["kernels_pred"], axis=0)) > 1:  # a kernel per photo: its shape and direction vary too
        oriented = a["kernel_oriented"].astype(bool)
        panels += [("axis ratio of G's kernels", a["kernel_axis_ratio"], "long / short axis"),
                   (f"direction, the {int(oriented.sum())} kernels with axis ratio >= 1.5", a["kernel_angle"][oriented], "degrees")]
    figures["kernel_histograms"] = histograms_figure(panels)
    shown = spread_sample(a["kernel_sigma"], cfg.gallery_size)
    figures["kernels"] = kernel_gallery([(f"image {i}, sigma {a['kernel_sigma'][i]:.2f}", a["kernels_pred"][i]) for i in shown])
    hr = a["sample_hr_real"].shape[-1]
    rows = [[_hwc(a["sample_hr_real"][i]), _nearest_up(_hwc(a["sample_lr_bicubic"][i]), hr), _nearest_up(_hwc(a["sample_lr_ours"][i]), hr)]
            for i in range(len(a["sample_hr_real"]))]
    figures["crops"] = image_grid(rows, ["photo x (HR)", "down(x), bicubic (nearest-upscaled)", "G(x), ours (nearest-upscaled)"])
    if "noise_model_std" in a.files:  # G adds noise: its model, as nothing here can compare it with the camera's
        figures["noise_model"] = noise_model_figure(a["noise_model_brightness"], a["noise_model_std"], a["noise_model_measured"])
    return figures


def _kernel_sigma_panel(gen: pd.DataFrame, metrics: dict[str, Any], source: Path, no_reference: bool) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """The training panel of G's kernel width, with the oracle's as a line when there is an oracle."""
    curves = {"ours": gen.kernel_sigma.to_numpy()}
    if not no_reference:
        if not isinstance(metrics.get("kernel"), dict) or "sigma_oracle" not in metrics["kernel"]:
            raise ValueError(f"{source}: no key 'kernel.sigma_oracle'; is it the output of this version of fca evaluate?")
        curves["oracle"] = np.full(len(gen), float(metrics["kernel"]["sigma_oracle"]))
    return ("predicted kernel sigma (px)", gen.step.to_numpy(), curves)


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.report
    metrics = _read_metrics(args.metrics)
    _refuse_old_names(args.metrics, metrics)
    # The FDC's accuracies live in train-fdc's own metrics file (one file per purpose); the
    # page reads them as the `fdc` section (fca.report: TARGETS' fdc.acc_s1.2, fdc_table).
    metrics["fdc"] = {k: v for k, v in _read_metrics(args.fdc_metrics).items() if k.startswith("acc")}
    if (args.sr_metrics is None) != (args.sr_figure is None):
        raise ValueError("report: --sr-metrics and --sr-figure go together (both from train-sr)")
    if args.sr_metrics is not None:
        metrics["sr_model"] = _read_metrics(args.sr_metrics)
    no_reference = "noref" in metrics  # evaluate ran without a known kernel: no oracle, no verdict
    a = np.load(args.evaluation / "arrays.npz")
    _need(args.evaluation / "arrays.npz", a.files, NOREF_ARRAYS if no_reference else ARRAYS, "array")
    density = pd.read_csv(args.density)
    _need(args.density, density.columns, ["frequency"], "column")
    figures: dict[str, object] = {}
    # A curve evaluate could not compute (no oracle or clean images without a known kernel) is an empty column.
    figures["density"] = density_figure(density.frequency.to_numpy(), {_label(c): density[c].to_numpy() for c in density.columns
                                        if c != "frequency" and density[c].notna().any()}, "Frequency density of the validation patches")
    figures |= _noref_figures(a, cfg) if no_reference else _known_kernel_figures(a, cfg)
    fdc = pd.read_csv(args.fdc_curve)
    gen = pd.read_csv(args.generator_curve)
    _need(args.fdc_curve, fdc.columns, ["step"], "column")
    _need(args.generator_curve, gen.columns, ["step"], "column")
    acc_cols = [c for c in fdc.columns if c.startswith("acc_s") and not c.endswith(("_lo", "_hi"))]
    loss_cols = [c for c in gen.columns if c.startswith("loss") and gen[c].abs().sum() > 0]
    sr_losses = {k.removeprefix("sr_loss_"): a[k] for k in a.files if k.startswith("sr_loss_")}
    panels = [("FDC held-out ordering accuracy", fdc.step.to_numpy(), {c: fdc[c].to_numpy() for c in acc_cols}),
              ("generator losses", gen.step.to_numpy(), {c: gen[c].to_numpy() for c in loss_cols})]
    if "kernel_sigma" in gen:
        panels.append(_kernel_sigma_panel(gen, metrics, args.metrics, no_reference))
    if sr_losses:
        n = min(len(v) for v in sr_losses.values())
        # One batch's L1 swings by more than the whole run's fall: drawn as a running mean, so the fall shows.
        window = max(1, n // 20)
        panels.append((f"SR training L1 (running mean of {window} steps)", np.arange(1, n + 1),
                       {_label(k): running_mean(v[:n], window) for k, v in sr_losses.items()}))
    figures["training"] = curves_figure(panels)
    manifest = pd.read_csv(args.degraded / "manifest.csv")
    _need(args.degraded / "manifest.csv", manifest.columns, ["file", "status"], "column")
    shown = manifest[manifest.status == "ok"].head(cfg.gallery_size)
    deg_rows = []
    for _, r in shown.iterrows():
        src = load_rgb(args.patches / "val" / "real" / r.file)
        lr = load_rgb(args.degraded / "lr" / Path(r.file).with_suffix(".png"))
        deg_rows.append([src, _nearest_up(lr, src.shape[0])])
    figures["degraded"] = image_grid(deg_rows, ["HR input (real domain)", "degraded by G (nearest-upscaled)"])

    names = {role: f"{role}.png" for role in figures}
    with tracking.stage_run("report", section_dict(cfg)) as run, atomic_dir(args.out) as out:
        for role, fig in figures.items():
            run.log_figure(fig, f"report/{names[role]}")
            save_figure(fig, out / names[role])
        if args.sr_figure is not None:  # drawn by train-sr; the page's figures live in one folder
            names["sr_model"] = "sr_model.png"
            shutil.copyfile(args.sr_figure, out / names["sr_model"])
        rel = Path(args.out.name) if args.out.parent == args.readme.parent else args.out
        try:
            text = readme_markdown(metrics, {k: str(rel / v) for k, v in names.items()},
                                   {"git commit": _git_commit(), "scale": f"x{params.generator.scale:g}", "loss": params.generator.loss}
                                   | machine_info(args.evaluation), sr_nets(params))
        except KeyError as e:  # the metrics are the only mapping it reads
            raise ValueError(f"{args.metrics}: no key {e}; is it the output of this version of fca evaluate?") from None
        with atomic_file(args.readme) as tmp:
            tmp.write_text(text)
        run.log_artifact(args.readme)
    print(f"report: {args.readme} and {len(figures)} figures in {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("report", argv, build, body)
