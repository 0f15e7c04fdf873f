"""What every tool module shares: the environment, annotations, path resolution, results and errors.

Tools stay thin: validate, resolve paths through the roots sandbox, run the core function off the
event loop, and return structured content (a pydantic model) plus a short text summary.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel

from ml_debug_mcp.core.model.interpreter import InterpreterChoice
from ml_debug_mcp.core.model.sandbox import Policy, SandboxStatus
from ml_debug_mcp.core.paths import PathOutsideRoots, Roots

log = logging.getLogger("ml_debug_mcp.tools")
T = TypeVar("T")

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITES_FILES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                               open_world_hint=False)
RUNS_USER_CODE = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                 open_world_hint=True)


@dataclass(frozen=True)
class ToolEnv:
    """Server settings the tools need, without the server itself."""

    roots: Roots
    python: str | None  # --python; None: find the training interpreter per call
    worker_timeout: float
    worker_memory_mb: int
    client_roots: bool = True
    mlflow_uri: str | None = None  # the operator's MLflow server: bare run ids go there
    trackio_dir: Path | None = None  # where trackio:// projects live (None: trackio's own default)
    open_trackers: bool = True  # any mlflow:// host (stdio, the user's own client); over HTTP only mlflow_uri
    worker_env: tuple[str, ...] = ()  # --worker-env: variables user code may see beyond the sandbox's allowlist

    def policy(self, roots: Roots) -> Policy:
        """The sandbox for one call's user code: it may write below these roots and see these variables."""
        return Policy(roots=tuple(str(p) for p in roots.paths), env_names=self.worker_env)


async def effective_roots(env: ToolEnv, ctx: Context | None) -> Roots:
    """The configured roots, plus the roots the MCP client offers (legacy sessions that declare them)."""
    if ctx is None or not env.client_roots:
        return env.roots
    try:
        caps = ctx.client_capabilities
        if caps is None or caps.roots is None:
            return env.roots
        with anyio.fail_after(2), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # roots are deprecated in the 2026 protocol, still offered by older clients
            listed = await ctx.session.list_roots()
    except Exception as exc:  # a client that advertises roots but cannot answer must not break the call
        log.debug("client roots unavailable: %r", exc)
        return env.roots
    offered = [_root_path(str(r.uri)) for r in listed.roots]
    extra = await anyio.to_thread.run_sync(lambda: [p for p in offered if p and os.path.isdir(p)])
    if not extra:
        return env.roots
    return Roots.from_strings([str(p) for p in env.roots.paths] + extra)


def _root_path(uri: str) -> str | None:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else None


async def resolve_path(roots: Roots, raw: str, *, what: str = "path",
                       expect: Literal["file", "dir", "any", "new"] = "any") -> Path:
    """resolve_path_now on a worker thread: a hung mount (NFS, FUSE) must not stall the other calls."""
    return await anyio.to_thread.run_sync(
        functools.partial(resolve_path_now, roots, raw, what=what, expect=expect), abandon_on_cancel=True)


def resolve_path_now(roots: Roots, raw: str, *, what: str = "path",
                     expect: Literal["file", "dir", "any", "new"] = "any") -> Path:
    """Resolve a caller's path inside the roots, or raise a ToolError that says what to do (blocking)."""
    if not raw or not raw.strip():
        raise ToolError(f"The {what} is empty; pass a file path inside {_roots_text(roots)}.")
    try:
        path = roots.resolve(raw.strip())
    except PathOutsideRoots as exc:
        raise ToolError(str(exc)) from None
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    if expect == "new":
        if not path.parent.is_dir():
            raise ToolError(f"The folder {path.parent} does not exist; create it first or choose another {what}.")
        return path
    if not path.exists():
        hint = _similar_names(path)
        raise ToolError(f"The {what} {path} does not exist.{hint} Paths are relative to {roots.primary}.")
    if expect == "file" and path.is_dir():
        raise ToolError(f"The {what} {path} is a directory; pass a file inside it.")
    if not path.is_file() and not path.is_dir():
        # Opening a FIFO blocks until someone writes to it; a device or socket is no log either.
        raise ToolError(f"The {what} {path} is not a regular file (a pipe, socket or device); pass a file.")
    if expect == "dir" and not path.is_dir():
        raise ToolError(f"The {what} {path} is not a directory.")
    if not os.access(path, os.R_OK):
        raise ToolError(f"The {what} {path} is not readable by the server's user ({_user()}); fix its permissions.")
    return path


def _similar_names(path: Path) -> str:
    parent = path.parent
    if not parent.is_dir():
        return f" Its folder {parent} does not exist either."
    try:
        stem = path.name.split(".")[0].lower()
        near = sorted(p.name for p in parent.iterdir() if stem and stem in p.name.lower())[:5]
    except OSError:
        return ""
    return f" Similar names in {parent}: {', '.join(near)}." if near else ""


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _roots_text(roots: Roots) -> str:
    return ", ".join(str(p) for p in roots.paths)


def tool_result(model: BaseModel, summary: str, images: list[bytes] | None = None) -> CallToolResult:
    """Structured content for programs, a short text summary for the model, optional PNGs."""
    content: list[Any] = [TextContent(type="text", text=summary)]
    for png in images or []:
        content.append(ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"))
    return CallToolResult(content=content, structured_content=model.model_dump(mode="json"))


async def worker_interpreter(env: ToolEnv, roots: Roots) -> InterpreterChoice:
    """The Python the model tools' worker runs under: --python, else the first found with torch."""
    from ml_debug_mcp.core.host.processes import training_interpreters
    from ml_debug_mcp.core.model.interpreter import Candidate, choose_interpreter

    def find() -> InterpreterChoice:
        processes = [] if env.python else [Candidate(python, "training_process", why)
                                           for python, why in training_interpreters(roots)]
        return choose_interpreter(roots, env.python, sys.executable, processes)

    return await run_blocking(None, find)


def sandbox_line(status: SandboxStatus | None) -> str | None:
    return status.line() if status is not None else None


def interpreter_line(choice: InterpreterChoice | None) -> str | None:
    if choice is None:
        return None
    version = f", torch {choice.torch_version}" if choice.torch_version else ""
    return f"worker python: {choice.python} ({choice.reason}{version})"


def human_size(size: int) -> str:
    """Bytes as a person reads them: 36 bytes, 12.0 KB, 3.9 GB."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def not_implemented(tool: str, instead: str) -> ToolError:
    return ToolError(f"{tool} is not implemented yet in this version of ml-debug-mcp. {instead}")


async def run_blocking(ctx: Context | None, fn: Callable[..., T], *args: Any, label: str = "working",
                       **kwargs: Any) -> T:
    """Run blocking core work on a worker thread so the event loop keeps serving other calls.

    If `fn` accepts a `progress` keyword, it receives a callback `(done, total, message)` that is
    forwarded to the client as MCP progress (throttled to a few updates a second).
    """
    if ctx is not None and "progress" in _params(fn):
        kwargs["progress"] = _progress_forwarder(ctx)
    call = functools.partial(fn, *args, **kwargs)
    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)


@functools.lru_cache(maxsize=256)
def _params(fn: Callable[..., Any]) -> frozenset[str]:
    """A function's parameter names, read once per function (inspect.signature costs ~70 us a call)."""
    import inspect

    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _progress_forwarder(ctx: Context) -> Callable[[float, float | None, str | None], None]:
    last = [0.0]

    def report(done: float, total: float | None = None, message: str | None = None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.25 and (total is None or done < total):
            return
        last[0] = now
        try:
            anyio.from_thread.run(ctx.report_progress, done, total, message)
        except Exception:  # progress is best-effort; never fail the work because a client went away
            pass

    return report


def translate_errors(tool_name: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Turn the caller-fixable exceptions core raises into ToolErrors with the message intact.

    Anything else is logged with its traceback to stderr and reported as an internal error,
    so the client never sees a traceback dump and the server keeps serving.
    """

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def inner(*args: Any, **kwargs: Any) -> T:
            try:
                return await fn(*args, **kwargs)
            except ToolError:
                raise
            except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
                raise ToolError(str(exc)) from None
            except PermissionError as exc:
                raise ToolError(f"Permission denied: {exc}") from None
            except OSError as exc:
                raise ToolError(f"Could not read or write a file: {exc}") from None
            except Exception as exc:
                log.exception("%s failed unexpectedly", tool_name)
                raise ToolError(
                    f"{tool_name} hit an internal error ({type(exc).__name__}: {exc}). The server is still "
                    "running; the details are in its stderr log. Please report it with the arguments you used."
                ) from None

        return inner

    return wrap
