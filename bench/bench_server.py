"""Start-up and round-trip latency of ml-debug-mcp against a bare MCPServer echo server, same run.

    python bench/bench_server.py [--quick]

Start-up: spawn to a completed MCP initialize (stdio), or to /healthz + initialize (HTTP).
Round trip: list_tools, and one cheap tool call (ml-debug-mcp: tail_log of a 50-line file;
echo: echo), repeated; medians and p95 in ms, and the ratio ours/echo. A third server replays
tail_log's stored result under tail_log's output schema: the floor any server with typed results
pays (most of it is the client validating structured content against the schema).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from mcp_harness import console_script, free_port  # noqa: E402
from summary import row  # noqa: E402  (bench/ is on sys.path when a script runs)


def _stdio(cmd: list[str], cwd: str, env: dict[str, str] | None = None) -> Client:
    return Client(StdioServerParameters(command=cmd[0], args=cmd[1:], cwd=cwd, env={**os.environ, **(env or {})}))


async def _one_result(make_client, call: tuple[str, dict]) -> dict:
    """One real call's structured result, for the replaying echo server."""
    async with make_client() as client:
        return (await client.call_tool(*call)).structured_content


async def _session_figures(make_client, call: tuple[str, dict], repeats: int) -> dict[str, list[float]]:
    t0 = time.perf_counter()
    async with make_client() as client:
        startup = time.perf_counter() - t0
        listing, calls = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            await client.list_tools()
            listing.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = await client.call_tool(*call)
            calls.append(time.perf_counter() - t)
            assert not result.is_error, result.content
    return {"startup": [startup], "list_tools": listing, "call": calls}


def _http_process(cmd: list[str], port: int, cwd: str) -> tuple[subprocess.Popen, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            time.sleep(0.02)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")


def _ms(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return statistics.median(values) * 1000, p95 * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    repeats, launches = (30, 2) if args.quick else (200, 5)
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    log = work / "train.log"
    log.write_text("".join(f"step {i} | loss {2.5 - i / 100:.4f} | lr 1e-4\n" for i in range(50)))

    ours_stdio = lambda: _stdio([console_script(), "--root", str(work)], str(work))  # noqa: E731
    echo_stdio = lambda: _stdio([sys.executable, str(HERE / "echo_server.py")], str(work))  # noqa: E731
    ours_call = ("tail_log", {"path": str(log), "lines": 20})
    echo_call = ("echo", {"text": "hello"})

    replay = work / "tail_log.json"
    replay.write_text(json.dumps(anyio.run(_one_result, ours_stdio, ours_call)))
    replay_stdio = lambda: _stdio([sys.executable, str(HERE / "echo_server.py")], str(work),  # noqa: E731
                                  {"ECHO_REPLAY": str(replay)})
    replay_call = ("replay", ours_call[1])

    rows: dict[str, dict[str, list[float]]] = {}
    for name, make, call in (("stdio ml-debug-mcp", ours_stdio, ours_call), ("stdio echo", echo_stdio, echo_call),
                             ("stdio echo, replay", replay_stdio, replay_call)):
        agg: dict[str, list[float]] = {"startup": [], "list_tools": [], "call": []}
        for i in range(launches):
            figures = anyio.run(_session_figures, make, call, repeats if i == 0 else 1)
            for k, v in figures.items():
                agg[k].extend(v)
        rows[name] = agg

    for name, cmd_of, call in (
        ("http ml-debug-mcp", lambda p: [console_script(), "--transport", "http", "--port", str(p), "--root",
                                          str(work), "--log-level", "WARNING"], ours_call),
        ("http echo", lambda p: [sys.executable, str(HERE / "echo_server.py"), "http", str(p)], echo_call),
    ):
        agg = {"startup": [], "list_tools": [], "call": []}
        for i in range(launches):
            port = free_port()
            proc, ready = _http_process(cmd_of(port), port, str(work))
            try:
                figures = anyio.run(_session_figures, lambda: Client(f"http://127.0.0.1:{port}/mcp"), call,
                                    repeats if i == 0 else 1)
            finally:
                proc.terminate()
                proc.wait()
            agg["startup"].append(ready + figures["startup"][0])
            agg["list_tools"].extend(figures["list_tools"])
            agg["call"].extend(figures["call"])
        rows[name] = agg

    print(f"{'server':<20}{'start-up ms (median)':>22}{'list_tools ms p50/p95':>24}{'tool call ms p50/p95':>24}")
    for name, agg in rows.items():
        s, _ = _ms(agg["startup"])
        l50, l95 = _ms(agg["list_tools"])
        c50, c95 = _ms(agg["call"])
        print(f"{name:<20}{s:>22.0f}{f'{l50:.2f}/{l95:.2f}':>24}{f'{c50:.2f}/{c95:.2f}':>24}")
    ours, typed = rows["stdio ml-debug-mcp"], rows["stdio echo, replay"]
    print(f"stdio: tool call vs an echo server replaying the same typed result under the same schema: "
          f"{_ms(ours['call'])[0] / _ms(typed['call'])[0]:.2f}x (what ml-debug-mcp's own work adds to the "
          "protocol's and the client's schema validation)")
    for transport in ("stdio", "http"):
        ours, echo = rows[f"{transport} ml-debug-mcp"], rows[f"{transport} echo"]
        for key, figure, goal in (("startup", "start-up to initialize", "<= 1.3x"), ("list_tools", "list_tools", "<= 2x"),
                                  ("call", "tail_log call", "<= 2x")):
            row(f"{figure}, {transport}", _ms(ours[key])[0], _ms(echo[key])[0], "ms", goal,
                baseline_name="MCPServer echo")
    row("tail_log call, stdio, vs echo replaying its typed result", _ms(rows["stdio ml-debug-mcp"]["call"])[0],
        _ms(rows["stdio echo, replay"]["call"])[0], "ms", "the protocol + schema floor",
        baseline_name="echo, same result and schema")
    for transport in ("stdio", "http"):
        ours, echo = rows[f"{transport} ml-debug-mcp"], rows[f"{transport} echo"]
        ratio = lambda k: _ms(ours[k])[0] / _ms(echo[k])[0]  # noqa: E731
        print(f"{transport}: ratio ml-debug-mcp/echo  start-up {ratio('startup'):.2f}x  "
              f"list_tools {ratio('list_tools'):.2f}x  tool call {ratio('call'):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
