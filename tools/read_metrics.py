"""read_metrics: a log's metric series, downsampled with extremes and NaN positions kept, plus a plot."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ml_debug_mcp.core.logs.series import MetricSeries, ParsedLog
from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, human_size, run_blocking, tool_result, translate_errors
from ml_debug_mcp.tools._sources import SOURCE_HELP, resolve_source

MAX_SERIES = 24


class ReadMetricsResult(BaseModel):
    path: str
    format: str
    series: list[MetricSeries] = Field(description="requested series, each downsampled to max_points")
    available: list[str] = Field(description="every metric name found (canonical names, e.g. loss, eval_loss, lr)")
    ranks: list[int] = Field(default_factory=list, description="ranks seen in a multi-rank log")
    records: int
    lines_scanned: int
    bytes_scanned: int
    unparsed_lines: int
    omitted_series: list[str] = Field(default_factory=list, description="series left out to bound the output")
    warnings: list[str] = Field(default_factory=list)


def select_series(parsed: ParsedLog, names: list[str] | None, rank: int | None) -> tuple[list[MetricSeries], list[str]]:
    """The series asked for (all when `names` is None), within MAX_SERIES; returns (kept, omitted keys)."""
    from ml_debug_mcp.core.logs.series import canonical_metric_name

    wanted = {canonical_metric_name(n) for n in names} if names else None
    chosen = [s for s in parsed.series
              if (wanted is None or s.name in wanted) and (rank is None or s.rank == rank)]
    priority = ["loss", "eval_loss", "lr", "grad_norm", "accuracy", "eval_accuracy"]
    chosen.sort(key=lambda s: (priority.index(s.name) if s.name in priority else len(priority), s.name,
                               -1 if s.rank is None else s.rank))
    return chosen[:MAX_SERIES], [s.key for s in chosen[MAX_SERIES:]]


def describe_series(s: MetricSeries) -> str:
    """One line an agent can read at a glance: range, extremes, and where it went non-finite."""
    st = s.stats
    parts = [f"{s.key}: {st.count} points"]
    if st.first_step is not None and st.last_step is not None:
        parts.append(f"steps {_num(st.first_step)}..{_num(st.last_step)}")
    if st.first_value is not None or st.last_value is not None:
        parts.append(f"first {_num(st.first_value)} -> last {_num(st.last_value)}")
    if st.min is not None:
        parts.append(f"min {_num(st.min)} @ {_num(st.min_step)}, max {_num(st.max)} @ {_num(st.max_step)}")
    if st.first_nonfinite_step is not None:
        parts.append(f"NaN/Inf x{st.nan_count + st.inf_count} from step {_num(st.first_nonfinite_step)}")
    return ", ".join(parts)


def _num(value: float | None) -> str:
    if value is None:
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def read_metrics_model(parsed: ParsedLog, names: list[str] | None, rank: int | None) -> ReadMetricsResult:
    kept, omitted = select_series(parsed, names, rank)
    warnings = list(parsed.warnings)
    if names:
        missing = sorted({n for n in names} - {s.name for s in kept} - {s.name for s in parsed.series})
        from ml_debug_mcp.core.logs.series import canonical_metric_name

        missing = [n for n in missing if canonical_metric_name(n) not in parsed.names]
        if missing:
            warnings.append(f"not found: {', '.join(missing)}; available: {', '.join(parsed.names) or 'none'}")
    return ReadMetricsResult(
        path=parsed.path or "", format=parsed.format, series=kept, available=parsed.names, ranks=parsed.ranks,
        records=parsed.records, lines_scanned=parsed.lines_scanned, bytes_scanned=parsed.bytes_scanned,
        unparsed_lines=parsed.unparsed_lines, omitted_series=omitted, warnings=warnings,
    )


def plot_selection(parsed: ParsedLog, result: ReadMetricsResult,
                   names: list[str] | None) -> tuple[ParsedLog, list[str] | None]:
    """What the PNG draws: the series the answer returns (canonical names, chosen rank), nothing else."""
    selected = parsed.model_copy(update={"series": result.series})
    return selected, (list(dict.fromkeys(s.name for s in result.series)) if names else None)


def summarize(result: ReadMetricsResult) -> str:
    head = (f"{result.path} ({result.format}): {len(result.available)} metrics from {result.records} records, "
            f"{human_size(result.bytes_scanned)} read.")
    if not result.series:
        head += " No metric series found."
    lines = [head] + [describe_series(s) for s in result.series]
    if result.omitted_series:
        lines.append(f"({len(result.omitted_series)} more series omitted; ask for them by name.)")
    lines += [f"note: {w}" for w in result.warnings[:5]]
    return "\n".join(lines)


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="read_metrics",
        title="Read metric series",
        annotations=READ_ONLY,
        description=(
            "Parse every metric in a training log (or run directory) into series against step: HF Trainer, "
            "trainer_state.json, Lightning metrics.csv, JSON lines, CSV/TSV, key-value text (nanoGPT, Keras, "
            "fairseq, Megatron/DeepSpeed), TensorBoard events, MLflow and W&B offline files, or a tracker run "
            "(mlflow://host:port/<run_id>, trackio://<project>/<run>). Each series is "
            "downsampled to max_points keeping extremes and NaN/Inf positions, with exact stats. plot=true "
            "adds a PNG of loss/eval loss/lr/grad norm against step."
        ),
    )
    @translate_errors("read_metrics")
    async def read_metrics(
        path: Annotated[str, Field(description=SOURCE_HELP)],
        names: Annotated[list[str] | None, Field(description="metric names to return (default: all), e.g. ['loss', 'eval_loss']")] = None,
        format: Annotated[str | None, Field(description="force a format id instead of auto-detection, e.g. 'hf_trainer', 'jsonl', 'tensorboard'")] = None,
        rank: Annotated[int | None, Field(ge=0, description="only this rank of a multi-rank log")] = None,
        max_points: Annotated[int, Field(ge=10, le=2000, description="points kept per series")] = 500,
        plot: Annotated[bool, Field(description="attach a PNG plot of the main curves")] = False,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, ReadMetricsResult]:
        from ml_debug_mcp.core.logs.sources import read_source

        target = await resolve_source(env, ctx, path, what="path")
        parsed = await run_blocking(ctx, read_source, target, format, max_points=max_points)
        result = read_metrics_model(parsed, names, rank)
        images = []
        if plot and result.series:
            from ml_debug_mcp.core.plot import plot_metrics

            selected, plot_names = plot_selection(parsed, result, names)
            images.append(await run_blocking(None, plot_metrics, selected, names=plot_names))
        return tool_result(result, summarize(result), images)
