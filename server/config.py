"""Server configuration from flags and environment variables, validated once at start-up.

Every setting has a flag and an `ML_DEBUG_MCP_*` environment variable (the flag wins), so the same
image or client config works whether it is launched by Claude Desktop, a shell or Docker.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ml_debug_mcp import __version__
from ml_debug_mcp.core.paths import Roots

ENV_PREFIX = "ML_DEBUG_MCP_"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and how to fix it."""


@dataclass(frozen=True)
class Config:
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = 8765
    roots: Roots = field(default_factory=lambda: Roots.from_strings([os.getcwd()]))
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    python: str | None = None  # None: find the training interpreter (core.model.interpreter)
    worker_timeout: float = 120.0
    worker_memory_mb: int = 4096
    log_level: str = "INFO"
    client_roots: bool = True
    mlflow_uri: str | None = None
    trackio_dir: Path | None = None
    worker_env: tuple[str, ...] = ()  # variables passed to user code beyond the sandbox's allowlist

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env(name: str) -> str | None:
    value = os.environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else None


def _split(value: str | None, sep: str = ",") -> list[str]:
    return [part.strip() for part in (value or "").split(sep) if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ml-debug-mcp",
        description=(
            "MCP server for debugging machine-learning training runs. Serves over stdio by default "
            "(what Claude Desktop, Claude Code, VS Code and Cursor launch), or streamable HTTP with "
            "--transport http. Human commands: `ml-debug-mcp tail|metrics|classify|gpu PATH`."
        ),
        epilog=(
            "Every flag can also be set by an environment variable: ML_DEBUG_MCP_TRANSPORT, _HOST, _PORT, "
            "_ROOTS (os.pathsep-separated), _TOKEN, _ALLOWED_HOSTS, _ALLOWED_ORIGINS (comma-separated), "
            "_TOKEN_FILE, _PYTHON, _WORKER_TIMEOUT, _WORKER_MEMORY_MB, _WORKER_ENV (comma-separated), _LOG_LEVEL, "
            "_CLIENT_ROOTS (0/1), _MLFLOW_URI, _TRACKIO_DIR. "
            "Flags win."
        ),
    )
    p.add_argument("--version", action="version", version=f"ml-debug-mcp {__version__}")
    p.add_argument("--transport", choices=["stdio", "http"], help="stdio (default) or streamable HTTP")
    p.add_argument("--host", help="HTTP bind address (default 127.0.0.1). Beyond loopback a --token is required.")
    p.add_argument("--port", type=int, help="HTTP port (default 8765)")
    p.add_argument("--root", action="append", dest="roots", metavar="DIR",
                   help="a folder tools may read and write (repeatable; default: the working directory)")
    p.add_argument("--token", help="bearer token every HTTP request must carry (prefer ML_DEBUG_MCP_TOKEN: "
                                   "flags are visible in `ps`)")
    p.add_argument("--token-file", metavar="FILE", help="read the bearer token from this file (used when "
                                                        "ML_DEBUG_MCP_TOKEN and --token are not set)")
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts", metavar="HOST[:PORT]",
                   help="extra Host header value to accept over HTTP, e.g. the name a proxy or Docker uses")
    p.add_argument("--allowed-origin", action="append", dest="allowed_origins", metavar="ORIGIN",
                   help="extra browser Origin to accept over HTTP")
    p.add_argument("--python", help="interpreter that runs user model code in a worker (default: a venv/conda env inside a root, a running training process, then this one: the first with torch)")
    p.add_argument("--worker-timeout", type=float, help="seconds a user-code worker may run (default 120)")
    p.add_argument("--worker-memory-mb", type=int, help="address-space limit of a worker in MiB (default 4096)")
    p.add_argument("--worker-env", action="append", dest="worker_env", metavar="NAME",
                   help="an environment variable user model code may see (repeatable); beyond these it gets only "
                        "PATH, HOME, locale, PYTHONPATH and CUDA_/TORCH_/OMP_/MKL_/NVIDIA_ settings")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    p.add_argument("--no-client-roots", action="store_true",
                   help="ignore the roots an MCP client offers (they are only ever taken over stdio, and "
                        "only when no --root is given)")
    p.add_argument("--mlflow-uri", metavar="URL",
                   help="MLflow tracking server (http://host:port) whose runs tools read by bare run id; over HTTP "
                        "it is the only MLflow server tools may reach")
    p.add_argument("--trackio-dir", metavar="DIR",
                   help="trackio's store folder for trackio://<project>/<run> (default $TRACKIO_DIR or "
                        "~/.cache/huggingface/trackio); it must lie inside a --root")
    return p


def _mlflow_uri(raw: str | None) -> str | None:
    if not raw:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--mlflow-uri must be an http(s)://host:port URL of a tracking server, not {raw!r}.")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def config_from_args(args: argparse.Namespace) -> Config:
    """Merge flags over environment over defaults, and validate; raises ConfigError."""
    transport = args.transport or _env("TRANSPORT") or "stdio"
    if transport not in ("stdio", "http"):
        raise ConfigError(f"ML_DEBUG_MCP_TRANSPORT must be 'stdio' or 'http', not {transport!r}.")
    host = args.host or _env("HOST") or "127.0.0.1"
    port = _int_setting(args.port, "PORT", 8765, low=1, high=65535)
    token = args.token or _env("TOKEN") or _token_file(getattr(args, "token_file", None) or _env("TOKEN_FILE"))
    if token is not None and len(token) < 16:
        raise ConfigError("The token is shorter than 16 characters; use a long random one, "
                          "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.")
    if transport == "http" and not is_loopback_host(host) and not token:
        raise ConfigError(
            f"Refusing to listen on {host} without a token: anyone who can reach the port could read your "
            "files through the tools. Set ML_DEBUG_MCP_TOKEN (or --token), or bind to 127.0.0.1."
        )
    allowed_hosts = tuple((args.allowed_hosts or []) + _split(_env("ALLOWED_HOSTS")))
    if "*" in allowed_hosts and not token:
        raise ConfigError("--allowed-host '*' turns off the Host/Origin checks that stop DNS-rebinding attacks; "
                          "it is only accepted together with a token (ML_DEBUG_MCP_TOKEN).")
    raw_roots = args.roots or _split(_env("ROOTS"), os.pathsep) or [os.getcwd()]
    if not (args.roots or _env("ROOTS")) and Path(os.getcwd()).resolve() == Path("/"):
        raise ConfigError("No --root was given and the working directory is /, which would let the tools read the "
                          "whole filesystem. Pass --root <the folder with your runs> (repeatable).")
    for raw in raw_roots:
        path = Path(os.path.expanduser(raw))
        if not path.is_dir():
            raise ConfigError(f"Root {raw!r} is not an existing directory; create it or pass another --root.")
    python = args.python or _env("PYTHON") or None
    if python is not None and shutil.which(python) is None and not Path(python).is_file():
        raise ConfigError(f"Worker interpreter {python!r} was not found; pass --python /path/to/python.")
    timeout = args.worker_timeout if args.worker_timeout is not None else float(_env("WORKER_TIMEOUT") or 120)
    if not 1 <= timeout <= 3600:
        raise ConfigError("--worker-timeout must be between 1 and 3600 seconds.")
    memory = _int_setting(args.worker_memory_mb, "WORKER_MEMORY_MB", 4096, low=256, high=1 << 22)
    worker_env = tuple(dict.fromkeys((getattr(args, "worker_env", None) or []) + _split(_env("WORKER_ENV"))))
    bad = [name for name in worker_env if not name.isidentifier() or name.startswith(ENV_PREFIX)]
    if bad:
        raise ConfigError(f"--worker-env {bad[0]!r}: name one environment variable (letters, digits, _); the "
                          f"server's own {ENV_PREFIX}* settings are never passed to user code.")
    log_level = (args.log_level or _env("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"Log level {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR.")
    # Roots a client offers widen what tools may read, so they are taken only from the local app
    # that launched us over stdio, and only when the operator did not name the roots explicitly.
    explicit_roots = bool(args.roots or _env("ROOTS"))
    client_roots = (transport == "stdio" and not explicit_roots and not args.no_client_roots
                    and _env("CLIENT_ROOTS") not in ("0", "false", "no"))
    return Config(
        transport=transport,  # type: ignore[arg-type]
        host=host,
        port=port,
        roots=Roots.from_strings(raw_roots),
        token=token,
        allowed_hosts=allowed_hosts,
        allowed_origins=tuple((args.allowed_origins or []) + _split(_env("ALLOWED_ORIGINS"))),
        python=python,
        worker_timeout=timeout,
        worker_memory_mb=memory,
        log_level=log_level,
        client_roots=client_roots,
        mlflow_uri=_mlflow_uri(getattr(args, "mlflow_uri", None) or _env("MLFLOW_URI")),
        trackio_dir=_trackio_dir(getattr(args, "trackio_dir", None) or _env("TRACKIO_DIR")),
        worker_env=worker_env,
    )


def _token_file(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        token = Path(os.path.expanduser(raw)).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the token file {raw!r} ({getattr(exc, 'strerror', None) or exc}).") from None
    return token or None


def _trackio_dir(raw: str | None) -> Path | None:
    return Path(os.path.expanduser(raw)).resolve() if raw else None


def _int_setting(flag: int | None, env: str, default: int, *, low: int, high: int) -> int:
    raw = flag if flag is not None else _env(env)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{env} must be an integer, not {raw!r}.") from None
    if not low <= value <= high:
        raise ConfigError(f"{env.lower().replace('_', '-')} must be between {low} and {high}, not {value}.")
    return value
