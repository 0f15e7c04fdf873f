"""Which Python runs the model tools' worker: the user's training interpreter, found or named.

The light install has no torch, and the right torch (its CUDA build, the user's packages) is the
one training already uses. So unless `--python` names it, the worker's interpreter is looked for,
in this order: a virtualenv or conda env inside a root (`.venv`, `venv`, `env`, or any child
folder with `pyvenv.cfg` / `conda-meta`), the interpreter of a running training process whose
working directory or script lies inside a root (candidates the caller passes in, from core.host),
then the server's own interpreter. Each is probed once (`-c "import torch"`, cached) and the first
with torch wins; the choice says which and why, and when none has torch the error says what to pass.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ml_debug_mcp.core.paths import Roots

Source = Literal["configured", "root_env", "training_process", "server"]
ENV_NAMES = (".venv", "venv", "env", ".conda")
MAX_CHILDREN_SCANNED = 200
PROBE_TIMEOUT = 60.0
NEGATIVE_TTL = 30.0  # a "no torch" answer is re-checked soon: the user may just have installed it
_PROBE = "import sys, torch; sys.stdout.write(torch.__version__)"


class InterpreterChoice(BaseModel):
    """The interpreter a worker ran under, and why that one."""

    python: str
    source: Source
    reason: str
    torch_version: str | None = None
    passed_over: list[str] = Field(default_factory=list, description="candidates tried first, and why not them")


class NoInterpreter(ValueError):
    """No candidate has torch; a ValueError so the tool layer reports it as a clear tool error."""

    kind = "no_interpreter"


@dataclass(frozen=True)
class Candidate:
    python: str
    source: Source
    reason: str


@dataclass
class _Probe:
    ok: bool
    detail: str  # torch version, or why not
    at: float


_cache: dict[tuple[str, float], _Probe] = {}
_lock = threading.Lock()


def probe_torch(python: str) -> tuple[bool, str]:
    """(has torch, version or why not), cached per interpreter path and mtime."""
    try:
        mtime = os.stat(python).st_mtime
    except OSError as exc:
        return False, f"cannot be run ({exc.strerror or exc})"
    key = (os.path.abspath(python), mtime)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and (hit.ok or time.monotonic() - hit.at < NEGATIVE_TTL):
            return hit.ok, hit.detail
    from ml_debug_mcp.core.model.worker import worker_environment

    try:
        proc = subprocess.run([python, "-E", "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=PROBE_TIMEOUT, env=worker_environment(), close_fds=True)
        ok = proc.returncode == 0
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = proc.stdout.decode(errors="replace").strip()[:40] if ok else (lines[-1][:200] if lines else
                                                                                f"exit code {proc.returncode}")
    except subprocess.TimeoutExpired:
        ok, detail = False, f"`import torch` did not finish within {PROBE_TIMEOUT:g} s"
    except OSError as exc:
        ok, detail = False, f"cannot be run ({exc.strerror or exc})"
    with _lock:
        _cache[key] = _Probe(ok, detail, time.monotonic())
    return ok, detail


def _env_python(folder: Path) -> Path | None:
    for rel in ("bin/python", "bin/python3", "Scripts/python.exe", "python.exe"):
        exe = folder / rel
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    return None


def _is_env(folder: Path) -> str | None:
    if (folder / "pyvenv.cfg").is_file():
        return "virtualenv"
    if (folder / "conda-meta").is_dir():
        return "conda env"
    return None


def root_env_candidates(roots: Roots) -> list[Candidate]:
    """Environments inside the roots: the root itself, its named env folders, any child env, conda's envs/."""
    found: list[Candidate] = []
    seen: set[str] = set()

    def add(folder: Path) -> None:
        kind = _is_env(folder)
        exe = _env_python(folder) if kind else None
        if exe is None or str(exe) in seen or not roots.contains(folder.resolve()):
            return
        seen.add(str(exe))
        found.append(Candidate(str(exe), "root_env", f"{kind} {folder} inside the roots"))

    for root in roots.paths:
        add(root)
        for name in ENV_NAMES:
            add(root / name)
        for parent in (root, root / "envs"):
            try:
                children = sorted(p for _, p in zip(range(MAX_CHILDREN_SCANNED), parent.iterdir()) if p.is_dir())
            except OSError:
                continue
            for child in children:
                add(child)
    return found


def choose_interpreter(roots: Roots, configured: str | None, server_python: str,
                       processes: Iterable[Candidate] = ()) -> InterpreterChoice:
    """The interpreter for the next worker; `configured` (--python) is taken as given, without a probe."""
    if configured:
        return InterpreterChoice(python=configured, source="configured",
                                 reason="named by --python (ML_DEBUG_MCP_PYTHON)")
    candidates = [*root_env_candidates(roots), *processes,
                  Candidate(server_python, "server", "the server's own interpreter")]
    passed_over: list[str] = []
    tried: set[str] = set()
    for c in candidates:
        if c.python in tried:
            continue
        tried.add(c.python)
        ok, detail = probe_torch(c.python)
        if ok:
            return InterpreterChoice(python=c.python, source=c.source, reason=c.reason, torch_version=detail,
                                     passed_over=passed_over)
        passed_over.append(f"{c.python} ({c.reason}): no torch: {detail}")
    listed = "; ".join(passed_over)
    raise NoInterpreter(
        "No Python with torch was found to run the model code in. Tried: " + listed + ". Pass --python "
        "/path/to/your/training/venv/bin/python (or set ML_DEBUG_MCP_PYTHON) to the interpreter your training "
        "uses, put its virtualenv inside a root, or install torch next to the server: "
        "pip install 'ml-debug-mcp[torch]'.")
