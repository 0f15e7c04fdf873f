"""The README's client snippets start the server as written, and server.json says what the registry needs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

import ml_debug_mcp
from mcp_harness import console_script

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SERVER_JSON = json.loads((REPO / "server.json").read_text())
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CLIENTS = {"claude-desktop", "claude-code", "vscode", "cursor"}
SNIPPET = re.compile(r"<!-- client: (\S+) -->\s*```json\n(.*?)\n```", re.S)


def snippets() -> dict[str, dict]:
    return {name: json.loads(body) for name, body in SNIPPET.findall(README)}


def test_every_client_has_a_json_snippet():
    assert set(snippets()) == CLIENTS


def _fill(value: str, root: Path) -> str:
    """What the user (or the client) puts in place of the placeholders."""
    venv = Path(console_script()).parent.parent
    return (value.replace("/absolute/path/to/venv", str(venv)).replace("/absolute/path/to/runs", str(root))
            .replace("${workspaceFolder}", str(root)))


def _launch(command: str, args: list[str], env: dict[str, str], root: Path) -> StdioServerParameters:
    path = f"{Path(console_script()).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the user's PATH has the venv
    return StdioServerParameters(command=_fill(command, root), args=[_fill(a, root) for a in args],
                                 env={**os.environ, "PATH": path, **{k: _fill(v, root) for k, v in env.items()}},
                                 cwd=str(root))


async def _serves(params: StdioServerParameters, root: Path) -> None:
    async with Client(params, read_timeout_seconds=120) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"tail_log", "classify_failure", "check_shapes"} <= names
        result = await client.call_tool("tail_log", {"path": "train.log"})
        assert not result.is_error, result.content
        assert result.structured_content["path"] == str(root / "train.log")


@pytest.mark.anyio
@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_the_snippet_starts_the_server(client, tmp_path):
    (tmp_path / "train.log").write_text("step 1 loss 2.5\nstep 2 loss 2.4\n")
    config = snippets()[client]
    servers = config.get("servers") if client == "vscode" else config.get("mcpServers")
    assert servers and "ml-debug" in servers, f"{client}: the server entry sits under the key that client reads"
    entry = servers["ml-debug"]
    assert entry.get("type", "stdio") == "stdio"
    await _serves(_launch(entry["command"], entry.get("args", []), entry.get("env", {}), tmp_path), tmp_path)


@pytest.mark.anyio
async def test_the_claude_mcp_add_line_starts_the_server(tmp_path):
    (tmp_path / "train.log").write_text("step 1 loss 2.5\n")
    line = re.search(r"`claude mcp add ml-debug -- ([^`]+)`", README)
    assert line, "the README shows the claude mcp add command"
    argv = shlex.split(line.group(1).replace("$PWD", str(tmp_path)))
    await _serves(_launch(argv[0], argv[1:], {}, tmp_path), tmp_path)


def test_server_json_matches_the_package_and_the_readme():
    name = SERVER_JSON["name"]
    assert re.fullmatch(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+", name) and name.startswith("io.github.")
    assert f"mcp-name: {name}" in README, "the PyPI ownership line the registry looks for"
    assert 1 <= len(SERVER_JSON["description"]) <= 100
    assert SERVER_JSON["$schema"].startswith("https://static.modelcontextprotocol.io/schemas/")
    assert SERVER_JSON["version"] == PROJECT["version"] == ml_debug_mcp.__version__
    (package,) = SERVER_JSON["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == PROJECT["name"]
    assert package["version"] == PROJECT["version"] and package["transport"] == {"type": "stdio"}


def test_server_json_arguments_and_variables_exist():
    help_text = subprocess.run([console_script(), "--help"], capture_output=True, text=True, timeout=60).stdout
    (package,) = SERVER_JSON["packages"]
    for arg in package["packageArguments"]:
        assert arg["type"] == "named" and arg["name"] in help_text
    config_source = (REPO / "server" / "config.py").read_text()
    for var in package["environmentVariables"]:
        assert var["name"].startswith("ML_DEBUG_MCP_") and f'"{var["name"].removeprefix("ML_DEBUG_MCP_")}"' in \
            config_source, f"{var['name']} is read by server/config.py"


def test_server_json_validates_against_the_registry_schema():
    """Only with a local copy of the schema (no network at test time): ML_DEBUG_MCP_SERVER_SCHEMA=path."""
    schema_path = os.environ.get("ML_DEBUG_MCP_SERVER_SCHEMA")
    if not schema_path or not Path(schema_path).is_file():
        pytest.skip("no offline copy of server.schema.json: set ML_DEBUG_MCP_SERVER_SCHEMA to validate against it")
    import jsonschema

    jsonschema.validate(SERVER_JSON, json.loads(Path(schema_path).read_text()))

