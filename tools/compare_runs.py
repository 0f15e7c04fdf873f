"""compare_runs: did the fix work? The failed run's log against the log after the fix."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.diagnosis.compare import Comparison
from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, run_blocking, tool_result, translate_errors
from ml_debug_mcp.tools._sources import SOURCE_HELP, resolve_source


def summarize(c: Comparison) -> str:
    lines = [f"Verdict: {c.verdict}. {c.summary}"]
    if c.improvement is not None:
        lines.append(f"{c.metric}: {c.before_value:.4g} -> {c.after_value:.4g} at step {c.horizon_step:g} "
                     f"({c.improvement:+.1%}; {c.required_improvement:.0%} required)")
    if c.resolved or c.persisting or c.new:
        lines.append(f"resolved: {', '.join(c.resolved) or '-'}; persisting: {', '.join(c.persisting) or '-'}; "
                     f"new: {', '.join(c.new) or '-'}")
    if c.stable_steps is not None:
        lines.append(f"stable for {c.stable_steps:g} steps ({c.required_stable_steps:g} required)")
    lines += [f"- {e.text}" for e in c.evidence[:6]]
    return "\n".join(lines)


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="compare_runs",
        title="Verify a fix: compare two runs",
        annotations=READ_ONLY,
        description=(
            "Verify a fix from two logs: the failed run (before_path) and the run after the fix (after_path). "
            "Says whether the old pathology is gone, whether a new one appeared, how much the metric improved at "
            "the last step both runs reached (more than 10% is required), and whether the new run stayed stable "
            "long enough (100+ steps, and 10x the step where the old run failed). Verdict: fixed, "
            "improved_but_unverified, not_fixed or regressed, with evidence."
        ),
    )
    @translate_errors("compare_runs")
    async def compare_runs(
        before_path: Annotated[str, Field(description="the failed run: " + SOURCE_HELP)],
        after_path: Annotated[str, Field(description="the run with the fix, the same kinds of source")],
        metric: Annotated[str | None, Field(description="the target metric, e.g. loss, eval_loss, accuracy, reward; "
                                                        "default: the one the old failure calls for (eval_loss for "
                                                        "overfitting, reward for mode collapse, else loss)")] = None,
        format: Annotated[str | None, Field(description="force a log format id for both logs")] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, Comparison]:
        from ml_debug_mcp.core.diagnosis.compare import compare_paths
        from ml_debug_mcp.core.logs.series import canonical_metric_name

        before = await resolve_source(env, ctx, before_path, what="before_path")
        after = await resolve_source(env, ctx, after_path, what="after_path")
        comparison = await run_blocking(ctx, compare_paths, before, after,
                                        canonical_metric_name(metric) if metric else None, format)
        return tool_result(comparison, summarize(comparison))
