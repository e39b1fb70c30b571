"""The Slurm profile: its per-rule resources (always), and the tiny pipeline run through a
real Slurm cluster (when one answers; `bash .ci/slurm.sh` starts one on localhost).

Set FCA_REQUIRE_SLURM=1 (CI does) to fail instead of skip when no cluster answers.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engines_e2e import BIN, EXPECTED_STAGES, ROOT, _env, check_outputs, checkout  # noqa: E402

PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
LOCALHOST = ROOT / "profiles" / "slurm-localhost" / "config.yaml"
GPU_RULES = {"train_fdc", "train_generator", "evaluate", "train_sr"}


def _set_resources() -> dict[str, dict]:
    return yaml.safe_load(PROFILE.read_text())["set-resources"]


def _resources_by_rule(dry_run_output: str) -> dict[str, dict[str, str]]:
    """`rule NAME:` ... `resources: k=v, ...` blocks of `snakemake -n` output."""
    found = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        name = re.match(r"(?:local)?rule (\w+):", block.strip())
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if name and res:
            found[name.group(1)] = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
    return found


def test_profile_covers_every_stage_and_asks_gpus_only_for_training():
    from pipeline.dag import load_stages

    stages = {s.name for s in load_stages(ROOT / "dvc.yaml")}
    table = _set_resources()
    assert set(table) == stages, "profiles/slurm set-resources must name exactly the stages of dvc.yaml"
    assert {r for r, res in table.items() if res.get("gpu")} == GPU_RULES
    for rule, res in table.items():
        assert res["mem_mb"] > 0 and res["runtime"] > 0 and res["cpus_per_task"] >= 1, rule
    # The localhost layer must not touch the resources: CI tests them as written.
    assert not {"set-resources", "default-resources", "resources"} & set(yaml.safe_load(LOCALHOST.read_text()))


def test_profile_dry_run_shows_per_rule_resources(tmp_path):
    """`snakemake --profile profiles/slurm -n` on the repo: needs the plugin, not Slurm."""
    env = _env(tmp_path)
    out = subprocess.run([str(BIN / "snakemake"), "--profile", "profiles/slurm", "-n", "--forceall"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    seen = _resources_by_rule(text)
    for rule, want in _set_resources().items():
        assert rule in seen, f"no job for {rule} in the dry run:\n{text[-4000:]}"
        for key, value in want.items():
            assert seen[rule].get(key) == str(value), (rule, key, seen[rule])
        assert ("gpu" in seen[rule]) == (rule in GPU_RULES), (rule, seen[rule])


def _cluster_problem() -> str | None:
    """Why no Slurm job can run here, or None."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (no Slurm client; `bash .ci/slurm.sh` installs a one-node cluster)"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s (slurmctld down?)"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    if not re.search(r"\b(idle|mixed|allocated)\b", out.stdout):
        return f"no Slurm node is up: {out.stdout.strip()!r}"
    return None


@pytest.fixture
def slurm_cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("FCA_REQUIRE_SLURM") == "1":
            pytest.fail(f"FCA_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


def _slurm_jobs(ids: list[str]) -> dict[str, dict[str, str]]:
    """State, comment (rule_<name>), GPUs and memory of finished jobs, as Slurm reports them.

    squeue lists finished jobs for MinJobAge (600 s on the .ci/slurm.sh cluster); jobs
    it has forgotten are looked up in sacct where accounting is set up.
    """
    found = {}
    fields = "JobID:|,State:|,Comment:|,tres-per-job:|,MinMemory:"
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--jobs", ",".join(ids), "-O", fields],
                         capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        job, state, comment, tres, mem = (c.strip() for c in line.split("|"))
        found[job] = {"state": state, "comment": comment, "gpus": tres, "mem": mem}
    missing = [i for i in ids if i not in found]
    if missing:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(missing), "-o", "JobIDRaw,State,Comment,ReqTRES"],
                             capture_output=True, text=True, timeout=30)
        for line in out.stdout.splitlines():
            job, state, comment, tres = line.split("|")
            gpus = re.search(r"gres/gpu=(\d+)", tres)
            mem = re.search(r"mem=(\w+)", tres)
            found[job] = {"state": state, "comment": comment, "gpus": f"gres:gpu:{gpus.group(1)}" if gpus else "",
                          "mem": mem.group(1) if mem else ""}
    return found


@pytest.mark.slow
def test_slurm_runs_the_tiny_pipeline(tmp_path, slurm_cluster):
    repo = checkout(tmp_path)
    env = _env(tmp_path)
    env.update(OMP_NUM_THREADS="1", FCA_TRACKING="off")  # tracking: tests/test_engines_e2e.py; here the jobs
    cmd = [str(BIN / "snakemake"), "--profile", "profiles/slurm", "--profile", "profiles/slurm-localhost"]
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{text[-8000:]}"

    # Every stage ran and wrote what the rest of the pipeline reads.
    for name in EXPECTED_STAGES:
        assert (repo / "logs" / f"{name}.log").is_file(), name
    check_outputs(repo)

    # ... each as its own Slurm job: a job id per stage in Snakemake's output, the job's
    # Slurm log file, and Slurm's own record of it.
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", text))
    assert len(submitted) == len(EXPECTED_STAGES), text[-8000:]
    ids = list(submitted.values())
    logs = {p.parent.name.removeprefix("rule_"): p.stem for p in (repo / ".snakemake" / "slurm_logs").glob("rule_*/*.log")}
    assert set(logs) == set(EXPECTED_STAGES) and sorted(logs.values()) == sorted(ids), (logs, ids)

    jobs = _slurm_jobs(ids)
    assert set(jobs) == set(ids), f"Slurm does not know jobs {set(ids) - set(jobs)}"
    by_rule = {job["comment"].removeprefix("rule_"): job for job in jobs.values()}
    assert set(by_rule) == set(EXPECTED_STAGES), jobs
    table = _set_resources()
    for rule, job in by_rule.items():
        assert job["state"] == "COMPLETED", (rule, job)
        assert ("gpu:1" in job["gpus"]) == (rule in GPU_RULES), (rule, job)  # --gpus=1 reached Slurm
        assert job["mem"] in (f"{table[rule]['mem_mb']}M", f"{table[rule]['mem_mb']}"), (rule, job)
