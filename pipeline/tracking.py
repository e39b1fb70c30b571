"""The one module that speaks to MLflow.

Each stage run is an MLflow run (its params section, keyed `<section>.<key>` as in
params.yaml; metrics per step; artifacts; data/patches as its dataset when it reads it)
nested under one parent run per pipeline invocation, tagged with the git commit and
the stage name. The parent run is named `<engine> <commit>[+dirty] <params changed
from the committed params.yaml> <date>` and holds all of params.yaml. The experiment is
made a model-training one (tag mlflow.experimentKind), not a GenAI one. Settings are
environment variables, never params:

- `MLFLOW_TRACKING_URI`: where runs go (default: `sqlite:///mlflow.db` in the project;
  `http://127.0.0.1:5000` for the shared server of `make mlflow-server`).
- `FCA_TRACKING=off`: no tracking at all.
- `FCA_EXPERIMENT`: experiment name (default `fca`). `fca degrade` run by hand, outside
  the pipeline, logs to `<that>-degrade`.
- `FCA_MLFLOW_ARTIFACTS`: where new experiments keep artifacts (a folder or a URI such as
  `s3://bucket/fca`; `<it>/<experiment name>`). Default: `mlruns/` beside a local SQLite
  store file, or the server's choice. MLflow stores the location as an absolute path, so a
  local store copied with its project folder would write into the original: such an
  experiment is renamed (one warning says so) and a new one is made here.
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


def tracking_asked() -> bool:
    """Whether the user asked for tracking: FCA_TRACKING set to on, or MLFLOW_TRACKING_URI set."""
    return os.environ.get("FCA_TRACKING", "").strip().lower() in ("on", "1", "true", "yes") or bool(os.environ.get("MLFLOW_TRACKING_URI"))


def in_project() -> bool:
    """Whether the current folder is a pipeline project (it holds dvc.yaml or a Snakefile), or a
    pipeline engine runs this process."""
    return Path("dvc.yaml").is_file() or Path("Snakefile").is_file() or pipeline_id() is not None


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
    elif kind == "log_inputs":
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        client.log_inputs(run_id, [DatasetInput(Dataset(name, digest, source_type, source), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
                                   for name, digest, source_type, source, context in op["datasets"]])
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
        self.parent: str | None = None  # the pipeline's parent run, ended with this one

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
    """MLFLOW_TRACKING_URI, a relative SQLite file made absolute: MLflow keeps one store per URI
    text in a process, and a spooled call must reach the same file from any folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    if path and not path.startswith(("/", ":memory:")):
        return f"sqlite:///{Path.cwd() / path}"
    return uri


def _client() -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = _tracking_uri()
    _http_defaults(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _git(*args: str) -> str | None:
    """`git args` in the current folder: its stdout, or None outside a repository or without git."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _git_dirty() -> bool:
    """Tracked files changed since the commit, besides what a pipeline run itself writes (dvc.lock,
    the committed reports/) and params.yaml (whose changes the parent run's name lists)."""
    out = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
               ":(exclude)dvc.lock", ":(exclude)params.yaml", ":(exclude)reports")
    return bool(out and out.strip())


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without passwd entry)
        return "unknown"


# -- the experiment: its kind and where its artifacts go -------------------------------------

KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # the MLflow 3 UI's "Model training" (not GenAI)


def experiment_name(stage: str | None = None, standalone: bool = False) -> str:
    """FCA_EXPERIMENT (default `fca`); a standalone command run outside the pipeline (`fca degrade`
    on one's own photos) gets `<that>-<stage>`, so its runs do not mix with the pipeline's."""
    base = os.environ.get("FCA_EXPERIMENT", "fca")
    return f"{base}-{stage}" if standalone and stage and not pipeline_id() else base


def _local_store_dir(uri: str) -> Path | None:
    """The folder of a SQLite store file (`sqlite:///mlflow.db` is relative to the current folder); None otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).resolve().parent


def _local_path(location: str) -> Path | None:
    """A local artifact location (`/abs/path` or `file:///abs/path`) as a path; None for a remote one."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(location) if parts.scheme == "" else None


def _artifact_root() -> str | None:
    """Where new experiments keep artifacts: FCA_MLFLOW_ARTIFACTS; else, for a local SQLite store,
    `mlruns/` beside the store file (MLflow's own default is `./mlruns` of whichever folder
    created the experiment); else the server's default (None)."""
    if os.environ.get("FCA_MLFLOW_ARTIFACTS"):
        root = os.environ["FCA_MLFLOW_ARTIFACTS"]
        return str(Path(root).resolve()) if _local_path(root) is not None else root.rstrip("/")
    store = _local_store_dir(_tracking_uri())
    return str(store / "mlruns") if store else None


def _artifact_location(name: str) -> str | None:
    root = _artifact_root()
    return f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}" if root else None


def _foreign_artifacts(exp: Any) -> Path | None:
    """The artifact folder of an experiment in a local store that lies outside the store's folder:
    the store file was copied or moved from another project, whose folder MLflow would keep
    writing into (it stores the location as an absolute path). None when all is in place."""
    store = _local_store_dir(_tracking_uri())
    where = _local_path(exp.artifact_location or "")
    if os.environ.get("FCA_MLFLOW_ARTIFACTS") or store is None or where is None:
        return None
    return None if where.resolve().is_relative_to(store) else where


def _set_aside(client: Any, exp: Any, where: Path) -> None:
    """Rename a copied store's experiment, so that a new one of that name keeps artifacts here."""
    new_name = f"{exp.name} (id {exp.experiment_id}, artifacts in {where})"
    try:
        client.rename_experiment(exp.experiment_id, new_name)
    except Exception as e:  # noqa: BLE001 - another stage renamed it first
        log.debug("could not rename experiment %s: %s", exp.experiment_id, e)
        return
    log.warning("MLflow experiment %r of %s keeps its artifacts in %s, outside this folder (a copied or moved project): "
                "renamed it %r; new runs go to a new %r with artifacts in %s",
                exp.name, mask_uri(_tracking_uri()), where, new_name, exp.name, _artifact_location(exp.name))


def _say_if_elsewhere(exp: Any) -> None:
    """FCA_MLFLOW_ARTIFACTS applies to new experiments only: say so once when an existing one differs."""
    wanted = _artifact_location(exp.name)
    if os.environ.get("FCA_MLFLOW_ARTIFACTS") and wanted and not str(exp.artifact_location).startswith(
            (wanted, "file://" + wanted)) and exp.experiment_id not in _SAID:
        _SAID.add(exp.experiment_id)
        log.warning("FCA_MLFLOW_ARTIFACTS=%s: MLflow experiment %r already keeps its artifacts in %s, and MLflow cannot "
                    "move them; set FCA_EXPERIMENT to a new name for an experiment with artifacts there",
                    os.environ["FCA_MLFLOW_ARTIFACTS"], exp.name, exp.artifact_location)


_SAID: set[str] = set()


def _experiment_id(client: Any, name: str | None = None) -> str:
    """The experiment's id; made when missing, as a model-training experiment (so the MLflow 3 UI
    does not open it as a GenAI one) with its artifacts where _artifact_root() says."""
    name = name or experiment_name()
    exp = client.get_experiment_by_name(name)
    where = _foreign_artifacts(exp) if exp is not None else None
    if where is not None:
        _set_aside(client, exp, where)
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
    _say_if_elsewhere(exp)
    return exp.experiment_id


# -- what a run records besides the stage's own calls --------------------------------------

# Stages whose params.yaml section has another name.
_SECTION_OF = {"train_fdc": "fdc", "train_generator": "generator"}


def section_prefixed(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    """The stage's params keyed as in params.yaml: `lr` of train_fdc -> `fdc.lr`, so that stages'
    params differ in the UI. Keys already under a section (`fdc.scale_end` read by
    train_generator) stay, and so do keys that are no params.yaml value (device, threads, ...)."""
    from pipeline.params import SECTIONS

    section = _SECTION_OF.get(stage, stage)
    config = SECTIONS.get(section)
    if config is None:
        return dict(params)
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config)}
    out = {}
    for key, value in params.items():
        head = str(key).split(".", 1)[0]
        out[f"{section}.{key}" if head in fields and head not in SECTIONS else str(key)] = value
    return out


def _pipeline_params() -> dict[str, Any]:
    """All of ./params.yaml, keyed like the stage runs' params (for the parent run); {} when unreadable."""
    try:
        from pipeline.params import SECTIONS, load_params, section_dict

        loaded = load_params(Path("params.yaml"))
    except Exception as e:  # noqa: BLE001 - no or a bad params.yaml: the stage itself says so
        log.debug("no pipeline params for the parent run: %s", e)
        return {}
    return {f"{s}.{k}": v for s in SECTIONS for k, v in section_dict(getattr(loaded, s)).items()}


def _flat(tree: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): json.dumps(tree) if isinstance(tree, list) else str(tree)} if prefix else {}
    out: dict[str, str] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def changed_params() -> list[tuple[str, str]]:
    """(key, value) of ./params.yaml's values that differ from the committed params.yaml; [] when unknown."""
    import yaml

    committed = _git("show", "HEAD:./params.yaml")
    try:
        now = _flat(yaml.safe_load(Path("params.yaml").read_text()))
        before = _flat(yaml.safe_load(committed)) if committed is not None else None
    except (OSError, yaml.YAMLError):
        return []
    return [] if before is None else [(k, v) for k, v in now.items() if before.get(k) != v]


def parent_name(engine: str, commit: str, dirty: bool, changed: list[tuple[str, str]], when: float) -> str:
    """`dvc 655cdf0+dirty gen.loss=spectral 05-14 10:22`: what tells two pipeline runs apart first,
    the date last, as the UI cuts names at about 40 characters."""
    head = f"{engine} {commit[:7] if commit != 'unknown' else 'no-git'}{'+dirty' if dirty else ''}"
    shown: list[str] = []
    for key, value in changed:
        section, _, rest = key.partition(".")
        item = f"{section[:3]}.{rest}={value[:12]}" if rest else f"{key}={value[:12]}"
        if shown and len(" ".join(shown)) + len(item) > 26:  # the rest only as a count
            shown.append(f"+{len(changed) - len(shown)}")
            break
        shown.append(item)
    return " ".join([head, *shown, time.strftime("%m-%d %H:%M", time.localtime(when))])


def _source_tags(entry: str, engine: str | None, commit: str) -> dict[str, str]:
    """MLflow's system tags, for the UI's Source and User columns: a run started by an engine is
    a PROJECT run (shown `<project folder>:<entry>`), a command run by hand a LOCAL one."""
    from mlflow.utils import mlflow_tags as t

    tags = {t.MLFLOW_USER: _user(), t.MLFLOW_GIT_COMMIT: commit}
    if engine:
        tags |= {t.MLFLOW_SOURCE_TYPE: "PROJECT", t.MLFLOW_SOURCE_NAME: str(Path.cwd()), t.MLFLOW_PROJECT_ENTRY_POINT: entry}
    else:
        tags |= {t.MLFLOW_SOURCE_TYPE: "LOCAL", t.MLFLOW_SOURCE_NAME: f"fca {entry.replace('_', '-')}"}
    return tags


PATCHES = "data/patches"


def _yaml_file(path: str) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _locked_out(path: str) -> dict[str, Any] | None:
    """dvc.lock's record of the stage output `path` (md5, size, nfiles), if any."""
    for stage in (_yaml_file("dvc.lock").get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if isinstance(out, dict) and out.get("path") == path:
                return out
    return None


def patches_digest() -> tuple[str, str] | None:
    """(digest, where from) of ./data/patches: DVC's md5 from dvc.lock when the lock describes the
    folder as it is (same file count and bytes; it can be stale after a Snakemake run), else
    the md5 of its index.csv; None without the folder."""
    folder = Path(PATCHES)
    if not folder.is_dir():
        return None
    files = [p for p in folder.rglob("*") if p.is_file()]
    locked = _locked_out(PATCHES)
    if locked and locked.get("nfiles") == len(files) and locked.get("size") == sum(p.stat().st_size for p in files):
        return str(locked["md5"]).removesuffix(".dir"), "dvc.lock"
    index = folder / "index.csv"
    if index.is_file():
        import hashlib

        return hashlib.md5(index.read_bytes()).hexdigest(), "index.csv"
    return None


def _dataset_op(stage: str, run_id: str) -> dict[str, Any] | None:
    """The kept call that records data/patches as the run's dataset, for a stage that reads it (dvc.yaml's deps)."""
    deps = ((_yaml_file("dvc.yaml").get("stages") or {}).get(stage) or {}).get("deps") or []
    found = patches_digest() if PATCHES in deps else None
    if found is None:
        return None
    digest, origin = found
    context = "training" if stage.startswith("train") else stage
    source = json.dumps({"uri": str(Path(PATCHES).resolve()), "digest_from": origin})
    return {"op": "log_inputs", "run_id": run_id, "datasets": [[PATCHES, digest, "local", source, context]]}


def _parent_run(client: Any, experiment_id: str, pid: str, commit: str) -> str:
    found = client.search_runs([experiment_id], filter_string=f"tags.`fca.pipeline_id` = '{pid}' and tags.`fca.kind` = 'pipeline'", max_results=1)
    if found:
        return found[0].info.run_id
    from mlflow.entities import Param

    engine = pid.split("-")[0]
    changed = changed_params()
    name = parent_name(engine, commit, _git_dirty(), changed, time.time())
    tags = {"fca.pipeline_id": pid, "fca.git_commit": commit, "fca.kind": "pipeline", "mlflow.runName": name,
            "fca.changed_params": ", ".join(f"{k}={v}" for k, v in changed)[:5000] or "none"}
    run = client.create_run(experiment_id, run_name=name, tags=tags | _source_tags(engine, engine, commit))
    # The whole params.yaml, keyed as the stage runs' params: parent runs compare side by side.
    items = [Param(k, str(v)[:6000]) for k, v in _pipeline_params().items()]
    for i in range(0, len(items), MlflowRun.PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=items[i:i + MlflowRun.PARAMS_PER_BATCH])
    return run.info.run_id


def _open_stage_run(stage: str, params: dict[str, Any], standalone: bool) -> NullRun:
    """Create the stage's MLflow run (under its pipeline's parent run) and log its params; a
    NullRun, with a warning, when MLflow cannot be reached."""
    commit = _git_commit()
    pid = pipeline_id()
    try:
        client = _client()
        experiment_id = _experiment_id(client, experiment_name(stage, standalone))
        tags = {"fca.stage": stage, "fca.git_commit": commit, "fca.kind": "stage", "mlflow.runName": stage}
        tags |= _source_tags(stage, pid.split("-")[0] if pid else None, commit)
        parent = None
        if pid:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            parent = _parent_run(client, experiment_id, pid, commit)
            client.update_run(parent, status="RUNNING")
            tags[MLFLOW_PARENT_RUN_ID] = parent
            tags["fca.pipeline_id"] = pid
        run = client.create_run(experiment_id, run_name=stage, tags=tags)
    except Exception as e:  # noqa: BLE001
        log.warning("MLflow tracking unavailable at start (%s: %s); stage %s runs untracked", type(e).__name__, mask_uri(str(e)), stage)
        return NullRun()
    try:  # runs an earlier stage could not send (server away at its end) go first
        sent, kept = sync(_tracking_uri())
        if sent:
            log.warning("sent %d tracking calls kept from earlier runs", sent)
    except Exception as e:  # noqa: BLE001
        log.warning("could not send the kept tracking calls in %s: %s", spool_root(), mask_uri(str(e)))
    tracked = MlflowRun(client, run.info.run_id, _tracking_uri())
    tracked.parent = parent
    tracked.log_params(section_prefixed(stage, params))
    try:
        dataset = _dataset_op(stage, run.info.run_id)
    except OSError as e:  # an unreadable data/patches: the stage itself will say so
        log.warning("no dataset recorded for stage %s: %s", stage, e)
        dataset = None
    if dataset is not None:
        tracked._queue(dataset)
    return tracked


class _DeferredRun(NullRun):
    """A run opened at its first logging call, or at a clean end: an error found before any work
    (a wrong path, a busy output) leaves no run behind."""

    def __init__(self, open_run: Any) -> None:
        self._open = open_run
        self._run: NullRun | None = None

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self._run.run_id if self._run is not None else None

    @property
    def opened(self) -> bool:
        return self._run is not None

    def started(self) -> NullRun:
        if self._run is None:
            self._run = self._open()
        return self._run

    def log_params(self, params: dict[str, Any]) -> None:
        self.started().log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.started().log_metrics(metrics, step)

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.started().log_artifact(path, subdir)

    def log_figure(self, figure: Any, name: str) -> None:
        self.started().log_figure(figure, name)

    def log_image(self, image: Any, name: str) -> None:
        self.started().log_image(image, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.started().set_tags(tags)

    def flush(self) -> None:
        if self._run is not None:
            self._run.flush()


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any], *, standalone: bool = False) -> Iterator[NullRun]:
    """Open the MLflow run of one stage; yields an object with log_* methods.

    The run ends FINISHED when the block exits normally, FAILED on an exception.
    With FCA_TRACKING=off, or when MLflow cannot be reached at start, a NullRun is
    yielded and the stage runs untracked (with a warning in the second case).
    `standalone`: a command also run by hand outside the pipeline (`fca degrade`). Its
    run opens at its first logging call, so an error found before any work (checked
    inside the block) leaves no run; outside a pipeline it goes to its own experiment.
    Run in a folder that is no project (`in_project`), it tracks nothing unless asked
    (`tracking_asked`): a user's photo folder gets its outputs and no mlflow.db beside them.
    """
    if not tracking_enabled() or (standalone and not in_project() and not tracking_asked()):
        yield NullRun()
        return
    deferred = _DeferredRun(lambda: _open_stage_run(stage, params, standalone))
    run: NullRun = deferred if standalone else deferred.started()
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        if status == "FINISHED" or deferred.opened:  # a clean end with no logging call still records the run
            opened = deferred.started()
            if isinstance(opened, MlflowRun):
                opened.close(status, opened.parent)


def stage_runs(stage: str) -> list[dict[str, Any]]:
    """Finished runs of one stage in the current experiment, newest first: [{run_id, start_time, params, metrics, tags}]."""
    client = _client()
    exp = client.get_experiment_by_name(experiment_name())
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


def ui_link(ui: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's page of the experiment, in its model-training view. The MLflow 3.x UI picks
    GenAI or model training per browser (default GenAI) unless the link's workflowType says."""
    exp = _client().get_experiment_by_name(experiment_name())
    page = f"experiments/{exp.experiment_id}/runs" if exp is not None else "experiments"
    return f"{ui.rstrip('/')}/#/{page}?workflowType=machine_learning"


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.tracking sync`: send the calls kept in the spool to their servers.
    `python -m pipeline.tracking link [UI]`: print the UI link of the experiment."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["link"] and len(argv) <= 2:
        print(ui_link(*argv[1:]))
        return 0
    if argv != ["sync"]:
        print("usage: python -m pipeline.tracking sync   (sends the calls kept in " f"{spool_root()})\n"
              "       python -m pipeline.tracking link [UI]   (the experiment's page in the MLflow UI, default UI "
              "http://127.0.0.1:5000)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    sent, kept = sync()
    print(f"sent {sent} kept tracking calls; {kept} still kept in {spool_root()}")
    return 0 if kept == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
