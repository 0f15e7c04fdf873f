"""Real trackers for the tests: an `mlflow server` on loopback (sqlite backend in a tmp dir) and trackio stores
written by trackio itself in a subprocess (trackio fixes its store folder at import time)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from mcp_harness import TESTS_DIR, free_port


@contextlib.contextmanager
def mlflow_server(workdir: Path, timeout: float = 120) -> Iterator[str]:
    """`mlflow server` on a free loopback port; yields its http URL once /health answers."""
    port = free_port()
    log = open(workdir / "mlflow-server.log", "w")
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db",
           "--default-artifact-root", str(workdir / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own group: the uvicorn worker it spawns stops with it
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(workdir / 'mlflow-server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not answer /health in time") from None
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def log_mlflow_run(url: str, records: list[dict], experiment: str = "tests", name: str = "run") -> str:
    """Log records ({"step": n, metric: value, ...}) as one MLflow run with the real client; returns the run id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    found = client.get_experiment_by_name(experiment)
    exp_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=name)
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now + i, int(rec["step"]))
               for i, rec in enumerate(records) for key, value in rec.items() if key != "step"]
    for start in range(0, len(metrics), 1000):  # the server takes at most 1000 metrics a batch
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


TRACKIO_WRITER = """
import json, sys, time
import trackio
project, run, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
trackio.init(project=project, name=run)
for line in sys.stdin:
    rec = json.loads(line)
    step = int(rec.pop("step"))
    trackio.log(rec, step=step)
    time.sleep(delay)
trackio.finish()
"""


def trackio_writer(store: Path, project: str, run: str, delay: float = 0.0) -> subprocess.Popen:
    """A subprocess logging the JSON records written to its stdin with trackio.log, into `store`."""
    env = {**os.environ, "TRACKIO_DIR": str(store), "HF_HUB_OFFLINE": "1", "TRACKIO_DISABLE_TELEMETRY": "1"}
    return subprocess.Popen([sys.executable, "-c", TRACKIO_WRITER, project, run, str(delay)], env=env, cwd=TESTS_DIR,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def write_trackio_run(store: Path, project: str, run: str, records: list[dict]) -> None:
    proc = trackio_writer(store, project, run)
    _, err = proc.communicate("".join(json.dumps(r) + "\n" for r in records), timeout=120)
    assert proc.returncode == 0, err[-2000:]
