"""The one module that speaks to MLflow.

Each stage run is an MLflow run (params keyed `<section>.<key>` as in params.yaml, metrics per
step, artifacts, data/patches as its dataset when it reads it), a child of one parent run per
pipeline invocation, named `<engine> <commit>[+dirty] <changed params> <date>`, holding all of
params.yaml. Settings are environment variables: `MLFLOW_TRACKING_URI` (default
`sqlite:///mlflow.db`), `FCA_TRACKING=off`, `FCA_EXPERIMENT` (default `fca`; `fca degrade` by hand
logs to `<that>-degrade`), `FCA_MLFLOW_ARTIFACTS` (where new experiments keep artifacts; default
`mlruns/` beside a SQLite store file, or the server's choice), `FCA_PIPELINE_ID` (default: the
`dvc repro` / `snakemake` process above the stage; pipeline/invocation.py). If the server goes away
mid-run, training goes on: one warning says tracking stopped and the run's later calls are dropped
(a spool that kept them had no measured need). A server down at the start leaves the stage
untracked, with a warning.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

from filelock import FileLock

from pipeline import dataset, invocation

log = logging.getLogger("fca.tracking")

DEFAULT_URI = "sqlite:///mlflow.db"
KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # the MLflow 3 UI's "Model training" (not GenAI)
_SECTION_OF = {"train_fdc": "fdc", "train_generator": "generator"}  # stages whose params section has another name

# scheme://user:password@host... (the password ends at the first '@', as SQLAlchemy reads it)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)


def mask_uri(text: str) -> str:
    """`text` with the passwords of the URIs in it replaced by ***: `postgresql://user:secret@host/db`
    -> `postgresql://user:***@host/db`; `...?password=secret` -> `...?password=***`."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:***@", str(text))
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


def tracking_enabled() -> bool:
    return os.environ.get("FCA_TRACKING", "on").strip().lower() not in ("off", "0", "false", "no")


def tracking_asked() -> bool:
    """Whether the user asked for tracking: FCA_TRACKING set to on, or MLFLOW_TRACKING_URI set."""
    return os.environ.get("FCA_TRACKING", "").strip().lower() in ("on", "1", "true", "yes") or bool(os.environ.get("MLFLOW_TRACKING_URI"))


def in_project() -> bool:
    """Whether the current folder is a pipeline project (dvc.yaml or a Snakefile), or an engine runs this process."""
    return Path("dvc.yaml").is_file() or Path("Snakefile").is_file() or invocation.pipeline_id() is not None


class NullRun:
    """Tracking switched off: every call does nothing."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...


class MlflowRun(NullRun):
    """One MLflow run. Metrics, params and tags go through MLflow's async queue (batched, off the
    training thread); a failed call, sent or queued, stops tracking for the run with one warning."""

    def __init__(self, client: Any, run_id: str, parent: str | None = None) -> None:
        self.client, self.run_id, self.parent = client, run_id, parent  # the parent run ends with this one
        self.stopped, self._lock = False, threading.Lock()
        self._queued: list[concurrent.futures.Future] = []  # of the queued calls not yet sent

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.stopped:
            return None
        try:
            return getattr(self.client, method)(self.run_id, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any tracking error: the stage's work goes on
            self._stop(e)
            return None

    def _stop(self, e: BaseException) -> None:
        with self._lock:  # a queued call fails on MLflow's thread, a direct one on the stage's
            said, self.stopped = self.stopped, True
        if not said:
            log.warning("MLflow tracking stopped for run %s (%s: %s); the stage goes on untracked",
                        self.run_id, type(e).__name__, mask_uri(str(e))[:300])

    def _queue(self, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        ops = self._call("log_batch", metrics=[Metric(*m) for m in metrics], params=[Param(*p) for p in params],
                         tags=[RunTag(*t) for t in tags], synchronous=False)
        self._queued = [f for f in self._queued if not f.done()]
        # RunOperations offers only a blocking wait(): its futures tell the run of a failure as it happens.
        for future in ops._operation_futures if ops is not None else ():
            self._queued.append(future)
            future.add_done_callback(self._sent)

    def _sent(self, future: concurrent.futures.Future) -> None:
        if future.exception() is not None:
            self._stop(future.exception())

    def log_params(self, params: dict[str, Any]) -> None:
        self._queue(params=[(str(k), str(v)[:6000]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._queue(metrics=[(str(k), float(v), int(time.time() * 1000), step or 0) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        self._queue(tags=[(str(k), str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self._call("log_artifacts" if Path(path).is_dir() else "log_artifact", str(path), subdir)

    def log_figure(self, figure: Any, name: str) -> None:
        self._call("log_figure", figure, name)

    def close(self, status: str) -> None:
        """Wait for the queued calls, then end the run and its parent (which ends as its latest stage)."""
        concurrent.futures.wait(self._queued)
        self._call("set_terminated", status)
        if self.parent and not self.stopped:
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.parent, status)


def _tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, a relative SQLite file made absolute (artifacts and locks key on it from any folder)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    return f"sqlite:///{Path.cwd() / path}" if path and not path.startswith(("/", ":memory:")) else uri


def _client() -> Any:
    from mlflow.tracking import MlflowClient

    uri = _tracking_uri()
    # Fail fast over HTTP (MLflow's default backoff would stall a stage for minutes on a dead server),
    # and batch queued calls for 2 s: one SQLite transaction per step costs more than a small step.
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30"), ("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "2")):
        os.environ.setdefault(key, value)
    # A dead server fails every queued batch with an error line; our one warning says it.
    logging.getLogger("mlflow.utils.async_logging.async_logging_queue").setLevel(logging.CRITICAL)
    return MlflowClient(tracking_uri=uri)


# -- the experiment: its kind and where its artifacts go -------------------------------------

def experiment_name(stage: str | None = None, standalone: bool = False) -> str:
    """FCA_EXPERIMENT (default `fca`); a standalone command run outside the pipeline gets `<that>-<stage>`."""
    base = os.environ.get("FCA_EXPERIMENT", "fca")
    return f"{base}-{stage}" if standalone and stage and not invocation.pipeline_id() else base


def _local_store_dir() -> Path | None:
    uri = _tracking_uri()
    path = uri[len("sqlite:///"):].split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    return None if path in ("", ":memory:") else Path(path).resolve().parent


def _artifact_location(name: str) -> str | None:
    """FCA_MLFLOW_ARTIFACTS/<name>; else, for a SQLite store, mlruns/ beside the store file (MLflow's
    own default is ./mlruns of whichever folder made the experiment); else the server's (None)."""
    root = os.environ.get("FCA_MLFLOW_ARTIFACTS")
    if root:
        root = root.rstrip("/") if "://" in root else str(Path(root).resolve())
    else:
        store = _local_store_dir()
        root = str(store / "mlruns") if store else None
    return f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}" if root else None


def _foreign_artifacts(exp: Any) -> Path | None:
    """The artifact folder of a local store's experiment lying outside the store's folder: the store
    was copied from another project, whose folder MLflow would keep writing into."""
    store, where = _local_store_dir(), unquote(str(exp.artifact_location).removeprefix("file://"))
    if os.environ.get("FCA_MLFLOW_ARTIFACTS") or store is None or "://" in where:
        return None
    return None if Path(where).resolve().is_relative_to(store) else Path(where)


def _experiment_id(client: Any, name: str) -> str:
    """The experiment's id; made when missing as a model-training one with artifacts where _artifact_location says."""
    exp = client.get_experiment_by_name(name)
    where = _foreign_artifacts(exp) if exp is not None else None
    if where is not None:  # the copied runs stay visible, under a new name; new runs go to a new experiment
        with contextlib.suppress(Exception):  # another stage renamed it first
            client.rename_experiment(exp.experiment_id, f"{exp.name} (id {exp.experiment_id}, artifacts in {where})")
            log.warning("MLflow experiment %r keeps its artifacts in %s, outside this folder (a copied or moved project): "
                        "renamed it; new runs go to a new one", exp.name, where)
        exp = client.get_experiment_by_name(name)
        exp = None if exp is not None and _foreign_artifacts(exp) else exp
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(name), tags={KIND_TAG: MODEL_TRAINING})
        except Exception:  # noqa: BLE001 - created concurrently by another stage
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if KIND_TAG not in exp.tags:  # made by an earlier version or by hand: the UI would guess GenAI
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


# -- what a run records besides the stage's own calls --------------------------------------

def section_prefixed(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    """The stage's params keyed as in params.yaml (`lr` of train_fdc -> `fdc.lr`). Keys already under a
    section (`fdc.scale_end` read by train_generator) stay, and so do runtime keys (device, threads)."""
    from pipeline.params import SECTIONS

    section = _SECTION_OF.get(stage, stage)
    if section not in SECTIONS:
        return dict(params)
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    return {f"{section}.{k}" if str(k).split(".", 1)[0] in fields - set(SECTIONS) else str(k): v for k, v in params.items()}


def _run_tags(entry: str, engine: str | None, commit: str, tags: dict[str, str]) -> dict[str, str]:
    """`tags` and MLflow's own context tags (the user) for the UI's Source and User columns; the source
    says the project (`<folder>:<entry>`) under an engine, `fca <command>` by hand. MLflow's own source
    and git commit are those of sys.argv[0], the venv's `fca` script: its path, and no commit (measured
    in a fresh repository), so both are set here from the project folder."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils import mlflow_tags as t

    tags = tags | {t.MLFLOW_GIT_COMMIT: commit}
    if engine:
        tags |= {t.MLFLOW_SOURCE_TYPE: "PROJECT", t.MLFLOW_SOURCE_NAME: str(Path.cwd()), t.MLFLOW_PROJECT_ENTRY_POINT: entry}
    else:
        tags |= {t.MLFLOW_SOURCE_TYPE: "LOCAL", t.MLFLOW_SOURCE_NAME: f"fca {entry.replace('_', '-')}"}
    return resolve_tags(tags)


def _log_dataset(client: Any, stage: str, run_id: str) -> None:
    """data/patches as the run's dataset, for a stage that reads it (pipeline/dataset.py)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    found = dataset.patches_digest() if dataset.read_by(stage) else None
    if found is not None:
        source = json.dumps({"uri": str(Path(dataset.PATCHES).resolve()), "digest_from": found[1]})
        context = InputTag(MLFLOW_DATASET_CONTEXT, "training" if stage.startswith("train") else stage)
        client.log_inputs(run_id, [DatasetInput(Dataset(dataset.PATCHES, found[0], "local", source), [context])])


def _parent_run(client: Any, experiment_id: str, pid: str, commit: str) -> str:
    """The pipeline invocation's parent run: found, or made (the caller holds the pipeline's lock)."""
    from mlflow.entities import Param

    query = f"tags.`fca.pipeline_id` = '{pid}' and tags.`fca.kind` = 'pipeline'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    engine, changed = pid.split("-")[0], invocation.changed_params()
    name = invocation.parent_name(engine, commit, invocation.dirty(), changed, time.time())
    tags = {"fca.pipeline_id": pid, "fca.kind": "pipeline",
            "fca.changed_params": ", ".join(f"{k}={v}" for k, v in changed)[:5000] or "none"}
    run_id = client.create_run(experiment_id, run_name=name, tags=_run_tags(engine, engine, commit, tags)).info.run_id
    # The whole params.yaml, keyed as the stage runs' params: parent runs compare side by side.
    client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in invocation.params().items()])
    return run_id


def _pipeline_lock(pid: str | None) -> Any:
    """Stages of one pipeline started at once (snakemake -j) would each search, find no parent run, and
    make one (without this lock the test that starts two at once found two parents); and each would
    set up a new SQLite store, which MLflow's migrations do not survive."""
    key = hashlib.sha1(f"{_tracking_uri()}\n{pid}".encode()).hexdigest()[:16]
    return FileLock(Path(tempfile.gettempdir()) / f"fca-tracking-{key}.lock", timeout=300) if pid else contextlib.nullcontext()


def _open_stage_run(stage: str, params: dict[str, Any], standalone: bool) -> NullRun:
    """The stage's MLflow run (under its pipeline's parent run) with its params; a NullRun, with a
    warning, when MLflow cannot be reached."""
    commit, pid = invocation.commit(), invocation.pipeline_id()
    try:
        tags = {"fca.stage": stage, "fca.kind": "stage"}
        parent = None
        with _pipeline_lock(pid):
            client = _client()  # it sets up a new SQLite store at once
            experiment_id = _experiment_id(client, experiment_name(stage, standalone))
            if pid:
                parent = _parent_run(client, experiment_id, pid, commit)
                client.update_run(parent, status="RUNNING")
                tags |= {"mlflow.parentRunId": parent, "fca.pipeline_id": pid}
        run_id = client.create_run(experiment_id, run_name=stage, tags=_run_tags(stage, pid and pid.split("-")[0], commit, tags)).info.run_id
    except Exception as e:  # noqa: BLE001
        log.warning("MLflow tracking unavailable at start (%s: %s); stage %s runs untracked", type(e).__name__, mask_uri(str(e)), stage)
        return NullRun()
    run = MlflowRun(client, run_id, parent)
    run.log_params(section_prefixed(stage, params))
    try:
        _log_dataset(client, stage, run_id)
    except Exception as e:  # noqa: BLE001 - an unreadable data/patches: the stage itself will say so
        log.warning("no dataset recorded for stage %s: %s", stage, mask_uri(str(e)))
    return run


class _DeferredRun(NullRun):
    """A run opened at its first logging call, or at a clean end: an error found before any work
    (a wrong path, a busy output) leaves no run behind."""

    def __init__(self, open_run: Any) -> None:
        self._open, self._run = open_run, None

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self._run.run_id if self._run is not None else None

    def started(self) -> NullRun:
        if self._run is None:
            self._run = self._open()
        return self._run

    def __getattribute__(self, name: str) -> Any:
        if name in ("log_params", "log_metrics", "log_artifact", "log_figure", "set_tags"):
            return getattr(self.started(), name)
        return super().__getattribute__(name)


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any], *, standalone: bool = False) -> Iterator[NullRun]:
    """The MLflow run of one stage: FINISHED when the block exits normally, FAILED on an exception.

    With FCA_TRACKING=off, or MLflow unreachable at start, a NullRun (the latter with a warning).
    `standalone`: a command also run by hand (`fca degrade`): its run opens at its first logging
    call, so an error found before any work leaves no run, and outside a pipeline it goes to its
    own experiment. In a folder that is no project it tracks nothing unless asked (`tracking_asked`):
    a user's photo folder gets its outputs and no mlflow.db beside them.
    """
    if not tracking_enabled() or (standalone and not in_project() and not tracking_asked()):
        yield NullRun()
        return
    deferred = _DeferredRun(lambda: _open_stage_run(stage, params, standalone))
    status = "FAILED"
    try:
        yield deferred if standalone else deferred.started()
        status = "FINISHED"
    finally:
        if status == "FINISHED" or deferred._run is not None:  # a clean end with no logging call still records the run
            opened = deferred.started()
            if isinstance(opened, MlflowRun):
                opened.close(status)


def stage_runs(stage: str) -> list[dict[str, Any]]:
    """Finished runs of one stage in the current experiment, newest first: [{run_id, start_time, params, metrics, tags}]."""
    client = _client()
    exp = client.get_experiment_by_name(experiment_name())
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`fca.stage` = '{stage}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1000)
    return [{"run_id": r.info.run_id, "start_time": r.info.start_time, "params": dict(r.data.params),
             "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in runs]


def ui_link(ui: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's page of the experiment in its model-training view (the MLflow 3 UI picks GenAI
    or model training per browser, default GenAI, unless the link's workflowType says)."""
    exp = _client().get_experiment_by_name(experiment_name())
    page = f"experiments/{exp.experiment_id}/runs" if exp is not None else "experiments"
    return f"{ui.rstrip('/')}/#/{page}?workflowType=machine_learning"


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.tracking link [UI]`: print the UI link of the experiment."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["link"] or len(argv) > 2:
        print("usage: python -m pipeline.tracking link [UI, default http://127.0.0.1:5000]", file=sys.stderr)
        return 2
    print(ui_link(*argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
