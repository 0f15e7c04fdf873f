"""Where a tool's log argument points: a file inside the roots, or a tracker run the server may reach.

The policy, in one place: a trackio store is a local file, so it must lie inside the roots like any
path; an MLflow server is reached over the network, so over stdio (the user's own client) any
`mlflow://host:port` is allowed, while over HTTP (a remote caller) only the `--mlflow-uri` server is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import urlsplit

import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ml_debug_mcp.core.logs.sources import SourceError, TrackerSource, parse_source
from ml_debug_mcp.core.paths import PathOutsideRoots
from ml_debug_mcp.tools._base import ToolEnv, effective_roots, resolve_path

SOURCE_HELP = ("a log file or run directory inside the roots, or a tracker run: mlflow://host:port/<run_id> "
               "(or a bare run id with --mlflow-uri) or trackio://<project>[/<run>]")


async def resolve_source(env: ToolEnv, ctx: Context | None, raw: str, *, what: str = "path") -> Path | TrackerSource:
    """The resolved path, or the tracker run after the policy checks; a ToolError says what to do otherwise."""
    try:
        source = parse_source(raw or "", mlflow_uri=env.mlflow_uri, trackio_dir=env.trackio_dir)
    except SourceError as exc:
        raise ToolError(f"{what}: {exc}") from None
    roots = await effective_roots(env, ctx)
    if source is None:
        return await resolve_path(roots, raw, what=what)
    if source.kind == "mlflow" and not env.open_trackers:
        allowed = urlsplit(env.mlflow_uri).netloc if env.mlflow_uri else None
        if urlsplit(source.location).netloc != allowed:
            raise ToolError(f"{what}: over HTTP this server only reads the MLflow server it was started with "
                            f"(--mlflow-uri{': ' + env.mlflow_uri if env.mlflow_uri else ', not set'}); "
                            f"{source.location} is not it. Ask the operator to pass --mlflow-uri.")
    local = source.local_file
    if local is not None:
        try:
            resolved = await anyio.to_thread.run_sync(roots.resolve, str(local))
        except PathOutsideRoots:
            raise ToolError(f"{what}: the trackio store {local} lies outside the allowed roots "
                            f"({', '.join(str(p) for p in roots.paths)}). Start the server with --root <its folder> "
                            "or keep the store inside a root (TRACKIO_DIR / --trackio-dir).") from None
        source = dataclasses.replace(source, location=str(resolved))  # read what was checked, links followed
    return source
