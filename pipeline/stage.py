"""What every stage entry point shares: common options, params loading, error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.params import ParamsError, Params, load_params

log = logging.getLogger("fca")


def parser(stage: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes."""
    p = argparse.ArgumentParser(prog=f"fca {stage}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml); validated before any work")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (also when FCA_PROGRESS=off)")
    return p


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=os.environ.get("FCA_DEVICE", "auto"), choices=("auto", "cpu", "cuda"),
                   help="where to train: auto picks CUDA when present (env FCA_DEVICE)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("FCA_THREADS", "0")),
                   help="CPU threads for torch; 0 keeps torch's default (env FCA_THREADS)")


def progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress and os.environ.get("FCA_PROGRESS", "on").lower() not in ("off", "0", "false")


def setup_torch(args: argparse.Namespace) -> Any:
    """Apply --threads and return the torch.device --device names."""
    import torch

    from fca.train.generator import resolve_device

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def run(stage: str, argv: Sequence[str] | None, build: Callable[[], argparse.ArgumentParser], body: Callable[[argparse.Namespace, Params], None]) -> int:
    """Parse argv, load and validate params, run `body`; user errors print one clear line and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    args = build().parse_args(argv)
    try:
        params = load_params(args.params)
        body(args, params)
    except (ParamsError, FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, RuntimeError) as e:
        if os.environ.get("FCA_DEBUG"):
            raise
        print(f"fca {stage}: error: {e}", file=sys.stderr)
        print("(set FCA_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return 0


def checkpoint_dir(root: Path, config: Any, inputs: Sequence[Path]) -> Path:
    """Where a training stage keeps its resumable checkpoints: `root/<fingerprint>`.

    The folder is not a DVC/Snakemake output (both engines delete outputs before a
    re-run), and its name hashes the stage's params and input files, so a re-run
    after a crash resumes, while a run with other params or data starts afresh.
    """
    import hashlib
    import json

    from pipeline.params import section_dict

    h = hashlib.sha256(json.dumps(section_dict(config), sort_keys=True, default=str).encode())
    for path in inputs:
        h.update(path.read_bytes())
    return root / h.hexdigest()[:16]
