"""Trackers as sources through a real MCP client: a real `mlflow server` on loopback with runs logged by the MLflow
client, and trackio stores written by trackio itself, read by read_metrics, classify_failure and compare_runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import training_runs as tr
from mcp import Client
from mcp_harness import free_port
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config
from tracker_servers import log_mlflow_run, mlflow_server, write_trackio_run

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # an mlflow server start takes ~20 s on a busy machine


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    """(server URL, {run name: run id}) for a collapsing and a healthy REINFORCE run."""
    workdir = tmp_path_factory.mktemp("mlflow")
    with mlflow_server(workdir) as url:
        ids = {name: log_mlflow_run(url, tr.run(name).records, name=name)
               for name in ("rl_entropy_collapse", "rl_healthy")}
        yield url, ids


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A folder holding a trackio store (project 'rl') with a collapsing run and, logged last, a healthy one."""
    root = tmp_path_factory.mktemp("trackio")
    write_trackio_run(root / "store", "rl", "collapse", tr.run("rl_entropy_collapse").records)
    write_trackio_run(root / "store", "rl", "healthy", tr.run("rl_healthy").records)
    return root


def _server(root: Path, **config) -> Client:
    return Client(create_server(Config(roots=Roots.from_strings([str(root)]), **config)))


def _netloc(url: str) -> str:
    return url.split("://", 1)[1]


async def test_read_metrics_from_an_mlflow_server_run(mlflow, tmp_path):
    url, ids = mlflow
    records = tr.run("rl_entropy_collapse").records
    async with _server(tmp_path) as client:
        r = await client.call_tool("read_metrics", {"path": f"mlflow://{_netloc(url)}/{ids['rl_entropy_collapse']}",
                                                    "names": ["entropy", "reward"], "max_points": 50})
    assert not r.is_error, r.content
    sc = r.structured_content
    assert sc["format"] == "mlflow_server" and {"entropy", "reward", "kl", "advantage_std"} <= set(sc["available"])
    entropy = next(s for s in sc["series"] if s["name"] == "entropy")
    assert entropy["stats"]["count"] == len(records) and len(entropy["steps"]) <= 50  # bounded, exact stats
    assert entropy["stats"]["first_value"] == pytest.approx(records[0]["entropy"])
    assert entropy["stats"]["last_value"] == pytest.approx(records[-1]["entropy"])
    assert entropy["stats"]["last_step"] == records[-1]["step"]


async def test_classify_and_compare_runs_on_mlflow_runs(mlflow, tmp_path):
    url, ids = mlflow
    collapse, healthy = (f"mlflow://{_netloc(url)}/{ids[n]}" for n in ("rl_entropy_collapse", "rl_healthy"))
    async with _server(tmp_path) as client:
        bad = await client.call_tool("classify_failure", {"log_path": collapse})
        good = await client.call_tool("classify_failure", {"log_path": healthy})
        compared = await client.call_tool("compare_runs", {"before_path": collapse, "after_path": healthy,
                                                           "metric": "reward"})
    assert not bad.is_error and not good.is_error and not compared.is_error, (bad.content, compared.content)
    assert bad.structured_content["hypotheses"][0]["failure"] == "mode_collapse"
    assert "mode_collapse" not in {h["failure"] for h in good.structured_content["hypotheses"]
                                   if h["confidence"] >= 0.5}
    assert "mode_collapse" in compared.structured_content["pathologies_before"]
    assert "mode_collapse" in compared.structured_content["resolved"]


async def test_bare_run_ids_go_to_the_configured_server(mlflow, tmp_path):
    url, ids = mlflow
    async with _server(tmp_path, mlflow_uri=url) as client:
        bare = await client.call_tool("read_metrics", {"path": ids["rl_healthy"], "names": ["reward"]})
        prefixed = await client.call_tool("read_metrics", {"path": f"mlflow:{ids['rl_healthy']}", "names": ["reward"]})
    assert not bare.is_error and not prefixed.is_error, bare.content
    assert bare.structured_content["series"][0]["stats"] == prefixed.structured_content["series"][0]["stats"]


async def test_missing_mlflow_run_and_unreachable_server_are_clear_errors(mlflow, tmp_path):
    url, _ = mlflow
    dead = f"127.0.0.1:{free_port()}"
    async with _server(tmp_path) as client:
        missing = await client.call_tool("read_metrics", {"path": f"mlflow://{_netloc(url)}/{'0' * 32}"})
        unreachable = await client.call_tool("classify_failure", {"log_path": f"mlflow://{dead}/{'0' * 32}"})
        no_server = await client.call_tool("read_metrics", {"path": f"mlflow:{'0' * 32}"})
    assert missing.is_error and "does not exist" in missing.content[0].text
    assert unreachable.is_error and "cannot be reached" in unreachable.content[0].text
    assert no_server.is_error and "--mlflow-uri" in no_server.content[0].text


async def test_over_http_only_the_configured_mlflow_server_is_reachable(mlflow, tmp_path):
    url, ids = mlflow
    run = ids["rl_healthy"]
    async with _server(tmp_path, transport="http") as client:
        refused = await client.call_tool("read_metrics", {"path": f"mlflow://{_netloc(url)}/{run}"})
    async with _server(tmp_path, transport="http", mlflow_uri=url) as client:
        allowed = await client.call_tool("read_metrics", {"path": f"mlflow://{_netloc(url)}/{run}"})
        other = await client.call_tool("read_metrics", {"path": f"mlflow://10.0.0.1:5000/{run}"})
    assert refused.is_error and "--mlflow-uri" in refused.content[0].text
    assert not allowed.is_error, allowed.content
    assert other.is_error and "only reads the MLflow server" in other.content[0].text


async def test_trackio_store_by_project_and_run(store):
    records = tr.run("rl_entropy_collapse").records
    async with _server(store, trackio_dir=store / "store") as client:
        named = await client.call_tool("read_metrics", {"path": "trackio://rl/collapse", "names": ["entropy"]})
        newest = await client.call_tool("read_metrics", {"path": "trackio://rl", "names": ["reward"]})
        diagnosis = await client.call_tool("classify_failure", {"log_path": "trackio://rl/collapse"})
    assert not named.is_error, named.content
    entropy = named.structured_content["series"][0]
    assert named.structured_content["format"] == "trackio"
    assert entropy["stats"]["count"] == len(records)
    assert entropy["stats"]["last_value"] == pytest.approx(records[-1]["entropy"])
    assert any("'healthy', the newest of 2 runs" in w for w in newest.structured_content["warnings"])
    assert diagnosis.structured_content["hypotheses"][0]["failure"] == "mode_collapse"


async def test_trackio_errors_and_the_roots_policy(store, tmp_path):
    async with _server(store, trackio_dir=store / "store") as client:
        no_run = await client.call_tool("read_metrics", {"path": "trackio://rl/nope"})
        no_project = await client.call_tool("read_metrics", {"path": "trackio://other/run"})
    async with _server(tmp_path, trackio_dir=store / "store") as client:  # the store lies outside this root
        outside = await client.call_tool("read_metrics", {"path": "trackio://rl/collapse"})
    assert no_run.is_error and "does not exist" in no_run.content[0].text and "collapse" in no_run.content[0].text
    assert no_project.is_error and "Projects there: rl" in no_project.content[0].text
    assert outside.is_error and "outside the allowed roots" in outside.content[0].text


async def test_watch_run_on_mlflow_runs_ends_quiet_on_a_finished_healthy_run(mlflow, tmp_path):
    url, ids = mlflow
    async with _server(tmp_path) as client:
        healthy = await client.call_tool("watch_run", {"source": f"mlflow://{_netloc(url)}/{ids['rl_healthy']}",
                                                       "seconds": 20})
        collapse = await client.call_tool("watch_run", {"source": f"mlflow://{_netloc(url)}/"
                                                                  f"{ids['rl_entropy_collapse']}", "seconds": 20})
    assert not healthy.is_error and not collapse.is_error, healthy.content
    assert healthy.structured_content["status"] == "quiet" and healthy.structured_content["run_state"] == "finished"
    assert collapse.structured_content["alarms"][0]["failure"] == "mode_collapse"
