"""The baseline: a bare MCPServer with one echo tool, served like ml-debug-mcp (stdio or HTTP).

With ECHO_REPLAY=<file.json> it also serves `replay`: the stored structured result of one real
`tail_log` call, under tail_log's own output schema. That isolates what the protocol and a
typed result cost any server (the client validates structured content against the schema) from
what ml-debug-mcp's own work adds.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse

mcp = MCPServer("echo")


@mcp.tool()
def echo(text: str) -> str:
    return text


if os.environ.get("ECHO_REPLAY"):
    from mcp_types import CallToolResult, TextContent

    from ml_debug_mcp.core.logs.tail import TailResult

    with open(os.environ["ECHO_REPLAY"], encoding="utf-8") as fh:
        _STORED = json.load(fh)

    @mcp.tool()
    def replay(path: str, lines: int = 20) -> Annotated[CallToolResult, TailResult]:
        return CallToolResult(content=[TextContent(type="text", text="replayed")], structured_content=_STORED)


@mcp.custom_route("/healthz", methods=["GET"])
async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        import uvicorn

        uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        mcp.run("stdio")
