"""The server foundation, driven through real MCP clients: in memory, stdio subprocess, HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from mcp_harness import console_script, free_port, http_client, http_server, stdio_client
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio

TOOLS = {"tail_log", "read_metrics", "gpu_status", "classify_failure", "analyze_gradients", "check_shapes",
         "compare_runs", "write_journal", "create_smoke_test", "watch_run"}
WRITING_TOOLS = {"write_journal", "create_smoke_test"}
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "journal.md").write_text("# Journal\n\n## entry one\n")
    return tmp_path


@pytest.fixture
def server(root: Path):
    return create_server(Config(roots=Roots.from_strings([str(root)])))


async def test_tools_are_registered_with_titles_schemas_and_annotations(server):
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert TOOLS <= set(tools)
    for name, tool in tools.items():
        assert tool.title and tool.description and len(tool.description) > 40, name
        assert tool.input_schema["type"] == "object", name
        assert tool.annotations is not None, name
        assert tool.annotations.read_only_hint is (name not in WRITING_TOOLS), name
        assert tool.annotations.destructive_hint is False, name


async def test_initialize_carries_name_version_and_decision_tree_instructions(root):
    for mode in ("auto", "legacy"):
        client = stdio_client("--root", str(root))
        client.mode = mode
        async with client:
            assert client.server_info is not None and client.server_info.name == "ml-debug-mcp"
            assert client.server_info.version
            instructions = client.instructions or ""
        assert "tail_log" in instructions and "classify_failure" in instructions and "write_journal" in instructions


async def test_unknown_argument_is_refused_with_the_valid_names(server):
    async with Client(server) as client:
        result = await client.call_tool("check_shapes", {"entrypoint": "m.py:f", "input_shapes": [[1]], "shape": 1})
    assert result.is_error
    text = result.content[0].text
    assert "'shape'" in text and "entrypoint" in text and "input_shapes" in text


async def test_wrong_argument_type_says_which_field_without_doc_links(server):
    async with Client(server) as client:
        result = await client.call_tool("check_shapes", {"entrypoint": "m.py:f", "input_shapes": "8x3"})
    assert result.is_error
    text = result.content[0].text
    assert "input_shapes" in text and "errors.pydantic.dev" not in text


async def test_a_tool_error_is_an_error_result_with_no_fake_structure(server):
    async with Client(server) as client:
        result = await client.call_tool("analyze_gradients", {})
    assert result.is_error and result.structured_content is None
    assert "entrypoint" in result.content[0].text


async def test_guides_are_served_as_markdown_resources(server):
    async with Client(server) as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"guide://decision-tree", "guide://research-debug"} <= listed
        tree = (await client.read_resource("guide://decision-tree")).contents[0]
        rca = (await client.read_resource("guide://research-debug")).contents[0]
    assert tree.mime_type == "text/markdown"
    assert "classify_failure" in tree.text and "1e-3" in tree.text
    assert "triangulat" in rca.text.lower()


async def test_prompts_walk_the_decision_tree_for_the_given_log(server):
    async with Client(server) as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        assert {"debug_training_run", "root_cause_analysis"} <= names
        prompt = await client.get_prompt("debug_training_run", {"log_path": "runs/exp1/train.log"})
        rca = await client.get_prompt("root_cause_analysis", {"problem": "reward collapse at step 20"})
    text = prompt.messages[0].content.text
    assert "runs/exp1/train.log" in text and "tail_log" in text and "classify_failure" in text
    assert "write_journal" in text and "create_smoke_test" in text
    rca_text = rca.messages[0].content.text
    assert "reward collapse at step 20" in rca_text and "Priority" in rca_text


async def test_journal_resource_reads_inside_roots_and_refuses_escapes(server, root: Path):
    outside = root.parent / f"{root.name}-outside.md"
    outside.write_text("secret")
    (root / "runs" / "link.md").symlink_to(outside)
    async with Client(server) as client:
        inside = await client.read_resource("journal://runs/journal.md")
        assert "entry one" in inside.contents[0].text
        for uri in (f"journal://../{outside.name}", "journal://runs/link.md"):
            with pytest.raises(Exception) as info:
                await client.read_resource(uri)
            assert "outside the allowed roots" in str(info.value) and str(root) in str(info.value)
    outside.unlink()


def test_heavy_libraries_are_not_imported_to_serve_initialize():
    code = (
        "import sys; from ml_debug_mcp.server.app import create_server; create_server(); "
        "heavy = [m for m in ('torch', 'matplotlib', 'pynvml', 'tensorboard', 'numpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_stdout_stays_clean_for_the_stdio_transport(root: Path):
    # A bare initialize over stdio: the only bytes on stdout must be JSON-RPC messages.
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    proc = subprocess.run([console_script(), "--root", str(root)], input=json.dumps(request) + "\n",
                          capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr
    for line in lines:
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
    assert json.loads(lines[0])["result"]["serverInfo"]["name"] == "ml-debug-mcp"


async def test_stdio_subprocess_serves_tools_resources_and_prompts(root: Path):
    async with stdio_client("--root", str(root)) as client:
        tools = await client.list_tools()
        tree = await client.read_resource("guide://decision-tree")
        prompt = await client.get_prompt("debug_training_run", {"log_path": "x.log"})
        refused = await client.call_tool("check_shapes", {"entrypoint": "missing.py:f", "input_shapes": [[1, 4]]})
    assert {t.name for t in tools.tools} >= TOOLS
    assert "Gather evidence" in tree.contents[0].text
    assert "x.log" in prompt.messages[0].content.text
    assert refused.is_error


async def test_legacy_protocol_era_also_works(server):
    async with Client(server, mode="legacy") as client:
        tools = await client.list_tools()
        tree = await client.read_resource("guide://decision-tree")
    assert {t.name for t in tools.tools} >= TOOLS
    assert tree.contents[0].text.startswith("# ")


async def test_http_with_token_accepts_bearer_and_refuses_everything_else(root: Path):
    with http_server("--root", str(root), env={"ML_DEBUG_MCP_TOKEN": TOKEN}) as srv:
        health = httpx.get(f"{srv.base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        no_token = httpx.post(srv.url, json=init, headers=headers)
        assert no_token.status_code == 401
        assert "Bearer" in no_token.headers.get("www-authenticate", "")
        wrong = httpx.post(srv.url, json=init, headers={**headers, "Authorization": "Bearer wrong-token-xxxxxxxx"})
        assert wrong.status_code == 401

        async with http_client(srv.url, token=TOKEN) as client:
            tools = await client.list_tools()
            tree = await client.read_resource("guide://decision-tree")
            prompt = await client.get_prompt("root_cause_analysis", {"problem": "loss spikes"})
        assert {t.name for t in tools.tools} >= TOOLS
        assert "Gather evidence" in tree.contents[0].text
        assert "loss spikes" in prompt.messages[0].content.text
        async with http_client(srv.url, token=TOKEN, mode="legacy") as client:
            assert {t.name for t in (await client.list_tools()).tools} >= TOOLS
    # The harness stopped it with SIGTERM: uvicorn drains, logs its shutdown, then exits by the signal.
    assert srv.proc.returncode in (0, -15)
    assert "Finished server process" in srv.stderr_text()


async def test_http_rejects_foreign_host_and_origin_headers(root: Path):
    with http_server("--root", str(root)) as srv:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        bad_host = httpx.post(srv.url, json=init, headers={**headers, "Host": "evil.example.com"})
        assert bad_host.status_code == 421
        bad_origin = httpx.post(srv.url, json=init, headers={**headers, "Origin": "http://evil.example.com"})
        assert bad_origin.status_code == 403
        good = httpx.post(srv.url, json=init, headers=headers)
        assert good.status_code == 200


def test_http_beyond_loopback_refuses_to_start_without_a_token(root: Path):
    env = {k: v for k, v in os.environ.items() if k != "ML_DEBUG_MCP_TOKEN"}
    proc = subprocess.run([console_script(), "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port()),
                           "--root", str(root)], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "token" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_a_busy_port_is_a_clear_start_up_error(root: Path):
    with http_server("--root", str(root)) as srv:
        proc = subprocess.run([console_script(), "--transport", "http", "--port", str(srv.port), "--root", str(root)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert f"{srv.port}" in proc.stderr and "--port" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["--root", "/definitely/not/here"], "not an existing directory"),
    (["--port", "70000"], "between 1 and 65535"),
    (["--transport", "http", "--token", "short"], "shorter than 16"),
    (["--python", "/no/such/python"], "not found"),
    (["--transport", "http", "--allowed-host", "*"], "only accepted together with a token"),
])
def test_bad_configuration_is_refused_with_a_message(args: list[str], expected: str):
    proc = subprocess.run([console_script(), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_help_documents_every_environment_variable():
    proc = subprocess.run([console_script(), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for name in ("ML_DEBUG_MCP_TRANSPORT", "_TOKEN", "_ROOTS", "_ALLOWED_HOSTS", "_PYTHON"):
        assert name in proc.stdout


def test_python_dash_m_entry_point_works():
    proc = subprocess.run([sys.executable, "-m", "ml_debug_mcp", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "ml-debug-mcp" in proc.stdout


@pytest.mark.parametrize("args, env, expected", [
    ([], {}, True),
    (["--root", "."], {}, False),
    ([], {"ML_DEBUG_MCP_ROOTS": "."}, False),
    (["--transport", "http"], {}, False),
    (["--no-client-roots"], {}, False),
])
def test_client_roots_are_only_taken_over_stdio_without_explicit_roots(args, env, expected, monkeypatch):
    from ml_debug_mcp.server.config import build_parser, config_from_args

    monkeypatch.delenv("ML_DEBUG_MCP_ROOTS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert config_from_args(build_parser().parse_args(args)).client_roots is expected


def test_an_implicit_root_of_slash_is_refused():
    env = {k: v for k, v in os.environ.items() if k != "ML_DEBUG_MCP_ROOTS"}
    proc = subprocess.run([console_script()], capture_output=True, text=True, timeout=60, cwd="/", env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "--root" in proc.stderr and "Traceback" not in proc.stderr


async def test_a_path_check_stuck_on_a_hung_mount_does_not_stall_other_calls(tmp_path: Path, monkeypatch):
    """A stat on a dead NFS mount blocks; it must block only its own call, not the event loop."""
    (tmp_path / "a.log").write_text("step 1 | loss 2.0\n")
    entered, release = threading.Event(), threading.Event()
    real_resolve = Roots.resolve

    def resolve(self: Roots, raw: str):
        if "hung" in raw:
            entered.set()
            release.wait(10)
        return real_resolve(self, raw)

    monkeypatch.setattr(Roots, "resolve", resolve)
    results = {}
    async with Client(create_server(Config(roots=Roots.from_strings([str(tmp_path)])))) as client:
        async def stuck() -> None:
            results["stuck"] = await client.call_tool("tail_log", {"path": "mnt/hung.log"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck)
            await anyio.to_thread.run_sync(entered.wait, 10)
            quick = await client.call_tool("tail_log", {"path": "a.log"})
            finished_first = "stuck" not in results
            release.set()
    assert not quick.is_error and quick.structured_content["lines"][0]["text"] == "step 1 | loss 2.0"
    assert finished_first, "the quick call waited for the stuck one"
    assert results["stuck"].is_error and "does not exist" in results["stuck"].content[0].text
