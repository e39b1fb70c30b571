"""The `fca` console command: one subcommand per pipeline stage.

Each subcommand is a stage module's `main(argv)`; `fca <stage> --help` explains it.
The stage graph itself (which command runs with which paths) lives in dvc.yaml.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Sequence

# Subcommand -> (module, one-line summary). Explicit on purpose: no import-by-scanning.
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("pipeline.download", "fetch a dataset (builtin, DIV2K, URL list, folder) into a folder with a manifest"),
    "patches": ("pipeline.patches", "crop, filter, split and blur patches (the synthetic real domain)"),
    "train-fdc": ("pipeline.train_fdc", "train the frequency density comparator with a scale curriculum"),
    "train-generator": ("pipeline.train_generator", "train the adaptation generator (kernel estimator) against the FDC / spectral loss"),
    "degrade": ("pipeline.degrade", "degrade any folder of images with a trained generator"),
    "evaluate": ("pipeline.evaluate", "the referee: oracle kernel, density gaps, kernel error, SR trained on each kind of pairs"),
    "train-sr": ("pipeline.train_sr", "train an EDSR-style SR model on our pairs (and one on bicubic pairs to compare)"),
    "upscale": ("pipeline.upscale", "super-resolve a folder of photos (any size) with a trained SR model"),
    "report": ("pipeline.report", "figures and reports/README.md from the evaluation"),
    "compare": ("pipeline.compare", "run generator.loss = fdc / spectral / both as DVC experiments and compare them"),
}


# The commands that train networks and so can run data-parallel under torchrun.
DISTRIBUTED = ("train-fdc", "train-generator", "evaluate", "train-sr")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return (
        "usage: fca <command> [options]\n\n"
        "Frequency Consistent Adaptation pipeline stages (run them all with `dvc repro` or `snakemake --cores N`).\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`fca <command> --help` explains each command's options.\n"
        f"With FCA_NPROC=N, {', '.join(DISTRIBUTED)} run as N data-parallel processes\n"
        "(torchrun on one machine, `python -m pipeline.torchrun`, its rendezvous on 127.0.0.1 only;\n"
        "one process per GPU on CUDA).\n"
    )


def nproc() -> int:
    """FCA_NPROC from the environment (1 when unset); a bad value is an error naming it."""
    raw = os.environ.get("FCA_NPROC", "1").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"FCA_NPROC = {raw!r}: expected a whole number of processes >= 1")
    return n


def launch_command(name: str, rest: list[str], n: int) -> list[str]:
    """The command that runs `fca name rest` as n processes: torchrun on this machine (free ports,
    --standalone's flags) whose stores listen on 127.0.0.1 only (see pipeline/torchrun.py)."""
    from pipeline import torchrun

    return torchrun.command(n, ["-m", "pipeline.cli", name, *rest])


def launch(name: str, rest: list[str], n: int) -> int:
    """Run `fca name rest` as n processes (see launch_command)."""
    cmd = launch_command(name, rest, n)
    print(f"fca: {name} on {n} processes: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    return subprocess.run(cmd).returncode


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fca: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if name in DISTRIBUTED and "RANK" not in os.environ and "--help" not in rest and "-h" not in rest:
        try:
            n = nproc()
        except ValueError as e:
            print(f"fca {name}: error: {e}", file=sys.stderr)
            return 2
        if n > 1:
            return launch(name, rest, n)
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
