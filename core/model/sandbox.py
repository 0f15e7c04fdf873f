"""The sandbox around user code (the inspection worker and the smoke-test run): what it sees, reaches, leaves.

A model factory is arbitrary code, so it gets:
- an environment built from an allowlist (PATH, HOME, locale, PYTHONPATH, CUDA_/TORCH_/OMP_/MKL_...
  settings, and the names the operator passes with --worker-env), never the server's own;
- a server it cannot read: `harden_server` marks the server non-dumpable, so even a same-user
  process cannot read /proc/<pid>/environ (the initial environment, token included) or ptrace it;
- a per-call cgroup, so every descendant dies with the call, setsid'd and daemonised ones too;
- inside the child (`confine.py`, stdlib only): no network, no root, writes only below the roots.

Everything is probed at run time and degrades gracefully; `SandboxStatus` says what was active and,
for what was not, why. This module imports neither torch nor the MCP SDK.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from ml_debug_mcp.core.model import confine

CONFINE_FILE = Path(confine.__file__)
ALLOWED_NAMES = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "PYTHONPATH"})
ALLOWED_PREFIXES = ("LC_", "CUDA_", "TORCH_", "PYTORCH_", "OMP_", "MKL_", "NVIDIA_")
# A prefix-allowed name can still hold a secret (TORCH_HUB_TOKEN...): those are dropped unless named explicitly.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH|DSN|URL", re.I)
PR_SET_DUMPABLE, PR_GET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 4, 3, 36, 37
CGROUP_PARENT = "ml-debug-mcp"
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class Protection(BaseModel):
    active: bool
    detail: str = Field("", description="how it works here, or why it is not active on this host")


class SandboxStatus(BaseModel):
    """Which protections were around the user code of this call (they depend on the host's kernel)."""

    env_allowlist: Protection
    non_dumpable: Protection = Field(description="the server's memory and /proc/<pid>/environ are unreadable")
    subreaper: Protection = Field(description="orphaned descendants are re-parented to the server, not init")
    kill_tree: Protection = Field(description="every descendant is killed after the call")
    no_network: Protection
    landlock: Protection = Field(description="writes only below the roots and a temp dir")
    dropped_privileges: Protection

    def line(self) -> str:
        """One line for a text summary: what was on, and what was not."""
        names = {"env_allowlist": "env allowlist", "non_dumpable": "non-dumpable server", "subreaper": "subreaper",
                 "kill_tree": "tree kill", "no_network": "no network", "landlock": "Landlock",
                 "dropped_privileges": "unprivileged"}
        on = [names[k] for k in names if getattr(self, k).active]
        off = [names[k] for k in names if not getattr(self, k).active]
        return f"sandbox: {', '.join(on) or 'nothing'} active" + (f"; not active: {', '.join(off)} (see sandbox)"
                                                                   if off else "")


@dataclass(frozen=True)
class Policy:
    """What one call's user code may read, write and see: the roots, and the extra variables named by the operator."""

    roots: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()


def environment(env_names: tuple[str, ...] = (), gpu: int | None = None) -> dict[str, str]:
    """The allowlisted part of the server's environment, GPUs hidden (all but `gpu`) and threads bounded."""
    env = {k: v for k, v in os.environ.items()
           if k in ALLOWED_NAMES or k in env_names or (k.startswith(ALLOWED_PREFIXES) and not _SECRET_NAME.search(k))}
    env.update(CUDA_VISIBLE_DEVICES="" if gpu is None else str(gpu), PYTHONDONTWRITEBYTECODE="1",
               PYTHONUNBUFFERED="1")
    # Few threads and malloc arenas: the worker should not steal the training run's cores, and every
    # thread arena reserves 64 MB of address space that would count against RLIMIT_AS on a many-core host.
    env.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def harden_server() -> None:
    """Non-dumpable (no same-user reading of our memory or initial environ) and a child subreaper (orphans of
    the workers come back to us). Linux only; elsewhere a no-op, and SandboxStatus says so."""
    if _libc is not None:
        _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _server_protections() -> dict[str, Protection]:
    if _libc is None:
        off = Protection(active=False, detail="not Linux")
        return {"non_dumpable": off, "subreaper": off}
    flag = ctypes.c_int(0)
    _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    dumpable = _libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0
    why = "the server was not started by the ml-debug-mcp command (embedded, e.g. in tests)"
    return {
        "non_dumpable": Protection(active=not dumpable, detail=why if dumpable else
                                   "prctl(PR_SET_DUMPABLE, 0): /proc/<server pid>/environ and ptrace are refused"),
        "subreaper": Protection(active=bool(flag.value), detail="orphans are re-parented to the server"
                                if flag.value else why),
    }


class Confinement:
    """One call's sandbox: start the child with `popen_kwargs`, then `finish` kills what is left and reports."""

    def __init__(self, policy: Policy, *, cwd: Path, gpu: int | None = None, readable: tuple[str, ...] = ()) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="ml-debug-mcp-call-")
        os.chmod(self.tmpdir, 0o700)
        self.cgroup, cgroup_reason = _make_cgroup()
        self._cgroup_reason = cgroup_reason
        self._status_read, self._status_write = os.pipe()
        spec = {"cgroup": self.cgroup, "status_fd": self._status_write, "tmpdir": self.tmpdir,
                "writable": list(policy.roots), "readable": [str(cwd), *policy.roots, *readable],
                "gpu": gpu is not None}
        self.env = {**environment(policy.env_names, gpu), "TMPDIR": self.tmpdir,
                    confine.SPEC_VARIABLE: json.dumps(spec)}

    def popen_kwargs(self) -> dict:
        return {"env": self.env, "pass_fds": (self._status_write,), "start_new_session": True}

    def started(self) -> None:
        """Close our copy of the report pipe's write end (the child holds its own)."""
        os.close(self._status_write)

    def finish(self, proc: subprocess.Popen | None) -> SandboxStatus:
        """Kill the child's whole tree (cgroup, process group, descendants), reap it, read the child's report."""
        if proc is not None:
            _kill_tree(proc, self.cgroup)
        if self.cgroup:
            with contextlib.suppress(OSError):
                os.rmdir(self.cgroup)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        return self._status()

    def _status(self) -> SandboxStatus:
        os.set_blocking(self._status_read, False)
        try:
            report = json.loads(os.read(self._status_read, 1 << 16) or b"{}")
        except (OSError, ValueError):
            report = {}
        finally:
            os.close(self._status_read)
        unknown = Protection(active=False, detail="the child did not report (it failed before user code ran)")
        child = {k: Protection(**report[k]) if k in report else unknown
                 for k in ("kill_tree", "no_network", "landlock", "dropped_privileges")}
        if not self.cgroup:
            child["kill_tree"] = Protection(active=False, detail=self._cgroup_reason)
        allow = Protection(active=True, detail="only PATH, HOME, locale, PYTHONPATH, CUDA_/TORCH_/OMP_/MKL_/NVIDIA_ "
                                               "settings and --worker-env names")
        return SandboxStatus(env_allowlist=allow, **_server_protections(), **child)


# ------------------------------------------------------------------------------------------------
# Cgroups and killing


def _cgroup2_mount() -> str | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if " - cgroup2 " in line:
                    return fields[4]
    except OSError:
        pass
    return None


def _make_cgroup() -> tuple[str | None, str]:
    """A fresh cgroup v2 below ours, or (None, why not): one kill then reaches every descendant."""
    fallback = "the process group and what is still below the worker (their subreaper) are killed"
    mount = _cgroup2_mount()
    if mount is None:
        return None, f"no cgroup v2 on this host: {fallback}"
    try:
        with open("/proc/self/cgroup") as f:
            own = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        parent = os.path.join(mount, own.lstrip("/"), CGROUP_PARENT)
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix="call-", dir=parent), ""
    except (OSError, StopIteration) as exc:
        return None, f"cannot create a cgroup ({getattr(exc, 'strerror', None) or exc}): {fallback}"


def _kill_tree(proc: subprocess.Popen, cgroup: str | None) -> None:
    import psutil

    victims = _descendants(proc.pid) + _cgroup_members(cgroup)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if cgroup:
        with contextlib.suppress(OSError):
            Path(cgroup, "cgroup.kill").write_text("1")
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while cgroup and _cgroup_members(cgroup) and time.monotonic() < deadline:  # wait out what joined meanwhile
        with contextlib.suppress(OSError):
            Path(cgroup, "cgroup.kill").write_text("1")
        time.sleep(0.02)
    psutil.wait_procs([p for p in victims if p.pid != proc.pid], timeout=5)  # reaps those re-parented to us


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _cgroup_members(cgroup: str | None) -> list:
    import psutil

    if not cgroup:
        return []
    try:
        pids = [int(p) for p in Path(cgroup, "cgroup.procs").read_text().split()]
    except OSError:
        return []
    members = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            members.append(psutil.Process(pid))
    return members
