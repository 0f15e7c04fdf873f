"""write_journal: append a debugging entry to the project's journal (not implemented yet)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from ml_debug_mcp.tools._base import WRITES_FILES, ToolEnv, not_implemented


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="write_journal",
        title="Record the fix in the journal",
        annotations=WRITES_FILES,
        description=(
            "Append a dated entry (symptom, root cause, fix, resolution) to a markdown journal inside the "
            "roots, with a file lock so concurrent agents never lose an entry. Not implemented yet."
        ),
    )
    async def write_journal(
        title: Annotated[str, Field(description="e.g. 'NaN loss at step 500'")],
        symptom: str,
        root_cause: str,
        fix: str,
        resolution: str,
        path: Annotated[str, Field(description="journal file inside the roots")] = "journal.md",
    ) -> str:
        raise not_implemented("write_journal", "Until it lands, add the entry to journal.md yourself.")
