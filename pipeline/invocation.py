"""The pipeline invocation that runs this process: its id, and what tells it apart from the others.

The id (`FCA_PIPELINE_ID`, else the `dvc repro` / `snakemake` process above the stage) is what
the stages of one invocation share; pipeline/tracking.py hangs their MLflow runs under one
parent run found by it. That parent run is named by the engine, the commit (`+dirty` when
code changed), the params changed from the committed params.yaml, and the date.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ENGINES = ("dvc", "snakemake")


def _engine_ancestor() -> str | None:
    """'<engine>-<pid>-<start time>' of the nearest `dvc` or `snakemake` ancestor process."""
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process().parents():
            names = {Path(a).name for a in proc.cmdline()[:3]}
            for engine in ENGINES:
                if engine in names:  # the start time tells a reused pid apart
                    return f"{engine}-{proc.pid}-{int(proc.create_time() * 100)}"
    return None


def pipeline_id() -> str | None:
    return os.environ.get("FCA_PIPELINE_ID") or _engine_ancestor()


def _git(*args: str) -> str | None:
    """`git args` in the current folder: its stdout, or None outside a repository or without git."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def commit() -> str:
    """The current folder's git commit, `unknown` outside a repository."""
    return (_git("rev-parse", "HEAD") or "").strip() or "unknown"


def dirty() -> bool:
    """Tracked files changed since the commit, besides what a pipeline run writes (dvc.lock, reports/)
    and params.yaml (whose changes the parent run's name lists)."""
    out = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock", ":(exclude)params.yaml", ":(exclude)reports")
    return bool(out and out.strip())


def _flat(tree: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): json.dumps(tree) if isinstance(tree, list) else str(tree)} if prefix else {}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}


def _flat_yaml(text: str | None) -> dict[str, str] | None:
    """YAML text as {dotted.key: value as text}; None for no text or text that is no YAML."""
    try:
        return _flat(yaml.safe_load(text)) if text is not None else None
    except yaml.YAMLError:
        return None


def params() -> dict[str, str]:
    """./params.yaml flat, keyed as the stage runs' params (`generator.loss`); {} when unreadable."""
    with contextlib.suppress(OSError):
        return _flat_yaml(Path("params.yaml").read_text()) or {}
    return {}


def changed_params() -> list[tuple[str, str]]:
    """(key, value) of ./params.yaml's values that differ from the committed params.yaml; [] when unknown."""
    before = _flat_yaml(_git("show", "HEAD:./params.yaml"))
    return [] if before is None else [(k, v) for k, v in params().items() if before.get(k) != v]


def parent_name(engine: str, commit: str, dirty: bool, changed: list[tuple[str, str]], when: float) -> str:
    """`dvc 655cdf0+dirty gen.loss=spectral 05-14 10:22`: what tells pipeline runs apart first, the date
    last, as the UI cuts names at about 40 characters."""
    shown = [f"{engine} {commit[:7] if commit != 'unknown' else 'no-git'}{'+dirty' if dirty else ''}"]
    for i, (key, value) in enumerate(changed):
        section, _, rest = key.partition(".")
        item = f"{section[:3]}.{rest}={value[:12]}" if rest else f"{key}={value[:12]}"
        if i and len(" ".join(shown[1:])) + len(item) > 26:  # the rest only as a count
            shown.append(f"+{len(changed) - i}")
            break
        shown.append(item)
    return " ".join([*shown, time.strftime("%m-%d %H:%M", time.localtime(when))])
