"""The MLflow adapter against a real `mlflow server` on 127.0.0.1, and its failure modes."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import invocation, tracking

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited at start")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start in 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_stage_run_is_logged_to_a_real_server_and_read_back(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("FCA_PIPELINE_ID", "test-pipeline-1")
    monkeypatch.setenv("FCA_EXPERIMENT", "fca-test")
    monkeypatch.delenv("FCA_TRACKING", raising=False)
    artifact = tmp_path / "kernel.txt"
    artifact.write_text("13x13")
    with tracking.stage_run("patches", {"size": 128, "blur.type": "gaussian"}) as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step)
        run.log_artifact(artifact)
        run_id = run.run_id
    with tracking.stage_run("train_fdc", {"steps": 3}) as run2:
        run2.log_metrics({"acc": 0.9})

    client = MlflowClient(mlflow_server)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"patches.size": "128", "patches.blur.type": "gaussian"}
    assert got.data.tags["fca.stage"] == "patches"
    assert got.data.tags["mlflow.source.git.commit"]
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert history[-1].value == pytest.approx(0.2)
    assert [a.path for a in client.list_artifacts(run_id)] == ["kernel.txt"]
    # Both stage runs hang under one parent run for the pipeline invocation.
    parent = got.data.tags["mlflow.parentRunId"]
    assert client.get_run(run2.run_id).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).data.tags["fca.pipeline_id"] == "test-pipeline-1"


def test_failed_stage_marks_the_run_failed(mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("FCA_EXPERIMENT", "fca-test")
    with pytest.raises(RuntimeError):
        with tracking.stage_run("degrade", {}) as run:
            run_id = run.run_id
            raise RuntimeError("boom")
    assert MlflowClient(mlflow_server).get_run(run_id).info.status == "FAILED"


def test_tracking_off_and_unreachable_server_do_not_stop_work(monkeypatch, caplog):
    monkeypatch.setenv("FCA_TRACKING", "off")
    with tracking.stage_run("patches", {"a": 1}) as run:
        assert isinstance(run, tracking.NullRun) and run.run_id is None
        run.log_metrics({"x": 1.0}, 0)
    monkeypatch.setenv("FCA_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with tracking.stage_run("patches", {"a": 1}) as run:
        run.log_metrics({"x": 1.0}, 0)
    assert "runs untracked" in caplog.text


def test_a_failing_server_stops_tracking_once_and_the_stage_goes_on(caplog):
    """A call that fails (sent at once, or queued and failed later) stops the run's tracking with one
    warning; the run's later calls are dropped, and nothing raises into the stage."""
    from concurrent.futures import Future

    from mlflow.utils.async_logging.run_operations import RunOperations

    class Flaky:
        def __init__(self, fail_queued: bool):
            self.fail_queued, self.calls = fail_queued, []

        def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
            self.calls.append("log_batch")
            done = Future()
            if self.fail_queued and len(self.calls) > 1:
                done.set_exception(ConnectionError("server gone"))
            else:
                done.set_result(None)
            return RunOperations([done])

        def log_artifact(self, run_id, path, artifact_path=None):
            self.calls.append("log_artifact")
            raise ConnectionError("server gone")

        def set_terminated(self, run_id, status):
            self.calls.append("set_terminated")

    for fail_queued in (True, False):
        caplog.clear()
        client = Flaky(fail_queued)
        run = tracking.MlflowRun(client, "r1")
        run.log_metrics({"loss": 1.0}, 0)
        run.log_metrics({"loss": 0.5}, 1)  # queued; fails in the background when fail_queued
        run.log_artifact(__file__)  # fails at once otherwise
        run.log_metrics({"loss": 0.25}, 2)
        run.close("FINISHED")
        assert client.calls == (["log_batch", "log_batch"] if fail_queued else ["log_batch", "log_batch", "log_artifact"])
        said = [r.getMessage() for r in caplog.records if "tracking stopped" in r.getMessage()]
        assert len(said) == 1 and "server gone" in said[0], said


def test_pipeline_id_comes_from_the_env_or_the_engine(monkeypatch):
    monkeypatch.setenv("FCA_PIPELINE_ID", "abc")
    assert invocation.pipeline_id() == "abc"
    monkeypatch.delenv("FCA_PIPELINE_ID")
    # Run under a process whose argv names an engine: the child sees it as its ancestor.
    code = "from pipeline.invocation import pipeline_id; print(pipeline_id())"
    out = subprocess.run(["bash", "-c", f"exec -a snakemake bash -c '{sys.executable} -c \"{code}\"; true'"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], env=dict(os.environ))
    assert out.stdout.strip().startswith("snakemake-"), out.stdout + out.stderr


# ---------------------------------------------------------------- passwords in tracking URIs


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://fca:s3cret@db.example:5432/mlflow", "postgresql://fca:***@db.example:5432/mlflow"),
    ("postgresql+psycopg2://u:p%40ss:w@h/db?sslmode=require", "postgresql+psycopg2://u:***@h/db?sslmode=require"),
    ("http://user:pw@host:5000", "http://user:***@host:5000"),
    ("mysql://h/db?user=a&password=xyz&x=1", "mysql://h/db?user=a&password=***&x=1"),
    ("sqlite:////home/me/mlflow.db", "sqlite:////home/me/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("failed: API request to http://u:pw@h/api and postgresql://a:b@c/d", "failed: API request to http://u:***@h/api and postgresql://a:***@c/d"),
])
def test_mask_uri(uri, shown):
    assert tracking.mask_uri(uri) == shown


def test_an_unreachable_server_is_named_without_its_password(monkeypatch, caplog):
    monkeypatch.setenv("FCA_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://fca:s3cret@127.0.0.1:{_free_port()}/")
    with tracking.stage_run("x", {"a": 1}) as run:
        assert isinstance(run, tracking.NullRun)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unavailable at start" in text and "http://fca:***@127.0.0.1" in text
    assert "s3cret" not in text


def test_make_mlflow_server_never_shows_the_password(tmp_path):
    """`make mlflow-server` echoes the backend masked, and hands it to mlflow through the environment
    (not the command line make echoes and `ps` shows). A stand-in `mlflow` records what it got."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make")
    root = Path(__file__).resolve().parents[2]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mlflow").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\necho "$MLFLOW_BACKEND_STORE_URI" > {tmp_path}/env\n')
    (fake / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(root / "Makefile", work / "Makefile")
    backend = "postgresql://fca:s3cret@db.example/mlflow"
    out = subprocess.run(["make", "-o", ".venv/.installed", "mlflow-server", f"BIN={fake}", f"MLFLOW_BACKEND={backend}"],
                         cwd=work, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(root)))
    assert out.returncode == 0, out.stderr
    printed = out.stdout + out.stderr
    assert "backend postgresql://fca:***@db.example/mlflow" in printed
    assert "s3cret" not in printed
    assert "s3cret" not in (tmp_path / "argv").read_text()
    assert (tmp_path / "env").read_text().strip() == backend


# ---------------------------------------------------------------- what the MLflow UI shows (local SQLite store)

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
# Just what the adapter reads: which stage reads data/patches, and which one writes it.
DVC_YAML = "stages:\n  patches:\n    outs: [data/patches]\n  train_fdc:\n    deps: [pipeline/train_fdc.py, data/patches]\n"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A committed project folder (the tiny params as params.yaml, a dvc.yaml, one code file) as the
    current folder, tracked to `sqlite:///mlflow.db` in it, as `make run` does; no engine above."""
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(ROOT / "tests" / "params_tiny.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "code.py").write_text("x = 1\n")
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "init")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    for var in ("FCA_TRACKING", "FCA_PIPELINE_ID", "FCA_EXPERIMENT", "FCA_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(invocation, "_engine_ancestor", lambda: None)  # pytest may run under anything
    return root


def _store(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def _all_runs(client) -> list:
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)


def test_the_experiment_is_a_model_training_one_from_its_creation(project):
    with tracking.stage_run("patches", {"size": 64}):
        pass
    client = _store(project)
    assert client.get_experiment_by_name("fca").tags[tracking.KIND_TAG] == "custom_model_development"
    # One made before (by an older version, or by hand) gets the tag at the next run.
    old = client.create_experiment("older")
    os.environ["FCA_EXPERIMENT"] = "older"
    try:
        with tracking.stage_run("patches", {"size": 64}):
            pass
    finally:
        del os.environ["FCA_EXPERIMENT"]
    assert client.get_experiment(old).tags[tracking.KIND_TAG] == "custom_model_development"
    # The UI link opens it in the model-training view (the MLflow 3 UI's default is GenAI).
    assert tracking.ui_link() == f"http://127.0.0.1:5000/#/experiments/{client.get_experiment_by_name('fca').experiment_id}/runs?workflowType=machine_learning"


def test_params_carry_their_params_yaml_section(project):
    with tracking.stage_run("train_fdc", {"lr": 0.1, "blur_weight": 1.0, "device": "cpu"}) as fdc:
        pass
    with tracking.stage_run("train_generator", {"lr": 0.2, "fdc.scale_end": 3.0, "threads": 1}) as gen:
        pass
    with tracking.stage_run("patches", {"blur.type": "gaussian"}) as patches:
        pass
    client = _store(project)
    assert client.get_run(fdc.run_id).data.params == {"fdc.lr": "0.1", "fdc.blur_weight": "1.0", "device": "cpu"}
    # A key already under a section (read from another one) and a runtime key stay as given.
    assert client.get_run(gen.run_id).data.params == {"generator.lr": "0.2", "fdc.scale_end": "3.0", "threads": "1"}
    assert client.get_run(patches.run_id).data.params == {"patches.blur.type": "gaussian"}


def _parent(client, run_id: str):
    return client.get_run(client.get_run(run_id).data.tags["mlflow.parentRunId"])


def test_parent_runs_are_named_by_engine_commit_and_changed_params(project, monkeypatch):
    import yaml

    client = _store(project)
    commit = _git(project, "rev-parse", "--short=7", "HEAD")
    monkeypatch.setenv("FCA_PIPELINE_ID", "dvc-100-1")
    with tracking.stage_run("patches", {"size": 64}) as first:
        pass
    params = yaml.safe_load((project / "params.yaml").read_text())
    was = params["generator"]["loss"]
    params["generator"]["loss"] = new = "both" if was != "both" else "spectral"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("FCA_PIPELINE_ID", "snakemake-200-1")
    with tracking.stage_run("patches", {"size": 64}) as second:
        pass
    (project / "code.py").write_text("x = 2\n")  # code changed since the commit
    monkeypatch.setenv("FCA_PIPELINE_ID", "dvc-300-1")
    with tracking.stage_run("patches", {"size": 64}) as third:
        pass

    names = [_parent(client, r.run_id).info.run_name for r in (first, second, third)]
    assert names[0].startswith(f"dvc {commit} ") and "=" not in names[0], names
    assert names[1].startswith(f"snakemake {commit} gen.loss={new} "), names
    assert names[2].startswith(f"dvc {commit}+dirty gen.loss={new} "), names
    assert len({n[:40] for n in names}) == 3, names  # they differ where the UI cuts them
    # The parent holds all of params.yaml, keyed like the stages' params: parents compare side by side.
    assert _parent(client, first.run_id).data.params["generator.loss"] == was
    assert _parent(client, second.run_id).data.params["generator.loss"] == new
    assert _parent(client, second.run_id).data.tags["fca.changed_params"] == f"generator.loss={new}"


RACE = """
import sys, time
from mlflow.tracking import MlflowClient
from pipeline import invocation, tracking
invocation._engine_ancestor = lambda: None
search = MlflowClient.search_runs
def slow_search(self, *args, **kwargs):  # both look for the parent before either makes it, unless the lock orders them
    found = search(self, *args, **kwargs)
    time.sleep(2)
    return found
MlflowClient.search_runs = slow_search
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # both stages start at the same moment
with tracking.stage_run("patches", {"size": 64}) as run:
    print(run.run_id)
"""


def test_stages_started_at_once_make_one_parent_run(project):
    """Two stages of one pipeline invocation start together: both find or make the same parent run.
    Each one's search for the parent is slowed, so that without the pipeline's lock both find none
    and make one each (this test then fails: two parent runs)."""
    with tracking.stage_run("patches", {}):  # the store and experiment exist: only the parent run is raced for
        pass
    env = dict(os.environ, FCA_PIPELINE_ID="dvc-race-1", PYTHONPATH=str(ROOT))
    start = str(time.time() + 8)  # after both interpreters have imported MLflow
    procs = [subprocess.Popen([sys.executable, "-c", RACE, start], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    client = _store(project)
    parents = [r for r in _all_runs(client) if r.data.tags.get("fca.kind") == "pipeline"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [client.get_run(out.strip().splitlines()[-1]) for out, _ in outs]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


def test_runs_carry_source_user_and_commit_tags(project, monkeypatch):
    commit = _git(project, "rev-parse", "HEAD")
    monkeypatch.setenv("FCA_PIPELINE_ID", "dvc-100-1")
    with tracking.stage_run("train_fdc", {"lr": 0.1}) as staged:
        pass
    monkeypatch.delenv("FCA_PIPELINE_ID")
    with tracking.stage_run("degrade", {"tile": 64}, standalone=True) as by_hand:
        by_hand.log_metrics({"seconds": 1.0}, 0)
    client = _store(project)
    tags = client.get_run(staged.run_id).data.tags
    assert tags["mlflow.source.type"] == "PROJECT" and tags["mlflow.source.name"] == str(project)
    assert tags["mlflow.project.entryPoint"] == "train_fdc" and tags["mlflow.runName"] == "train_fdc"
    assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.user"]
    parent = _parent(client, staged.run_id).data.tags
    assert parent["mlflow.source.type"] == "PROJECT" and parent["mlflow.project.entryPoint"] == "dvc"
    assert parent["mlflow.source.git.commit"] == commit and parent["mlflow.user"] == tags["mlflow.user"]
    tags = client.get_run(by_hand.run_id).data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] == "fca degrade"
    assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.user"]


def _patches(root: Path) -> None:
    folder = root / "data" / "patches"
    folder.mkdir(parents=True)
    (folder / "index.csv").write_text("file,split\na.png,train\n")
    (folder / "a.png").write_bytes(b"\x89PNG fake")
    (folder / ".fca-output").write_text("{}\n")


def _dataset(client, run_id: str) -> tuple[str, str, dict] | None:
    inputs = client.get_run(run_id).inputs.dataset_inputs
    if not inputs:
        return None
    (one,) = inputs
    return one.dataset.name, one.dataset.digest, json.loads(one.dataset.source) | {t.key: t.value for t in one.tags}


def test_the_patches_dvc_hash_is_the_dataset_of_the_stages_that_read_them(project):
    import hashlib

    client = _store(project)
    with tracking.stage_run("train_fdc", {}) as before:  # no data/patches yet: no dataset, no error
        pass
    _patches(project)
    files = [p for p in (project / "data" / "patches").rglob("*") if p.is_file()]
    lock = {"schema": "2.0", "stages": {"patches": {"outs": [{
        "path": "data/patches", "hash": "md5", "md5": "0a01211455eec6f349ba0d928e32209a.dir",
        "size": sum(p.stat().st_size for p in files), "nfiles": len(files)}]}}}
    (project / "dvc.lock").write_text(json.dumps(lock))
    with tracking.stage_run("train_fdc", {}) as locked:
        pass
    with tracking.stage_run("patches", {}) as writer:  # writes data/patches, does not read them
        pass
    (project / "data" / "patches" / "a.png").write_bytes(b"other")  # dvc.lock no longer describes the folder
    with tracking.stage_run("train_fdc", {}) as stale:
        pass

    assert _dataset(client, before.run_id) is None and _dataset(client, writer.run_id) is None
    name, digest, info = _dataset(client, locked.run_id)
    assert (name, digest) == ("data/patches", "0a01211455eec6f349ba0d928e32209a")
    assert info["digest_from"] == "dvc.lock" and info["mlflow.data.context"] == "training"
    index_md5 = hashlib.md5((project / "data" / "patches" / "index.csv").read_bytes()).hexdigest()
    assert _dataset(client, stale.run_id)[1:] == (index_md5, {"uri": str(project / "data" / "patches"), "digest_from": "index.csv",
                                                              "mlflow.data.context": "training"})


def test_degrade_by_hand_has_its_own_experiment_and_a_failure_after_the_start_ends_failed(project):
    with tracking.stage_run("degrade", {"tile": 64}, standalone=True) as run:
        assert run.run_id is None  # not opened before the first logging call
        run.log_metrics({"seconds": 1.0}, 0)
    with pytest.raises(RuntimeError):
        with tracking.stage_run("degrade", {"tile": 64}, standalone=True) as crashed:
            crashed.log_metrics({"seconds": 1.0}, 0)
            raise RuntimeError("crash in the middle of the work")
    client = _store(project)
    exp = client.get_experiment_by_name("fca-degrade")
    assert exp is not None and client.get_experiment_by_name("fca") is None
    assert exp.tags[tracking.KIND_TAG] == "custom_model_development"
    assert client.get_run(run.run_id).info.experiment_id == exp.experiment_id
    assert client.get_run(crashed.run_id).info.status == "FAILED"
    assert client.get_run(run.run_id).data.params == {"degrade.tile": "64"}


def _tiny_generator(path: Path) -> None:
    import torch

    from fca.train.checkpoint import save_checkpoint
    from fca.train.generator import GeneratorConfig, build_generator

    config = GeneratorConfig(estimator="paper", kernel_param="free", kernel_size=7, channels=8, dense_blocks=1, res_blocks=1, wd_channels=8)
    torch.manual_seed(0)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    save_checkpoint(path, {"config": plain, "generator": build_generator(config).state_dict(), "step": 1})


def test_fca_degrade_user_errors_leave_no_run_and_a_good_run_lands_in_its_experiment(project, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from pipeline import cli

    _tiny_generator(tmp_path / "generator.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / "a.png")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("not fca's")

    def degrade(*args: str) -> int:
        return cli.main(["degrade", "--checkpoint", str(tmp_path / "generator.pt"), "--device", "cpu", "--no-progress", *args])

    assert degrade("--input", str(tmp_path / "fotos"), "--output", str(tmp_path / "out")) == 2  # a typo
    assert degrade("--input", str(photos), "--output", str(tmp_path / "full")) == 2  # an output that is not fca's
    assert degrade("--input", str(photos), "--output", str(tmp_path / "out"), "--tile", "-3") == 2  # a bad option
    err = capsys.readouterr().err
    assert "fotos" in err and "full" in err and "--tile" in err, err
    client = _store(project)
    assert _all_runs(client) == []

    assert degrade("--input", str(photos), "--output", str(tmp_path / "out")) == 0
    (run,) = _all_runs(client)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "fca-degrade"
    assert run.data.params["input"] == str(photos) and "degrade.kernel_from" in run.data.params
    assert run.data.tags["mlflow.source.name"] == "fca degrade"


def _artifact_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.txt")) if folder.exists() else []


def test_a_copied_project_keeps_its_artifacts_in_the_copy(project, tmp_path, monkeypatch, caplog):
    note = tmp_path / "note.txt"
    note.write_text("original")
    with tracking.stage_run("patches", {}) as run:
        run.log_artifact(note)
    assert _artifact_files(project / "mlruns") == ["note.txt"]  # beside the store, not elsewhere

    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # as a fresh process there has it
    (tmp_path / "copy.txt").write_text("copy")
    with tracking.stage_run("patches", {}) as run2:
        run2.log_artifact(tmp_path / "copy.txt")

    assert _artifact_files(project / "mlruns") == ["note.txt"]  # the original is untouched
    assert _artifact_files(copy / "mlruns") == ["copy.txt", "note.txt"]
    client = _store(copy)
    exp = client.get_experiment_by_name("fca")
    assert Path(exp.artifact_location).is_relative_to(copy) and client.get_run(run2.run_id).info.experiment_id == exp.experiment_id
    assert exp.tags[tracking.KIND_TAG] == "custom_model_development"
    old = [e for e in client.search_experiments() if e.name.startswith("fca (id ")]
    assert len(old) == 1 and str(project / "mlruns") in old[0].name  # the copied runs stay visible, renamed
    said = [r.getMessage() for r in caplog.records if "outside this folder" in r.getMessage()]
    assert len(said) == 1 and str(project / "mlruns") in said[0], said

    # FCA_MLFLOW_ARTIFACTS: new experiments keep their artifacts there instead.
    monkeypatch.setenv("FCA_MLFLOW_ARTIFACTS", str(tmp_path / "store"))
    monkeypatch.setenv("FCA_EXPERIMENT", "elsewhere")
    with tracking.stage_run("patches", {}) as run3:
        run3.log_artifact(note)
    assert client.get_experiment_by_name("elsewhere").artifact_location == str(tmp_path / "store" / "elsewhere")
    assert _artifact_files(tmp_path / "store") == ["note.txt"]


def test_artifacts_stay_beside_the_store_from_any_folder(project, tmp_path, monkeypatch):
    """MLflow's own default is ./mlruns of whichever folder made the experiment (`fca degrade` runs from anywhere)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    note = tmp_path / "note.txt"
    note.write_text("x")
    with tracking.stage_run("patches", {}) as run:
        run.log_artifact(note)
    assert _artifact_files(project / "mlruns") == ["note.txt"] and not (elsewhere / "mlruns").exists()
    assert _store(project).get_run(run.run_id).info.artifact_uri == str(project / "mlruns" / "fca" / run.run_id / "artifacts")
