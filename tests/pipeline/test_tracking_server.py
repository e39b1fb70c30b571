"""The shared MLflow server (`make mlflow-server`): a database backend store, proxied artifacts.

- PostgreSQL as the backend store (needs FCA_TEST_POSTGRES_URI, see `.ci/postgres.sh`).
- Two pipeline runs (up to the generator) at the same time against one SQLite-backed server: every run,
  metric value and artifact that the stages handed to `pipeline.tracking` is on the server.
- The server killed while a training stage runs: training goes on and finishes, its log says
  once that tracking stopped, and the metrics logged before the kill are on the server.

What the stages logged is recorded by a `sitecustomize` put on the stage processes'
PYTHONPATH: it wraps the public logging calls of `tracking.MlflowRun` and writes each
call, as the stage made it, to a JSON-lines ledger, which is then compared with the server.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline import tracking

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
import test_engines_e2e as e2e  # noqa: E402  (the temporary git checkout of the project)

LEDGER_HOOK = '''
import json, os, sys
from pathlib import Path

def _install():
    from pipeline import tracking
    out = os.environ["FCA_TEST_LEDGER"]

    def write(run, kind, **data):
        with open(out, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "run_id": run.run_id, "kind": kind, **data}) + "\\n")

    def files(path, prefix):
        path = Path(path)
        if path.is_dir():
            return {"/".join(filter(None, [prefix, p.relative_to(path).as_posix()])): p.stat().st_size
                    for p in sorted(path.rglob("*")) if p.is_file()}
        return {"/".join(filter(None, [prefix, path.name])): path.stat().st_size}

    cls = tracking.MlflowRun
    orig = {n: getattr(cls, n) for n in ("__init__", "log_params", "log_metrics", "log_artifact", "log_figure")}

    def __init__(self, client, run_id, *a, **k):
        orig["__init__"](self, client, run_id, *a, **k)
        write(self, "run", stage=client.get_run(run_id).data.tags.get("fca.stage"))

    def log_params(self, params):
        write(self, "params", params={str(k): str(v)[:6000] for k, v in params.items()})
        return orig["log_params"](self, params)

    def log_metrics(self, metrics, step=None):
        write(self, "metrics", step=step or 0, metrics={str(k): float(v) for k, v in metrics.items()})
        return orig["log_metrics"](self, metrics, step)

    def log_artifact(self, path, subdir=None):
        write(self, "artifacts", files=files(path, subdir))
        return orig["log_artifact"](self, path, subdir)

    def log_figure(self, figure, name):
        write(self, "artifacts", files={name: None})
        return orig["log_figure"](self, figure, name)

    for n, f in list(locals().items()):
        if n in orig:
            setattr(cls, n, f)

if os.environ.get("FCA_TEST_LEDGER"):
    _install()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` as `make mlflow-server` starts it: database store, --serve-artifacts, 127.0.0.1."""

    def __init__(self, root: Path, backend: str, port: int | None = None, workers: int = 2) -> None:
        self.root, self.backend, self.workers = root, backend, workers
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "Server":
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             "--backend-store-uri", self.backend, "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow server exited at start:\n" + (self.root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"mlflow server did not answer in {timeout} s")

    def kill(self) -> None:
        """The whole server (the CLI and its workers) goes away at once, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


def read_ledger(path: Path) -> dict[str, dict]:
    """run_id -> {stage, params, metrics: {key: [(step, value)]}, artifacts: {path: size}} as the stages logged them."""
    runs: dict[str, dict] = defaultdict(lambda: {"params": {}, "metrics": defaultdict(list), "artifacts": {}})
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        run = runs[rec["run_id"]]
        if rec["kind"] == "run":
            run["stage"] = rec["stage"]
        elif rec["kind"] == "params":
            run["params"].update(rec["params"])
        elif rec["kind"] == "metrics":
            for k, v in rec["metrics"].items():
                run["metrics"][k].append((rec["step"], v))
        elif rec["kind"] == "artifacts":
            run["artifacts"].update(rec["files"])
    return dict(runs)


def server_artifacts(client, run_id: str, path: str | None = None) -> dict[str, int]:
    out = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            out.update(server_artifacts(client, run_id, info.path))
        else:
            out[info.path] = info.file_size
    return out


def assert_server_has_everything(url: str, ledger: dict[str, dict]) -> dict[str, int]:
    """Every logged run, metric value (with its step) and artifact (with its size) is on the server, nothing else."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    counts = {"runs": 0, "metric_values": 0, "artifacts": 0}
    for run_id, want in ledger.items():
        got = client.get_run(run_id)
        assert got.info.status == "FINISHED", (want.get("stage"), got.info.status)
        assert got.data.params == want["params"], want.get("stage")
        assert set(got.data.metrics) == set(want["metrics"]), want.get("stage")
        for key, values in want["metrics"].items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            assert history == sorted(values), (want.get("stage"), key, len(history), len(values))
            counts["metric_values"] += len(values)
        have = server_artifacts(client, run_id)
        assert set(have) == set(want["artifacts"]), (want.get("stage"), sorted(have), sorted(want["artifacts"]))
        for name, size in want["artifacts"].items():
            if size is not None:  # figures: rendered by the adapter, size not known to the ledger
                assert have[name] == size, (want.get("stage"), name)
            assert have[name] > 0, (want.get("stage"), name)
        counts["runs"] += 1
        counts["artifacts"] += len(have)
    return counts


def stage_env(tmp: Path, url: str, ledger: Path) -> dict[str, str]:
    hook = tmp / "ledger_hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(textwrap.dedent(LEDGER_HOOK))
    env = e2e._env(tmp)
    env.update(MLFLOW_TRACKING_URI=url, FCA_TEST_LEDGER=str(ledger), FCA_EXPERIMENT="fca-shared",
               OMP_NUM_THREADS="1", FCA_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(hook), str(ROOT), env.get("PYTHONPATH", "")])))
    return env


# -- a. PostgreSQL as the backend store ------------------------------------------------------

@pytest.fixture(scope="module")
def postgres_uri():
    uri = os.environ.get("FCA_TEST_POSTGRES_URI")
    if not uri:
        pytest.skip("FCA_TEST_POSTGRES_URI is not set: run `export FCA_TEST_POSTGRES_URI=$(bash .ci/postgres.sh)` "
                    "(installs and starts Debian's PostgreSQL) to run the PostgreSQL-backed server test")
    import sqlalchemy as sa

    engine = sa.create_engine(uri)  # a set URI that does not answer is an error, not a skip
    with engine.begin() as con:  # a fresh schema for each test session
        con.execute(sa.text("drop schema public cascade"))
        con.execute(sa.text("create schema public"))
    engine.dispose()
    return uri


def test_postgres_backed_server_keeps_runs_metrics_and_proxied_artifacts(postgres_uri, tmp_path, monkeypatch):
    import sqlalchemy as sa
    from mlflow.tracking import MlflowClient

    server = Server(tmp_path, postgres_uri).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("FCA_EXPERIMENT", "fca-postgres")
        monkeypatch.setenv("FCA_PIPELINE_ID", "postgres-test")
        monkeypatch.delenv("FCA_TRACKING", raising=False)
        model = tmp_path / "model.pt"
        model.write_bytes(os.urandom(300_000))
        with tracking.stage_run("train_fdc", {"steps": 1200, "lr": 0.001}) as run:
            for step in range(1200):
                run.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.001}, step)
            run.log_artifact(model, "model")
        client = MlflowClient(server.url)
        got = client.get_run(run.run_id)
        assert got.info.status == "FINISHED"
        assert got.info.artifact_uri.startswith("mlflow-artifacts:/"), got.info.artifact_uri  # proxied, not a local path
        assert len(client.get_metric_history(run.run_id, "loss")) == 1200
        assert server_artifacts(client, run.run_id) == {"model/model.pt": 300_000}
        stored = list((tmp_path / "artifacts").rglob("model.pt"))  # the server wrote it under --artifacts-destination
        assert len(stored) == 1 and stored[0].read_bytes() == model.read_bytes()
        engine = sa.create_engine(postgres_uri)
        with engine.connect() as con:  # and the store really is PostgreSQL
            n = con.execute(sa.text("select count(*) from metrics where run_uuid = :r and key = 'loss'"), {"r": run.run_id}).scalar()
        engine.dispose()
        assert n == 1200
    finally:
        server.kill()


# -- b. two pipeline runs at the same time ---------------------------------------------------------

PIPELINE_STAGES = ["download", "patches", "train_fdc", "train_generator"]

@pytest.mark.slow
def test_two_pipelines_at_once_lose_no_run_metric_or_artifact(tmp_path):
    from mlflow.tracking import MlflowClient

    (tmp_path / "server").mkdir()
    server = Server(tmp_path / "server", f"sqlite:///{tmp_path}/server/mlflow.db").start()
    try:
        procs = []
        for name in ("a", "b"):
            tmp = tmp_path / name
            tmp.mkdir()
            repo = e2e.checkout(tmp)
            env = stage_env(tmp, server.url, tmp / "ledger.jsonl")
            out = open(tmp / "out.log", "w")
            # The pipeline up to the generator: every kind of logging call (params, metrics per step,
            # files, figures) from four stages; the later stages add only more of the same calls.
            procs.append((name, tmp, subprocess.Popen([str(BIN / "dvc"), "repro", "train_generator"], cwd=repo, env=env, stdout=out,
                                                      stderr=subprocess.STDOUT)))
        for name, tmp, proc in procs:
            assert proc.wait(timeout=1500) == 0, f"pipeline {name}:\n" + (tmp / "out.log").read_text()[-6000:]

        ledgers = {name: read_ledger(tmp / "ledger.jsonl") for name, tmp, _ in procs}
        for name, ledger in ledgers.items():
            assert sorted(r["stage"] for r in ledger.values()) == sorted(PIPELINE_STAGES), name
            counts = assert_server_has_everything(server.url, ledger)
            assert counts["metric_values"] > 100 and counts["artifacts"] >= 6, counts
            print(f"pipeline {name}: {counts}")
        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name("fca-shared")
        assert exp.artifact_location.startswith("mlflow-artifacts:/"), exp.artifact_location
        stage_runs = client.search_runs([exp.experiment_id], "tags.`fca.kind` = 'stage'", max_results=1000)
        assert {r.info.run_id for r in stage_runs} == set(ledgers["a"]) | set(ledgers["b"])  # 8, none extra
        parents = client.search_runs([exp.experiment_id], "tags.`fca.kind` = 'pipeline'", max_results=1000)
        assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
        for ledger in ledgers.values():  # each pipeline's stages hang under its own parent run
            assert len({r.data.tags["mlflow.parentRunId"] for r in stage_runs if r.info.run_id in ledger}) == 1
    finally:
        server.kill()


# -- c. the server goes away mid-training ----------------------------------------------------------

@pytest.mark.slow
def test_server_killed_mid_training_training_goes_on_finishes_and_says_once_that_tracking_stopped(tmp_path):
    (tmp_path / "server").mkdir()
    backend = f"sqlite:///{tmp_path}/server/mlflow.db"
    server = Server(tmp_path / "server", backend).start()
    repo = e2e.checkout(tmp_path)
    params = (repo / "params.yaml").read_text().replace("  steps: 150\n", "  steps: 400\n", 1)
    (repo / "params.yaml").write_text(params)
    off = e2e._env(tmp_path) | {"FCA_TRACKING": "off", "OMP_NUM_THREADS": "1"}
    for cmd in ("fca download --out data/raw --cache .cache/downloads", "fca patches --raw data/raw --out data/patches"):
        subprocess.run(cmd.split(), cwd=repo, env=off, check=True, capture_output=True, timeout=600)

    ledger = tmp_path / "ledger.jsonl"
    env = stage_env(tmp_path, server.url, ledger) | {"FCA_PIPELINE_ID": "kill-test"}
    log_path = tmp_path / "train.log"
    train = subprocess.Popen(
        ["fca", "train-fdc", "--patches", "data/patches", "--out", "models/fdc.pt", "--metrics", "reports/fdc.json",
         "--curve", "reports/plots/fdc_accuracy.csv", "--checkpoints", "checkpoints/train_fdc", "--no-progress"],
        cwd=repo, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        # Kill the server once the first batch of metrics is on it (the run is well under way).
        from mlflow.tracking import MlflowClient

        deadline = time.time() + 600
        while True:
            assert train.poll() is None, "training ended before the server was killed:\n" + log_path.read_text()[-3000:]
            assert time.time() < deadline, "no metrics reached the server"
            runs = read_ledger(ledger) if ledger.exists() else {}
            on_server = len(MlflowClient(server.url).get_metric_history(next(iter(runs)), "loss")) if runs else 0
            if on_server:
                break
            time.sleep(0.5)
        server.kill()
        steps_at_kill = len(read_ledger(ledger)[next(iter(runs))]["metrics"]["loss"])
        assert train.wait(timeout=900) == 0, log_path.read_text()[-6000:]
    finally:
        if train.poll() is None:
            train.kill()
        server.kill()

    text = log_path.read_text()
    run_id, want = next(iter(read_ledger(ledger).items()))
    assert steps_at_kill < len(want["metrics"]["loss"]) == 400, (steps_at_kill, len(want["metrics"]["loss"]))
    assert text.count("MLflow tracking stopped") == 1 and "Traceback" not in text, text[-3000:]
    assert "train_fdc: held-out ordering accuracy" in text
    assert (repo / "models" / "fdc.pt").stat().st_size > 0

    # The server comes back (same store): the metrics it had at the kill are there, in order.
    server = Server(tmp_path / "server", backend, port=server.port).start()
    try:
        history = MlflowClient(server.url).get_metric_history(run_id, "loss")
        assert on_server <= len(history) <= steps_at_kill, (on_server, len(history), steps_at_kill)
        assert sorted((m.step, m.value) for m in history) == sorted(want["metrics"]["loss"])[:len(history)]
    finally:
        server.kill()
