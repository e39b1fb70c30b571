"""What every stage entry point shares: common options, params loading, error reporting."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.params import ParamsError, load_params

log = logging.getLogger("fca")


def parser(stage: str, description: str, params_help: str | None = None, params: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes. A stage that passes `params_help`
    gets --params without a default (None when not given) and reads it itself (see run's `load`);
    one that reads no params file (`params=False`, e.g. upscale: the model holds its settings) has none."""
    p = argparse.ArgumentParser(prog=f"fca {stage}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if not params:
        pass
    elif params_help is None:
        p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml); validated before any work")
    else:
        p.add_argument("--params", type=Path, default=None, help=params_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (also when FCA_PROGRESS=off)")
    return p


def _count(name: str, env: str, lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [lo, hi]; a bad value (also from the environment
    variable `env`, which argparse converts like a command-line value) is a usage error naming it."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} (or env {env}): expected a whole number from {lo} to {hi}")
        return value

    parse.__name__ = name
    return parse


def add_device(p: argparse.ArgumentParser, distributed: bool = True) -> None:
    """--device and --threads. `distributed`: the stage runs under torchrun (FCA_NPROC) too."""
    torchrun = ("; under torchrun (env FCA_NPROC=N launches it) rank r runs on cuda:r, or all on the CPU with gloo"
                if distributed else "")
    p.add_argument("--device", default=os.environ.get("FCA_DEVICE", "auto"), choices=("auto", "cpu", "cuda"),
                   help=f"where to compute: auto picks CUDA when present (env FCA_DEVICE){torchrun}")
    p.add_argument("--threads", type=_count("threads", "FCA_THREADS", 0, 4096), default=os.environ.get("FCA_THREADS", "0"),
                   help="CPU threads for torch. A CPU run's numbers depend on it, so dvc.yaml names it for each "
                        "stage that trains or evaluates (the Snakefile declares the same `threads:`); more than "
                        "the CPUs this process may use keeps the numbers and costs speed. 0 = as many as this "
                        "process may use (CPU affinity and cgroup quota), at most OMP_NUM_THREADS, which "
                        "Snakemake sets to a rule's threads (env FCA_THREADS)")


def add_max_pixels(p: argparse.ArgumentParser, too_big: str) -> None:
    """--max-pixels: the largest image (width x height) a stage decodes; 0 = no limit. `too_big`:
    what the stage does with a bigger one, as the help says it (each stage its own: they differ)."""
    from fca.data.images import DEFAULT_MAX_PIXELS

    p.add_argument("--max-pixels", type=_count("max-pixels", "FCA_MAX_PIXELS", 0, 2**62),
                   default=os.environ.get("FCA_MAX_PIXELS", str(DEFAULT_MAX_PIXELS)),
                   help=f"largest image decoded, in pixels (width x height; default {DEFAULT_MAX_PIXELS:,}, env FCA_MAX_PIXELS; "
                        "0 = no limit). Checked from the file's header before decoding: it replaces Pillow's 179 MP "
                        f"decompression-bomb guard. A bigger image is {too_big}")


def max_pixels(args: argparse.Namespace) -> int | None:
    """The --max-pixels limit as the loaders take it (None: no limit)."""
    return args.max_pixels or None


def progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress and os.environ.get("FCA_PROGRESS", "on").lower() not in ("off", "0", "false")


def setup_torch(args: argparse.Namespace) -> Any:
    """Apply --threads and return the torch.device --device names."""
    from fca.train.hardware import resolve_device, set_threads

    set_threads(getattr(args, "threads", 0))
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
    """What a training stage's MLflow run records as params: its section, plus where and how it ran."""
    from pipeline.params import section_dict

    return section_dict(config) | extra | runtime(device, dist)


def record_precision(run: Any, choice: Any) -> None:
    """A trainer's precision choice (fca.train.hardware.PrecisionChoice; the trainers' on_precision)
    in the stage's MLflow run: param `precision` (fp32, bf16 or fp16) and tag `precision.reason`
    (what decided it: the param, and under auto the CPU's AMX flag)."""
    run.log_params({"precision": choice.precision})
    run.set_tags({"precision.reason": choice.reason})


def runtime(device: Any, dist: Any = None) -> dict[str, Any]:
    """What shapes a run's numbers besides params and inputs: the device, the processes, the CPU
    threads (a CPU run's bits depend on the count), torch's version and the CPU (its model and
    the flags that pick its kernels and its precision: `fca.train.hardware.cpu_description`).
    Recorded in the stage's MLflow params and with its outputs (the model checkpoints,
    data/evaluation/runtime.json, whose CPU the report's header names)."""
    import torch

    from fca.train.hardware import cpu_description

    return {"device": str(device), "processes": getattr(dist, "world_size", 1), "threads": torch.get_num_threads(),
            "torch": str(torch.__version__),  # str: a TorchVersion would not load with weights_only
            **cpu_description()}


def publish_checkpoint(src: Path, dst: Path, runtime_info: dict[str, Any], **records: Any) -> None:
    """Write the finished training checkpoint `src` to `dst` (a temporary name: the caller
    renames it) with `runtime` added (see runtime()), and any `records` (plain types: the
    checkpoint loads with weights_only) under their own keys, e.g. `domain`."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    state["runtime"] = dict(runtime_info)
    state.update(records)
    # Through a file object: given a path, torch.save names the archive's folder after the file
    # (here a random temporary name), so the same weights gave other bytes, and dvc.lock changed,
    # on every run.
    with open(dst, "wb") as f:
        torch.save(state, f)


def describe_error(e: BaseException) -> str:
    """One line for an expected error. OS errors name their path(s) and the system's reason
    ("data/out: No space left on device", "a -> b: Directory not empty"); the others are
    their own message."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        where = f"{os.fsdecode(e.filename)}" + (f" -> {os.fsdecode(e.filename2)}" if e.filename2 is not None else "")
        return f"{where}: {e.strerror}"
    if isinstance(e, OSError) and e.strerror:
        name = errno.errorcode.get(e.errno or 0)
        return f"{e.strerror}" + (f" ({name})" if name else "")
    return str(e) or type(e).__name__


# The errors a user can cause (bad params, inputs, paths, full disks, permissions, a busy output):
# one line each. OSError covers FileNotFoundError, FileExistsError, PermissionError, ENOSPC,
# ENOTEMPTY, ...; ValueError covers unreadable images and archives, bad inputs; RuntimeError
# a busy output. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ParamsError, OSError, ValueError, RuntimeError)


def run(stage: str, argv: Sequence[str] | None, build: Callable[[], argparse.ArgumentParser], body: Callable[[argparse.Namespace, Any], None],
        load: Callable[[argparse.Namespace], Any] | None = None) -> int:
    """Parse argv, load and validate params, run `body`; user errors print one clear line and exit 2.

    `body` gets the Params of --params, or what `load(args)` returns when the stage gives `load`
    (its errors are reported like the params' own)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    args = build().parse_args(argv)
    import torch

    from fca.train.hardware import set_threads

    # A command run in-process (a test, a notebook: `pipeline.cli.main([...])`) gives the caller
    # back its torch thread count: a caller left at the CPU count beside other busy processes
    # ran 30x slower (tests/fca/train/test_generator.py's consistency test: 91 s instead of 3).
    caller_threads = torch.get_num_threads()
    set_threads(getattr(args, "threads", 0))  # every stage: never more threads than CPUs (see --threads)
    try:
        params = load(args) if load is not None else load_params(args.params)
        body(args, params)
    except USER_ERRORS as e:
        if os.environ.get("FCA_DEBUG"):
            raise
        print(f"fca {stage}: error: {describe_error(e)}", file=sys.stderr)
        print("(set FCA_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    finally:
        if torch.get_num_threads() != caller_threads:
            torch.set_num_threads(caller_threads)
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
