"""watch_run: follow a running log or tracker run for a bounded time; return at the first warning or failure."""

from __future__ import annotations

import threading
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.diagnosis.watch import MAX_SECONDS, Reader, WatchReport, watch
from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, run_blocking, tool_result, translate_errors
from ml_debug_mcp.tools._sources import SOURCE_HELP, resolve_source


def summarize(report: WatchReport) -> str:
    at = "no step yet" if report.last_step is None else f"step {report.last_step:g}"
    lines = [f"{report.status.upper()}: {report.source}, {report.reason} ({at}, {report.new_records} new records, "
             f"{report.elapsed_seconds:.0f} s, run {report.run_state})."]
    for alarm in report.alarms[:3]:
        where = f" from step {alarm.step:g}" if alarm.step is not None else ""
        lines.append(f"- {alarm.failure} ({alarm.kind}, confidence {alarm.confidence:.2f}{where})")
        lines += [f"    evidence: {e.text}" for e in alarm.evidence[:2]]
        if alarm.fix:
            lines.append(f"    fix: {alarm.fix}")
    if report.run_state == "running":
        lines.append("Call watch_run again with this cursor to keep watching; classify_failure gives the full picture.")
    elif report.status == "quiet":
        lines.append("No early warning fired; classify_failure judges the finished run's shape (plateau, overfitting).")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="watch_run",
        title="Watch a running training run",
        annotations=READ_ONLY,
        description=(
            "Follow a training run while it trains: a log file (any format read_metrics reads) or a tracker run "
            "(mlflow://host:port/<run_id>, trackio://<project>/<run>). Polls for up to `seconds` (max 600), sending "
            "progress notifications, and returns as soon as a failure (NaN, divergence, an error in the log) or an "
            "early warning fires: entropy collapsing or stuck near ln(vocab), zero-variance advantages, KL stuck at "
            "0, the grad norm pinned at its clip value, effective-rank collapse. Each alarm has its evidence and "
            "step. A run that stops writing or finishes with none of these gets a 'quiet' answer. Pass the returned "
            "cursor to the next call to go on watching without repeating what was reported."
        ),
    )
    @translate_errors("watch_run")
    async def watch_run(
        source: Annotated[str, Field(description=SOURCE_HELP)],
        seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS, description="how long this call may watch")] = 30,
        poll_seconds: Annotated[float, Field(ge=0.2, le=60, description="seconds between reads")] = 2,
        idle_seconds: Annotated[float, Field(ge=1, le=3600, description="no new records for this long: the run "
                                                                          "has stopped")] = 60,
        cursor: Annotated[str | None, Field(description="the cursor a previous watch_run call returned")] = None,
        format: Annotated[str | None, Field(description="force a log format id instead of auto-detection")] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, WatchReport]:
        target = await resolve_source(env, ctx, source, what="source")
        stop = threading.Event()
        try:
            report = await run_blocking(ctx, watch, Reader(target, format), seconds=seconds, poll_seconds=poll_seconds,
                                        idle_seconds=idle_seconds, cursor=cursor, should_stop=stop.is_set)
        finally:
            stop.set()  # a cancelled call must not leave its thread polling for minutes
        return tool_result(report, summarize(report))
