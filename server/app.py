"""The app factory: one MCPServer with every tool, resource and prompt registered.

Kept free of transport details so tests can drive the very same server in memory, over stdio or
over HTTP.
"""

from __future__ import annotations

import secrets

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

from ml_debug_mcp import __version__
from ml_debug_mcp.server.config import Config
from ml_debug_mcp.server.knowledge import register_knowledge
from ml_debug_mcp.server.middleware import ArgumentHygiene, ListingCache
from ml_debug_mcp.tools import register_all
from ml_debug_mcp.tools._base import ToolEnv

INSTRUCTIONS = """\
Debug a training run the way a senior ML engineer would, in this order:
1. Gather evidence: tail_log on the training log (errors, last metrics, is it still writing?), gpu_status (memory, utilisation, is the process alive?).
2. Classify: classify_failure on the log (and error text / training script); while a job still runs, watch_run says when it starts to go wrong; follow each hypothesis' next_steps (analyze_gradients, check_shapes, read_metrics) until confidence >= 0.8.
3. Fix, then record and lock it in: compare_runs on the before/after logs, write_journal with the root cause and fix, create_smoke_test for a regression test.
Resources: guide://decision-tree, guide://thresholds, guide://failure-catalogue. Paths must lie inside the server's roots."""


LISTING_TTL_MS = 10 * 60 * 1000


class StaticTokenVerifier(TokenVerifier):
    """Accepts exactly one bearer token, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if secrets.compare_digest(token.encode(), self._token.encode()):
            return AccessToken(token=token, client_id="ml-debug-mcp-user", scopes=[])
        return None


def _auth(config: Config) -> tuple[AuthSettings | None, TokenVerifier | None]:
    if not config.token:
        return None, None
    url = f"http://{_url_host(config.host)}:{config.port}"
    settings = AuthSettings(issuer_url=url, resource_server_url=f"{url}/mcp", validate_token_resource=False)
    return settings, StaticTokenVerifier(config.token)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def create_server(config: Config | None = None) -> MCPServer:
    """Build the server for `config` (defaults: stdio, the working directory as the only root)."""
    config = config or Config()
    auth, verifier = _auth(config)
    mcp = MCPServer(
        name="ml-debug-mcp",
        title="ML training debugger",
        version=__version__,
        instructions=INSTRUCTIONS,
        auth=auth,
        token_verifier=verifier,
        log_level=config.log_level,  # type: ignore[arg-type]
        # The tool set never changes while the server runs: a caching client may keep the listing.
        cache_hints={"tools/list": CacheHint(ttl_ms=LISTING_TTL_MS, scope="public")},
    )
    env = ToolEnv(
        roots=config.roots,
        python=config.python,
        worker_timeout=config.worker_timeout,
        worker_memory_mb=config.worker_memory_mb,
        client_roots=config.client_roots,
        mlflow_uri=config.mlflow_uri,
        trackio_dir=config.trackio_dir,
        open_trackers=config.transport == "stdio",
        worker_env=config.worker_env,
    )
    register_all(mcp, env)
    register_knowledge(mcp, env)
    mcp.middleware.append(ListingCache())
    mcp.middleware.append(ArgumentHygiene(mcp))
    return mcp
