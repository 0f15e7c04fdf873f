"""Trackers as metric sources, beside the file formats: an MLflow tracking server and trackio's local store.

Wherever a tool takes a log path it also takes a tracker URI:

- `mlflow://host:port/<run_id>`: a run on an MLflow tracking server, read with the MLflow client
  (`mlflow-skinny`, imported lazily). With a server configured (`--mlflow-uri`), `mlflow:<run_id>` or
  a bare 32-hex run id name a run there.
- `trackio://<project>[/<run>]`: trackio's SQLite store `<trackio dir>/<project>.db`, read directly
  (table `metrics`: `run_name`, `step`, `metrics` JSON, as trackio's `SQLiteStorage` writes it); the
  newest run when no run is named.

Both fold their points through the same `Collector` as the file formats, so the series model, the
downsampling and the NaN bookkeeping are the same. What the caller may reach is the tool layer's call
(`TrackerSource.local_file` is checked against the roots there); a run that does not exist or a server
that cannot be reached raises `SourceError` with what to do.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from ml_debug_mcp.core.logs.formats.common import Collector, is_known_metric, is_step_key, to_float
from ml_debug_mcp.core.logs.series import ParsedLog

MAX_SERIES = 64  # metrics read from one tracker run (known metric names first)
MAX_TRACKIO_ROWS = 2_000_000  # rows of one trackio run folded into the series; past that the read stops and says so
CONNECT_TIMEOUT = 5.0
_RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_TRACKIO_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


class SourceError(ValueError):
    """A tracker source that cannot be read as given; the message says what to do instead."""


class SourceNotFound(SourceError):
    """The store or run named is not there (yet): a run being watched may not have logged its first record."""


@dataclass(frozen=True)
class TrackerSource:
    """A run in a tracker: `location` is the server URL (mlflow) or the store file (trackio)."""

    kind: Literal["mlflow", "trackio"]
    location: str
    run: str  # MLflow run id, or trackio run name ("" = the newest run)
    label: str  # as the caller wrote it

    @property
    def local_file(self) -> Path | None:
        """The file this source reads, which must lie inside the roots (None for a server)."""
        return Path(self.location) if self.kind == "trackio" else None


def default_trackio_dir() -> Path:
    """Where trackio keeps its stores: $TRACKIO_DIR, else $HF_HOME/trackio (trackio's own rule)."""
    if os.environ.get("TRACKIO_DIR"):
        return Path(os.environ["TRACKIO_DIR"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(hf_home).expanduser() / "trackio"


def parse_source(raw: str, *, mlflow_uri: str | None = None, trackio_dir: Path | None = None) -> TrackerSource | None:
    """The tracker run a source string names, or None when it is a plain path. Raises SourceError when malformed."""
    text = raw.strip()
    low = text.lower()
    if low.startswith("mlflow:"):
        return _mlflow_source(text, mlflow_uri)
    if low.startswith("trackio:"):
        return _trackio_source(text, trackio_dir or default_trackio_dir())
    if mlflow_uri and _RUN_ID_RE.match(text):
        return TrackerSource("mlflow", mlflow_uri.rstrip("/"), text, text)
    return None


def _mlflow_source(text: str, mlflow_uri: str | None) -> TrackerSource:
    parts = urlsplit(text)
    if parts.netloc:
        run = parts.path.strip("/")
        scheme = "http"
        if mlflow_uri and urlsplit(mlflow_uri).netloc == parts.netloc:
            scheme = urlsplit(mlflow_uri).scheme or "http"  # the configured server's scheme (https behind a proxy)
        server = f"{scheme}://{parts.netloc}"
    else:
        run = text.split(":", 1)[1].strip("/")
        if not mlflow_uri:
            raise SourceError(f"'{text}' names no MLflow server: write mlflow://host:port/<run_id>, or start the server "
                              "with --mlflow-uri http://host:port to use bare run ids.")
        server = mlflow_uri.rstrip("/")
    if not run or "/" in run:
        raise SourceError(f"'{text}' should end in one MLflow run id, e.g. mlflow://127.0.0.1:5000/"
                          "0123456789abcdef0123456789abcdef (the run page's URL ends in it).")
    return TrackerSource("mlflow", server, run, text)


def _trackio_source(text: str, trackio_dir: Path) -> TrackerSource:
    rest = text.split(":", 1)[1].lstrip("/")
    project, _, run = rest.partition("/")
    if not project:
        raise SourceError(f"'{text}' names no trackio project: write trackio://<project> or trackio://<project>/<run>.")
    safe = _TRACKIO_NAME_RE.sub("", project) or "default"  # trackio's canonical project name is the file name
    return TrackerSource("trackio", str(trackio_dir / f"{safe}.db"), run.strip("/"), text)


@dataclass
class TrackerRun:
    """What one read of a tracker run gives: its series, and its status where the tracker keeps one."""

    parsed: ParsedLog
    status: str | None = None  # MLflow: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED

    @property
    def finished(self) -> bool:
        return self.status in ("FINISHED", "FAILED", "KILLED")


def read_tracker(source: TrackerSource, max_points: int = 2000, max_series: int = MAX_SERIES,
                 progress: Callable[[float, float | None, str | None], None] | None = None) -> TrackerRun:
    """Every metric of a tracker run as bounded series (known metrics first, up to `max_series`)."""
    collector = Collector(max_points, max_series=max_series, progress=progress)
    if source.kind == "mlflow":
        status = _read_mlflow(source, collector)
        return TrackerRun(collector.result("mlflow_server", source.label), status)
    _read_trackio(source, collector)
    return TrackerRun(collector.result("trackio", source.label))


def _ordered_keys(keys: list[str], max_series: int, collector: Collector) -> list[str]:
    ordered = sorted(keys, key=lambda k: (not is_known_metric(k), k))
    if len(ordered) > max_series:
        collector.warn(f"the run has {len(ordered)} metrics; read the first {max_series} (known metric names first)")
    return ordered[:max_series]


# --- MLflow ------------------------------------------------------------------------------------

def _check_reachable(server: str) -> None:
    """Fail in seconds, not after the MLflow client's minutes of retries, when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{server}/health", timeout=CONNECT_TIMEOUT):
            return
    except urllib.error.HTTPError:
        return  # something answers HTTP there; the client reports what it says
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SourceError(f"The MLflow tracking server {server} cannot be reached ({reason}). Check that "
                          "`mlflow server` runs there and the host:port is right.") from None


def _mlflow_client(server: str):
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a dead server must not hold a call for minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise SourceError("Reading an MLflow tracking server needs the MLflow client: "
                          "pip install 'ml-debug-mcp[trackers]' (mlflow-skinny).") from None
    return MlflowClient(tracking_uri=server)


def _read_mlflow(source: TrackerSource, collector: Collector) -> str | None:
    from mlflow.exceptions import MlflowException

    _check_reachable(source.location)
    client = _mlflow_client(source.location)
    try:
        run = client.get_run(source.run)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise SourceError(f"MLflow run {source.run} does not exist on {source.location}. Copy the run id from the "
                              "run's page (the URL ends in it) or list runs with `mlflow runs list "
                              "--experiment-id <id>`.") from None
        raise SourceError(f"The MLflow server {source.location} refused to read run {source.run}: "
                          f"{exc.message}") from None
    keys = _ordered_keys(list(run.data.metrics), collector.max_series, collector)
    for i, key in enumerate(keys):
        history = sorted(client.get_metric_history(source.run, key), key=lambda m: (m.step, m.timestamp))
        for point in history:
            collector.lines += 1
            collector.add({key: float(point.value)}, float(point.step))
        if collector.progress is not None:
            collector.progress(i + 1, len(keys), f"read {key} ({len(history)} points)")
    if not keys:
        collector.warn(f"MLflow run {source.run} has logged no metrics yet")
    return run.info.status


# --- trackio -----------------------------------------------------------------------------------

def _connect_readonly(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=CONNECT_TIMEOUT)
    conn.execute("PRAGMA query_only = 1")
    return conn


def _read_trackio(source: TrackerSource, collector: Collector) -> None:
    db = Path(source.location)
    if not db.is_file():
        others = sorted(p.stem for p in db.parent.glob("*.db"))[:10] if db.parent.is_dir() else []
        hint = f" Projects there: {', '.join(others)}." if others else ""
        raise SourceNotFound(f"trackio project '{db.stem}' has no store at {db}.{hint} trackio keeps one <project>.db "
                          "per project in $TRACKIO_DIR (default ~/.cache/huggingface/trackio); start the server "
                          "with --trackio-dir <that folder>.")
    collector.bytes = db.stat().st_size
    try:
        conn = _connect_readonly(db)
    except sqlite3.Error as exc:
        raise SourceError(f"{db} cannot be opened as SQLite ({exc}).") from None
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(metrics)")}
        if not {"run_name", "step", "metrics"} <= columns:
            raise SourceError(f"{db} is not a trackio store (no metrics table with run_name, step, metrics).")
        run = source.run or _newest_trackio_run(conn, collector)
        if run is None:
            collector.warn(f"trackio project '{db.stem}' has no runs yet")
            return
        rows = conn.execute("SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY id", (run,))
        seen = 0
        for step, payload in rows:
            seen += 1
            if seen > MAX_TRACKIO_ROWS:
                collector.warn(f"read the first {MAX_TRACKIO_ROWS} rows of run '{run}'; the rest were not read")
                break
            collector.lines += 1
            _add_trackio_row(collector, step, payload)
        if seen == 0:
            runs = [r for (r,) in conn.execute("SELECT DISTINCT run_name FROM metrics LIMIT 20")]
            raise SourceNotFound(f"trackio run '{run}' does not exist in project '{db.stem}'. Runs there: "
                              f"{', '.join(runs) or 'none'}.")
    except sqlite3.Error as exc:
        raise SourceError(f"{db} could not be read ({exc}); it may be locked or damaged.") from None
    finally:
        conn.close()


def _newest_trackio_run(conn: sqlite3.Connection, collector: Collector) -> str | None:
    row = conn.execute("SELECT run_name FROM metrics ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    count = conn.execute("SELECT COUNT(DISTINCT run_name) FROM metrics").fetchone()[0]
    if count > 1:
        collector.warn(f"read run '{row[0]}', the newest of {count} runs; name one as trackio://<project>/<run>")
    return row[0]


def _add_trackio_row(collector: Collector, step: object, payload: object) -> None:
    try:
        record = json.loads(payload) if isinstance(payload, (str, bytes)) else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        collector.unparsed += 1
        return
    values = {str(k): v for k, v in ((k, to_float(v)) for k, v in record.items())
              if v is not None and not is_step_key(str(k))}
    x = to_float(step)
    if not collector.add(values, x):
        collector.unparsed += 1


def read_source(target: Path | TrackerSource, fmt: str | None = None, max_points: int = 2000,
                progress: Callable[[float, float | None, str | None], None] | None = None) -> ParsedLog:
    """The series of a log file (any format) or of a tracker run, the one entry point the tools share."""
    if isinstance(target, TrackerSource):
        return read_tracker(target, max_points=max_points, progress=progress).parsed
    from ml_debug_mcp.core.logs.metrics import parse_metrics

    return parse_metrics(target, fmt, max_points=max_points, progress=progress)
