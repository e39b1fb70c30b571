"""The one module that speaks to MLflow.

Each stage run is an MLflow run (its params section, metrics per step, artifacts)
nested under one parent run per pipeline invocation, tagged with the git commit and
the stage name. Settings are environment variables, never params:

- `MLFLOW_TRACKING_URI`: where runs go (default: `sqlite:///mlflow.db` in the project).
- `FCA_TRACKING=off`: no tracking at all.
- `FCA_EXPERIMENT`: experiment name (default `fca`).
- `FCA_PIPELINE_ID`: groups stage runs under one parent run. When unset, the id is
  derived from the engine process (`dvc repro` / `snakemake`) that started the stage,
  so one invocation of either engine gives one parent run.

If the tracking server goes away mid-run, logging calls warn once, keep what could not
be sent in memory, retry later and at the end; the training itself goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("fca.tracking")

DEFAULT_URI = "sqlite:///mlflow.db"
_ENGINES = ("dvc", "snakemake")


def tracking_enabled() -> bool:
    return os.environ.get("FCA_TRACKING", "on").strip().lower() not in ("off", "0", "false", "no")


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _engine_ancestor() -> str | None:
    """Id of the nearest ancestor process that is `dvc` or `snakemake`: '<engine>-<pid>-<start time>'."""
    pid = os.getppid()
    for _ in range(16):
        if pid <= 1:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # Fields after the parenthesised command name: state, ppid, ..., starttime is field 22.
        rest = stat.rsplit(")", 1)[1].split()
        names = [Path(a.decode(errors="replace")).name for a in argv[:3] if a]
        for engine in _ENGINES:
            if engine in names:
                return f"{engine}-{pid}-{rest[19]}"
        pid = int(rest[1])
    return None


def pipeline_id() -> str | None:
    return os.environ.get("FCA_PIPELINE_ID") or _engine_ancestor()


class NullRun:
    """Tracking switched off: every call does nothing."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def log_image(self, image: Any, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def flush(self) -> None: ...


class MlflowRun(NullRun):
    """One MLflow run, with calls that survive a tracking server going away."""

    # Per-step metrics are buffered and sent in batches: one SQLite transaction per
    # step would cost more than a small training step.
    BATCH_SIZE = 500
    BATCH_SECONDS = 5.0

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._pending: list[tuple[str, tuple, dict]] = []
        self._metrics: list[Any] = []
        self._last_send = time.monotonic()
        self._warned = False

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._pending.append((method, args, kwargs))
        self.flush()

    def flush(self) -> None:
        if self._metrics:
            self._pending.append(("log_batch", (), {"metrics": self._metrics}))
            self._metrics = []
        self._last_send = time.monotonic()
        while self._pending:
            method, args, kwargs = self._pending[0]
            try:
                getattr(self.client, method)(self.run_id, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any transport error: keep training
                if not self._warned:
                    log.warning("MLflow tracking unavailable (%s: %s); training goes on, logs are kept and retried", type(e).__name__, e)
                    self._warned = True
                return
            self._pending.pop(0)
            if self._warned:
                self._warned = False
                log.warning("MLflow tracking reachable again")

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self._call("log_batch", params=[Param(str(k), str(v)[:6000]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._metrics.extend(Metric(str(k), float(v), now, step or 0) for k, v in metrics.items())
        if len(self._metrics) >= self.BATCH_SIZE or time.monotonic() - self._last_send > self.BATCH_SECONDS:
            self.flush()

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        path = Path(path)
        method = "log_artifacts" if path.is_dir() else "log_artifact"
        self._call(method, str(path), subdir)

    def log_figure(self, figure: Any, name: str) -> None:
        self._call("log_figure", figure, name)

    def log_image(self, image: Any, name: str) -> None:
        self._call("log_image", image, artifact_file=name)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self._call("set_tag", k, str(v))


def _client() -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any) -> str:
    name = os.environ.get("FCA_EXPERIMENT", "fca")
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # noqa: BLE001 - created concurrently by another stage
        return client.get_experiment_by_name(name).experiment_id


def _parent_run(client: Any, experiment_id: str, pid: str, commit: str) -> str:
    found = client.search_runs([experiment_id], filter_string=f"tags.`fca.pipeline_id` = '{pid}' and tags.`fca.kind` = 'pipeline'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')} ({pid.split('-')[0]})",
        tags={"fca.pipeline_id": pid, "fca.git_commit": commit, "fca.kind": "pipeline"},
    )
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any]) -> Iterator[NullRun]:
    """Open the MLflow run of one stage; yields an object with log_* methods.

    The run ends FINISHED when the block exits normally, FAILED on an exception.
    With FCA_TRACKING=off, or when MLflow cannot be reached at start, a NullRun is
    yielded and the stage runs untracked (with a warning in the second case).
    """
    if not tracking_enabled():
        yield NullRun()
        return
    commit = _git_commit()
    try:
        client = _client()
        experiment_id = _experiment_id(client)
        tags = {"fca.stage": stage, "fca.git_commit": commit, "fca.kind": "stage", "mlflow.source.git.commit": commit}
        pid = pipeline_id()
        if pid:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            parent = _parent_run(client, experiment_id, pid, commit)
            client.update_run(parent, status="RUNNING")
            tags[MLFLOW_PARENT_RUN_ID] = parent
            tags["fca.pipeline_id"] = pid
        run = client.create_run(experiment_id, run_name=stage, tags=tags)
    except Exception as e:  # noqa: BLE001
        log.warning("MLflow tracking unavailable at start (%s: %s); stage %s runs untracked", type(e).__name__, e, stage)
        yield NullRun()
        return
    parent = tags.get("mlflow.parentRunId")
    tracked = MlflowRun(client, run.info.run_id)
    tracked.log_params(params)
    status = "FAILED"
    try:
        yield tracked
        status = "FINISHED"
    finally:
        tracked.flush()
        try:
            client.set_terminated(tracked.run_id, status)
            if parent:  # the pipeline run ends with the state of its latest stage
                client.set_terminated(parent, status)
        except Exception as e:  # noqa: BLE001
            log.warning("could not close MLflow run %s: %s", tracked.run_id, e)



def stage_runs(stage: str) -> list[dict[str, Any]]:
    """Finished runs of one stage in the current experiment, newest first: [{run_id, start_time, params, metrics, tags}]."""
    client = _client()
    exp = client.get_experiment_by_name(os.environ.get("FCA_EXPERIMENT", "fca"))
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`fca.stage` = '{stage}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1000,
    )
    return [
        {"run_id": r.info.run_id, "start_time": r.info.start_time, "params": dict(r.data.params),
         "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)}
        for r in runs
    ]
