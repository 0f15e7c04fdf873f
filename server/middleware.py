"""Middleware on the server's request chain: a tools/list built once, and argument hygiene for tools/call.

ListingCache: the tool set is fixed once create_server returns, yet the SDK rebuilds, validates and
re-serialises every tool's schema on each tools/list (about 3 ms for our nine tools); the wire form
is kept per protocol version and served as is.

ArgumentHygiene: pydantic silently ignores arguments a tool does not declare, so a misspelt `lines`
would be dropped without a word; an agent deserves to hear about it.
"""

from __future__ import annotations

import re
from typing import Any

from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

_PYDANTIC_URL = re.compile(r"\n\s*For further information visit https://errors\.pydantic\.dev/\S+")


class ListingCache:
    """Answers tools/list from the wire form built on the first request of each protocol version."""

    def __init__(self) -> None:
        self._wire: dict[str, dict[str, Any]] = {}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        if ctx.method != "tools/list" or (isinstance(ctx.params, dict) and ctx.params.get("cursor")):
            return await call_next(ctx)
        version = ctx.protocol_version
        cached = self._wire.get(version)
        if cached is None:
            result = await call_next(ctx)
            if not isinstance(result, dict):  # not the SDK's serialised form: never cache what we cannot reuse
                return result
            cached = self._wire[version] = result
        return dict(cached)  # the runner copies too; the nested schemas are never written to


class ArgumentHygiene:
    def __init__(self, mcp: MCPServer) -> None:
        self._mcp = mcp
        self._known: dict[str, set[str]] | None = None

    async def _known_arguments(self) -> dict[str, set[str]]:
        if self._known is None:
            tools = await self._mcp.list_tools()
            self._known = {t.name: set((t.input_schema or {}).get("properties", {})) for t in tools}
        return self._known

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        if ctx.method != "tools/call" or not isinstance(ctx.params, dict):
            return await call_next(ctx)
        name = ctx.params.get("name")
        arguments = ctx.params.get("arguments") or {}
        known = (await self._known_arguments()).get(name) if isinstance(name, str) else None
        if known is not None and isinstance(arguments, dict):
            unknown = sorted(set(arguments) - known)
            if unknown:
                return _error(f"{name} does not take {', '.join(map(repr, unknown))}. "
                              f"Its arguments are: {', '.join(sorted(known)) or 'none'}.")
        result = await call_next(ctx)
        return _readable_validation(result, name)


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _readable_validation(result: Any, name: Any) -> Any:
    """Drop pydantic's documentation links and point at the schema; the result may be a model or a dict."""
    data = result.model_dump(by_alias=True, exclude_none=True) if isinstance(result, CallToolResult) else result
    if not isinstance(data, dict) or not data.get("isError"):
        return result
    content = data.get("content") or []
    first = content[0] if content else None
    if isinstance(first, dict) and "validation error" in str(first.get("text", "")):
        text = _PYDANTIC_URL.sub("", first["text"])
        return _error(f"{text}\nFix the arguments above; tools/list shows the input schema of {name}.")
    return result
