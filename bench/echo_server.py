"""The baseline: a bare MCPServer with one echo tool, served like ml-debug-mcp (stdio or HTTP)."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse

mcp = MCPServer("echo")


@mcp.tool()
def echo(text: str) -> str:
    return text


@mcp.custom_route("/healthz", methods=["GET"])
async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        import uvicorn

        uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        mcp.run("stdio")
