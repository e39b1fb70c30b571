"""data/patches, the training data, as an MLflow dataset: which stages read it, and which version.

pipeline/tracking.py records it as the dataset of the runs of the stages that list it in dvc.yaml's
deps, with a digest that names its content: DVC's hash of the folder from dvc.lock, used only
while dvc.lock describes the folder as it is (same file count and bytes; after a Snakemake run it
may not), else the md5 of data/patches/index.csv.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

PATCHES = "data/patches"


def _yaml_file(path: str) -> dict[str, Any]:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def read_by(stage: str) -> bool:
    """Whether ./dvc.yaml lists data/patches among the stage's deps."""
    return PATCHES in (((_yaml_file("dvc.yaml").get("stages") or {}).get(stage) or {}).get("deps") or [])


def patches_digest() -> tuple[str, str] | None:
    """(digest, where from) of ./data/patches: DVC's md5 from dvc.lock when the lock describes the folder
    as it is, else the md5 of its index.csv; None without the folder."""
    folder = Path(PATCHES)
    if not folder.is_dir():
        return None
    files = [p for p in folder.rglob("*") if p.is_file()]
    outs = [o for s in (_yaml_file("dvc.lock").get("stages") or {}).values() for o in s.get("outs") or []]
    for out in outs:
        if isinstance(out, dict) and out.get("path") == PATCHES and out.get("nfiles") == len(files) \
                and out.get("size") == sum(p.stat().st_size for p in files):
            return str(out["md5"]).removesuffix(".dir"), "dvc.lock"
    index = folder / "index.csv"
    return (hashlib.md5(index.read_bytes()).hexdigest(), "index.csv") if index.is_file() else None
