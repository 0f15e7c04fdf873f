"""A second, independent client: the official MCP Inspector CLI (Node), over stdio and HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mcp_harness import console_script, http_server

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
TOKEN = "inspector-token-0123456789abcdef"
NETWORK_FAILURES = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "network")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) not installed")]


def inspector(tmp_path: Path, *args: str) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    proc = subprocess.run(["npx", "-y", INSPECTOR, "--cli", *args], capture_output=True, text=True, timeout=240,
                          env={"HOME": str(home), "PATH": _path()}, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 and any(s in proc.stderr for s in NETWORK_FAILURES):
        pytest.skip(f"could not fetch the Inspector from npm: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _path() -> str:
    import os

    return os.environ.get("PATH", "/usr/bin:/bin")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("".join(f"step {i} | loss {3 - i / 10:.2f} | lr 1e-3\n" for i in range(20)))
    return run


def test_inspector_lists_and_calls_tools_over_stdio(tmp_path: Path, root: Path):
    listed = inspector(tmp_path, console_script(), "--root", str(root), "--method", "tools/list")
    assert {"tail_log", "classify_failure", "gpu_status"} <= {t["name"] for t in listed["tools"]}
    called = inspector(tmp_path, console_script(), "--root", str(root), "--method", "tools/call",
                       "--tool-name", "tail_log", "--tool-args-json", json.dumps({"path": "train.log", "lines": 3}))
    assert [line["text"] for line in called["structuredContent"]["lines"]][-1] == "step 19 | loss 1.10 | lr 1e-3"


def test_inspector_over_http_with_the_bearer_header(tmp_path: Path, root: Path):
    with http_server("--root", str(root), env={"ML_DEBUG_MCP_TOKEN": TOKEN}) as srv:
        called = inspector(tmp_path, srv.url, "--header", f"Authorization: Bearer {TOKEN}", "--method",
                           "tools/call", "--tool-name", "read_metrics", "--tool-args-json",
                           json.dumps({"path": "train.log", "names": ["loss"]}))
    series = called["structuredContent"]["series"]
    assert series[0]["name"] == "loss" and series[0]["stats"]["count"] == 20
