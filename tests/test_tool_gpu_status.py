"""gpu_status end to end: real MCP clients, real processes, the fake NVML only at the import boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

from mcp_harness import TESTS_DIR, stdio_client
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio


@pytest.fixture
def train_job(tmp_path: Path):
    """A real python process that looks like a training job: it sleeps as train.py."""
    script = tmp_path / "train.py"
    script.write_text("import time\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(script), "--lr", "3e-4"], stdin=subprocess.DEVNULL)
    yield proc
    proc.kill()
    proc.wait()


def _server(root: Path):
    return create_server(Config(roots=Roots.from_strings([str(root)])))


async def test_cpu_only_host_says_why_there_is_no_gpu_and_still_lists_the_job(tmp_path: Path, train_job):
    async with Client(_server(tmp_path)) as client:
        result = await client.call_tool("gpu_status", {"name_pattern": "train\\.py"})
    assert not result.is_error, result.content
    data = result.structured_content
    assert data["nvml"]["available"] is False
    assert data["nvml"]["reason_code"] in {"library_not_found", "driver_not_loaded", "nvml_not_installed"}
    assert train_job.pid in [p["pid"] for p in data["processes"]]
    text = result.content[0].text
    assert "no GPU picture" in text and str(train_job.pid) in text


async def test_eight_fake_gpus_over_stdio_with_a_full_one_diagnosed(tmp_path: Path):
    env = {"ML_DEBUG_MCP_NVML_MODULE": "fake_nvml", "PYTHONPATH": str(TESTS_DIR),
           "FAKE_NVML_GPUS": "8", "FAKE_NVML_SCENARIO": "memory_full"}
    async with stdio_client("--root", str(tmp_path), env=env) as client:
        result = await client.call_tool("gpu_status", {"samples": 3, "interval": 0.05})
    assert not result.is_error, result.content
    data = result.structured_content
    assert data["nvml"]["available"] is True and len(data["gpus"]) == 8
    assert data["window"]["samples"] == 3
    assert any(f["rule"] == "gpu_memory_near_full" and f["failure"] == "oom" for f in data["findings"])
    assert "GPU 0" in result.content[0].text


async def test_healthy_fake_gpu_has_no_warning(tmp_path: Path):
    env = {"ML_DEBUG_MCP_NVML_MODULE": "fake_nvml", "PYTHONPATH": str(TESTS_DIR),
           "FAKE_NVML_GPUS": "1", "FAKE_NVML_SCENARIO": "healthy"}
    async with stdio_client("--root", str(tmp_path), env=env) as client:
        result = await client.call_tool("gpu_status", {})
    data = result.structured_content
    assert data["nvml"]["available"] is True
    assert not [f for f in data["findings"] if f["severity"] in ("warning", "critical")]


async def test_dead_pid_points_at_its_log(tmp_path: Path):
    log = tmp_path / "train.log"
    log.write_text("step 1 | loss 2.3\n")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    async with Client(_server(tmp_path)) as client:
        result = await client.call_tool("gpu_status", {"pid": proc.pid, "log": "train.log"})
    data = result.structured_content
    assert data["missing_process"]["pid"] == proc.pid
    assert data["log"]["exists"] is True and "tail_log" in data["log"]["hint"]


@pytest.mark.parametrize("args, expected", [
    ({"samples": 0}, "samples"),
    ({"samples": 50, "interval": 1.0}, "30"),
    ({"name_pattern": "("}, "regular expression"),
    ({"log": "/etc/passwd"}, "outside the allowed roots"),
])
async def test_bad_input_is_a_clear_tool_error(tmp_path: Path, args: dict, expected: str):
    async with Client(_server(tmp_path)) as client:
        result = await client.call_tool("gpu_status", args)
    assert result.is_error
    assert expected in result.content[0].text.lower() or expected in result.content[0].text
