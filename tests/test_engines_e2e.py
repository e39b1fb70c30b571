"""The whole graph on tiny params under both engines, each in its own temporary git checkout."""

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPECTED_STAGES = ["download", "patches", "train_fdc", "train_generator", "degrade", "evaluate", "train_sr", "report"]
# What each engine's first run produced (numbers_of), compared by the last test.
RESULTS: dict[str, dict[str, str]] = {}


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DVC_NO_ANALYTICS="1", FCA_PROGRESS="off", XDG_CACHE_HOME=str(tmp / "xdg"),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
    )
    env.pop("FCA_TRACKING", None)
    env.pop("FCA_PIPELINE_ID", None)
    # No thread settings from outside: as in CI and on a user's machine, DVC runs the stages with
    # none and Snakemake with OMP_NUM_THREADS = the rule's threads. dvc.yaml's --threads must be
    # enough for both engines to compute the same bits (test_both_engines_give_the_same_numbers).
    for var in ("FCA_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(var, None)
    return env


def checkout(tmp: Path) -> Path:
    """A fresh git repo holding the project's files (what a clone has), with the tiny params."""
    repo = tmp / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("reports/", "dvc.lock")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    shutil.copy(ROOT / "tests" / "params_tiny.yaml", repo / "params.yaml")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=repo, check=True, env=_env(tmp), capture_output=True)
    return repo


def run(cmd: list[str], repo: Path, tmp: Path, timeout: int = 900, **extra_env: str) -> str:
    out = subprocess.run(cmd, cwd=repo, env=_env(tmp) | extra_env, capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{text[-6000:]}"
    return text


def check_outputs(repo: Path) -> dict:
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    for key in ("gap_bicubic", "gap_ours", "gap_reduction"):
        assert key in metrics["density"]
    for key in ("cov_rel_error", "sigma_pred", "sigma_oracle", "lr_psnr_bicubic", "lr_psnr_ours", "lr_psnr_oracle"):
        assert key in metrics["kernel"]
    for key in ("psnr_bicubic", "psnr_ours", "psnr_oracle", "ssim_bicubic", "ssim_ours", "ssim_oracle", "gain_fraction"):
        assert key in metrics["sr"]
    # One metrics file per purpose: the FDC's accuracies are train-fdc's, not copied into metrics.json.
    assert "fdc" not in metrics
    fdc = json.loads((repo / "reports" / "fdc.json").read_text())
    assert {"acc_s3.5", "acc_s2.0", "acc_s1.2"} <= set(fdc)
    for fig in ("density", "kernels", "crops", "training", "degraded"):
        assert (repo / "reports" / "figures" / f"{fig}.png").stat().st_size > 1000
    page = (repo / "reports" / "README.md").read_text()
    assert "## Verdict" in page and " checks pass" in page
    # The header names what made the numbers: tests/params_tiny.yaml pins fp32 on every CPU.
    assert "generator precision: fp32" in page and "| CPU: " in page and "| threads: 1 |" in page
    assert f"(`fdc.acc_s1.2`) | {fdc['acc_s1.2']:.3f} [{fdc['acc_s1.2_lo']:.3f}, " in page  # the report reads reports/fdc.json
    return metrics | {"fdc": fdc}


def assert_referee(metrics: dict) -> None:
    """The referee at tiny scale, with margins a broken model fails.

    A kernel applied element-wise (the seed reproduction's mistake) or no kernel at all
    leaves G(R) at down(R): no density gain, no LR PSNR gain. FDC targets all +1 (the
    seed's other mistake) make the comparator call upscaled crops denser, so its
    ordering accuracy drops to chance or below.
    """
    d, k, fdc = metrics["density"], metrics["kernel"], metrics["fdc"]
    assert d["gap_ours"] < 0.6 * d["gap_bicubic"], d
    assert k["lr_psnr_ours"] > k["lr_psnr_bicubic"] + 1.0, k
    init_sigma = 0.8  # generator.kernel_init_sigma in tests/params_tiny.yaml
    assert abs(k["sigma_pred"] - k["sigma_oracle"]) < 0.5 * abs(init_sigma - k["sigma_oracle"]), k
    assert fdc["acc_s3.5"] > 0.75, fdc


def _tensors(obj, prefix: str = ""):
    """(key path, tensor) for every tensor in a loaded checkpoint, in a fixed order."""
    import torch

    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


def numbers_of(repo: Path) -> dict[str, str]:
    """sha256 of the metrics files' bytes and of every tensor in the model files (the weights
    and their records; the training state stays in the checkpoints a finished stage deletes)."""
    import torch

    out = {f: hashlib.sha256((repo / f).read_bytes()).hexdigest() for f in ("reports/metrics.json", "reports/fdc.json")}
    for f in ("models/fdc.pt", "models/generator.pt"):
        state = torch.load(repo / f, map_location="cpu", weights_only=True)
        assert state["runtime"]["threads"] == 1, state["runtime"]  # dvc.yaml's --threads 1, recorded
        for key, t in _tensors(state):
            out[f"{f}:{key}"] = hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
    assert json.loads((repo / "data" / "evaluation" / "runtime.json").read_text())["threads"] == 1
    return out


def cached_outs(repo: Path) -> list[str]:
    """The outs DVC caches (and so pushes), by DVC's own parse of dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return sorted(o.def_path for s in r.index.stages for o in s.outs if o.use_cache)


def snapshot(repo: Path, paths: list[str]) -> dict[str, str]:
    """Every file under `paths` -> its sha256, every folder -> "dir" (empty ones count)."""
    out = {}
    for rel in paths:
        top = repo / rel
        assert top.exists(), rel
        for p in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            key = p.relative_to(repo).as_posix()
            out[key] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def objects(store: Path) -> set[str]:
    """The content-addressed objects of a DVC cache or local remote (files/md5/xx/yyy...)."""
    return {p.relative_to(store).as_posix() for p in (store / "files" / "md5").rglob("*") if p.is_file()}


def remote_round_trip(repo: Path, tmp: Path) -> None:
    """Push everything to a local-directory remote, lose the cache and outs, pull: all back, nothing to run."""
    dvc = str(BIN / "dvc")
    remote = tmp / "remote"
    run([dvc, "remote", "add", "-d", "local", str(remote)], repo, tmp)
    outs = cached_outs(repo)
    # The trained models are the checkpoints worth sharing: the resumable ones in checkpoints/
    # are deleted when training finishes (and persist outs would lose DVC's run cache).
    assert {"data/raw", "data/patches", "models/fdc.pt", "models/generator.pt"} <= set(outs), outs
    before = snapshot(repo, outs)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    locked = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] in outs}
    assert set(locked) == set(outs), locked

    # What the remote must hold: each out's object and, for a folder, its .dir listing's files.
    # (Not the whole cache: the run-cache also keeps the cache: false metrics and plots.)
    wanted = set(locked.values())
    for md5 in locked.values():
        if md5.endswith(".dir"):
            listing = json.loads((repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_text())
            wanted |= {e["md5"] for e in listing}
    pushed = run([dvc, "push"], repo, tmp)
    assert objects(remote) == {f"files/md5/{m[:2]}/{m[2:]}" for m in wanted}, pushed
    assert f"{len(wanted)} files pushed" in pushed, pushed

    shutil.rmtree(repo / ".dvc" / "cache")
    for rel in outs:
        target = repo / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    status = run([dvc, "status"], repo, tmp)
    assert "deleted:" in status and "up to date" not in status, status

    run([dvc, "pull"], repo, tmp)
    assert snapshot(repo, outs) == before
    assert "Running stage" not in run([dvc, "repro"], repo, tmp)
    assert "Data and pipelines are up to date." in run([dvc, "status"], repo, tmp)


def snakemake_jobs(repo: Path, tmp: Path) -> set[str]:
    """The rules `snakemake -n` would run (its "Job stats" table), less `all`."""
    dry = run([str(BIN / "snakemake"), "--cores", "2", "-n", "--quiet", "rules"], repo, tmp)
    if "Nothing to be done" in dry:
        return set()
    table = dry.split("Job stats:")[1].split("\ntotal")[0]
    rows = [line.split() for line in table.splitlines()]
    return {r[0] for r in rows if len(r) == 2 and r[1].isdigit()} - {"all"}


def downstream_of(param: str, repo: Path) -> set[str]:
    """The stages that declare `param` (or a section holding it) and every stage after them in dvc.yaml."""
    from pipeline.dag import load_stages

    stages = load_stages(repo / "dvc.yaml")
    hit = {s.name for s in stages if any(param == p or param.startswith(p + ".") for p in s.params)}
    for s in stages:  # file order is a run order: one pass reaches every descendant
        outs = {o for t in stages if t.name in hit for o in t.outs}
        if any(d in outs or any(d.startswith(o + "/") for o in outs) for d in s.deps):
            hit.add(s.name)
    return hit


def snakemake_follows_dvc(repo: Path, tmp: Path) -> None:
    """Snakemake on outputs `dvc repro` made (no Snakemake metadata): nothing to do; after one
    changed param, exactly the stages that declare it and their descendants (the rules' params
    stamps, .fca/params/<stage>.json, are newer than the outputs); back to dvc.lock's values, nothing."""
    assert snakemake_jobs(repo, tmp) == set()
    text = (repo / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["generator"]["loss"] = "fdc" if params["generator"]["loss"] != "fdc" else "spectral"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    expected = downstream_of("generator.loss", repo)
    assert {"train_generator", "degrade", "evaluate", "report"} <= expected, expected
    assert snakemake_jobs(repo, tmp) == expected
    (repo / "params.yaml").write_text(text)
    assert snakemake_jobs(repo, tmp) == set()


@pytest.mark.xdist_group("engines")  # one worker runs both engines, then compares their numbers
@pytest.mark.slow
def test_dvc_repro_runs_all_then_nothing_then_only_what_a_param_touches(tmp_path):
    repo = checkout(tmp_path)
    first = run([str(BIN / "dvc"), "repro"], repo, tmp_path)
    for name in EXPECTED_STAGES:
        assert f"Running stage '{name}'" in first
    assert_referee(check_outputs(repo))
    RESULTS["dvc"] = numbers_of(repo)

    second = run([str(BIN / "dvc"), "repro"], repo, tmp_path)
    assert "Running stage" not in second
    snakemake_follows_dvc(repo, tmp_path)

    params = (repo / "params.yaml").read_text().replace("gallery_size: 2", "gallery_size: 1")
    (repo / "params.yaml").write_text(params)
    third = run([str(BIN / "dvc"), "repro"], repo, tmp_path)
    assert [n for n in EXPECTED_STAGES if f"Running stage '{n}'" in third] == ["report"]
    assert snakemake_jobs(repo, tmp_path) == set()  # a param changed, and DVC re-ran what it touches

    # Every stage is an MLflow run under one parent per invocation, tagged with its stage.
    db = sqlite3.connect(tmp_path / "mlflow.db")
    stages = [r[0] for r in db.execute("select value from tags where key = 'fca.stage'")]
    assert sorted(stages) == sorted(EXPECTED_STAGES + ["report"])
    parents = {r[0] for r in db.execute("select value from tags where key = 'mlflow.parentRunId'")}
    assert len(parents) == 2  # the first full run and the report-only re-run
    names = {r[0] for r in db.execute("select key from metrics")}
    assert {"density.gap_ours", "sr.gain_fraction", "loss_g"} <= names

    remote_round_trip(repo, tmp_path)


@pytest.mark.xdist_group("engines")  # one worker runs both engines, then compares their numbers
@pytest.mark.slow
def test_snakemake_runs_the_same_graph(tmp_path):
    repo = checkout(tmp_path)
    first = run([str(BIN / "snakemake"), "--cores", "2"], repo, tmp_path)
    for name in EXPECTED_STAGES:
        assert (repo / "logs" / f"{name}.log").is_file(), first[-3000:]
    check_outputs(repo)
    RESULTS["snakemake"] = numbers_of(repo)

    second = run([str(BIN / "snakemake"), "--cores", "2"], repo, tmp_path)
    assert "Nothing to be done" in second

    params = (repo / "params.yaml").read_text().replace("gallery_size: 2", "gallery_size: 1")
    (repo / "params.yaml").write_text(params)
    dry = run([str(BIN / "snakemake"), "--cores", "2", "-n", "--quiet", "rules"], repo, tmp_path)
    jobs = [n for n in EXPECTED_STAGES if f"\n{n} " in dry or f"\n    {n}" in dry or f" {n} " in dry]
    assert jobs == ["report"], dry


@pytest.mark.xdist_group("engines")  # one worker runs both engines, then compares their numbers
@pytest.mark.slow
def test_both_engines_give_the_same_numbers():
    """`dvc repro` and `snakemake --cores 2` (the two tests above, from identical checkouts)
    wrote byte-identical metrics and bit-identical models: both run dvc.yaml's commands, whose
    --threads fixes torch's thread count, on which a CPU run's numbers depend."""
    missing = {"dvc", "snakemake"} - set(RESULTS)
    if missing:
        pytest.skip(f"needs the runs of both engine tests in this session (missing: {', '.join(sorted(missing))})")
    dvc, smk = RESULTS["dvc"], RESULTS["snakemake"]
    assert dvc.keys() == smk.keys()
    differ = sorted(k for k in dvc if dvc[k] != smk[k])
    assert not differ, f"{len(differ)} of {len(dvc)} differ between dvc repro and snakemake: {differ[:8]}"
