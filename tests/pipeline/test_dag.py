"""dvc.yaml is the one graph: the Snakefile must see the same commands, inputs and outputs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.dag import load_stages, param_values

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
                assert [str(i) for i in r.input] == list(st.deps), st.name
                assert [str(o) for o in r.output] == list(st.outs), st.name
                assert r.params.cmd == st.cmd, st.name
                assert [str(l) for l in r.log] == [f"logs/{st.name}.log"]
    finally:
        os.chdir(cwd)


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
