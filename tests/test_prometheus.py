"""gpu_status(source="prometheus://...") against a real Prometheus scraping DCGM-format exporter files."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from mcp import Client

from mcp_harness import free_port
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(shutil.which("prometheus") is None,
                                                    reason="the prometheus binary is absent (apt-get install prometheus)")]


def dcgm(host: str, gpus: list[dict]) -> str:
    """Exporter text in dcgm-exporter's format: one series per field, labels gpu/UUID/device/modelName/Hostname."""
    fields = {"FB_USED": "gauge", "FB_FREE": "gauge", "GPU_UTIL": "gauge", "GPU_TEMP": "gauge",
              "POWER_USAGE": "gauge", "XID_ERRORS": "gauge", "CLOCK_THROTTLE_REASONS": "gauge"}
    lines = []
    for field, kind in fields.items():
        lines.append(f"# HELP DCGM_FI_DEV_{field} {field}.")
        lines.append(f"# TYPE DCGM_FI_DEV_{field} {kind}")
        for i, g in enumerate(gpus):
            labels = (f'gpu="{i}",UUID="GPU-{host}-{i}",device="nvidia{i}",modelName="NVIDIA H100 80GB HBM3",'
                      f'Hostname="{host}"')
            lines.append(f"DCGM_FI_DEV_{field}{{{labels}}} {g[field]}")
    return "\n".join(lines) + "\n"


HEALTHY = dict(FB_USED=40000, FB_FREE=41000, GPU_UTIL=97, GPU_TEMP=61, POWER_USAGE=550.5, XID_ERRORS=0,
               CLOCK_THROTTLE_REASONS=0)
FULL_AND_HOT = dict(HEALTHY, FB_USED=80500, FB_FREE=500, GPU_TEMP=91, CLOCK_THROTTLE_REASONS=0x40)
OFF_THE_BUS = dict(HEALTHY, XID_ERRORS=79)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    work = tmp_path_factory.mktemp("prom")
    (work / "node-a").mkdir()
    (work / "node-b").mkdir()
    (work / "node-a" / "metrics").write_text(dcgm("node-a", [HEALTHY, FULL_AND_HOT]))
    (work / "node-b" / "metrics").write_text(dcgm("node-b", [OFF_THE_BUS, HEALTHY]))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(work), **kw)

        def log_message(self, *args):
            pass

    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    eport, pport = exporter.server_address[1], free_port()
    (work / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: train-a
    metrics_path: /node-a/metrics
    static_configs: [{{targets: ["127.0.0.1:{eport}"]}}]
  - job_name: train-b
    metrics_path: /node-b/metrics
    static_configs: [{{targets: ["127.0.0.1:{eport}"]}}]
""")
    log = open(work / "prometheus.log", "w")
    proc = subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{pport}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{pport}/api/v1/query", params={"query": "DCGM_FI_DEV_GPU_UTIL"})
                if len(r.json()["data"]["result"]) == 4:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (work / "prometheus.log").read_text()[-2000:]
            time.sleep(0.3)
        yield f"prometheus://127.0.0.1:{pport}"
    finally:
        proc.terminate()
        proc.wait(15)
        exporter.shutdown()
        log.close()


def _client(tmp_path: Path) -> Client:
    return Client(create_server(Config(roots=Roots.from_strings([str(tmp_path)]))), raise_exceptions=True)


async def test_every_host_and_gpu_judged_and_grouped(prometheus, tmp_path):
    async with _client(tmp_path) as client:
        result = await client.call_tool("gpu_status", {"source": prometheus})
    assert not result.is_error, result.content
    data = result.structured_content
    by = {(g["host"], g["index"]): g for g in data["gpus"]}
    assert set(by) == {("node-a", 0), ("node-a", 1), ("node-b", 0), ("node-b", 1)}
    assert {(h["host"], h["job"]) for h in data["hosts"]} == {("node-a", "train-a"), ("node-b", "train-b")}
    hot = by[("node-a", 1)]
    assert hot["memory_used_bytes"] == 80500 << 20 and hot["throttle_reasons"] == ["hw thermal slowdown"]
    rules = {(f["host"], f["gpu_index"], f["rule"]) for f in data["findings"]}
    assert ("node-a", 1, "gpu_memory_near_full") in rules and ("node-a", 1, "gpu_throttled") in rules
    assert ("node-b", 0, "gpu_xid_error") in rules and "fallen off the bus" in by[("node-b", 0)]["diagnosis"]
    for healthy in (("node-a", 0), ("node-b", 1)):  # quiet on the healthy GPUs
        assert by[healthy]["diagnosis"].startswith("ok: "), by[healthy]["diagnosis"]
        assert not any((f["host"], f["gpu_index"]) == healthy for f in data["findings"])
    window = by[("node-a", 0)]["utilization_gpu_window"]
    assert window["mean"] == 97 and window["samples"] >= 1
    text = result.content[0].text
    assert "4 GPUs on 2 hosts" in text and "node-b GPU 0" in text


@pytest.mark.parametrize("source,words", [
    ("http://127.0.0.1:9090", "prometheus://host:9090"),
    ("prometheus://", "not a Prometheus address"),
    ("prometheus://127.0.0.1:notaport", "invalid port"),
])
async def test_bad_sources_are_clear_errors(source, words, tmp_path):
    async with _client(tmp_path) as client:
        result = await client.call_tool("gpu_status", {"source": source})
    assert result.is_error and words in result.content[0].text


async def test_unreachable_and_wrong_servers(tmp_path):
    port = free_port()  # nothing listens there
    async with _client(tmp_path) as client:
        down = await client.call_tool("gpu_status", {"source": f"prometheus://127.0.0.1:{port}"})
        mixed = await client.call_tool("gpu_status", {"source": f"prometheus://127.0.0.1:{port}", "pid": 1})
    assert down.is_error and "did not answer" in down.content[0].text
    assert mixed.is_error and "drop source" in mixed.content[0].text.lower()


async def test_a_server_that_is_not_prometheus(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        async with _client(tmp_path) as client:
            result = await client.call_tool("gpu_status", {"source": f"prometheus://127.0.0.1:{server.server_address[1]}"})
    finally:
        server.shutdown()
    assert result.is_error and "not the Prometheus query API" in result.content[0].text
