"""classify_failure: ranked, evidence-backed hypotheses over the failure taxonomy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.diagnosis.hypotheses import Diagnosis, Hypothesis, confidence_text
from ml_debug_mcp.core.logs.sources import TrackerSource
from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, effective_roots, resolve_path, run_blocking, tool_result, \
    translate_errors
from ml_debug_mcp.tools._sources import SOURCE_HELP, resolve_source

MAX_TEXT_CHARS = 128_000_000  # a paste this long is still answered: core reads its last 8 MB and says so
SeriesArg = dict[str, list[list[float | None]]]


def diagnose(log_path: Path | TrackerSource | None = None, log_text: str | None = None, error_text: str | None = None,
             code_path: Path | None = None, series: SeriesArg | None = None, fmt: str | None = None,
             log_label: str | None = None, progress=None) -> Diagnosis:
    """Route the evidence given to the matching core entry point (shared by the tool and the CLI)."""
    from ml_debug_mcp.core.diagnosis.classify import classify, classify_path, classify_text

    if log_path is not None:
        return classify_path(log_path, fmt, log_path=log_label or str(log_path), code_path=code_path,
                             error_text=error_text, series=series, progress=progress)
    if log_text is not None:
        return classify_text(log_text, fmt, code_path=code_path, error_text=error_text, series=series)
    return classify(None, error_text=error_text, code_path=code_path, series=series)


def _hypothesis_lines(h: Hypothesis) -> list[str]:
    onset = f", from step {h.onset_step:g}" if h.onset_step is not None else ""
    lines = [f"- {h.failure} (confidence {confidence_text(h.confidence)}{onset})"]
    for e in h.evidence[:3]:
        where = " ".join(p for p in (f"step {e.step:g}" if e.step is not None else "",
                                     f"line {e.line_no}" if e.line_no is not None else "") if p)
        lines.append(f"    evidence{f' [{where}]' if where else ''}: {e.text}")
    if h.root_causes:
        lines.append(f"    likely cause: {h.root_causes[0]}")
    if h.fixes:
        lines.append(f"    fix: {h.fixes[0].action} -> {h.fixes[0].expected_effect}")
    for step in h.next_steps[:3]:
        args = ", ".join([f"{k}={v!r}" for k, v in step.arguments.items()] + [f"{k}=<yours>" for k in step.missing])
        lines.append(f"    next: {step.tool}({args}) - {step.why}")
    return lines


def summarize(diagnosis: Diagnosis) -> str:
    lines = [diagnosis.summary]
    for h in diagnosis.hypotheses[:4]:
        lines += _hypothesis_lines(h)
    lines += [f"note: {note}" for note in diagnosis.input_notes]
    if diagnosis.needs_more_evidence:
        lines.append("Needs more evidence:")
        lines += [f"  * {note}" for note in diagnosis.needs_more_evidence]
    return "\n".join(lines)


def evidence_marks(diagnosis: Diagnosis, limit: int = 6) -> list[tuple[float, str]]:
    """Steps to mark on the loss plot: where each leading hypothesis' evidence was seen."""
    marks: list[tuple[float, str]] = []
    for h in diagnosis.hypotheses[:3]:
        if h.failure == "healthy":
            continue
        steps = [h.onset_step] if h.onset_step is not None else [e.step for e in h.evidence if e.step is not None]
        for step in steps[:2]:
            if step is not None and (step, h.failure) not in marks:
                marks.append((step, h.failure))
    return marks[:limit]


def _plot(diagnosis: Diagnosis, log_path: Path | TrackerSource | None, log_text: str | None, series: SeriesArg | None,
          fmt: str | None) -> list[bytes]:
    from ml_debug_mcp.core.diagnosis.classify import parse_safely, parsed_from_series
    from ml_debug_mcp.core.logs.sources import read_source
    from ml_debug_mcp.core.plot import plot_metrics

    if isinstance(log_path, TrackerSource):
        parsed = read_source(log_path)
    elif log_path is not None:
        parsed = parse_safely(path=log_path, fmt=fmt)
    elif log_text is not None:
        parsed = parse_safely(text=log_text, fmt=fmt)
    elif series:
        parsed = parsed_from_series(series)
    else:
        return []
    if not parsed.series:
        return []
    top = diagnosis.hypotheses[0] if diagnosis.hypotheses else None
    title = f"{top.failure} ({confidence_text(top.confidence)})" if top is not None else None
    return [plot_metrics(parsed, marks=evidence_marks(diagnosis), title=title)]


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="classify_failure",
        title="Classify the training failure",
        annotations=READ_ONLY,
        description=(
            "Say what is wrong with a training run, with evidence: ranked hypotheses over nan_loss, divergence, "
            "loss_spike, exploding/vanishing_gradients, plateau, slow_convergence, hockey_stick, overfitting, oom, "
            "shape/device/dtype_mismatch, graph_reuse, cuda_assert, distributed_hang, slow_throughput, "
            "mode_collapse, rank_collapse or healthy. Each has a confidence, evidence (step, value, line, and the "
            "rule with its window and threshold), root causes, fixes with expected effect, and next_steps: the "
            "tool calls that confirm it. Give any of: log_path (metric curves + errors in its tail), log_text, "
            "error_text (a pasted traceback or log excerpt, as people paste it: markdown, quotes, logger and rank "
            "prefixes, progress bars and generated samples are all read), series ({name: [[step, value], ...]}), code_path (a training "
            "script, scanned for anti-patterns like .item() in the loop or a missing detach()). Below 0.8 "
            "confidence the result says what evidence is missing. plot=true marks the evidence on the loss curve."
        ),
    )
    @translate_errors("classify_failure")
    async def classify_failure(
        log_path: Annotated[str | None, Field(description="the training log: " + SOURCE_HELP)] = None,
        log_text: Annotated[str | None, Field(description="log text, when there is no file", max_length=MAX_TEXT_CHARS)] = None,
        error_text: Annotated[str | None, Field(description="an error message, traceback or pasted log excerpt", max_length=MAX_TEXT_CHARS)] = None,
        code_path: Annotated[str | None, Field(description="the training script (.py or .ipynb) to scan")] = None,
        series: Annotated[SeriesArg | None, Field(description="metric series {name: [[step, value], ...]}; null = NaN")] = None,
        format: Annotated[str | None, Field(description="force a log format id instead of auto-detection")] = None,
        plot: Annotated[bool, Field(description="attach the loss plot with the evidence steps marked")] = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, Diagnosis]:
        if not any((log_path, log_text, error_text, code_path, series)):
            raise ToolError("Give at least one piece of evidence: log_path (best), log_text, error_text, series or "
                            "code_path. Start with tail_log if you do not know where the log is.")
        roots = await effective_roots(env, ctx)
        log = await resolve_source(env, ctx, log_path, what="log_path") if log_path else None
        code = await resolve_path(roots, code_path, what="code_path", expect="file") if code_path else None
        diagnosis = await run_blocking(ctx, diagnose, log, log_text, error_text, code, series, format, log_path)
        images = await run_blocking(None, _plot, diagnosis, log, log_text, series, format) if plot else []
        return tool_result(diagnosis, summarize(diagnosis), images)
