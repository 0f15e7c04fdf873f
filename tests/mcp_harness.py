"""Real MCP clients for the tests: in memory, a stdio subprocess of the console script, and HTTP."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from mcp import Client, StdioServerParameters

TESTS_DIR = Path(__file__).resolve().parent


def console_script() -> str:
    """The installed `ml-debug-mcp` entry point (the thing client configs launch)."""
    exe = shutil.which("ml-debug-mcp") or str(Path(sys.executable).parent / "ml-debug-mcp")
    assert Path(exe).exists(), "the ml-debug-mcp console script is not installed; run the README's test command"
    return exe


def stdio_client(*args: str, env: dict[str, str] | None = None, cwd: str | None = None) -> Client:
    full_env = {**os.environ, **(env or {})}
    params = StdioServerParameters(command=console_script(), args=list(args), env=full_env, cwd=cwd)
    return Client(params, read_timeout_seconds=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpServer:
    def __init__(self, proc: subprocess.Popen[str], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    def stderr_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def http_server(*args: str, env: dict[str, str] | None = None, port: int | None = None,
                cwd: str | None = None) -> Iterator[HttpServer]:
    """Start `ml-debug-mcp --transport http` on a free loopback port and wait for /healthz."""
    port = port or free_port()
    cmd = [console_script(), "--transport", "http", "--port", str(port), *args]
    log_file = tempfile.NamedTemporaryFile(prefix="ml-debug-mcp-http-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    log_file.close()
    server = HttpServer(proc, port, Path(log_file.name))
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {server.stderr_text()[-2000:]}")
            try:
                if httpx.get(f"{server.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def http_client(url: str, token: str | None = None, mode: str = "auto") -> Client:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=120)
