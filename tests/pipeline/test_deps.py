"""Every stage of dvc.yaml lists all of its code as deps.

DVC (and Snakemake, whose rules pipeline/dag.py derives from dvc.yaml) re-runs a stage
only when a declared dep changes. A module the stage imports but does not declare can
change the stage's numbers without a re-run, and `dvc.lock` then pins outputs that the
code no longer makes. So for each stage:

- its entry module is found from its command: `fca <command>` runs the module that
  pipeline/cli.py's COMMANDS maps the command to (`fca train-fdc` -> pipeline/train_fdc.py);
- its code is the import closure of that module inside the project (modules under fca/
  and pipeline/), read statically with `ast`: every `import` and `from ... import`
  anywhere in a file (inside functions too), a `from package import name` where name is a
  submodule, relative imports, and `importlib.import_module("literal")`. Third-party
  modules are not followed. Package `__init__.py` files count when they hold code (more
  than a docstring and constants such as __version__);
- every file of the closure must be a dep, except those in RUNTIME_ONLY below (whose own
  imports are not followed either).

One edge is not followed: pipeline/params.py imports the config class of *every*
params.yaml section, because it validates the whole file before any stage starts. A stage
depends on the config modules (and their closures) of the sections it declares under
`params:` in dvc.yaml; another section's config module only decides whether params.yaml
validates, never what this stage computes, and following it would make every stage
depend on all of fca/ (any edit would re-run download). The stage's own config module is
always in its closure anyway, through the stage's own imports.

A kernel file for `patches.blur.type: file` is data, not code: it must lie in kernels/,
which the patches stage declares as a dep (checked here and by pipeline/params.py).
"""

from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from pipeline.cli import COMMANDS
from pipeline.dag import load_stages
from pipeline.params import KERNELS_DIR, SECTIONS, ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fca", "pipeline")

# Code every stage runs that cannot change any stage's outputs; keep this tiny, one reason each.
RUNTIME_ONLY: dict[str, str] = {
    # Sends params, metrics and artifacts to MLflow; it never
    # writes a stage's outputs, and FCA_TRACKING=off runs give the same files.
    "pipeline/tracking.py": "MLflow logging only",
}


def module_file(name: str) -> Path | None:
    """The project file of dotted module `name` (a .py file or a package's __init__.py), else None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def imported_modules(path: Path) -> tuple[str, ...]:
    """Project modules that the file at `path` imports (anywhere in it), as dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found += _with_parents(base)
            for alias in node.names:  # `from pkg import submodule`
                if module_file(f"{base}.{alias.name}") is not None:
                    found.append(f"{base}.{alias.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found += _with_parents(node.args[0].value)
    return tuple(dict.fromkeys(m for m in found if module_file(m) is not None))


def holds_code(path: Path) -> bool:
    """Whether a package __init__.py does more than carry a docstring and constants."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            continue  # __version__ = "..."
        return True
    return False


def skipped_edges(declared_sections: set[str]) -> set[tuple[str, str]]:
    """(importer, imported) edges not followed: params.py -> config modules of undeclared sections."""
    return {("pipeline.params", cls.__module__) for name, cls in SECTIONS.items() if name not in declared_sections}


def code_closure(entry: str, declared_sections: set[str]) -> set[str]:
    """Repo-relative paths of the project files that module `entry` runs (see the module docstring)."""
    skip = skipped_edges(declared_sections)
    seen: set[str] = set()
    todo = _with_parents(entry)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        assert path is not None, f"{name}: no such module under {ROOT}"
        if path.relative_to(ROOT).as_posix() in RUNTIME_ONLY:
            continue  # what it imports serves it alone, unless the stage reaches it another way
        todo += [m for m in imported_modules(path) if (name, m) not in skip]
    files = set()
    for name in seen:
        path = module_file(name)
        if path.name == "__init__.py" and not holds_code(path):
            continue
        files.add(path.relative_to(ROOT).as_posix())
    return files


def entry_module(cmd: str) -> str:
    """`fca <command> ...` -> the module pipeline/cli.py runs for it."""
    words = shlex.split(cmd)
    assert words[0] == "fca" and len(words) > 1, f"stage command {cmd!r} does not start with `fca <command>`"
    assert words[1] in COMMANDS, f"stage command {cmd!r}: {words[1]!r} is not one of pipeline/cli.py's COMMANDS"
    return COMMANDS[words[1]][0]


STAGES = {st.name: st for st in load_stages(ROOT / "dvc.yaml")}


def required_code(stage_name: str) -> set[str]:
    st = STAGES[stage_name]
    return code_closure(entry_module(st.cmd), {p.split(".")[0] for p in st.params}) - set(RUNTIME_ONLY)


@pytest.mark.parametrize("stage_name", list(STAGES))
def test_stage_deps_hold_its_whole_import_closure(stage_name):
    missing = sorted(required_code(stage_name) - set(STAGES[stage_name].deps))
    assert not missing, (
        f"dvc.yaml stage {stage_name!r} runs code it does not list as deps; add to its deps:\n  - "
        + "\n  - ".join(missing)
    )


@pytest.mark.parametrize("stage_name", list(STAGES))
def test_stage_lists_no_code_it_does_not_run(stage_name):
    """A .py dep the stage no longer imports re-runs it for nothing: keep the lists exact."""
    code = {d for d in STAGES[stage_name].deps if d.endswith(".py") and d.split("/")[0] in PACKAGES}
    stale = sorted(code - required_code(stage_name) - set(RUNTIME_ONLY))
    assert not stale, f"dvc.yaml stage {stage_name!r} lists code outside its import closure: {', '.join(stale)}"


def test_patches_depends_on_the_kernels_folder():
    """`patches.blur.type: file` kernels live in kernels/ (pipeline/params.py refuses others), a dep of patches."""
    assert KERNELS_DIR in STAGES["patches"].deps
    assert (ROOT / KERNELS_DIR / "README.md").is_file()  # tracked in git, so the folder exists in every clone
    # Snakemake gets the folder's files (a folder's own mtime misses an edited file).
    assert f"{KERNELS_DIR}/README.md" in STAGES["patches"].inputs and KERNELS_DIR not in STAGES["patches"].inputs


@pytest.mark.parametrize("path", ["kernels/motion.npy", "./kernels/motion.npy", "kernels/sets/a.npy"])
def test_a_kernel_file_inside_kernels_is_accepted(path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["patches"]["blur"] = {"type": "file", "path": path}
    assert parse_params(raw).patches.blur.path == path


@pytest.mark.parametrize("path", ["/tmp/k.npy", "k.npy", "data/k.npy", "kernels/../k.npy", "kernels"])
def test_a_kernel_file_outside_kernels_is_refused_by_name(path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["patches"]["blur"] = {"type": "file", "path": path}
    with pytest.raises(ParamsError, match=rf"patches\.blur\.path = '{re.escape(path)}': a kernel file must be inside kernels/"):
        parse_params(raw)


def test_the_closure_follows_every_kind_of_import():
    """The reader itself: function-level imports, `from package import submodule`, and the params.py rule."""
    stage_py = set(imported_modules(ROOT / "pipeline" / "stage.py"))
    assert {"pipeline.params", "pipeline.tracking", "fca.train.hardware", "fca.distributed"} <= stage_py
    closure = code_closure("pipeline.download", {"download"})
    assert {"pipeline/download.py", "pipeline/params.py", "pipeline/stage.py", "fca/data/download.py", "fca/config.py"} <= closure
    assert "fca/train/generator.py" not in closure  # params.py -> GeneratorConfig is not download's code
    assert "fca/train/generator.py" in code_closure("pipeline.download", {"download", "generator"})


def test_a_removed_dep_is_reported(monkeypatch):
    """The check has teeth: take one closure file out of a stage's deps and it names that file."""
    from dataclasses import replace

    st = STAGES["evaluate"]
    monkeypatch.setitem(STAGES, "evaluate", replace(st, deps=tuple(d for d in st.deps if d != "fca/oracle.py")))
    with pytest.raises(AssertionError, match=r"(?s)add to its deps:.*fca/oracle\.py"):
        test_stage_deps_hold_its_whole_import_closure("evaluate")
