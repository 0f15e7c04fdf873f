"""create_smoke_test: generate a regression test for a diagnosed failure (not implemented yet)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from ml_debug_mcp.core.catalogue import FailureId
from ml_debug_mcp.tools._base import WRITES_FILES, ToolEnv, not_implemented


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="create_smoke_test",
        title="Create a regression smoke test",
        annotations=WRITES_FILES,
        description=(
            "Write a pytest file that reproduces the diagnosed failure's edge case against the user's model "
            "and fails if it comes back (never overwrites an existing file). Not implemented yet."
        ),
    )
    async def create_smoke_test(
        path: Annotated[str, Field(description="test file to create inside the roots, e.g. tests/test_no_nan.py")],
        failure: Annotated[FailureId, Field(description="the failure id classify_failure returned")],
        entrypoint: Annotated[str | None, Field(description="'file.py:factory' that builds the model")] = None,
    ) -> str:
        raise not_implemented("create_smoke_test", "Until it lands, write the test yourself.")
