"""Streamable HTTP transport: the Starlette app, its security settings, and serving it with uvicorn.

DNS-rebinding protection is always configured explicitly: the SDK only turns it on by itself for
loopback hosts, and a server bound to 0.0.0.0 without settings would accept any Host header.
"""

from __future__ import annotations

import logging
import socket

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from ml_debug_mcp import __version__
from ml_debug_mcp.server.config import Config, ConfigError

log = logging.getLogger("ml_debug_mcp.http")
MCP_PATH = "/mcp"
_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def transport_security(config: Config) -> TransportSecuritySettings:
    """Host/Origin allow-lists: loopback names, the bound address, and what the operator adds.

    `--allowed-host '*'` turns the Host/Origin checks off; it is accepted only because a
    non-loopback bind always requires a bearer token.
    """
    if "*" in config.allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = list(_LOOPBACK_HOSTS)
    origins = list(_LOOPBACK_ORIGINS)
    if not config.is_loopback and config.host not in ("0.0.0.0", "::"):
        hosts.append(f"{_bracket(config.host)}:*")
        origins.append(f"http://{_bracket(config.host)}:*")
    for extra in config.allowed_hosts:
        hosts.append(extra if ":" in extra.lstrip("[").split("]")[-1] else f"{extra}:*")
        hosts.append(extra)
    origins.extend(config.allowed_origins)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def build_http_app(mcp: MCPServer, config: Config) -> Starlette:
    """The ASGI app: MCP at /mcp (bearer auth when a token is set) and an unauthenticated /healthz."""

    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "server": "ml-debug-mcp", "version": __version__})

    return mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=transport_security(config),
        host=config.host,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts so a busy port is a clear start-up error, not a log line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Another server (maybe another ml-debug-mcp) "
            f"is using the port; pick a free one with --port, or stop the other process."
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve_http(mcp: MCPServer, config: Config) -> None:
    """Serve until SIGINT/SIGTERM; uvicorn then drains requests and shuts down gracefully."""
    import uvicorn

    app = build_http_app(mcp, config)
    sock = bind_socket(config.host, config.port)
    uv_config = uvicorn.Config(app, log_level=config.log_level.lower(), timeout_graceful_shutdown=5,
                               lifespan="on", access_log=False)
    server = uvicorn.Server(uv_config)
    auth = "bearer token required" if config.token else "no token (loopback only)"
    log.info("ml-debug-mcp %s serving MCP on http://%s:%d%s (%s); roots: %s", __version__, _bracket(config.host),
             config.port, MCP_PATH, auth, ", ".join(str(p) for p in config.roots.paths))
    server.run(sockets=[sock])
