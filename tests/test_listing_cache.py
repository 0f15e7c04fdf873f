"""tools/list is built once per protocol version and served unchanged, through real clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from ml_debug_mcp.core.paths import Roots
from ml_debug_mcp.server.app import create_server
from ml_debug_mcp.server.config import Config
from ml_debug_mcp.server.middleware import ListingCache

pytestmark = pytest.mark.anyio


class CountListings:
    """Placed inside ListingCache: sees only the tools/list requests the cache lets through."""

    def __init__(self) -> None:
        self.seen = 0

    async def __call__(self, ctx, call_next):
        if ctx.method == "tools/list":
            self.seen += 1
        return await call_next(ctx)


def _server(root: Path, cached: bool):
    server = create_server(Config(roots=Roots.from_strings([str(root)])))
    if not cached:
        server.middleware[:] = [m for m in server.middleware if not isinstance(m, ListingCache)]
    counter = CountListings()
    server.middleware.append(counter)
    return server, counter


async def _listings(server, mode: str, times: int) -> list[list[dict]]:
    client = Client(server)
    client.mode = mode
    async with client:
        out = []
        for _ in range(times):
            tools = (await client.list_tools(cache_mode="bypass")).tools
            out.append([t.model_dump(mode="json") for t in tools])
        return out


async def test_listing_is_built_once_per_protocol_and_equals_the_uncached_one(tmp_path):
    cached, counter = _server(tmp_path, cached=True)
    plain, plain_counter = _server(tmp_path, cached=False)
    for mode in ("auto", "legacy"):
        ours = await _listings(cached, mode, 3)
        reference = await _listings(plain, mode, 2)
        assert ours[0] == ours[1] == ours[2] == reference[0]
        assert {t["name"] for t in ours[0]} >= {"tail_log", "gpu_status", "classify_failure"}
    assert counter.seen == 2, "one build for each protocol era, then served from the cache"
    assert plain_counter.seen == 4


async def test_a_cached_listing_still_refuses_unknown_arguments(tmp_path):
    server, _ = _server(tmp_path, cached=True)
    (tmp_path / "train.log").write_text("step 1 | loss 2.0\n")
    async with Client(server) as client:
        await client.list_tools()
        bad = await client.call_tool("tail_log", {"path": "train.log", "linez": 5})
        good = await client.call_tool("tail_log", {"path": str(tmp_path / "train.log"), "lines": 5})
    assert bad.is_error and "linez" in bad.content[0].text
    assert not good.is_error and good.structured_content["lines"]
