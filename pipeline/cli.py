"""The `fca` console command: one subcommand per pipeline stage.

Each subcommand is a stage module's `main(argv)`; `fca <stage> --help` explains it.
The stage graph itself (which command runs with which paths) lives in dvc.yaml.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# Subcommand -> (module, one-line summary). Explicit on purpose: no import-by-scanning.
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("pipeline.download", "fetch a dataset (builtin, DIV2K, URL list, folder) into a folder with a manifest"),
    "patches": ("pipeline.patches", "crop, filter, split and blur patches (the synthetic real domain)"),
    "train-fdc": ("pipeline.train_fdc", "train the frequency density comparator with a scale curriculum"),
    "train-generator": ("pipeline.train_generator", "train the adaptation generator (kernel estimator) against the FDC / spectral loss"),
    "degrade": ("pipeline.degrade", "degrade any folder of images with a trained generator"),
    "evaluate": ("pipeline.evaluate", "the referee: oracle kernel, density gaps, kernel error, SR trained three ways"),
    "report": ("pipeline.report", "figures and reports/README.md from the evaluation"),
    "compare": ("pipeline.compare", "run generator.loss = fdc / spectral / both as DVC experiments and compare them"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return (
        "usage: fca <command> [options]\n\n"
        "Frequency Consistent Adaptation pipeline stages (run them all with `dvc repro` or `snakemake --cores N`).\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`fca <command> --help` explains each command's options.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fca: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
