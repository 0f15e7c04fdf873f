"""Load and abuse, bounded for CI: static path escapes, fuzzed calls, concurrent sessions, hostile factories.

Each test drives a real server through a real MCP client, counts attempts and bad outcomes, records a
row for the abuse table (tests/abuse.py) and fails on any bad outcome. The server's memory, threads and
child processes are read before and after. `python bench/abuse.py` runs them all at the full budget.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import anyio
import psutil
import pytest
from abuse import (
    BUDGET,
    escape_paths,
    fuzz_arguments,
    hostile_names,
    hostile_source,
    plant_escape_targets,
    record,
)
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_harness import http_client, http_server

from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config

pytestmark = pytest.mark.anyio

SECRET = "ABUSE-SECRET-51c9e0"
LEAK_MARKS = (SECRET, "root:x:0:0", "PATH=", "HOME=")  # an outside file, /etc/passwd, an environ
INTERNAL = (-32603,)  # JSON-RPC internal error: the server failed instead of refusing
CALL_TIMEOUT = 60.0


def _text(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content) + json.dumps(result.structured_content)


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.lstat().st_size for p in sorted(folder.rglob("*"))}


def _place(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "runs").mkdir(parents=True)
    outside.mkdir()
    (root / "train.log").write_text("".join(f"step {i} | loss {2.0 / (i + 1):.4f}\n" for i in range(200)))
    (root / "runs" / "a.log").write_text("step 1 | loss 2.0\nstep 2 | loss 1.9\n")
    (root / "journal.md").write_text("# Debugging journal\n")
    return root, outside


class Server:
    """The server process's footprint: RSS, threads and live descendants, read with psutil."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def footprint(self) -> tuple[float, int, int]:
        kids = [p for p in self.proc.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
        return self.proc.memory_info().rss / 2**20, self.proc.num_threads(), len(kids)

    def settled(self, seconds: float = 10.0) -> tuple[float, int, int]:
        """The footprint once descendants had a moment to go (a worker is reaped after its answer)."""
        deadline = time.monotonic() + seconds
        while (now := self.footprint())[2] and time.monotonic() < deadline:
            time.sleep(0.1)
        return now


def _footprint_problems(before: tuple[float, int, int], after: tuple[float, int, int],
                        concurrency: int = 1) -> tuple[str, list[str]]:
    """The footprint change in words, and what is wrong with it: processes left, RSS growth, or threads
    beyond what the worker pool may keep for `concurrency` calls at once (idle pool threads are no leak)."""
    (rss0, threads0, _), (rss1, threads1, kids1) = before, after
    problems = [f"{kids1} processes left behind"] if kids1 else []
    if threads1 > threads0 + concurrency + 8:
        problems.append(f"threads {threads0} -> {threads1}")
    if rss1 - rss0 >= 96:
        problems.append(f"RSS grew {rss0:.0f} -> {rss1:.0f} MiB")
    return f"RSS {rss0:.0f}->{rss1:.0f} MiB, threads {threads0}->{threads1}, {kids1} processes left", problems


# --- static escapes ----------------------------------------------------------------------------

async def test_every_static_path_escape_is_refused_or_harmless(tmp_path: Path):
    root, outside = _place(tmp_path)
    plant_escape_targets(root, outside, SECRET)
    before = _tree(outside)
    calls = leaks = hangs = 0
    async with Client(create_server(Config(roots=Roots.from_strings([str(root)])))) as client:
        control = await client.call_tool("tail_log", {"path": "train.log", "lines": 2})
        assert not control.is_error and "step 199" in _text(control)  # the same calls do read inside the roots
        for path in escape_paths(str(root), str(outside)):
            attempts = [
                ("tail_log", {"path": path}), ("read_metrics", {"path": path}),
                ("classify_failure", {"log_path": path}), ("compare_runs", {"before_path": path, "after_path": "train.log"}),
                ("write_journal", {"path": path, "title": "t", "symptom": "s", "root_cause": "r", "fix": "f",
                                   "resolution": "ok"}),
                ("create_smoke_test", {"path": path, "failure": "nan_loss", "run": False}),
            ]
            for tool, args in attempts:
                calls += 1
                try:
                    with anyio.fail_after(CALL_TIMEOUT):
                        result = await client.call_tool(tool, args)
                except TimeoutError:
                    hangs += 1
                    continue
                leaks += any(mark in _text(result) for mark in LEAK_MARKS)
            if path.startswith("/") and "\x00" not in path:
                calls += 1
                try:
                    with anyio.fail_after(CALL_TIMEOUT):
                        content = await client.read_resource(f"file://{path}")
                    leaks += any(mark in str(content) for mark in LEAK_MARKS)
                except TimeoutError:
                    hangs += 1
                except MCPError:
                    pass
    written = sorted(set(_tree(outside).items()) ^ set(before.items()))
    record("static path escapes (..., absolute, links, %2e, NUL, /proc, /dev, FIFO) x 7 entry points",
           calls, leaks + hangs + len(written), f"{leaks} leaks, {hangs} hangs, {len(written)} outside writes")
    assert (leaks, hangs, written) == (0, 0, [])


# --- fuzz --------------------------------------------------------------------------------------

async def test_fuzzed_calls_over_every_tool_neither_kill_nor_break_the_server(tmp_path: Path):
    root, outside = _place(tmp_path)
    rng = random.Random(20261204)
    bad: list[str] = []
    answered = 0
    with http_server("--root", str(root), "--worker-timeout", "20", env={"ML_DEBUG_MCP_PYTHON": sys.executable}) as http:
        server = Server(http.proc.pid)
        async with http_client(http.url) as client:
            tools = {t.name: t.input_schema for t in (await client.list_tools()).tools}
            before = server.settled()
            for n in range(BUDGET.fuzz_calls):
                name = rng.choice([*tools, "no_such_tool"])
                args = fuzz_arguments(tools.get(name, {}), rng)
                try:
                    with anyio.fail_after(CALL_TIMEOUT):
                        result = await client.call_tool(name, args)
                    answered += 1
                    text = _text(result)
                    if "Traceback (most recent call last)" in text or "Internal error" in text:
                        bad.append(f"{name} Traceback or internal error text: {text[:300]}")
                except MCPError as exc:
                    answered += 1
                    if exc.code in INTERNAL:
                        bad.append(f"{name} internal error: {exc.message[:300]}")
                except TimeoutError:
                    bad.append(f"{name} hung: {args}")
                if http.proc.poll() is not None:
                    bad.append(f"server died after call {n}: {name} {args}")
                    break
            await client.list_tools()  # still serving
            after = server.settled()
    detail, problems = _footprint_problems(before, after)
    bad += problems + (["wrote outside the roots"] if _tree(outside) else [])
    kinds = {kind: sum(kind in b for b in bad) for kind in ("died", "internal error", "hung", "Traceback")}
    record("fuzzed calls over every tool (HTTP, seed 20261204)", BUDGET.fuzz_calls, len(bad),
           f"{answered} answered; " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + f"; {detail}")
    assert bad == []


# --- load --------------------------------------------------------------------------------------

LOAD_CALLS = [("tail_log", {"path": "train.log", "lines": 20}), ("read_metrics", {"path": "train.log"}),
              ("classify_failure", {"log_path": "train.log"}), ("gpu_status", {}),
              ("tail_log", {"path": "runs"}), ("classify_failure", {"error_text": "CUDA out of memory. Tried to allocate 2.00 GiB"}),
              ("compare_runs", {"before_path": "train.log", "after_path": "runs/a.log"})]


async def test_concurrent_sessions_stay_correct_and_leave_nothing_behind(tmp_path: Path):
    root, _ = _place(tmp_path)
    errors: list[str] = []
    done = [0]
    with http_server("--root", str(root)) as http:
        server = Server(http.proc.pid)

        async def session(k: int) -> None:
            async with http_client(http.url) as client:
                for i in range(BUDGET.load_calls):
                    tool, args = LOAD_CALLS[(k + i) % len(LOAD_CALLS)]
                    try:
                        with anyio.fail_after(CALL_TIMEOUT):
                            result = await client.call_tool(tool, args)
                        if result.is_error:
                            errors.append(f"{tool}: {_text(result)[:200]}")
                    except Exception as exc:  # any transport or protocol failure is a bad outcome here
                        errors.append(f"{tool}: {exc!r}"[:300])
                    done[0] += 1

        await session(0)  # warm: imports, caches and thread pools exist before the baseline
        before = server.settled()
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for k in range(BUDGET.load_sessions):
                group.start_soon(session, k)
        seconds = time.monotonic() - started
        after = server.settled()
    detail, problems = _footprint_problems(before, after, BUDGET.load_sessions)
    total = BUDGET.load_sessions * BUDGET.load_calls
    record(f"{BUDGET.load_sessions} concurrent HTTP sessions x {BUDGET.load_calls} calls", total,
           len(errors) + len(problems), f"{seconds:.1f} s; {detail}")
    assert errors + problems == [], (errors + problems)[:5]


# --- hostile factories -------------------------------------------------------------------------

def _hostile_call(tool: str, name: str) -> dict:
    entrypoint = f"hostile.py:{name}"
    if tool == "create_smoke_test":
        return {"path": f"test_hostile_{name}.py", "failure": "shape_mismatch", "entrypoint": entrypoint,
                "run": True, "overwrite": True}
    if tool == "analyze_gradients":
        return {"entrypoint": entrypoint, "steps": 1}
    return {"entrypoint": entrypoint}


async def test_hostile_factories_each_come_back_as_a_clear_error_and_leave_nothing(tmp_path: Path):
    root, outside = _place(tmp_path)
    (root / "hostile.py").write_text(hostile_source())
    bad: list[str] = []
    attempts = 0
    with http_server("--root", str(root), "--worker-timeout", "8", "--worker-memory-mb", "2048",
                     env={"ML_DEBUG_MCP_PYTHON": sys.executable}) as http:
        server = Server(http.proc.pid)
        async with http_client(http.url) as client:
            await client.call_tool("tail_log", {"path": "train.log"})
            before = server.settled()
            for tool in BUDGET.hostile_tools:
                for name in hostile_names():
                    attempts += 1
                    try:
                        with anyio.fail_after(CALL_TIMEOUT):
                            result = await client.call_tool(tool, _hostile_call(tool, name))
                    except Exception as exc:  # a hang, a dropped connection, an internal error
                        bad.append(f"{tool}/{name}: {exc!r}"[:300])
                        continue
                    failed = result.is_error or (tool == "create_smoke_test"
                                                 and result.structured_content.get("outcome") != "passed")
                    if not failed:
                        bad.append(f"{tool}/{name} not refused: {_text(result)[:300]}")
                    if http.proc.poll() is not None:
                        bad.append(f"server died on {tool}/{name}")
                        break
                    if server.settled()[2]:
                        bad.append(f"{tool}/{name} left processes behind")
            await client.list_tools()
            after = server.settled()
    detail, problems = _footprint_problems(before, after)
    bad += problems + (["wrote outside the roots"] if _tree(outside) else [])
    record(f"hostile factories ({len(hostile_names())}) x {', '.join(BUDGET.hostile_tools)}", attempts, len(bad),
           f"{', '.join(hostile_names())}; {detail}")
    assert bad == [], bad
