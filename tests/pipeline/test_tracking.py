"""The MLflow adapter against a real `mlflow server` on 127.0.0.1, and its failure modes."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import tracking

BIN = Path(sys.executable).parent


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
    assert got.data.params == {"size": "128", "blur.type": "gaussian"}
    assert got.data.tags["fca.stage"] == "patches"
    assert "fca.git_commit" in got.data.tags
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


def test_server_going_away_mid_run_keeps_metrics_and_retries():
    """A client that fails for a while: calls are kept and sent once it answers again."""

    class Flaky:
        def __init__(self):
            self.up = True
            self.calls = []

        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            if not self.up:
                raise ConnectionError("server gone")
            self.calls.append([(m.key, m.step) for m in metrics])

    client = Flaky()
    run = tracking.MlflowRun(client, "r1")
    run.log_metrics({"loss": 1.0}, 0)
    run.flush()
    client.up = False
    run.log_metrics({"loss": 0.5}, 1)
    run.flush()  # fails: kept
    client.up = True
    run.log_metrics({"loss": 0.25}, 2)
    run.flush()
    sent = [item for call in client.calls for item in call]
    assert sent == [("loss", 0), ("loss", 1), ("loss", 2)]


def test_pipeline_id_comes_from_the_env_or_the_engine(monkeypatch):
    monkeypatch.setenv("FCA_PIPELINE_ID", "abc")
    assert tracking.pipeline_id() == "abc"
    monkeypatch.delenv("FCA_PIPELINE_ID")
    # Run under a process whose argv names an engine: the child sees it as its ancestor.
    code = "from pipeline.tracking import pipeline_id; print(pipeline_id())"
    out = subprocess.run(["bash", "-c", f"exec -a snakemake bash -c '{sys.executable} -c \"{code}\"; true'"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], env=dict(os.environ))
    assert out.stdout.strip().startswith("snakemake-"), out.stdout + out.stderr


def test_calls_not_sent_at_the_end_are_spooled_then_synced(tmp_path, monkeypatch, caplog):
    """Server away until the stage ends: files are copied when logged, every call lands in the spool, sync sends them in order."""
    import mlflow.tracking
    from mlflow.exceptions import MlflowException

    class Fake:
        up = False
        calls: list = []

        def __init__(self, tracking_uri=None):
            pass

        def _do(self, *call):
            if not Fake.up:
                raise ConnectionError("server gone")
            if call[0] == "log_batch" and any(p.key == "bad" for p in call[2]["params"]):
                raise MlflowException.invalid_parameter_value("param changed")  # a 400: never accepted
            Fake.calls.append(call)

        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            self._do("log_batch", run_id, {"metrics": list(metrics), "params": list(params), "tags": list(tags)})

        def log_artifact(self, run_id, path, artifact_path=None):
            self._do("log_artifact", run_id, Path(path).read_bytes(), artifact_path)

        def set_terminated(self, run_id, status, end_time=None):
            self._do("set_terminated", run_id, status)

    monkeypatch.setenv("FCA_TRACKING_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("FCA_TRACKING_WAIT_S", "0")
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Fake)
    run = tracking.MlflowRun(Fake(), "run1", "http://example.invalid:5000")
    run.log_params({"a": 1})
    for step in range(3):
        run.log_metrics({"loss": float(step)}, step)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"v1")
    run.log_artifact(ckpt, "model")
    ckpt.unlink()  # the stage moves its outputs away: the kept copy is what gets sent
    run.log_params({"bad": 1})
    run.close("FINISHED", parent="parent1")
    assert "unreachable" in caplog.text and f"kept in {tmp_path / 'spool' / 'run1'}" in caplog.text
    assert (tmp_path / "spool" / "run1" / "calls.jsonl").is_file() and Fake.calls == []

    Fake.up = True
    assert tracking.sync("http://other:5000") == (0, 0)  # another server's spool is left alone
    sent, kept = tracking.sync()
    assert (sent, kept) == (5, 1)  # the refused call stays in the spool, the rest is sent in order
    kinds = [(c[0], c[1]) for c in Fake.calls]
    assert kinds == [("log_batch", "run1"), ("log_batch", "run1"), ("log_artifact", "run1"),
                     ("set_terminated", "run1"), ("set_terminated", "parent1")]
    assert [(m.key, m.value, m.step) for m in Fake.calls[1][2]["metrics"]] == [("loss", 0.0, 0), ("loss", 1.0, 1), ("loss", 2.0, 2)]
    assert Fake.calls[2][2:] == (b"v1", "model")
    lines = (tmp_path / "spool" / "run1" / "calls.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"bad"' in lines[1]


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
