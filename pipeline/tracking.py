"""The one module that speaks to MLflow.

Each stage run is an MLflow run (its params section, metrics per step, artifacts)
nested under one parent run per pipeline invocation, tagged with the git commit and
the stage name. Settings are environment variables, never params:

- `MLFLOW_TRACKING_URI`: where runs go (default: `sqlite:///mlflow.db` in the project;
  `http://127.0.0.1:5000` for the shared server of `make mlflow-server`).
- `FCA_TRACKING=off`: no tracking at all.
- `FCA_EXPERIMENT`: experiment name (default `fca`).
- `FCA_PIPELINE_ID`: groups stage runs under one parent run. When unset, the id is
  derived from the engine process (`dvc repro` / `snakemake`) that started the stage,
  so one invocation of either engine gives one parent run.
- `FCA_TRACKING_SPOOL`: where calls that could not be sent are kept (default
  `$XDG_CACHE_HOME/fca/tracking-spool`, i.e. `~/.cache/fca/tracking-spool`).
- `FCA_TRACKING_RETRY_S` (default 30): while the server is away, seconds between tries.
- `FCA_TRACKING_WAIT_S` (default 30): at the end of a stage, how long to keep trying
  before the calls left are written to the spool.

If the tracking server goes away mid-run, the training goes on: logging calls warn
once, keep what could not be sent in memory (artifact files are copied into the spool
folder at once, since a stage may move or delete them), and try again every
FCA_TRACKING_RETRY_S seconds, without stalling training in between. What is still not
sent when the stage ends is written to the spool with a warning naming the folder; the
next stage run against the same server sends it, or `python -m pipeline.tracking sync`.
Over HTTP the MLflow client gives up on a request after 1 quick retry (not its
default of ~4 minutes of backoff) unless MLFLOW_HTTP_REQUEST_* variables say otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("fca.tracking")

DEFAULT_URI = "sqlite:///mlflow.db"
_ENGINES = ("dvc", "snakemake")

# scheme://user:password@host... (the password ends at the first '@', as SQLAlchemy reads it)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)


def mask_uri(text: str) -> str:
    """`text` with the passwords of the URIs in it replaced by ***: `postgresql://user:secret@host/db`
    -> `postgresql://user:***@host/db`; `...?password=secret` -> `...?password=***`. For printing
    and logging tracking URIs, and messages that may quote them."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:***@", str(text))
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


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


def spool_root() -> Path:
    """Where calls that could not be sent are kept until the server answers again."""
    if os.environ.get("FCA_TRACKING_SPOOL"):
        return Path(os.environ["FCA_TRACKING_SPOOL"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "fca" / "tracking-spool"


def _permanent(e: Exception) -> bool:
    """True for an error a retry cannot cure: the server answered 4xx (bad request, not found, ...)."""
    status = None
    get_status = getattr(e, "get_http_status_code", None)
    if callable(get_status):
        status = get_status()
    elif getattr(e, "response", None) is not None:  # requests.HTTPError from an artifact upload
        status = getattr(e.response, "status_code", None)
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def _send(client: Any, op: dict[str, Any], base: Path) -> None:
    """One kept call (a JSON-able dict) to the MLflow client; artifact paths are relative to `base` when not absolute."""
    from mlflow.entities import Metric, Param, RunTag

    kind, run_id = op["op"], op["run_id"]
    if kind == "log_batch":
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in op.get("metrics", ())],
            params=[Param(k, v) for k, v in op.get("params", ())],
            tags=[RunTag(k, v) for k, v in op.get("tags", ())],
        )
    elif kind in ("log_artifact", "log_artifacts"):
        getattr(client, kind)(run_id, str(base / op["path"]), op.get("artifact_path"))
    elif kind == "set_terminated":
        client.set_terminated(run_id, op["status"], end_time=op["end_time"])
    else:
        raise ValueError(f"unknown kept tracking call {kind!r}")


class MlflowRun(NullRun):
    """One MLflow run, with calls that survive a tracking server going away."""

    # Per-step metrics are buffered and sent in batches: one SQLite transaction per
    # step would cost more than a small training step.
    BATCH_SIZE = 500
    PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch

    def __init__(self, client: Any, run_id: str, tracking_uri: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.batch_seconds = 5.0
        self.retry_seconds = float(os.environ.get("FCA_TRACKING_RETRY_S", "30"))
        self.wait_seconds = float(os.environ.get("FCA_TRACKING_WAIT_S", "30"))
        self.spool = spool_root() / run_id
        self._pending: list[dict[str, Any]] = []  # in order; the head is sent first
        self._rejected: list[dict[str, Any]] = []  # refused by the server (4xx): kept, never sent again by this run
        self._metrics: list[list[Any]] = []
        self._last_send = time.monotonic()
        self._retry_at = 0.0  # while the server is away: when to try again
        self._down = False
        self._files = itertools.count()

    # -- sending -----------------------------------------------------------------

    def _attempt(self) -> None:
        """Send kept calls in order until one fails with a transport error."""
        if self._metrics:
            self._pending.append({"op": "log_batch", "run_id": self.run_id, "metrics": self._metrics})
            self._metrics = []
        self._last_send = time.monotonic()
        sent = 0
        while self._pending:
            op = self._pending[0]
            try:
                _send(self.client, op, self.spool)
            except Exception as e:  # noqa: BLE001 - any transport error: keep training
                if _permanent(e):
                    log.error("MLflow refused %s for run %s (%s); kept in the spool, not retried", op["op"], op["run_id"], mask_uri(str(e)))
                    self._rejected.append(self._pending.pop(0))
                    continue
                self._retry_at = time.monotonic() + self.retry_seconds
                if not self._down:
                    log.warning(
                        "MLflow tracking server unreachable (%s: %s); training goes on, metrics and artifacts are kept "
                        "and retried every %.0f s", type(e).__name__, mask_uri(str(e))[:300], self.retry_seconds,
                    )
                    self._down = True
                return
            self._pending.pop(0)
            sent += 1
            if op["op"] in ("log_artifact", "log_artifacts") and op.get("owned"):
                _remove(self.spool / op["path"])
        if self._down:
            self._down = False
            log.warning("MLflow tracking server reachable again: %d kept calls sent", sent)

    def flush(self) -> None:
        """Try to send everything now (also while the server is away)."""
        self._attempt()

    def _maybe_flush(self) -> None:
        if not self._down or time.monotonic() >= self._retry_at:
            self._attempt()

    def _queue(self, op: dict[str, Any]) -> None:
        if self._metrics:  # keep the order of calls
            self._pending.append({"op": "log_batch", "run_id": self.run_id, "metrics": self._metrics})
            self._metrics = []
        self._pending.append(op)
        self._maybe_flush()

    def close(self, status: str, parent: str | None = None) -> None:
        """End the run (and its parent); what cannot be sent within wait_seconds goes to the spool."""
        end = int(time.time() * 1000)
        self._queue({"op": "set_terminated", "run_id": self.run_id, "status": status, "end_time": end})
        if parent:  # the pipeline run ends with the state of its latest stage
            self._queue({"op": "set_terminated", "run_id": parent, "status": status, "end_time": end})
        deadline = time.monotonic() + self.wait_seconds
        self._attempt()
        while self._pending and time.monotonic() < deadline:
            time.sleep(min(max(1.0, self.retry_seconds / 10), max(0.0, deadline - time.monotonic())))
            self._attempt()
        left = self._rejected + self._pending
        if not left:
            _remove(self.spool)
            return
        _write_spool(self.spool, self.tracking_uri, left)
        log.warning(
            "MLflow tracking server %s: %d calls of run %s could not be sent; kept in %s. The next stage run against "
            "this server sends them, or run: python -m pipeline.tracking sync",
            "unreachable" if self._pending else "refused some calls", len(left), self.run_id, self.spool,
        )

    # -- the stage's API ---------------------------------------------------------------

    def log_params(self, params: dict[str, Any]) -> None:
        items = [[str(k), str(v)[:6000]] for k, v in params.items()]
        for i in range(0, max(len(items), 1), self.PARAMS_PER_BATCH):
            self._queue({"op": "log_batch", "run_id": self.run_id, "params": items[i:i + self.PARAMS_PER_BATCH]})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._metrics.extend([str(k), float(v), now, step or 0] for k, v in metrics.items())
        if len(self._metrics) >= self.BATCH_SIZE or time.monotonic() - self._last_send > self.batch_seconds:
            if self._down and len(self._metrics) >= self.BATCH_SIZE:  # away: park the batch, try later
                self._pending.append({"op": "log_batch", "run_id": self.run_id, "metrics": self._metrics})
                self._metrics = []
            self._maybe_flush()

    def _log_file(self, path: Path, artifact_path: str | None, owned: bool) -> None:
        kind = "log_artifacts" if path.is_dir() else "log_artifact"
        op = {"op": kind, "run_id": self.run_id, "path": str(path.resolve()), "artifact_path": artifact_path, "owned": owned}
        self._queue(op)
        if any(o is op for o in self._pending) and not owned:
            # Not sent now: copy it, the stage may move or delete the file before the next try.
            dest = self.spool / "files" / str(next(self._files)) / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, dest)
            op.update(path=str(dest.relative_to(self.spool)), owned=True)

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self._log_file(Path(path), subdir, owned=False)

    def _staged(self, name: str) -> tuple[Path, str | None]:
        """A file path in the spool for an artifact the stage hands over as an object."""
        norm = Path(name)
        dest = self.spool / "files" / str(next(self._files)) / norm.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        parent = norm.parent.as_posix()
        return dest, (None if parent in ("", ".") else parent)

    def log_figure(self, figure: Any, name: str) -> None:
        dest, subdir = self._staged(name)
        figure.savefig(dest)
        self._log_file(dest, subdir, owned=True)

    def log_image(self, image: Any, name: str) -> None:
        import numpy as np
        from PIL import Image

        if not isinstance(image, Image.Image):
            arr = np.asarray(image)
            if arr.dtype.kind == "f":
                arr = (np.clip(arr, 0.0, 1.0) * 255).round()
            image = Image.fromarray(arr.astype(np.uint8))
        dest, subdir = self._staged(name)
        image.save(dest)
        self._log_file(dest, subdir, owned=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._queue({"op": "log_batch", "run_id": self.run_id, "tags": [[str(k), str(v)] for k, v in tags.items()]})


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_spool(folder: Path, tracking_uri: str, ops: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "calls.jsonl.tmp"
    # Private (0600): the first line holds the tracking URI, which may carry a password.
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(json.dumps({"tracking_uri": tracking_uri, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        for op in ops:
            f.write(json.dumps(op) + "\n")
    os.replace(tmp, folder / "calls.jsonl")


def sync(tracking_uri: str | None = None) -> tuple[int, int]:
    """Send the spooled calls of ended runs (only those for `tracking_uri` when given).

    Returns (calls sent, calls still kept). Safe to run from several processes at once:
    a run's folder is locked while it is sent.
    """
    from mlflow.tracking import MlflowClient

    sent = kept = 0
    root = spool_root()
    for calls in sorted(root.glob("*/calls.jsonl")) if root.is_dir() else []:
        folder = calls.parent
        with open(folder / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # another process is sending it
            if not calls.exists():
                continue
            lines = calls.read_text().splitlines()
            head, ops = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]
            if tracking_uri is not None and head["tracking_uri"] != tracking_uri:
                continue
            _http_defaults(head["tracking_uri"])
            client = MlflowClient(tracking_uri=head["tracking_uri"])
            left: list[dict[str, Any]] = []
            for i, op in enumerate(ops):
                try:
                    _send(client, op, folder)
                    sent += 1
                except Exception as e:  # noqa: BLE001
                    if not _permanent(e):
                        left.extend(ops[i:])
                        break
                    log.error("MLflow refused kept %s for run %s: %s", op["op"], op["run_id"], mask_uri(str(e)))
                    left.append(op)
            if left:
                _write_spool(folder, head["tracking_uri"], left)
                kept += len(left)
            else:
                shutil.rmtree(folder, ignore_errors=True)
    return sent, kept


def _http_defaults(uri: str) -> None:
    """Fail fast over HTTP: our own retry loop keeps the calls, MLflow's would stall training for minutes."""
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        _quiet_retries(uri)


class _DropRetryWarnings(logging.Filter):
    """urllib3 logs every retry to the tracking server; our own one-line warning says it once."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.marks = (f"host='{host}', port={port}", f"{host}:{port}")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Retrying") and any(m in text for m in self.marks))


def _quiet_retries(uri: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pool = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _DropRetryWarnings) and f.marks[0] == f"host='{parts.hostname}', port={port}" for f in pool.filters):
        pool.addFilter(_DropRetryWarnings(parts.hostname or "", port))


def _tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def _client() -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = _tracking_uri()
    _http_defaults(uri)
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
        log.warning("MLflow tracking unavailable at start (%s: %s); stage %s runs untracked", type(e).__name__, mask_uri(str(e)), stage)
        yield NullRun()
        return
    parent = tags.get("mlflow.parentRunId")
    try:  # runs an earlier stage could not send (server away at its end) go first
        sent, kept = sync(_tracking_uri())
        if sent:
            log.warning("sent %d tracking calls kept from earlier runs", sent)
    except Exception as e:  # noqa: BLE001
        log.warning("could not send the kept tracking calls in %s: %s", spool_root(), mask_uri(str(e)))
    tracked = MlflowRun(client, run.info.run_id, _tracking_uri())
    tracked.log_params(params)
    status = "FAILED"
    try:
        yield tracked
        status = "FINISHED"
    finally:
        tracked.close(status, parent)


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


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.tracking sync`: send the calls kept in the spool to their servers."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["sync"]:
        print("usage: python -m pipeline.tracking sync   (sends the calls kept in " f"{spool_root()})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    sent, kept = sync()
    print(f"sent {sent} kept tracking calls; {kept} still kept in {spool_root()}")
    return 0 if kept == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
