"""dvc.yaml is the one graph: the Snakefile must see the same commands, inputs and outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.dag import command_threads, load_stages, param_values, params_stamp, stamp_path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_every_stage_declares_its_code_and_params_that_exist():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for st in load_stages(ROOT / "dvc.yaml"):
        module = f"pipeline/{st.name}.py"
        assert module in st.deps, f"stage {st.name} must depend on its own code {module}"
        for dep in st.deps:
            if dep.endswith(".py"):
                assert (ROOT / dep).is_file(), f"stage {st.name}: dep {dep} does not exist"
        param_values(ROOT / "params.yaml", st.params)  # raises on a key that is not in params.yaml
        assert st.params, f"stage {st.name} reads no params?"
        for p in st.params:
            assert p.split(".")[0] in params


def test_snakemake_rules_equal_dvc_stages():
    """Load the Snakefile through Snakemake's own API and compare each rule with its DVC stage."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ResourceSettings

    os.environ.setdefault("XDG_CACHE_HOME", str(ROOT / ".cache"))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with SnakemakeApi() as api:
            wf = api.workflow(snakefile=ROOT / "Snakefile", resource_settings=ResourceSettings(cores=1))
            rules = {r.name: r for r in wf._workflow.rules}
            stages = load_stages(ROOT / "dvc.yaml")
            assert set(rules) - {"all"} == {s.name for s in stages}
            for st in stages:
                r = rules[st.name]
                # the deps, then the params stamp (Snakemake only: not in dvc.yaml, DVC-ignored)
                assert [str(i) for i in r.input] == [*st.inputs, stamp_path(st.name)], st.name
                assert [str(o) for o in r.output] == list(st.outs), st.name
                assert r.params.cmd == st.cmd, st.name
                assert [str(l) for l in r.log] == [f"logs/{st.name}.log"]
                assert r.resources["_cores"].value == st.threads, st.name  # the rule's `threads:`
    finally:
        os.chdir(cwd)


def test_snakemake_inputs_are_the_deps_with_source_folders_as_their_files(tmp_path):
    """A dep no stage writes that is a folder (kernels/) becomes its files for Snakemake, which
    compares mtimes and would not see a file edited inside a folder; everything else is as in dvc.yaml."""
    (tmp_path / "kernels" / "sub").mkdir(parents=True)
    for f in ("README.md", "b.npy", "sub/a.npy"):
        (tmp_path / "kernels" / f).write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "make": {"cmd": "fca make", "deps": ["code.py"], "params": ["p"], "outs": ["data/made"]},
        "use": {"cmd": "fca use", "deps": ["code.py", "kernels", "empty", "data/made"], "params": ["p"], "outs": ["out"]},
    }}))  # fmt: skip
    (tmp_path / "data" / "made").mkdir(parents=True)  # a folder some stage writes stays one input
    use = load_stages(tmp_path / "dvc.yaml")[1]
    assert use.deps == ("code.py", "kernels", "empty", "data/made")
    assert use.inputs == ("code.py", "kernels/README.md", "kernels/b.npy", "kernels/sub/a.npy", "empty", "data/made")


def test_stages_that_use_torch_name_their_threads_and_the_rules_declare_them():
    """A CPU run's numbers depend on torch's thread count, so every stage that takes --threads
    (the torch stages: stage.add_device) fixes it in its dvc.yaml command, which both engines
    run; the Snakefile's `threads:` is the same number (checked through Snakemake above)."""
    from pipeline.cli import COMMANDS

    for st in load_stages(ROOT / "dvc.yaml"):
        module = COMMANDS[st.cmd.split()[1]][0]
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        if "stage.add_device(" in source:
            assert "--threads" in st.cmd.split(), f"stage {st.name}: its command must fix --threads N: {st.cmd}"
            assert st.threads >= 1
        else:
            assert st.threads == 1, st.name


def test_snakemake_rule_threads_come_from_the_command(tmp_path):
    """Through Snakemake's own parser: `--threads 2` in a dvc.yaml command is the rule's
    `threads: 2`, so `snakemake --cores 2` runs no other job beside it."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ResourceSettings

    (tmp_path / "Snakefile").write_text((ROOT / "Snakefile").read_text())
    (tmp_path / "params.yaml").write_text("p: 1\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "two": {"cmd": "fca train-fdc --threads 2", "params": ["p"], "outs": ["a.txt"]},
        "auto": {"cmd": "fca degrade --threads 0", "params": ["p"], "outs": ["b.txt"]},
        "plain": {"cmd": "fca report", "params": ["p"], "outs": ["c.txt"]},
    }}))  # fmt: skip
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with SnakemakeApi() as api:
            wf = api.workflow(snakefile=tmp_path / "Snakefile", resource_settings=ResourceSettings(cores=4))
            threads = {r.name: r.resources["_cores"].value for r in wf._workflow.rules}
    finally:
        os.chdir(cwd)
    assert threads == {"all": 1, "two": 2, "auto": 1, "plain": 1}


def test_params_stamp_moves_only_on_a_change_and_is_old_where_dvc_made_the_outputs(tmp_path):
    """The Snakefile's input .fca/params/<stage>.json: rewritten only when the declared params'
    values change (then newer than the outputs: Snakemake re-runs by mtime, whoever built them),
    and older than the outputs when dvc.lock records these values for outputs DVC made."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "s": {"cmd": "fca s", "params": ["a", "b.c"], "outs": ["out.txt", "outdir"]},
    }}))  # fmt: skip
    (tmp_path / "outdir").mkdir()
    (tmp_path / "out.txt").write_text("x")
    (tmp_path / "outdir" / "x").write_text("x")
    for f in ("out.txt", "outdir/x", "outdir"):
        os.utime(tmp_path / f, (1000, 1000))
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"s": {"cmd": "fca s", "params": {
        "params.yaml": {"a": 1, "b.c": 0.001}}}}}))  # fmt: skip
    os.utime(lock, (2000, 2000))
    stage = load_stages(tmp_path / "dvc.yaml")[0]

    def stamp(params: str) -> float:
        (tmp_path / "params.yaml").write_text(params)
        rel = params_stamp(stage, root=tmp_path)
        assert rel == stamp_path("s") == ".fca/params/s.json"
        return (tmp_path / rel).stat().st_mtime

    # New, with dvc.lock's values (`1.0e-3` read as 0.001): older than the outputs.
    assert stamp("a: 1\nb: {c: 1.0e-3, d: 5}\n") < 1000
    assert json.loads((tmp_path / stamp_path("s")).read_text()) == {"a": 1, "b.c": 0.001}
    assert stamp("a: 1\nb: {c: 1e-3, d: 6}\n") < 1000  # an undeclared key: the stamp is not touched
    changed = stamp("a: 1\nb: {c: 2.0e-3, d: 6}\n")
    assert changed > 2000  # a changed param: newer than the outputs
    assert stamp("a: 1\nb: {c: 2.0e-3, d: 6}\n") == changed  # the same values: not touched
    assert stamp("a: 1\nb: {c: 1.0e-3, d: 6}\n") < 1000  # back to what DVC made them with
    # An output newer than dvc.lock (a Snakemake run, an edit): DVC's values no longer vouch for it.
    os.utime(tmp_path / "outdir" / "x", (3000, 3000))
    assert stamp("a: 2\nb: {c: 1.0e-3}\n") > 3000
    assert stamp("a: 1\nb: {c: 1.0e-3}\n") > 3000
    os.utime(tmp_path / "outdir" / "x", (1000, 1000))
    assert stamp("a: 2\nb: {c: 1.0e-3}\n") > 3000
    assert stamp("a: 1\nb: {c: 1.0e-3}\n") < 1000
    (tmp_path / "outdir" / "x").unlink()  # a missing output
    assert stamp("a: 2\nb: {c: 1.0e-3}\n") > 3000
    assert stamp("a: 1\nb: {c: 1.0e-3}\n") > 3000
    (tmp_path / "outdir" / "x").write_text("x")
    os.utime(tmp_path / "outdir" / "x", (1000, 1000))
    os.utime(tmp_path / "outdir", (1000, 1000))
    lock.unlink()  # no dvc.lock
    assert stamp("a: 2\nb: {c: 1.0e-3}\n") > 3000
    assert stamp("a: 1\nb: {c: 1.0e-3}\n") > 3000
    assert not list((tmp_path / ".fca" / "params").glob(".*"))  # no temporary file left


def test_command_threads():
    assert command_threads("fca evaluate --out x") == 1
    assert command_threads("fca evaluate --threads 3 --out x") == 3
    assert command_threads("fca evaluate --threads=2") == 2
    assert command_threads("fca evaluate --threads 0") == 1  # automatic: whatever the engine grants
    with pytest.raises(ValueError, match="--threads 'two'"):
        command_threads("fca evaluate --threads two")


def test_dvc_sees_the_same_graph():
    """DVC's own parse of dvc.yaml gives the commands, deps and outs pipeline.dag reads."""
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    try:
        dvc_stages = {s.name: s for s in repo.index.stages}
        for st in load_stages(ROOT / "dvc.yaml"):
            s = dvc_stages[st.name]
            assert " ".join(s.cmd.split()) == st.cmd
            assert sorted(d.def_path for d in s.deps if not hasattr(d, "params")) == sorted(st.deps)
            assert sorted(o.def_path for o in s.outs) == sorted(st.outs)
    finally:
        repo.close()


def test_snakemake_lint_is_clean():
    env = dict(os.environ, XDG_CACHE_HOME=str(ROOT / ".cache"))
    out = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Lints for" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_a_quoted_off_in_params_matches_dvc_locks_plain_off(tmp_path):
    """params.yaml's `cpu_bf16: "off"` (a string to PyYAML) is written by DVC (YAML 1.2) as a plain
    `off`, which PyYAML reads back as False: the same value, so the stamp stays older than DVC's outputs."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "fca s", "params": ["g"], "outs": ["out.txt"]}}}))
    (tmp_path / "out.txt").write_text("x")
    os.utime(tmp_path / "out.txt", (1000, 1000))
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  s:\n    cmd: fca s\n    params:\n      params.yaml:\n"
                                       "        g:\n          cpu_bf16: off\n")
    os.utime(tmp_path / "dvc.lock", (2000, 2000))
    (tmp_path / "params.yaml").write_text('g:\n  cpu_bf16: "off"\n')
    rel = params_stamp(load_stages(tmp_path / "dvc.yaml")[0], root=tmp_path)
    assert (tmp_path / rel).stat().st_mtime < 1000
    (tmp_path / "params.yaml").write_text('g:\n  cpu_bf16: "on"\n')  # a real change still moves it
    assert (tmp_path / params_stamp(load_stages(tmp_path / "dvc.yaml")[0], root=tmp_path)).stat().st_mtime > 2000
