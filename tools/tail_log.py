"""tail_log: the end of a training log, read from the end, with a cursor, errors and last metrics."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.logs.tail import DEFAULT_LINES, MAX_AROUND, MAX_LINES, TailResult
from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, effective_roots, human_size, resolve_path, run_blocking, \
    tool_result, translate_errors

_MAX_ERRORS_IN_SUMMARY = 3


def summarize(result: TailResult) -> str:
    """What an agent needs at a glance: file facts, errors, last metrics, then the lines themselves."""
    if result.status == "directory":
        listing = [f"{result.path} is a directory with {len(result.files)} log-like files (newest first):"]
        listing += [f"  {f.path}  {human_size(f.size)}  modified {_age(f.age_seconds)} ago  [{f.kind}]"
                    for f in result.files[:20]]
        if len(result.files) > 20:
            listing.append(f"  ... {len(result.files) - 20} more in `files`")
        return "\n".join(listing)
    writing = "still writing" if result.still_writing else "not written recently"
    head = (f"{result.path}: {human_size(result.size)}, modified {_age(result.age_seconds)} ago ({writing}), "
            f"format {result.format}.")
    out = [head]
    if result.reset:
        out.append(f"Cursor reset ({result.reset}): {result.reset_reason}")
    if result.metrics:
        out.append("Last metrics: " + ", ".join(_metric(m) for m in result.metrics[:12]))
    for block in result.errors[-_MAX_ERRORS_IN_SUMMARY:]:
        where = f"line {block.first_line}" if block.numbering == "file" else f"near offset {block.first_offset}"
        repeats = f" (x{block.repeats})" if block.repeats > 1 else ""
        out.append(f"ERROR [{block.kind}] {block.exception_type or ''}: {block.message} ({where}){repeats}".replace(" : ", ": "))
    if len(result.errors) > _MAX_ERRORS_IN_SUMMARY:
        out.append(f"({len(result.errors) - _MAX_ERRORS_IN_SUMMARY} earlier error blocks in `errors`)")
    out += [f"note: {w}" for w in result.warnings[:5]]
    if result.grep:
        out.append(f"grep {result.grep!r}: {result.matches or 0} matching lines in the last "
                   f"{human_size(result.searched_bytes or 0)}")
    shown = f"{len(result.lines)} lines" + (" (more available: poll again)" if result.has_more else "")
    out.append(f"--- {shown}; next_cursor={result.next_cursor}")
    for line in result.lines:
        number = f"{line.line_no}: " if line.line_no is not None else ""
        gap = "...\n" if line.gap_before else ""
        out.append(f"{gap}{number}{line.text}")
    if result.partial_line is not None:
        out.append(f"[partial, no newline yet] {result.partial_line.text}")
    if result.truncated:
        out.append("(output cut: " + "; ".join(result.truncation) + ")")
    return "\n".join(out)


def _metric(m) -> str:
    rank = f"@rank{m.rank}" if m.rank is not None else ""
    value = m.nonfinite.upper() if m.nonfinite else f"{m.value:.4g}"
    step = f" (step {m.step:g})" if m.step is not None else ""
    return f"{m.name}{rank}={value}{step}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="tail_log",
        title="Tail a training log",
        annotations=READ_ONLY,
        description=(
            "The first call when debugging a run: the last lines of a training log, read from the end (a 4 GB "
            "log costs the same as a small one). Also returns the detected format, the last value of every metric "
            "(loss, eval loss, lr, grad norm, throughput... per rank), any traceback/CUDA/NCCL/OOM error in the "
            "tail extracted whole, the file size and age (is the run still writing?). Pass the returned "
            "next_cursor as `since` to get only new lines (truncation and rotation are detected). `grep` filters "
            "by regex and `around` adds context lines, e.g. grep='Traceback|Error' around=30. A directory lists "
            "its log files, newest first. plot=true attaches a PNG of the loss curves."
        ),
    )
    @translate_errors("tail_log")
    async def tail_log(
        path: Annotated[str, Field(description="log file (or run directory) inside the roots")],
        lines: Annotated[int, Field(ge=1, le=MAX_LINES, description="how many lines to return")] = DEFAULT_LINES,
        since: Annotated[str | None, Field(description="next_cursor from a previous call: only lines written after it")] = None,
        grep: Annotated[str | None, Field(description="regex; only matching lines (plus `around` context)")] = None,
        around: Annotated[int, Field(ge=0, le=MAX_AROUND, description="context lines around each grep match")] = 0,
        format: Annotated[str | None, Field(description="force a log format id instead of auto-detection")] = None,
        plot: Annotated[bool, Field(description="attach a PNG of loss/eval loss/lr/grad norm over the whole file")] = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, TailResult]:
        from ml_debug_mcp.core.logs.tail import tail_file

        target = await resolve_path(await effective_roots(env, ctx), path, what="log path")
        result = await run_blocking(ctx, tail_file, target, lines=lines, since=since, grep=grep, around=around,
                                    fmt=format)
        images = []
        if plot and result.status == "ok":
            images = await run_blocking(None, _plot_file, target, format)
            if not images:
                result.warnings.append("plot requested, but no metric series were found to draw")
        return tool_result(result, summarize(result), images)


def _plot_file(path, fmt: str | None) -> list[bytes]:
    from ml_debug_mcp.core.logs.metrics import parse_metrics
    from ml_debug_mcp.core.plot import plot_metrics

    parsed = parse_metrics(path, fmt, max_points=1000)
    return [plot_metrics(parsed)] if parsed.series else []
