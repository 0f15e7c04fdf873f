"""write_journal: append a dated debugging entry to a markdown journal inside the roots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from ml_debug_mcp.core.diagnosis.catalogue import FailureId
from ml_debug_mcp.core.record.journal import MAX_EVIDENCE_CHARS, MAX_EVIDENCE_ITEMS, MAX_FIELD_CHARS, MAX_TAG_CHARS, \
    MAX_TAGS, MAX_TITLE_CHARS, JournalEntry, JournalWriteResult, append_entry
from ml_debug_mcp.tools._base import WRITES_FILES, ToolEnv, effective_roots, resolve_path, run_blocking, tool_result, \
    translate_errors


def summarize(result: JournalWriteResult) -> str:
    return f"{result.summary}\n{result.heading}\nRead it back with the resource journal://{result.path}"


def _append(path: Path, **fields) -> JournalWriteResult:
    return append_entry(path, JournalEntry(**fields))


def register(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.tool(
        name="write_journal",
        title="Record the fix in the journal",
        annotations=WRITES_FILES,
        description=(
            "Record a debugged failure once the fix is verified: appends a dated entry (UTC) with the symptom, "
            "root cause, fix and resolution, optionally the failure id, the evidence and how it was verified "
            "(e.g. compare_runs' verdict), to a markdown journal inside the roots (default journal.md, created "
            "with a heading if missing). Existing text is never changed, and a lock file (<journal>.lock) keeps "
            "entries from concurrent agents whole. Fields are single paragraphs or short markdown; headings "
            "inside them are escaped so they cannot fake an entry. classify_failure's next_steps give the "
            "arguments; edit the resolution to say what actually happened. Read the journal back with the "
            "resource journal://<path>."
        ),
    )
    @translate_errors("write_journal")
    async def write_journal(
        title: Annotated[str, Field(description="one line, e.g. 'NaN loss at step 500'", max_length=MAX_TITLE_CHARS)],
        symptom: Annotated[str, Field(description="what was observed: the error or the metric behaviour, with steps",
                                      max_length=MAX_FIELD_CHARS)],
        root_cause: Annotated[str, Field(description="why it happened, e.g. 'log(0) in the entropy term'",
                                         max_length=MAX_FIELD_CHARS)],
        fix: Annotated[str, Field(description="what was changed, e.g. 'added 1e-8 inside the log'",
                                  max_length=MAX_FIELD_CHARS)],
        resolution: Annotated[str, Field(description="the outcome, e.g. 'resumed from checkpoint, stable 2000 steps'",
                                         max_length=MAX_FIELD_CHARS)],
        path: Annotated[str, Field(description="markdown journal inside the roots (.md)")] = "journal.md",
        failure: Annotated[FailureId | None, Field(description="the failure id classify_failure named")] = None,
        evidence: Annotated[list[Annotated[str, Field(max_length=MAX_EVIDENCE_CHARS)]] | None,
                            Field(description="the observations that decided it, one per item",
                                  max_length=MAX_EVIDENCE_ITEMS)] = None,
        verification: Annotated[str | None, Field(description="how the fix was verified, e.g. compare_runs' verdict",
                                                  max_length=MAX_FIELD_CHARS)] = None,
        tags: Annotated[list[Annotated[str, Field(max_length=MAX_TAG_CHARS)]] | None,
                        Field(description="plain words, e.g. ['numerics', 'amp']", max_length=MAX_TAGS)] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, JournalWriteResult]:
        target = await resolve_path(await effective_roots(env, ctx), path, what="journal path", expect="new")
        result = await run_blocking(ctx, _append, target, title=title, symptom=symptom, root_cause=root_cause,
                                    fix=fix, resolution=resolution, failure=failure, evidence=evidence or [],
                                    verification=verification, tags=tags or [])
        return tool_result(result, summarize(result))
