"""One module per MCP tool: its input/output models and a thin call into core."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from ml_debug_mcp.tools._base import ToolEnv


def register_all(mcp: MCPServer, env: ToolEnv) -> None:
    """Register every tool on `mcp`, in the order an agent uses them."""
    from ml_debug_mcp.tools import (
        analyze_gradients,
        check_shapes,
        classify_failure,
        compare_runs,
        create_smoke_test,
        gpu_status,
        read_metrics,
        tail_log,
        watch_run,
        write_journal,
    )

    for module in (tail_log, read_metrics, gpu_status, classify_failure, watch_run, analyze_gradients, check_shapes,
                   compare_runs, write_journal, create_smoke_test):
        module.register(mcp, env)
