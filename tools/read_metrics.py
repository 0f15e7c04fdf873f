"""read_metrics (wired to core once it lands)."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, not_implemented


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(name="read_metrics", title="read_metrics", annotations=READ_ONLY,
              description="Placeholder until the core lands: returns a not-implemented error, never a fake result.")
    async def read_metrics(path: str) -> str:
        raise not_implemented("read_metrics", "")
