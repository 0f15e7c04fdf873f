"""The worker is a sandbox in fact: hostile factories, driven through real MCP clients and real workers.

Each factory records what it managed to do in report.json beside itself (inside the roots), then
builds a fine model, so the call succeeds and its `sandbox` field says which protections were on.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest
from abuse import record
from mcp import Client

from mcp_harness import stdio_client
from ml_debug_mcp.core.model import confine, sandbox
from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio

SECRETS = {"DATABASE_URL": "postgres://admin:PLANTED-SECRET-db@db:5432/prod",
           "OPENAI_API_KEY": "sk-PLANTED-SECRET-openai", "GITHUB_TOKEN": "ghp_PLANTED-SECRET-github",
           "SENTRY_DSN": "https://PLANTED-SECRET-sentry@o1.ingest.sentry.io/1",
           "ML_DEBUG_MCP_TOKEN": "PLANTED-SECRET-server-token-0123456789"}
BENIGN = {"OMP_PLANTED_SETTING": "benign-omp", "LC_PLANTED": "benign-locale", "MY_PROJECT_SETTING": "benign-named"}

HEADER = """\
import glob, json, os, socket, subprocess, sys, time
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def _report(data):
    with open(os.path.join(HERE, "report.json"), "w") as f:
        json.dump(data, f)
    return nn.Linear(2, 2), torch.randn(1, 2)
"""

FACTORIES = {
    "env_spy": """
def env_spy():
    found, readable = [k for k, v in os.environ.items() if "PLANTED-SECRET" in v], []
    for path in ["/proc/self/environ", f"/proc/{os.getppid()}/environ", *glob.glob("/proc/[0-9]*/environ")]:
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError:
            continue
        readable.append(path)
        found += [path for part in blob.split(b"\\0") if b"PLANTED-SECRET" in part]
    return _report({"found": found, "readable": readable, "ppid": os.getppid(), "env": dict(os.environ)})
""",
    "spawner": """
def spawner():
    sleeper = ["sleep", SLEEP]
    plain = subprocess.Popen(sleeper)
    setsid = subprocess.Popen(sleeper, start_new_session=True)
    read, write = os.pipe()
    if os.fork() == 0:  # the classic daemon: fork, setsid, fork again, the middle one exits
        os.setsid()
        pid = os.fork()
        if pid == 0:
            os.execvp("sleep", sleeper)
        os.write(write, str(pid).encode())
        os._exit(0)
    os.wait()
    daemon = int(os.read(read, 32))
    return _report({"pids": [plain.pid, setsid.pid, daemon]})
""",
    "escaper": """
def escaper():
    out = {}
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
        out["connect"] = "connected"
    except OSError as exc:
        out["connect"] = repr(exc)
    try:
        with open(OUTSIDE, "w") as f:
            f.write("escaped")
        out["write"] = "written"
    except OSError as exc:
        out["write"] = repr(exc)
    return _report(out)
""",
}


def _project(folder: Path, **constants: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = HEADER + "".join(f"{k} = {v!r}\n" for k, v in constants.items()) + "".join(FACTORIES.values())
    (folder / "hostile.py").write_text(source)
    return folder


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def _sleepers(arg: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["cmdline"] == ["sleep", arg] and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


async def test_no_secret_reaches_the_factory_and_allowlisted_settings_do(tmp_path: Path) -> None:
    """A real server process (hardened like the installed command) with planted secrets in its environment."""
    project = _project(tmp_path / "project")
    env = {**SECRETS, **BENIGN, "UNLISTED_SETTING": "not-on-the-allowlist"}
    args = ["--root", str(project), "--python", sys.executable, "--worker-env", "MY_PROJECT_SETTING"]
    async with stdio_client(*args, env=env) as client:
        result = await client.call_tool("check_shapes", {"entrypoint": "hostile.py:env_spy"})
        assert not result.is_error, result.content[0].text
        seen = [_report(project)]
        smoke = await client.call_tool("create_smoke_test", {"path": "tests/test_env_spy.py", "failure": "nan_loss",
                                                             "entrypoint": "hostile.py:env_spy", "run": True})
        assert not smoke.is_error and smoke.structured_content["ran"], smoke.content[0].text
        seen.append(_report(project))  # the test run gets the same sandbox
    record("factory reads its environment and every /proc/*/environ (check_shapes, create_smoke_test)", 2,
           sum(bool(s["found"]) or any(v in json.dumps(s) for v in SECRETS.values()) for s in seen),
           f"{len(SECRETS)} planted secrets, the server's token among them")
    for report in seen:
        _assert_no_secret_seen(report)
    sandbox = result.structured_content["sandbox"]
    assert sandbox["env_allowlist"]["active"] and sandbox["non_dumpable"]["active"] and sandbox["subreaper"]["active"]
    assert "sandbox: env allowlist, non-dumpable server" in result.content[0].text
    assert smoke.structured_content["sandbox"]["env_allowlist"]["active"]
    if os.geteuid() == 0:  # as root: nobody, or said why not
        privileges = sandbox["dropped_privileges"]
        assert privileges["active"] or "nobody (65534) cannot read" in privileges["detail"], privileges


def _assert_no_secret_seen(seen: dict) -> None:
    assert seen["found"] == [], seen["found"]
    assert not any(value in json.dumps(seen) for value in SECRETS.values())
    assert f"/proc/{seen['ppid']}/environ" not in seen["readable"], "the server's initial environment was readable"
    assert {k: seen["env"].get(k) for k in BENIGN} == BENIGN  # the allowlist and --worker-env let these through
    assert "UNLISTED_SETTING" not in seen["env"] and seen["env"]["PATH"]


def test_worker_env_names_and_a_token_file_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ml_debug_mcp.server.config import ConfigError, build_parser, config_from_args

    for name in ("TOKEN", "TOKEN_FILE", "WORKER_ENV"):
        monkeypatch.delenv(f"ML_DEBUG_MCP_{name}", raising=False)
    token = tmp_path / "token"
    token.write_text("file-token-0123456789abcdef\n")

    def config(*args: str):
        return config_from_args(build_parser().parse_args(["--root", str(tmp_path), *args]))

    settings = config("--token-file", str(token), "--worker-env", "WANDB_MODE", "--worker-env", "HF_HOME")
    assert settings.token == "file-token-0123456789abcdef" and settings.worker_env == ("WANDB_MODE", "HF_HOME")
    monkeypatch.setenv("ML_DEBUG_MCP_TOKEN", "from-the-environment-0123456789")
    assert config("--token-file", str(token)).token == "from-the-environment-0123456789"
    with pytest.raises(ConfigError, match="never passed to user code"):
        config("--worker-env", "ML_DEBUG_MCP_TOKEN")
    monkeypatch.delenv("ML_DEBUG_MCP_TOKEN")
    with pytest.raises(ConfigError, match="Cannot read the token file"):
        config("--token-file", str(tmp_path / "missing"))


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "without a cgroup"])
async def test_every_descendant_dies_with_the_call_setsid_and_daemons_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cgroup: bool) -> None:
    if not cgroup:  # the fallback: the worker is its descendants' subreaper and kills them before it exits
        monkeypatch.setattr(sandbox, "_make_cgroup", lambda: (None, "turned off by the test"))
    sleep = f"300.{random.randrange(10**6):06d}"
    project = _project(tmp_path / "project", SLEEP=sleep)
    server = create_server(Config(roots=Roots.from_strings([str(project)]), python=sys.executable, worker_timeout=120))
    try:
        async with Client(server) as client:
            result = await client.call_tool("analyze_gradients", {"entrypoint": "hostile.py:spawner", "steps": 1})
            assert not result.is_error, result.content[0].text
            kill_tree = result.structured_content["sandbox"]["kill_tree"]
            if cgroup and not kill_tree["active"]:
                pytest.skip("no cgroup v2 for the worker on this host: " + kill_tree["detail"])
            assert len(_report(project)["pids"]) == 3
            survivors = len(_sleepers(sleep))
            assert survivors == 0, "a child of the factory survived the call"

            (project / "report.json").unlink()
            smoke = await client.call_tool("create_smoke_test", {"path": "tests/test_spawner.py", "failure": "nan_loss",
                                                                 "entrypoint": "hostile.py:spawner", "run": True})
        assert not smoke.is_error, smoke.content[0].text
        assert smoke.structured_content["ran"] and (project / "report.json").exists(), smoke.structured_content
        survivors += len(_sleepers(sleep))
        record(f"factory starts plain, setsid and daemon children ({'cgroup' if cgroup else 'subreaper'}; "
               "analyze_gradients, create_smoke_test)", 6, survivors, "children alive after the call")
        assert survivors == 0, "a child of the smoke test survived the run"
        assert smoke.structured_content["sandbox"]["kill_tree"]["active"] is cgroup
        assert "sandbox:" in smoke.content[0].text
    finally:
        for p in _sleepers(sleep):
            p.kill()


class _Listener:
    """A loopback TCP server on the host that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port, self.accepted = self.sock.getsockname()[1], 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


async def test_the_factory_reaches_neither_the_network_nor_files_outside_the_roots(tmp_path: Path) -> None:
    listener = _Listener()
    outside = tmp_path / "outside" / "escaped.txt"
    outside.parent.mkdir()
    project = _project(tmp_path / "project", PORT=listener.port, OUTSIDE=str(outside))
    server = create_server(Config(roots=Roots.from_strings([str(project)]), python=sys.executable))
    try:
        async with Client(server) as client:
            result = await client.call_tool("check_shapes", {"entrypoint": "hostile.py:escaper"})
    finally:
        listener.sock.close()
    assert not result.is_error, result.content[0].text
    seen, sandbox = _report(project), result.structured_content["sandbox"]
    record("factory opens a socket and writes outside the roots (check_shapes)", 2,
           (seen["connect"] == "connected") + (seen["write"] == "written"),
           f"network namespace {'on' if sandbox['no_network']['active'] else 'off'}, "
           f"Landlock {'on' if sandbox['landlock']['active'] else 'off'}")
    skipped = []
    if sandbox["no_network"]["active"]:
        assert seen["connect"] != "connected" and listener.accepted == 0, seen
    else:
        skipped.append("no network namespace: " + sandbox["no_network"]["detail"])
    if sandbox["landlock"]["active"]:
        assert seen["write"] != "written" and not outside.exists(), seen
        assert "Permission" in seen["write"] or "EACCES" in seen["write"], seen
    else:
        skipped.append("no Landlock: " + sandbox["landlock"]["detail"])
    if skipped:
        pytest.skip("; ".join(skipped))


@pytest.mark.skipif(os.geteuid() != 0, reason="the server does not run as root here: nothing to drop")
def test_as_root_the_child_runs_as_nobody_when_nobody_can_read_the_project() -> None:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or subprocess.run(["su", "-s", "/bin/sh", "nobody", "-c", f"{python} -c pass"],
                                        capture_output=True).returncode != 0:
        pytest.skip("no interpreter nobody can run (the venv's Python lives below a private /root)")
    readable = Path(tempfile.mkdtemp(prefix="sandbox-nobody-"))
    try:
        readable.chmod(0o755)
        tmp = Path(tempfile.mkdtemp(dir=readable))
        spec = {"cgroup": None, "status_fd": None, "tmpdir": str(tmp), "writable": [], "readable": [str(readable)]}
        code = (f"import importlib.util, json, os; s = importlib.util.spec_from_file_location('c', {confine.__file__!r}); "
                "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
                f"st = m.confine({spec!r}); print(json.dumps([os.getuid(), st]))")
        out = subprocess.run([python, "-E", "-c", code], capture_output=True, text=True, cwd=readable, timeout=60)
        uid, status = json.loads(out.stdout)
        assert uid == 65534 and status["dropped_privileges"]["active"], (out.stdout, out.stderr)
    finally:
        shutil.rmtree(readable, ignore_errors=True)
