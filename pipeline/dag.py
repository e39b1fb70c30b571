"""Read the stage graph from dvc.yaml, for the Snakefile and the tests.

dvc.yaml is the one description of the stages; the Snakefile builds a rule per
stage from what this module returns, so DVC and Snakemake cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
    # The deps as Snakemake inputs: a source folder (a dep no stage writes, e.g. kernels/) is
    # replaced by the files in it. DVC hashes a folder's contents; Snakemake only compares a
    # folder's own mtime, which editing a file inside does not change, so it gets the files.
    inputs: tuple[str, ...] = ()
    # CPU threads the command runs with: its `--threads N` (the numbers of a CPU run depend on
    # the count, so it is part of the command both engines run); 1 for a command without it.
    # The Snakefile declares it as the rule's `threads:`.
    threads: int = 1

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
    root = Path(dvc_yaml).parent
    written = {o for s in data["stages"].values() for o in _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots"))}
    stages = []
    for name, s in data["stages"].items():
        params = []
        for p in s.get("params", []):
            if not isinstance(p, str):
                raise ValueError(f"{dvc_yaml}: stage {name}: only params from params.yaml are supported, got {p!r}")
            params.append(p)
        outs = _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots"))
        cmd = " ".join(s["cmd"].split()) if isinstance(s["cmd"], str) else " && ".join(s["cmd"])
        deps = tuple(str(d) for d in s.get("deps", []))
        inputs = tuple(i for d in deps for i in (_files_in(root, d) if d not in written else [d]))
        stages.append(Stage(name, cmd, deps, tuple(outs), tuple(params), inputs, command_threads(cmd)))
    return stages


def command_threads(cmd: str) -> int:
    """The `--threads N` (or `--threads=N`) of a stage command; 1 when it has none or N is 0
    (automatic: the stage then takes what the engine grants, OMP_NUM_THREADS under Snakemake)."""
    words = shlex.split(cmd)
    found = None
    for i, w in enumerate(words):
        if w == "--threads" and i + 1 < len(words):
            found = words[i + 1]
        elif w.startswith("--threads="):
            found = w.split("=", 1)[1]
    if found is None:
        return 1
    try:
        n = int(found)
    except ValueError:
        raise ValueError(f"stage command {cmd!r}: --threads {found!r} is not a whole number") from None
    if n < 0:
        raise ValueError(f"stage command {cmd!r}: --threads {n} must be >= 0")
    return n or 1


def _files_in(root: Path, dep: str) -> list[str]:
    """A source dep as Snakemake inputs: the files under it if it is a non-empty folder, else itself."""
    folder = root / dep
    if not folder.is_dir():
        return [dep]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [f"{dep.rstrip('/')}/{f}" for f in files] or [dep]


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


# Where the Snakefile keeps one params stamp per stage (git- and DVC-ignored; not a DVC dep).
STAMPS = ".fca/params"
# YAML 1.2 floats PyYAML reads as strings (`1e-3`): compared as numbers with dvc.lock's values.
_FLOAT_TEXT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def stamp_path(name: str) -> str:
    """The params stamp of stage `name`, relative to the project root."""
    return f"{STAMPS}/{name}.json"


def params_stamp(stage: Stage, params_yaml: str | Path = "params.yaml", dvc_lock: str | Path = "dvc.lock",
                 root: str | Path = ".") -> str:
    """Write the stage's params stamp if its content changed; return its path (a rule input).

    The stamp holds the values of exactly the params the stage declares. Snakemake compares
    mtimes, so a changed param that rewrites the stamp makes it newer than the stage's outputs
    and Snakemake re-runs the rule and everything downstream, whoever built the outputs (its
    own params trigger needs its metadata, which outputs built by `dvc repro` lack). An
    unchanged stamp is never touched. A new or changed stamp gets an mtime older than the
    stage's outputs when DVC made those outputs with exactly these values: dvc.lock records
    them for the stage and no output is newer than dvc.lock (a later Snakemake run or a manual
    edit would be). Else it is new, and the stage re-runs.
    """
    root = Path(root)
    rel = stamp_path(stage.name)
    stamp = root / rel
    values = param_values(root / params_yaml, stage.params)
    content = values + "\n"
    try:
        if stamp.read_text() == content:
            return rel
    except OSError:
        pass
    made = _dvc_made(stage, json.loads(values), root / dvc_lock, root)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(content)
    if made is not None:
        os.utime(tmp, (made, made))
    os.replace(tmp, stamp)
    return rel


def _dvc_made(stage: Stage, values: dict[str, Any], dvc_lock: Path, root: Path) -> float | None:
    """An mtime older than the stage's outputs if dvc.lock says DVC made them with `values`
    (the same value for every declared param, and no output newer than dvc.lock); else None."""
    try:
        lock_mtime = dvc_lock.stat().st_mtime
        lock = yaml.safe_load(dvc_lock.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    entry = (lock.get("stages") or {}).get(stage.name) or {}
    locked = (entry.get("params") or {}).get("params.yaml") or {}
    if any(k not in locked or _numbers(locked[k]) != _numbers(v) for k, v in values.items()):
        return None
    times = [t for out in stage.outs for t in _mtimes(root / out)]
    if not stage.outs or None in times or max(times) > lock_mtime:
        return None
    return min(times) - 1.0


def _mtimes(path: Path) -> list[float | None]:
    """mtimes of a path (and of its target if a link) and of all under it if a folder; None if missing."""
    try:
        times = [path.lstat().st_mtime, path.stat().st_mtime]
    except OSError:
        return [None]
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                try:
                    times.append(os.lstat(os.path.join(dirpath, n)).st_mtime)
                except OSError:
                    return [None]
    return times


# Words YAML 1.1 (PyYAML) reads as booleans and YAML 1.2 (DVC's ruamel) writes unquoted as strings:
# params.yaml's quoted "off" is dvc.lock's plain `off`, which PyYAML reads back as False.
_YAML11_BOOLS = {"on": True, "yes": True, "y": True, "true": True, "off": False, "no": False, "n": False, "false": False}


def _numbers(value: Any) -> Any:
    """`value` with number-like strings as floats, ints as floats and YAML 1.1 boolean words as
    booleans, to compare the readings of params.yaml and dvc.lock."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value):
        return float(value)
    if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
        return _YAML11_BOOLS[value.lower()]
    return value
