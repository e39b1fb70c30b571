"""Stage `download`: fetch the dataset named in params into a folder, with a manifest."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fca.data.download import fetch
from fca.fsutil import atomic_dir
from pipeline import stage, tracking
from pipeline.params import Params, section_dict

DESCRIPTION = """\
Fetch a dataset by name (params: download.dataset):
  builtin         offline: scikit-image's bundled photos + procedural dead-leaves images
  div2k-train-hr  DIV2K training HR archive (3.5 GB, sha256-checked, resumable)
  div2k-valid-hr  DIV2K validation HR archive (449 MB)
  url-list        download.source is a file of 'URL SHA256' lines
  folder          download.source is a local folder of images
Writes OUT/<dataset>/... and OUT/manifest.csv (file, width, height, sha256, source, and a JPEG
source file's quality and chroma subsampling: the patches stage gives G's LR the same round trip).
Downloads are kept in --cache, so an interrupted download resumes."""


def build() -> argparse.ArgumentParser:
    p = stage.parser("download", DESCRIPTION)
    p.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole on success)")
    p.add_argument("--cache", type=Path, default=Path(".cache/downloads"), help="where archives are downloaded and resumed (default: .cache/downloads)")
    stage.add_max_pixels(p, too_big="an error naming the file: the download stops")
    return p


def body(args: argparse.Namespace, params: Params) -> None:
    cfg = params.download
    with tracking.stage_run("download", section_dict(cfg)) as run, atomic_dir(args.out) as out:
        manifest = fetch(cfg, out, args.cache, progress=stage.progress_enabled(args), max_pixels=stage.max_pixels(args))
        if manifest.empty:
            raise ValueError(f"download.dataset = {cfg.dataset!r}: no images were found")
        manifest.to_csv(out / "manifest.csv", index=False)
        run.log_metrics({"images": len(manifest), "megapixels": float((manifest.width * manifest.height).sum() / 1e6)})
        run.log_artifact(out / "manifest.csv")
    print(f"download: {len(manifest)} images of dataset {cfg.dataset!r} in {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run("download", argv, build, body)
