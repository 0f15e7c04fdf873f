"""tail_log (wired to core once it lands)."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from ml_debug_mcp.tools._base import READ_ONLY, ToolEnv, not_implemented


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(name="tail_log", title="tail_log", annotations=READ_ONLY,
              description="Placeholder until the core lands: returns a not-implemented error, never a fake result.")
    async def tail_log(path: str) -> str:
        raise not_implemented("tail_log", "")
