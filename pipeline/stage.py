"""What every stage entry point shares: common options, params loading, error reporting."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
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
                   help="where to train: auto picks CUDA when present (env FCA_DEVICE); under torchrun "
                        "(env FCA_NPROC=N launches it) rank r trains on cuda:r, or all on the CPU with gloo")
    p.add_argument("--threads", type=int, default=int(os.environ.get("FCA_THREADS", "0")),
                   help="CPU threads for torch; 0 keeps torch's default (env FCA_THREADS)")


def progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress and os.environ.get("FCA_PROGRESS", "on").lower() not in ("off", "0", "false")


def setup_torch(args: argparse.Namespace) -> Any:
    """Apply --threads and return the torch.device --device names."""
    import torch

    from fca.train.hardware import resolve_device

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


@contextlib.contextmanager
def distributed(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """(device, Dist) for a training stage: --device and --threads applied, and, under
    `torchrun --nproc-per-node N` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
    the process group joined (nccl on CUDA, each rank on cuda:LOCAL_RANK; gloo on CPU).
    The group is left on exit."""
    import torch

    from fca import distributed as fdist

    device = setup_torch(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
    dist = fdist.init(rank, world, device)
    if dist.enabled:
        log.info("rank %d of %d on %s (backend %s)", rank, world, device, fdist.backend_for(device))
    try:
        yield device, dist
    finally:
        fdist.shutdown()


def tracked(stage: str, params: dict[str, Any], dist: Any) -> contextlib.AbstractContextManager:
    """The stage's MLflow run on rank 0; a run that records nothing on the other ranks."""
    from pipeline import tracking

    return tracking.stage_run(stage, params) if dist.is_main else contextlib.nullcontext(tracking.NullRun())


def run_params(config: Any, device: Any, dist: Any, **extra: Any) -> dict[str, Any]:
    """What a training stage's MLflow run records as params: its section, plus where it ran."""
    from pipeline.params import section_dict

    return section_dict(config) | extra | {"device": str(device), "processes": dist.world_size}


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
