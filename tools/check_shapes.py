"""check_shapes: trace tensor shapes through the user's model (not implemented yet)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from ml_debug_mcp.tools._base import RUNS_USER_CODE, ToolEnv, not_implemented


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="check_shapes",
        title="Check tensor shapes",
        annotations=RUNS_USER_CODE,
        description=(
            "Run one forward pass of the model from `entrypoint` on inputs of `input_shapes` in a sandboxed "
            "worker and report every layer's input/output shape and the first mismatch. Not implemented yet: "
            "returns an error that says what to use instead."
        ),
    )
    async def check_shapes(
        entrypoint: Annotated[str, Field(description="'file.py:factory' or 'package.module:factory' returning the model")],
        input_shapes: Annotated[list[list[int]], Field(description="one shape per forward() argument, e.g. [[8, 3, 32, 32]]")],
    ) -> str:
        raise not_implemented(
            "check_shapes",
            "Until it lands, pass the shape error text to classify_failure(error_text=...): it extracts the "
            "shapes and says which layer expects what.",
        )
