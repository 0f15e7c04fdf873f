"""gpu_status: the GPU (NVML) and training-process (psutil) picture of this host, in one call."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.host.snapshot import HostStatus
from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, effective_roots, resolve_path, run_blocking, tool_result, \
    translate_errors


def summarize(status: HostStatus) -> str:
    lines = [status.summary]
    if not status.nvml.available and status.nvml.fix and not status.hosts:
        lines.append(f"GPU: {status.nvml.reason} Fix: {status.nvml.fix}")
    for group in status.hosts:
        lines.append(f"host {group.host}" + (f" (job {group.job})" if group.job else "") + f": {group.summary}")
    shown = status.gpus if not status.hosts else [g for g in status.gpus if not g.diagnosis.startswith("ok")][:20]
    for gpu in shown:
        where = f"{gpu.host} " if gpu.host else ""
        lines.append(f"{where}GPU {gpu.index} {gpu.name or ''}: {gpu.diagnosis}")
    for proc in status.processes[:5]:
        lines.append(f"pid {proc.pid} ({proc.state}, {proc.match_reason}): {(proc.command or '')[:120]}")
    for finding in status.findings:
        if finding.severity != "info" and finding.fixes:
            lines.append(f"fix ({finding.rule}): {finding.fixes[0].action}")
    if status.log is not None:
        lines.append(f"log: {status.log.hint}")
    return "\n".join(lines)


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="gpu_status",
        title="GPU and training-process status",
        annotations=READ_ONLY,
        description=(
            "Step 1 of the decision tree in one call: per GPU (NVML) memory, utilisation, temperature, power, "
            "clocks, throttle reasons, ECC errors and processes; the running training jobs (torchrun/deepspeed/"
            "accelerate/python train scripts, or a pid or name pattern) with state, CPU, RSS, age and ranks; and a "
            "diagnosis per GPU (idle while training, memory near full, throttling, ECC, zombies). samples>1 "
            "measures utilisation over a window (one instant lies). Works on CPU-only hosts and says why GPU "
            "data is missing. source='prometheus://host:9090' reads every host's GPUs from a Prometheus that "
            "scrapes NVIDIA's dcgm-exporter instead (memory, utilisation over 5 min, temperature, power, Xid "
            "errors, throttling), grouped by host and job, with the same per-GPU diagnosis."
        ),
    )
    @translate_errors("gpu_status")
    async def gpu_status(
        samples: Annotated[int, Field(ge=1, le=50, description="utilisation samples to take")] = 1,
        interval: Annotated[float, Field(ge=0, le=30, description="seconds between samples; (samples-1)*interval <= 30")] = 0.5,
        pid: Annotated[int | None, Field(gt=0, le=4_194_304, description="the training process to check (default: discover them)")] = None,
        name_pattern: Annotated[str | None, Field(description="regex matched against command lines to find the job")] = None,
        log: Annotated[str | None, Field(description="the job's log; if the process died, the result points at it")] = None,
        source: Annotated[str | None, Field(description="prometheus://host:9090: every host's GPUs from DCGM metrics in that Prometheus", max_length=500)] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, HostStatus]:
        from ml_debug_mcp.core.host.snapshot import host_status, validate_sampling

        if source is not None:
            from ml_debug_mcp.core.host.prometheus import cluster_status

            if pid is not None or name_pattern is not None or log is not None or samples != 1:
                raise ToolError("pid, name_pattern, log and samples describe this host's processes; a Prometheus "
                                "source reports GPUs only (utilisation over 5 min). Drop them, or drop source.")
            status = await run_blocking(ctx, cluster_status, source)
            return tool_result(status, summarize(status))

        validate_sampling(samples, interval)
        log_path = await resolve_path(await effective_roots(env, ctx), log, what="log") if log else None
        status = await run_blocking(ctx, host_status, samples=samples, interval=interval, pid=pid,
                                    name_pattern=name_pattern, log_path=log_path)
        return tool_result(status, summarize(status))
