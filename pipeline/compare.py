"""`fca compare`: run the generator with each loss as a DVC experiment and compare the runs in MLflow."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fca.fsutil import atomic_file
from fca.plots import bar_comparison, save_figure
from fca.report import renamed_key
from pipeline import tracking

DESCRIPTION = """\
For each value of generator.loss (default: fdc spectral both) run
`dvc exp run --temp -S generator.loss=<value>` (a DVC experiment in a temporary
copy of the workspace: upstream stages come from the DVC cache, the workspace is
left untouched), then read the evaluate runs back from MLflow and write a
comparison table (CSV and Markdown) and a bar chart. The same runs can be
compared in the MLflow UI: select them and press Compare."""

COLUMNS = [
    "density.gap_reduction_true", "density.gap_reduction", "kernel.cov_rel_error", "kernel.shape_error", "kernel.sigma_pred", "kernel.sigma_oracle",
    "kernel.lr_psnr_ours", "kernel.lr_psnr_bicubic", "sr.psnr_ours", "sr.psnr_bicubic", "sr.psnr_oracle", "sr.gain_fraction",
]


def build() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fca compare", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--losses", nargs="+", default=["fdc", "spectral", "both"], choices=["fdc", "spectral", "both"],
                   help="the generator.loss values to run and compare (default: fdc spectral both)")
    p.add_argument("--out", type=Path, default=Path("reports/compare"), help="folder for compare.csv, compare.md, compare.png (default: reports/compare)")
    p.add_argument("--no-run", action="store_true", help="only read the latest MLflow runs, run no experiments")
    return p


def table(runs: list[dict], losses: Sequence[str]) -> pd.DataFrame:
    """Latest evaluate run for each loss -> one row per loss with the COLUMNS metrics."""
    rows = []
    for loss in losses:
        match = [r for r in runs if r["params"].get("generator.loss") == loss]
        if not match:
            raise LookupError(f"no finished evaluate run with generator.loss = {loss!r} in MLflow")
        r = match[0]  # newest first
        # A run logged before our method's keys said `ours` is read under the new names: it compares.
        metrics = {renamed_key(k): v for k, v in r["metrics"].items()}
        rows.append({"loss": loss, "run_id": r["run_id"]} | {c: metrics.get(c, float("nan")) for c in COLUMNS})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build().parse_args(argv)
    env = dict(os.environ)
    # Experiments run in a temporary folder: point MLflow at this workspace's store.
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    if not args.no_run:
        for loss in args.losses:
            print(f"compare: dvc exp run --temp -S generator.loss={loss}", flush=True)
            done = subprocess.run(["dvc", "exp", "run", "--temp", "-S", f"generator.loss={loss}"], env=env)
            if done.returncode != 0:
                print(f"fca compare: error: the experiment with generator.loss={loss} failed", file=sys.stderr)
                return done.returncode
    try:
        df = table(tracking.stage_runs("evaluate"), args.losses)
    except LookupError as e:
        print(f"fca compare: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out / "compare.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_file(args.out / "compare.md") as tmp:
        tmp.write_text(df.drop(columns="run_id").to_markdown(index=False, floatfmt=".3f") + "\n")
    save_figure(bar_comparison(df, "loss", ["density.gap_reduction_true", "sr.gain_fraction", "kernel.cov_rel_error"]), args.out / "compare.png")
    print(df.drop(columns="run_id").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"compare: wrote {args.out}/compare.csv, compare.md, compare.png")
    return 0
