"""Run `fca` commands inside the test process: the command's own entry (`pipeline.cli.main`),
without the seconds of imports (torch, MLflow) that each fresh process pays."""

from __future__ import annotations

import os
from pathlib import Path


def fca_here(cwd: Path, argv: list[str], **env: str) -> None:
    """`fca ARGV` with `cwd` as the current folder and `env` set (a value None: unset), both
    restored afterwards; a non-zero exit fails the test (the command printed its error)."""
    from pipeline import cli

    old_env, old_cwd = {k: os.environ.get(k) for k in env}, Path.cwd()
    for k, v in env.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    os.chdir(cwd)
    try:
        code = cli.main(argv)
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert code == 0, f"fca {' '.join(argv)} exited {code} (its error is above)"
