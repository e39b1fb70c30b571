"""Read the stage graph from dvc.yaml, for the Snakefile and the tests.

dvc.yaml is the one description of the stages; the Snakefile builds a rule per
stage from what this module returns, so DVC and Snakemake cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots: every file or folder the stage writes
    params: tuple[str, ...]  # dotted keys or whole sections of params.yaml

    def is_dir(self, path: str) -> bool:
        """Outputs without a file suffix are folders (Snakemake needs to know: directory())."""
        return Path(path).suffix == ""


def _paths(entries: list[Any] | None) -> list[str]:
    """dvc.yaml out/metric/plot entries (a path, or {path: options}) -> paths."""
    out = []
    for e in entries or []:
        out.extend(e.keys() if isinstance(e, dict) else [e])
    return [str(p) for p in out]


def load_stages(dvc_yaml: str | Path = "dvc.yaml") -> list[Stage]:
    """Stages of dvc.yaml in file order (which is also a valid run order here)."""
    data = yaml.safe_load(Path(dvc_yaml).read_text())
    stages = []
    for name, s in data["stages"].items():
        params = []
        for p in s.get("params", []):
            if not isinstance(p, str):
                raise ValueError(f"{dvc_yaml}: stage {name}: only params from params.yaml are supported, got {p!r}")
            params.append(p)
        outs = _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots"))
        cmd = " ".join(s["cmd"].split()) if isinstance(s["cmd"], str) else " && ".join(s["cmd"])
        stages.append(Stage(name, cmd, tuple(str(d) for d in s.get("deps", [])), tuple(outs), tuple(params)))
    return stages


def param_values(params_yaml: str | Path, keys: tuple[str, ...]) -> str:
    """The values of `keys` (sections or dotted keys) as canonical JSON.

    Snakemake re-runs a rule when its `params:` change, so this string makes a
    changed param re-run exactly the stages that declare it, as DVC does.
    """
    data = yaml.safe_load(Path(params_yaml).read_text())
    picked = {}
    for key in keys:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"{params_yaml}: key {key!r} (declared in dvc.yaml) is missing")
            node = node[part]
        picked[key] = node
    return json.dumps(picked, sort_keys=True)
